"""Instruction and preference data the course generates, for the chat lessons (13 and 14).

A 2M-parameter model cannot learn open-ended chat, but it can learn task families built
on the course corpus, in the Llama 2 chat format (`llama_edu.chat`):

- questions about a generated story, English or Chinese: who lived there, where, what
  the hero was (the story is in the prompt, so the answer is there to be found);
- two-number additions, written with digits (the tokenizer splits them one by one);
- a system prompt that changes the answer: "Answer in one word." shortens it,
  "Answer in Chinese." (for English stories) asks for the Chinese word.

Each example also carries a rejected answer for preference training (lesson 14), one that
breaks the instruction the way a model does: a wrong name or sum, a whole sentence where
one word was asked, English where Chinese was asked.

Training and held-out examples share no story (other seeds) and no addition (the pairs of
numbers are split once, by a fixed rule).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .stories import tell_story
from .stories_zh import tell_story_zh

ONE_WORD, IN_CHINESE = "Answer in one word.", "Answer in Chinese."
ONE_WORD_ZH = "用一个词回答。"
SPLITS = {"train": 0, "heldout": 1}
_NAMES = ("Mira", "Tomas", "Lena", "Oskar", "Ada", "Felix", "Nora", "Hugo")


@dataclass(frozen=True)
class Example:
    """One prompt (system, user) with its chosen and rejected answers."""

    family: str
    system: str | None
    user: str
    chosen: str
    rejected: str
    rejected_kind: str      # "wrong", "too long" or "wrong language"

    def dialog(self, answer: str | None = None) -> list[dict]:
        """The chat dialog; with `answer`, followed by the assistant's reply."""
        turns = [] if self.system is None else [{"role": "system", "content": self.system}]
        turns.append({"role": "user", "content": self.user})
        if answer is not None:
            turns.append({"role": "assistant", "content": answer})
        return turns


def _is_heldout_sum(a: int, b: int) -> bool:
    """A fixed fifth of the pairs (a, b) is held out: the split never changes."""
    return (a * 31 + b * 17) % 5 == 0


def _addition(rng: random.Random, split: str, chinese: bool) -> Example:
    while True:
        a, b = rng.randint(0, 49), rng.randint(0, 49)
        if _is_heldout_sum(a, b) == (split == "heldout"):
            break
    off = rng.choice([-10, -2, -1, 1, 2, 10])               # the slips of a bad adder
    wrong = a + b + off if a + b + off >= 0 else a + b - off
    user = f"{a}加{b}等于多少？" if chinese else f"What is {a} + {b}?"
    return Example("addition-zh" if chinese else "addition", None, user, str(a + b),
                   str(wrong), "wrong")


def _other_name(rng: random.Random, name: str) -> str:
    return rng.choice([n for n in _NAMES if n != name])


def _english_story(rng: random.Random, story_rng: random.Random) -> Example:
    story = tell_story(story_rng)
    kind = rng.choice(["who", "who-one-word", "what", "what-chinese"])
    if kind == "who":
        return Example("story-who", None, f"{story.text}\n\nWho lived in {story.place}?",
                       f"{story.hero} lived there.", f"{_other_name(rng, story.hero)} lived there.",
                       "wrong")
    if kind == "who-one-word":
        return Example("story-who", ONE_WORD, f"{story.text}\n\nWho lived in {story.place}?",
                       story.hero, f"{story.hero} lived in {story.place}.", "too long")
    if kind == "what":
        return Example("story-what", None, f"{story.text}\n\nWhat was {story.hero}?",
                       f"{story.hero} was {story.described}.",
                       f"{story.hero} was {story.place}.", "wrong")
    return Example("story-what", IN_CHINESE, f"{story.text}\n\nWhat was {story.hero}?",
                   story.kind_cn, story.kind, "wrong language")


def _chinese_story(rng: random.Random, story_rng: random.Random) -> Example:
    story = tell_story_zh(story_rng)
    kind = rng.choice(["who", "who-one-word", "where"])
    if kind == "where":
        return Example("story-where-zh", None, f"{story.text}\n\n{story.hero}住在哪里？",
                       f"{story.hero}住在{story.place}。", f"{story.hero}住在{story.thing}里。",
                       "wrong")
    question = f"{story.text}\n\n{story.place}住着谁？"
    if kind == "who":                                 # the wrong person: another surname
        other = ("李" if story.hero[0] != "李" else "王") + story.hero[1:]
        return Example("story-who-zh", None, question, f"住着{story.hero}。", f"住着{other}。",
                       "wrong")
    return Example("story-who-zh", ONE_WORD_ZH, question, story.hero,
                   f"那里住着{story.described}，名叫{story.hero}。", "too long")


def make_examples(n: int, split: str = "train", seed: int = 0) -> list[Example]:
    """`n` examples of the split, mixed over the families (about a third in Chinese)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rng = random.Random(f"instructions-{split}-{seed}")
    # stories of the two splits come from generators no corpus seed reaches
    stories_en = random.Random(f"instruction-stories-en-{split}-{seed}")
    stories_zh = random.Random(f"instruction-stories-zh-{split}-{seed}")
    examples = []
    for _ in range(n):
        family = rng.choice(["story-en", "story-en", "story-zh", "addition", "addition-zh"])
        if family == "story-en":
            examples.append(_english_story(rng, stories_en))
        elif family == "story-zh":
            examples.append(_chinese_story(rng, stories_zh))
        else:
            examples.append(_addition(rng, split, chinese=family == "addition-zh"))
    return examples
