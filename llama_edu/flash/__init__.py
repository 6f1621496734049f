"""Flash attention (lesson 08), one idea per module, in the lesson's order:

- `softmax`: softmax from its parts, online softmax, and its rescaling step `online_step`;
- `tiled`: tiled attention in FlashAttention-2's loop order (Dao 2023): the one tile walk
  `tiles`, the forward, the backward by recomputation, and a step-through for plots;
- `io_model`: slow-memory reads and writes as the FlashAttention paper counts them, for
  FlashAttention-2's loop order (the one implemented here) and FlashAttention-1's;
- `triton`: the same forward (returning the log-sum-exp) and its backward as Triton
  kernels, loaded by `triton_kernels()` (through Triton's CPU interpreter when there is no
  CUDA GPU).

Memory is measured with `llama_edu.profiling.peak_memory`.
"""

from .io_model import HIERARCHY, IOCost, flash1_io, flash2_io, naive_io, paper_blocks
from .softmax import merge_softmax_stats, online_softmax, online_step, softmax_stats
from .tiled import (
    Tile,
    TiledAttentionFunction,
    TileState,
    block_kind,
    tiled_attention,
    tiled_attention_steps,
    tiles,
)
from .triton import triton_available, triton_kernels

__all__ = [
    "HIERARCHY", "IOCost", "Tile", "TileState", "TiledAttentionFunction", "block_kind",
    "flash1_io", "flash2_io", "merge_softmax_stats", "naive_io", "online_softmax",
    "online_step", "paper_blocks", "softmax_stats", "tiled_attention",
    "tiled_attention_steps", "tiles", "triton_available", "triton_kernels",
]
