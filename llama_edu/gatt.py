"""Ghost Attention (Touvron et al., 2023, §3.3): a system instruction that holds past the
first turn, taught through the data (lesson 14).

A chat model trained on single exchanges forgets a system instruction once the dialog moves
on (the paper's Figure 9, left). GAtt builds multi-turn training dialogs in three steps:

1. sample each turn's answer with the instruction attached, so the answers follow it;
2. train on the dialog with the instruction only at the start (the system message);
3. put the loss on the last answer only; every earlier token is context.

The model then learns to follow an instruction it sees only far back. Here the dialogs are
two questions about one generated English story (`llama_edu.stories`): what the hero was,
then what the friend was, under "Answer in Chinese." (the answer is then the Chinese word
for the animal or the trade). Two turns are what the tiny model's 256 positions hold with a
story of about 150 tokens. Beside them go dialogs with no system message whose answers are
English sentences, so that the system message, and not the dialog's shape, decides the
language of the second answer.
"""

from __future__ import annotations

import random

from torch import nn

from .align import masked_lm_loss, pad_examples
from .data import cjk_share
from .finetune import _draw, _policy, answer_dialogs, encode_answer, tune
from .instructions import IN_CHINESE
from .stories import Story, tell_story

MAX_ANSWER = 12          # tokens generated per answer (the Chinese words take 2-8)


def stories(n: int, split: str = "train", seed: int = 0) -> list[Story]:
    """`n` English stories whose text names the friend's kind (three plots of seven do),
    so that "What was {friend}?" can be answered from the story. The two splits come from
    generators of their own, so they share no story with each other or with the
    instruction data."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    rng = random.Random(f"gatt-stories-{split}-{seed}")
    found = []
    while len(found) < n:
        story = tell_story(rng)
        if f" {story.friend_kind}" in story.text:
            found.append(story)
    return found


def _question(story: Story, turn: int) -> str:
    return f"What was {story.hero if turn == 0 else story.friend}?"


def questions(story: Story) -> list[str]:
    """The user's two messages: the story with a question about its hero, then a question
    about the friend."""
    return [f"{story.text}\n\n{_question(story, 0)}", _question(story, 1)]


def alone(story: Story, turn: int) -> str:
    """Question `turn` as a single exchange, after the story: the form in which GAtt
    samples each answer (the second question alone names no story to answer from)."""
    return f"{story.text}\n\n{_question(story, turn)}"


def english_answers(story: Story) -> list[str]:
    """The answers without an instruction, in the instruction data's form ("Mira was a shy
    fox.")."""
    return [f"{story.hero} was {story.described}.",
            f"{story.friend} was {story.friend_described}."]


def dialog(story: Story, answers: list[str], system: str | None = None,
           repeat: bool = False) -> list[dict]:
    """The dialog up to the user message of turn len(answers) + 1: the system message (if
    any) at the start, and with `repeat` also written before every later user message."""
    turns = [] if system is None else [{"role": "system", "content": system}]
    for turn, question in enumerate(questions(story)[:len(answers) + 1]):
        ask = f"{system}\n{question}" if repeat and system and turn else question
        turns.append({"role": "user", "content": ask})
        if turn < len(answers):
            turns.append({"role": "assistant", "content": answers[turn]})
    return turns


def answer(model, tokenizer, dialogs: list[list[dict]]) -> list[str]:
    """The model's greedy answer to each dialog's last user message (EOS dropped)."""
    return answer_dialogs(model, tokenizer, dialogs, max_new_tokens=MAX_ANSWER)


def follows(answer_text: str) -> bool:
    """Does an answer follow "Answer in Chinese."? Most of its characters are Chinese."""
    return cjk_share(answer_text) > 0.5


def training_data(model, tokenizer, train: list[Story], instruction: str = IN_CHINESE
                  ) -> tuple[list[tuple[list[int], list[int]]], dict]:
    """GAtt's training samples, (ids, labels) with the loss on the last answer only.

    Even stories: each answer sampled from `model` with the instruction attached (each
    question asked alone, after the story, under the system message: the form the model
    was trained on); dialogs whose sampled answers do not follow it are dropped; the kept
    dialog carries the instruction in its first turn only. Odd stories: no system message,
    the English answers. Returns the samples and counts {"with": kept, "dropped": n,
    "without": n}."""
    gatt, plain = train[0::2], train[1::2]
    sampled = [answer(model, tokenizer, [[{"role": "system", "content": instruction},
                                          {"role": "user", "content": alone(s, turn)}]
                                         for s in gatt])
               for turn in (0, 1)]
    kept = [(story, first, second) for story, first, second in zip(gatt, *sampled, strict=True)
            if follows(first) and follows(second)]
    samples = [encode_answer(tokenizer, dialog(story, [first], instruction), second)
               for story, first, second in kept]
    for story in plain:
        first, second = english_answers(story)
        samples.append(encode_answer(tokenizer, dialog(story, [first]), second))
    return samples, {"with": len(kept), "dropped": len(gatt) - len(kept), "without": len(plain)}


def adherence(model, tokenizer, heldout: list[Story], instruction: str | None = IN_CHINESE,
              repeat: bool = False) -> list[float]:
    """The share of answers in Chinese at each of the two turns, the model's own first
    answer carried into the second turn; `instruction` None asks with no system message."""
    firsts = answer(model, tokenizer, [dialog(s, [], instruction) for s in heldout])
    seconds = answer(model, tokenizer, [dialog(s, [a], instruction, repeat)
                                        for s, a in zip(heldout, firsts, strict=True)])
    return [sum(map(follows, texts)) / len(heldout) for texts in (firsts, seconds)]


def fine_tune(model: nn.Module, samples: list, config) -> tuple[nn.Module, dict]:
    """Fine-tune `model` in place on GAtt's samples with `finetune.tune` (LoRA adapters
    added first if config.lora), the masked next-token loss on batches drawn as `run_sft`
    draws them: (the tuned policy, its history)."""
    policy = _policy(model, config)
    device = policy.embed_tokens.weight.device

    def loss_fn(generator):
        ids, labels = pad_examples(_draw(samples, config.batch_size, generator))
        return masked_lm_loss(policy(ids.to(device)), labels.to(device))

    history = tune(policy, loss_fn, dict, lambda out, step: None, config, progress=False)
    return policy, history
