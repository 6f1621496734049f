"""Slow-memory traffic of attention: FlashAttention's IO model (lesson 08).

Elements read from and written to slow memory (GPU HBM), per (batch, head), counted as in
Dao et al. 2022, section 3.2 and Theorem 2: standard attention moves Theta(N d + N^2)
elements, FlashAttention Theta(N^2 d^2 / M) with fast memory (SRAM) of M elements.
`tiled_io` counts the paper's Algorithm 1, the loop order of FlashAttention-1: key/value
blocks outside, with Q, O, l and m read and written back once per key block.
`llama_edu.flash.tiled_attention` and the Triton kernel take FlashAttention-2's order
instead (Dao 2023): query blocks outside, so each Q block is read and each O block written
once, not once per key block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["IOCost", "naive_io", "tiled_io"]


@dataclass(frozen=True)
class IOCost:
    """Elements read from and written to slow memory (GPU HBM)."""

    reads: int
    writes: int

    @property
    def total(self) -> int:
        return self.reads + self.writes

    def bytes(self, element_size: int = 2) -> int:
        return self.total * element_size


def naive_io(seq_len: int, head_dim: int) -> IOCost:
    """Standard attention (the paper's Algorithm 0): Theta(N d + N^2) accesses.

    S = Q K^T: read Q, K (2Nd), write S (N^2); P = softmax(S): read S, write P (2 N^2);
    O = P V: read P and V (N^2 + Nd), write O (Nd).
    """
    n, d = _positive(seq_len=seq_len, head_dim=head_dim)
    return IOCost(reads=3 * n * d + 2 * n * n, writes=n * d + 2 * n * n)


def tiled_io(seq_len: int, head_dim: int, sram_elements: int) -> IOCost:
    """FlashAttention-1's forward (the paper's Algorithm 1): Theta(N^2 d^2 / M) accesses.

    Fast memory holds M elements; key blocks have B_c = ceil(M / 4d) rows, query blocks
    B_r = min(B_c, d). The outer loop reads each K_j, V_j once (2Nd in all); for each of the
    T_c = ceil(N / B_c) key blocks the inner loop reads Q, O, l, m and writes O, l, m back.
    """
    n, d, m_size = _positive(seq_len=seq_len, head_dim=head_dim, sram_elements=sram_elements)
    if m_size < 4 * d:
        raise ValueError(f"sram_elements ({m_size}) must hold at least 4 * head_dim "
                         f"({4 * d}) elements: one row each of Q, K, V and O")
    block_c = math.ceil(m_size / (4 * d))
    t_c = math.ceil(n / block_c)
    init = n * d + 2 * n                                           # O = 0, l = 0, m = -inf
    return IOCost(reads=2 * n * d + t_c * (2 * n * d + 2 * n),
                  writes=init + t_c * (n * d + 2 * n))


def _positive(**values: int) -> tuple[int, ...]:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    return tuple(values.values())
