"""Slow-memory traffic of attention: FlashAttention's IO model (lesson 08).

Elements read from and written to slow memory (GPU HBM), per (batch, head), counted as in
Dao et al. 2022 ("FlashAttention", section 3.2 and Theorem 2): standard attention moves
Theta(N d + N^2) elements, tiled attention Theta(N^2 d^2 / M) with fast memory (SRAM) of M
elements. Two loop orders are counted, with query blocks of B_r rows and key blocks of B_c:

- `flash2_io`, the order `llama_edu.flash.tiled_attention` and the Triton kernel implement
  (FlashAttention-2, Dao 2023, Algorithm 1): query blocks outside. Each Q block is read once
  and each O block written once, with its log-sum-exp L; K and V are read once per query
  block, T_r = ceil(N / B_r) times (fewer under a causal mask, whose hidden tiles are skipped).
- `flash1_io`, FlashAttention-1's order (Dao et al. 2022, Algorithm 1): key/value blocks
  outside. K and V are read once; for each of the T_c = ceil(N / B_c) key blocks every
  query row's Q, O, l and m are read and O, l, m written back.

`HIERARCHY` is the memory the paper draws for an A100 (Figure 1, left).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["HIERARCHY", "IOCost", "flash1_io", "flash2_io", "naive_io", "paper_blocks"]

# FlashAttention paper, Figure 1 (left): an A100's memory hierarchy.
HIERARCHY = {
    "HBM": {"size": "40-80 GB", "bandwidth_tb_s": (1.5, 2.0)},
    "SRAM": {"size": "192 KB per SM x 108 SMs", "bytes_per_sm": 192 * 1024, "n_sm": 108,
             "bandwidth_tb_s": (19.0, 19.0)},
}


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


def paper_blocks(sram_elements: int, head_dim: int) -> tuple[int, int]:
    """(B_r, B_c) = (min(ceil(M / 4d), d), ceil(M / 4d)): the block sizes of Algorithm 1 in
    both papers, so that a Q, K, V and O block (and the B_r x B_c scores) fit in M elements."""
    m_size, d = _positive(sram_elements=sram_elements, head_dim=head_dim)
    if m_size < 4 * d:
        raise ValueError(f"sram_elements ({m_size}) must hold at least 4 * head_dim "
                         f"({4 * d}) elements: one row each of Q, K, V and O")
    block_c = math.ceil(m_size / (4 * d))
    return min(block_c, d), block_c


def flash2_io(seq_len: int, head_dim: int, block_q: int, block_k: int,
              causal: bool = False) -> IOCost:
    """FlashAttention-2's forward, the implemented order: query blocks outside.

    Reads Q once (N d) and, for each query block, the K and V tiles it computes (2 N d per
    query block without a mask; under `causal` only tiles up to the diagonal, as
    `llama_edu.flash.tiles` walks them). Writes O once (N d) and L once (N).
    """
    n, d, bq, bk = _positive(seq_len=seq_len, head_dim=head_dim, block_q=block_q,
                             block_k=block_k)
    kv_rows = 0                                   # key rows loaded, over all query blocks
    for q_start in range(0, n, bq):
        last_row = min(q_start + bq, n) - 1
        visible = min(n, (last_row // bk + 1) * bk) if causal else n   # whole tiles
        kv_rows += visible
    return IOCost(reads=n * d + 2 * kv_rows * d, writes=n * d + n)


def flash1_io(seq_len: int, head_dim: int, block_k: int) -> IOCost:
    """FlashAttention-1's forward (Dao et al. 2022, Algorithm 1): key/value blocks outside.

    Initialise O = 0, l = 0, m = -inf in slow memory (N d + 2N writes); read each K_j, V_j
    once (2 N d); for each of the T_c = ceil(N / B_c) key blocks read Q, O, l, m of every
    row (2 N d + 2 N) and write O, l, m back (N d + 2 N). The query block size does not
    change the count: every key block passes over all N rows.
    """
    n, d, bk = _positive(seq_len=seq_len, head_dim=head_dim, block_k=block_k)
    t_c = math.ceil(n / bk)
    init = n * d + 2 * n                                           # O = 0, l = 0, m = -inf
    return IOCost(reads=2 * n * d + t_c * (2 * n * d + 2 * n),
                  writes=init + t_c * (n * d + 2 * n))


def _positive(**values: int) -> tuple[int, ...]:
    for name, value in values.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    return tuple(values.values())
