"""Llama 2's chat format: text and ids as Meta's chat_completion builds them, clear errors."""

import pytest
import sentencepiece as spm

from llama_edu.chat import check_dialog, encode_dialog, format_dialog
from llama_edu.checkpoint import load_course_model

DIALOG = [{"role": "system", "content": "Answer in one word. "},
          {"role": "user", "content": " Who found the key? "},
          {"role": "assistant", "content": "Mira."},
          {"role": "user", "content": "小猫在哪里？"}]


def meta_reference(processor, dialog):
    """Meta's chat_completion recipe, step by step, on sentencepiece itself."""
    if dialog[0]["role"] == "system":
        merged = "<<SYS>>\n" + dialog[0]["content"] + "\n<</SYS>>\n\n" + dialog[1]["content"]
        dialog = [{"role": dialog[1]["role"], "content": merged}] + dialog[2:]
    ids = []
    for prompt, answer in zip(dialog[::2], dialog[1::2], strict=False):
        text = f"[INST] {prompt['content'].strip()} [/INST] {answer['content'].strip()} "
        ids += [processor.bos_id()] + processor.encode(text) + [processor.eos_id()]
    text = f"[INST] {dialog[-1]['content'].strip()} [/INST]"
    return ids + [processor.bos_id()] + processor.encode(text)


@pytest.fixture(scope="module")
def tokenizers():
    from llama_edu.checkpoint import COURSE_MODEL  # the shipped tiny model

    _, ours = load_course_model()
    return ours, spm.SentencePieceProcessor(model_file=str(COURSE_MODEL / "tokenizer.model"))


def test_format_wraps_the_system_prompt_and_marks_bos_and_eos():
    assert format_dialog(DIALOG) == (
        "<s>[INST] <<SYS>>\nAnswer in one word. \n<</SYS>>\n\n Who found the key? [/INST] "
        "Mira. </s><s>[INST] 小猫在哪里？ [/INST]")
    assert format_dialog([{"role": "user", "content": "hi"}]) == "<s>[INST] hi [/INST]"


@pytest.mark.parametrize("dialog", [DIALOG, DIALOG[1:], DIALOG[1:2], DIALOG[:2]])
def test_ids_equal_metas_recipe_on_sentencepiece(tokenizers, dialog):
    ours, processor = tokenizers
    assert encode_dialog(ours, dialog) == meta_reference(processor, dialog)


@pytest.mark.parametrize("dialog, message", [
    ([], "non-empty list"),
    ([{"role": "user"}], "exactly 'role' and 'content'"),
    ([{"role": "bot", "content": "x"}], "use one of"),
    ([{"role": "user", "content": 3}], "must be a str"),
    ([{"role": "assistant", "content": "x"}], "should be 'user'"),
    ([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], "should be 'assistant'"),
    ([{"role": "user", "content": "a"}, {"role": "system", "content": "b"}],
     "only the first message may be the system message"),
    ([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}], "end with a user"),
    ([{"role": "system", "content": "a"}], "end with a user"),
])
def test_malformed_dialogs_say_what_is_wrong(dialog, message):
    with pytest.raises(ValueError, match=message):
        check_dialog(dialog)


def test_llama3_format_equals_metas_chat_format_with_tiktoken():
    """Meta's ChatFormat, written out with tiktoken on the real Llama 3 file."""
    tiktoken = pytest.importorskip("tiktoken")
    from llama_edu.chat import encode_dialog_llama3
    from llama_edu.tokenizer import (
        LLAMA3_SPECIAL_TOKENS,
        LLAMA3_SPLIT,
        LLAMA3_TOKENIZER,
        load_llama3_tokenizer,
        read_tiktoken,
    )

    ranks = read_tiktoken(LLAMA3_TOKENIZER)
    special = {token: 128_000 + i for i, token in enumerate(LLAMA3_SPECIAL_TOKENS)}
    reference = tiktoken.Encoding("llama3", pat_str=LLAMA3_SPLIT, mergeable_ranks=ranks,
                                  special_tokens=special)

    def header(role):
        return ([special["<|start_header_id|>"]] + reference.encode(role)
                + [special["<|end_header_id|>"]] + reference.encode("\n\n"))

    dialog = DIALOG[:3] + [{"role": "user", "content": "What is <|eot_id|>? 小猫在哪里？"}]
    expected = [special["<|begin_of_text|>"]]
    for message in dialog:
        expected += header(message["role"]) + reference.encode(message["content"].strip(),
                                                               disallowed_special=())
        expected.append(special["<|eot_id|>"])
    expected += header("assistant")
    ours = encode_dialog_llama3(load_llama3_tokenizer(), dialog)
    assert ours == expected
    assert ours[:1] == [128000] and ours.count(128009) == len(dialog)


def test_llama3_format_refuses_a_tokenizer_without_its_special_tokens():
    from llama_edu.chat import encode_dialog_llama3
    from llama_edu.tokenizer import ByteLevelBPE

    plain = ByteLevelBPE().train("hello world " * 50, vocab_size=300, progress=False)
    with pytest.raises(ValueError, match="lacks Llama 3's special tokens"):
        encode_dialog_llama3(plain, DIALOG[1:2])


def test_ids_equal_metas_recipe_on_the_real_llama2_tokenizer():
    from llama_edu.tokenizer import LLAMA2_TOKENIZER, load_llama2_tokenizer

    processor = spm.SentencePieceProcessor(model_file=str(LLAMA2_TOKENIZER))
    ours = load_llama2_tokenizer()
    for dialog in (DIALOG, DIALOG[1:], DIALOG[1:2]):
        assert encode_dialog(ours, dialog) == meta_reference(processor, dialog)
    ids = encode_dialog(ours, [{"role": "user", "content": "Hi"}])
    assert ids[0] == 1 and processor.decode(ids) == "[INST] Hi [/INST]"
