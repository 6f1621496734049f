"""Softmax from its parts, and online softmax (lesson 08).

With m = max(x) and l = sum(exp(x - m)) for each part of a row, the whole row has
    m = max(m1, m2),   l = exp(m1 - m) l1 + exp(m2 - m) l2,
so one pass over blocks keeps a running max m and a running sum l, rescaling l by
exp(m_old - m_new) <= 1 whenever the max grows (Milakov & Gimelshein 2018, "Online normalizer
calculation for softmax"). `online_step` does the same for attention, carrying the
unnormalised output acc = sum_j exp(s_j - m) v_j along with m and l.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["merge_softmax_stats", "online_softmax", "online_step", "softmax_stats"]


def softmax_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """The two numbers softmax needs per row: m = max(x), l = sum(exp(x - m)).   (...,)

    A row of only -inf (all masked) gives m = -inf, l = 0.
    """
    m = x.amax(-1)
    return m, torch.exp(x - _finite(m)[..., None]).sum(-1)


def _finite(m: Tensor) -> Tensor:
    """m with -inf replaced by 0, to subtract safely (-inf - -inf would be NaN)."""
    return torch.where(torch.isinf(m), torch.zeros_like(m), m)


def merge_softmax_stats(m1: Tensor, l1: Tensor, m2: Tensor, l2: Tensor) -> tuple[Tensor, Tensor]:
    """(m, l) of a concatenation [x1, x2] from the (m, l) of each part.

    m = max(m1, m2); l = exp(m1 - m) l1 + exp(m2 - m) l2. Each exponent is <= 0, so nothing
    overflows; a part with m = -inf (nothing seen yet) contributes 0.
    """
    m = torch.maximum(m1, m2)
    return m, torch.exp(m1 - _finite(m)) * l1 + torch.exp(m2 - _finite(m)) * l2


def online_softmax(x: Tensor, dim: int = -1, block_size: int = 1) -> Tensor:
    """Softmax along `dim` with one pass for the statistics over blocks of `block_size`.

    Pass 1 keeps the running max m and running sum l (rescaled when m grows);
    pass 2 writes exp(x - m) / l. Equal to `torch.softmax(x, dim)`.
    """
    if block_size < 1:
        raise ValueError(f"block_size must be at least 1, got {block_size}")
    if not x.is_floating_point():
        raise TypeError(f"online_softmax needs a floating-point tensor, got {x.dtype}")
    x = x.movedim(dim, -1)                                         # (..., n)
    m = torch.full(x.shape[:-1], float("-inf"), dtype=x.dtype, device=x.device)
    l = torch.zeros_like(m)
    for start in range(0, x.shape[-1], block_size):
        m, l = merge_softmax_stats(m, l, *softmax_stats(x[..., start:start + block_size]))
    return (torch.exp(x - m[..., None]) / l[..., None]).movedim(-1, dim)


def online_step(m: Tensor, l: Tensor, acc: Tensor, scores: Tensor,
                v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """One key/value block of flash attention: fold `scores` and `v` into (m, l, acc).

    m, l: (..., rows); acc: (..., rows, d) = sum_j exp(s_j - m) v_j, not yet divided by l;
    scores: (..., rows, block); v: (..., block, d). The old l and acc were summed under the
    old max, so both shrink by alpha = exp(m_old - m_new) <= 1 before the new block is added.
    """
    m_new = torch.maximum(m, scores.amax(-1))                      # (..., rows)
    m_safe = _finite(m_new)
    alpha = torch.exp(m - m_safe)                                  # (..., rows)
    p = torch.exp(scores - m_safe[..., None])                      # (..., rows, block)
    return m_new, alpha * l + p.sum(-1), alpha[..., None] * acc + p @ v
