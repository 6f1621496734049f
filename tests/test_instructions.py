"""The generated instruction and preference data: seeded, answerable from the prompt, the
rejected answer breaking the instruction, and held-out examples sharing nothing."""

import re

import pytest

from llama_edu.chat import encode_dialog
from llama_edu.checkpoint import load_course_model
from llama_edu.data import cjk_share
from llama_edu.instructions import IN_CHINESE, ONE_WORD, ONE_WORD_ZH, make_examples


@pytest.fixture(scope="module")
def train():
    return make_examples(600, "train")


def test_examples_are_seeded_and_mix_the_families(train):
    assert make_examples(600, "train") == train
    families = {e.family for e in train}
    assert {"story-who", "story-what", "story-who-zh", "story-where-zh", "addition",
            "addition-zh"} <= families
    chinese = sum(cjk_share(e.user) > 0.5 for e in train) / len(train)
    assert 0.25 < chinese < 0.5, chinese


def test_each_answer_is_in_the_prompt_or_follows_from_it(train):
    for e in train:
        if e.family.startswith("addition"):
            a, b = map(int, re.findall(r"\d+", e.user))
            assert e.chosen == str(a + b) and e.rejected != e.chosen
        elif e.system == IN_CHINESE:
            assert cjk_share(e.chosen) == 1 and cjk_share(e.rejected) == 0
        elif e.system in (ONE_WORD, ONE_WORD_ZH):
            assert " " not in e.chosen and e.chosen in e.user
            assert len(e.rejected) > len(e.chosen) and e.rejected_kind == "too long"
        else:
            name = e.chosen.split(" ")[0].removeprefix("住着").rstrip("。")
            assert name.split("住在")[0] in e.user
        assert e.chosen != e.rejected


def test_heldout_shares_no_story_and_no_addition_with_training(train):
    heldout = make_examples(300, "heldout")
    stories = {e.user.split("\n\n")[0] for e in train if "\n\n" in e.user}
    assert not stories & {e.user.split("\n\n")[0] for e in heldout if "\n\n" in e.user}
    sums = {e.user for e in train if e.family.startswith("addition")}
    assert not sums & {e.user for e in heldout if e.family.startswith("addition")}


def test_examples_fit_the_tiny_model_in_the_chat_format(train):
    model, tokenizer = load_course_model()
    longest = max(len(encode_dialog(tokenizer, e.dialog(e.chosen)[:-1]))
                  + len(tokenizer.encode(e.chosen)) + 2 for e in train)
    assert longest <= model.config.max_seq_len, longest


def test_bad_requests_say_what_to_fix():
    with pytest.raises(ValueError, match="split must be one of"):
        make_examples(3, "test")
    with pytest.raises(ValueError, match="at least 1"):
        make_examples(0)
