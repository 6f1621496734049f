"""The course tokenizer: trained with Llama's settings, loaded into SentencePieceBPE."""

import pytest
import sentencepiece as spm

from llama_edu.checkpoint import COURSE_TOKENIZER
from llama_edu.tokenizer import load_tokenizer, train_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(COURSE_TOKENIZER)


def test_shipped_tokenizer_behaves_like_llamas(tokenizer):
    pieces = [tokenizer.id_to_piece(i) for i in tokenizer.encode("in 1984 the 齉")]
    assert pieces[pieces.index("1"):pieces.index("1") + 4] == ["1", "9", "8", "4"]  # split digits
    assert pieces[-3:] == ["<0xE9>", "<0xBD>", "<0x89>"]          # byte fallback, no <unk>
    assert tokenizer.decode(tokenizer.encode("ＡＢＣ ﬁ")) == "ＡＢＣ ﬁ"  # identity: no NFKC
    assert pieces[0].startswith("\u2581")                        # the dummy-prefix space
    assert [tokenizer.id_to_piece(i) for i in range(3)] == ["<unk>", "<s>", "</s>"]
    assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.vocab_size) == (1, 2, 4096)


def test_train_tokenizer_reproduces_the_shipped_model(tmp_path):
    path = train_tokenizer(tmp_path / "again.model")
    assert path.read_bytes() == COURSE_TOKENIZER.read_bytes()


def test_tokenizer_round_trips_text_and_matches_sentencepiece(tokenizer):
    reference = spm.SentencePieceProcessor(model_file=str(COURSE_TOKENIZER))
    for text in ["Once upon a time, in 2023, 12 foxes", "def f(x):\n    return x",
                 "小猫和小狗找到了钥匙。", "emoji 🦙 and tabs\tok"]:
        ids = tokenizer.encode(text)
        assert ids == reference.encode(text)
        assert tokenizer.decode(ids) == text
    ids = tokenizer.encode("Year 2024", bos=True, eos=True)
    assert ids[0] == 1 and ids[-1] == 2
    assert [tokenizer.id_to_piece(i) for i in tokenizer.encode("2024")][-4:] == list("2024")
    assert tokenizer.vocab_size == 4096


def test_load_tokenizer_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="train_tokenizer"):
        load_tokenizer(tmp_path / "nope.model")
