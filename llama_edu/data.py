"""Corpora that need no network, and batching (lesson 10).

Three sources of text, none downloaded:

- `pydoc_text()`: the English prose that ships with Python (about 465 KB, the help texts
  of `pydoc_data.topics`);
- `story_text(n_stories, seed)`: short English stories from the seeded generator in
  `llama_edu.stories` (varied characters, places, plots and numbers);
- `story_text_zh(n_stories, seed)`: short Chinese stories from a grammar of their own
  (`llama_edu.stories_zh`);
- `read_text_file(path)`: any UTF-8 text file a learner brings.

`course_text()` is the bilingual course corpus: the help texts, then English and Chinese
stories shuffled together, about a third of its characters Chinese. The course tokenizer
(`llama_edu.tokenizer`) is fitted on it and the shipped model trained on it;
`held_out_stories(language)` draws stories from a seed that training never used.
`encode_text` turns text into one token stream, and `TokenDataset` holds that stream split
into training and validation parts, sampled as random windows.
`byte_tokens` (256 byte ids) serves the quick experiments of lessons 02-04.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import torch
from torch import Tensor

from .stories import story_text
from .stories_zh import story_text_zh

HELD_OUT_SEED = 20_231_118  # no training corpus uses it: stories the model has never seen

# ---------------------------------------------------------------------------------------
# Python's own documentation


def pydoc_text() -> str:
    """Python's own help topics as one English text, in a fixed order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


def course_text(n_stories: int = 3000, n_stories_zh: int = 5500, seed: int = 0) -> str:
    """The course corpus: Python's help topics, then English and Chinese stories shuffled
    together (with the defaults, a third of its characters are Chinese)."""
    stories = story_text(n_stories, seed).split("\n\n")
    if n_stories_zh:
        stories += story_text_zh(n_stories_zh, seed).split("\n\n")
    random.Random(seed).shuffle(stories)
    return pydoc_text() + "\n\n" + "\n\n".join(stories)


def held_out_stories(language: str, n_stories: int = 200) -> str:
    """Stories from HELD_OUT_SEED, in "en" or "zh": for validation the model never saw."""
    makers = {"en": story_text, "zh": story_text_zh}
    if language not in makers:
        raise ValueError(f"language must be 'en' or 'zh', got {language!r}")
    return makers[language](n_stories, HELD_OUT_SEED)


def cjk_share(text: str) -> float:
    """The share of characters in `text` that are CJK ideographs or CJK punctuation."""
    cjk = sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff" or "\u3000" <= ch <= "\u303f"
              or "\uff00" <= ch <= "\uffef")
    return cjk / max(len(text), 1)


def read_text_file(path: str | os.PathLike) -> str:
    """A UTF-8 text file, with a clear error for a missing file or other bytes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no text file at {str(path)!r}; check the path")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"{str(path)!r} is not UTF-8 text (byte {error.start} cannot be "
                         "decoded); convert it to UTF-8 first") from None
    if not text.strip():
        raise ValueError(f"{str(path)!r} is empty; give a file with some text")
    return text


def load_corpus(source: str = "course") -> str:
    """'course', 'pydoc', 'stories', 'stories-zh', or the path of a UTF-8 text file."""
    if source == "course":
        return course_text()
    if source == "pydoc":
        return pydoc_text()
    if source == "stories":
        return story_text()
    if source == "stories-zh":
        return story_text_zh()
    return read_text_file(source)


def encode_text(tokenizer, text: str) -> Tensor:
    """The text as one token stream, BOS before every paragraph (blank-line separated,
    as Llama marks the start of each document).   -> (n_tokens,) int64"""
    ids: list[int] = []
    for paragraph in text.split("\n\n"):
        if paragraph.strip():
            ids += tokenizer.encode(paragraph, bos=True)
    return torch.tensor(ids, dtype=torch.long)


# ---------------------------------------------------------------------------------------
# Byte tokens and batching


def byte_tokens(text: str) -> Tensor:
    """UTF-8 bytes of the text as ids in [0, 256).   -> (n_bytes,) int64"""
    return torch.tensor(list(text.encode("utf-8")), dtype=torch.long)


def random_batch(tokens: Tensor, batch_size: int, seq_len: int,
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Random windows of seq_len + 1 tokens: inputs and next-token targets.

    -> x, y each (batch_size, seq_len), y[:, t] = x[:, t + 1] in the original stream
    """
    if tokens.dim() != 1:
        raise ValueError(f"tokens must be a 1-D stream, got shape {tuple(tokens.shape)}")
    if len(tokens) < seq_len + 2:
        raise ValueError(f"the stream has {len(tokens)} tokens, too few for windows of "
                         f"seq_len={seq_len}; use a shorter seq_len or more text")
    starts = torch.randint(0, len(tokens) - seq_len - 1, (batch_size,), generator=generator)
    windows = torch.stack([tokens[s:s + seq_len + 1] for s in starts.tolist()])
    return windows[:, :-1], windows[:, 1:]


class TokenDataset:
    """A token stream split into a training part and a validation part.

    `from_text` holds out every k-th paragraph (k = 1 / val_fraction), so the validation
    text comes from every source in the corpus and no window straddles the two parts.
    """

    def __init__(self, train: Tensor, val: Tensor):
        self.train = self._stream(train, "train")
        self.val = self._stream(val, "val")

    @staticmethod
    def _stream(tokens, name: str) -> Tensor:
        tokens = torch.as_tensor(tokens, dtype=torch.long)
        if tokens.dim() != 1:
            raise ValueError(f"{name} tokens must be a 1-D stream, got shape "
                             f"{tuple(tokens.shape)}")
        return tokens

    @classmethod
    def from_text(cls, text: str, tokenizer, val_fraction: float = 0.05) -> TokenDataset:
        if not 0.0 < val_fraction < 1.0:
            raise ValueError(f"val_fraction must lie strictly between 0 and 1, got "
                             f"{val_fraction}")
        paragraphs = [p for p in text.split("\n\n") if p.strip()]
        every = max(2, round(1 / val_fraction))
        if len(paragraphs) < every:          # too few paragraphs: hold out the end instead
            tokens = encode_text(tokenizer, text)
            n_val = max(1, int(len(tokens) * val_fraction))
            return cls(tokens[:-n_val], tokens[-n_val:])
        train = [p for i, p in enumerate(paragraphs) if i % every != every - 1]
        val = [p for i, p in enumerate(paragraphs) if i % every == every - 1]
        return cls(encode_text(tokenizer, "\n\n".join(train)),
                   encode_text(tokenizer, "\n\n".join(val)))

    def batch(self, split: str, batch_size: int, seq_len: int,
              generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Random windows from 'train' or 'val'.   -> x, y each (batch_size, seq_len)"""
        if split not in ("train", "val"):
            raise ValueError(f"split must be 'train' or 'val', got {split!r}")
        return random_batch(self.train if split == "train" else self.val, batch_size,
                            seq_len, generator)

    def __repr__(self) -> str:
        return f"TokenDataset(train={len(self.train):,} tokens, val={len(self.val):,} tokens)"
