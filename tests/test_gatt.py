"""Ghost Attention's data (lesson 14): the stories, the dialogs, the samples with the
instruction in the first turn only and the loss on the last answer, the adherence measure,
and a LoRA fine-tune on them (on a one-layer model)."""

import pytest
import torch

from llama_edu import gatt
from llama_edu.align import IGNORE
from llama_edu.checkpoint import COURSE_MODEL
from llama_edu.finetune import TuneConfig
from llama_edu.instructions import IN_CHINESE, make_examples
from llama_edu.lora import LoRALinear
from llama_edu.model import Llama, LlamaConfig
from llama_edu.tokenizer import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer(COURSE_MODEL / "tokenizer.model")


def test_stories_name_the_friend_and_the_splits_share_none():
    train, heldout = gatt.stories(30, "train"), gatt.stories(30, "heldout")
    for story in train + heldout:
        assert story.friend and story.friend != story.hero
        assert f" {story.friend_kind}" in story.text and story.friend in story.text
        assert story.friend_kind_cn and story.friend_described.endswith(story.friend_kind)
    assert not {s.text for s in train} & {s.text for s in heldout}
    # ... nor with the instruction data that tiny-sft and tiny-chat were trained on
    instruction_stories = {e.user.rsplit("\n\n", 1)[0] for e in make_examples(2000, "train")}
    assert not {s.text for s in train + heldout} & instruction_stories
    assert [s.text for s in gatt.stories(30, "train")] == [s.text for s in train]
    with pytest.raises(ValueError, match="split must be"):
        gatt.stories(3, "test")
    with pytest.raises(ValueError, match="at least 1"):
        gatt.stories(0)


def test_the_dialog_keeps_the_instruction_at_the_start_unless_repeated():
    story = gatt.stories(1)[0]
    first, second = gatt.questions(story)
    assert gatt.dialog(story, [], IN_CHINESE) == [
        {"role": "system", "content": IN_CHINESE}, {"role": "user", "content": first}]
    kept = gatt.dialog(story, ["狐狸"], IN_CHINESE)
    assert [m["role"] for m in kept] == ["system", "user", "assistant", "user"]
    assert kept[-1]["content"] == second
    repeated = gatt.dialog(story, ["狐狸"], IN_CHINESE, repeat=True)
    assert repeated[1]["content"] == first                       # the first turn: unchanged
    assert repeated[-1]["content"] == f"{IN_CHINESE}\n{second}"
    assert [m["role"] for m in gatt.dialog(story, ["x"])] == ["user", "assistant", "user"]


def test_follows():
    assert gatt.follows("狐狸") and gatt.follows("女孩。")
    assert not gatt.follows("Mira was a shy fox.") and not gatt.follows("30")


def test_training_samples_learn_only_the_last_answer(tokenizer, monkeypatch):
    train = gatt.stories(6)
    replies = iter([["狐狸", "Fox", "猫"], ["乌龟", "乌龟", "40"]])     # turn 1, then turn 2
    asked = []

    def fake_answer(model, tok, dialogs):
        asked.append(dialogs)
        return next(replies)

    monkeypatch.setattr(gatt, "answer", fake_answer)
    samples, counts = gatt.training_data(None, tokenizer, train)
    assert counts == {"with": 1, "dropped": 2, "without": 3}
    # sampling: each question asked alone after its story, the instruction attached as
    # the system message (the second question without the story has nothing to answer from)
    for turn, dialogs in enumerate(asked):
        assert all(d[0] == {"role": "system", "content": IN_CHINESE} and len(d) == 2
                   for d in dialogs)
        assert [d[1]["content"] for d in dialogs] == [gatt.alone(s, turn) for s in train[0::2]]
        for d, story in zip(dialogs, train[0::2], strict=True):
            assert d[1]["content"].startswith(story.text)
            assert d[1]["content"].endswith(gatt.questions(story)[turn].split("\n")[-1])
    (ids, labels), *plain = samples
    text = tokenizer.decode(ids)
    assert text.count(IN_CHINESE) == 1 and text.index(IN_CHINESE) < text.index("狐狸")
    learned = [t for t, y in zip(ids, labels, strict=True) if y != IGNORE]
    assert learned == tokenizer.encode("乌龟 ", eos=True)
    assert labels[:len(ids) - len(learned)] == [IGNORE] * (len(ids) - len(learned))
    for (ids, labels), story in zip(plain, train[1::2], strict=True):
        assert IN_CHINESE not in tokenizer.decode(ids)
        learned = [t for t, y in zip(ids, labels, strict=True) if y != IGNORE]
        assert tokenizer.decode(learned).strip() == gatt.english_answers(story)[1]


def test_adherence_counts_chinese_answers_turn_by_turn(tokenizer, monkeypatch):
    heldout = gatt.stories(4, "heldout")
    calls = []

    def fake_answer(model, tok, dialogs):
        calls.append(dialogs)
        return ["狐狸", "狐狸", "Fox", "狐狸"] if len(calls) == 1 else ["猫", "Cat", "x", "y"]

    monkeypatch.setattr(gatt, "answer", fake_answer)
    assert gatt.adherence(None, tokenizer, heldout) == [0.75, 0.25]
    # the second turn carries the model's own first answer
    assert [d[2]["content"] for d in calls[1]] == ["狐狸", "狐狸", "Fox", "狐狸"]
    calls.clear()
    gatt.adherence(None, tokenizer, heldout, instruction=None)
    assert all(d[0]["role"] == "user" for d in calls[0] + calls[1])


def test_fine_tune_trains_lora_adapters_only(tokenizer):
    torch.manual_seed(0)
    model = Llama(LlamaConfig(dim=32, n_layers=1, n_heads=2, n_kv_heads=1, vocab_size=4096,
                              max_seq_len=256))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    samples = [([1, 5, 6, 7, 8], [IGNORE, IGNORE, IGNORE, 7, 8]), ([1, 9, 10], [IGNORE, 10, 11])]
    config = TuneConfig(steps=3, batch_size=2, warmup=1, lora=True, lr=1e-2)
    policy, history = gatt.fine_tune(model, samples, config)
    assert len(history["loss"]) == 3 and all(torch.isfinite(torch.tensor(history["loss"])))
    assert any(isinstance(m, LoRALinear) for m in policy.modules())
    base = {k: v for k, v in policy.state_dict().items() if "lora" not in k}
    assert len(base) == len(before)
    for name, value in base.items():                 # the base weights did not move
        original = name.replace(".base.", ".")
        assert torch.equal(value, before[original]), name
