"""Corpora that need no network, and batching (lesson 10).

`pydoc_text()` is the English prose that ships with Python (about 465 KB, the help texts
of `pydoc_data.topics`). `byte_tokens` turns text into UTF-8 byte ids (a 256-token
vocabulary, enough for the quick experiments of lessons 02-04).
"""

from __future__ import annotations

import torch
from torch import Tensor


def pydoc_text() -> str:
    """Python's own help topics as one English text, in a fixed order."""
    from pydoc_data.topics import topics

    return "\n\n".join(topics[key] for key in sorted(topics))


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
