"""Tensor-parallel SwiGLU and grouped-query attention (lesson 12).

A column-parallel layer followed by a row-parallel one needs a single all-reduce: Llama's
SwiGLU (gate, up | down) and attention (q, k, v | o) each cost one all-reduce forward and
one backward (Shoeybi et al., 2019, Megatron-LM).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..attention import Attention, KVCache
from ..ffn import SwiGLU
from .collectives import copy_to_parallel
from .layers import (
    ColumnParallelLinear,
    RowParallelLinear,
    _check_divides,
    _divisors,
    _resolve,
    load_full_state_dict,
)


class TensorParallelSwiGLU(nn.Module):
    """SwiGLU with gate and up column-parallel and down row-parallel.

    Rank r computes down_r(silu(gate_r x) * up_r x): silu and the product act feature by
    feature, so the hidden slice never leaves the rank. The only communication is the sum
    of the (..., dim) partial outputs: one all-reduce forward, one backward (at the copy).
    """

    def __init__(self, dim: int, hidden_dim: int, rank: int | None = None,
                 world_size: int | None = None, device=None, dtype=None):
        super().__init__()
        rank, world_size = _resolve(rank, world_size)
        _check_divides(hidden_dim, world_size, "the FFN hidden_dim")
        common = dict(rank=rank, world_size=world_size, device=device, dtype=dtype)
        self.gate_proj = ColumnParallelLinear(dim, hidden_dim, copy_input=False, **common)
        self.up_proj = ColumnParallelLinear(dim, hidden_dim, copy_input=False, **common)
        self.down_proj = RowParallelLinear(hidden_dim, dim, **common)

    @classmethod
    def from_swiglu(cls, ffn: SwiGLU, rank: int | None = None,
                    world_size: int | None = None) -> TensorParallelSwiGLU:
        """This rank's shard of a full single-process SwiGLU."""
        if not isinstance(ffn, SwiGLU):
            raise TypeError(f"from_swiglu needs a llama_edu.ffn.SwiGLU, got "
                            f"{type(ffn).__name__}")
        weight = ffn.gate_proj.weight
        layer = cls(weight.shape[1], weight.shape[0], rank, world_size, weight.device,
                    weight.dtype)
        load_full_state_dict(layer, ffn.state_dict())
        return layer

    def forward(self, x: Tensor) -> Tensor:                # (..., dim) -> (..., dim)
        x = copy_to_parallel(x)                             # backward: one all-reduce
        hidden = F.silu(self.gate_proj(x)) * self.up_proj(x)  # (..., hidden/p), stays here
        return self.down_proj(hidden)                       # all-reduce: (..., dim)


def attention_layout(n_heads: int, n_kv_heads: int, world_size: int) -> tuple[int, int, int]:
    """How GQA heads are split: (query heads per rank, KV heads per rank, KV replicas).

    Query heads are always split: n_heads / world per rank. KV heads follow their query
    groups: split when world_size divides n_kv_heads; when world_size exceeds n_kv_heads
    (and is a multiple of it), each rank holds the one KV head its query heads share, so
    world / n_kv_heads ranks hold copies of each KV head. Splitting inside a head would cut
    the q.k dot product in pieces and need communication inside attention.
    """
    if n_heads % world_size:
        raise ValueError(f"n_heads ({n_heads}) must be divisible by the world size "
                         f"({world_size}): each rank computes n_heads / world query heads; "
                         f"use a world size in {_divisors(n_heads)}")
    if n_kv_heads % world_size == 0:
        return n_heads // world_size, n_kv_heads // world_size, 1
    if world_size % n_kv_heads == 0:
        return n_heads // world_size, 1, world_size // n_kv_heads
    fits = [d for d in _divisors(n_heads) if n_kv_heads % d == 0 or d % n_kv_heads == 0]
    raise ValueError(f"n_kv_heads ({n_kv_heads}) and the world size ({world_size}) must "
                     "divide one another: KV heads are split when the world size divides "
                     "n_kv_heads and copied when it is a multiple of it; use a world size "
                     f"in {fits}")


class TensorParallelAttention(Attention):
    """Grouped-query attention with the heads split across ranks (Megatron-LM style).

    q, k, v projections are column-parallel (each rank makes its own heads from the full
    x), attention runs head by head with no communication, and o_proj is row-parallel (its
    input is exactly the rank's heads) with one all-reduce. See `attention_layout` for the
    KV heads. The attention itself is `Attention.forward`, run on this rank's heads.
    """

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int | None = None,
                 use_sdpa: bool = True, rank: int | None = None, world_size: int | None = None,
                 device=None, dtype=None):
        # Attention's checks and head sizes; its full-size linears, made on the meta device
        # (no memory), are replaced by this rank's shards below.
        with torch.device("meta"):
            super().__init__(dim, n_heads, n_kv_heads, use_sdpa)
        rank, world_size = _resolve(rank, world_size)
        self.local_heads, self.local_kv_heads, kv_replicas = attention_layout(
            self.n_heads, self.n_kv_heads, world_size)
        q_dim, kv_dim = self.n_heads * self.head_dim, self.n_kv_heads * self.head_dim
        common = dict(rank=rank, world_size=world_size, device=device, dtype=dtype)
        self.q_proj = ColumnParallelLinear(dim, q_dim, copy_input=False, **common)
        self.k_proj = ColumnParallelLinear(dim, kv_dim, copy_input=False, replicas=kv_replicas,
                                           **common)
        self.v_proj = ColumnParallelLinear(dim, kv_dim, copy_input=False, replicas=kv_replicas,
                                           **common)
        self.o_proj = RowParallelLinear(q_dim, dim, **common)

    @classmethod
    def from_attention(cls, attn: Attention, rank: int | None = None,
                       world_size: int | None = None) -> TensorParallelAttention:
        """This rank's shard of a full single-process Attention."""
        if not isinstance(attn, Attention) or isinstance(attn, TensorParallelAttention):
            raise TypeError("from_attention needs a single-process "
                            f"llama_edu.attention.Attention, got {type(attn).__name__}")
        weight = attn.q_proj.weight
        layer = cls(weight.shape[1], attn.n_heads, attn.n_kv_heads, attn.use_sdpa, rank,
                    world_size, weight.device, weight.dtype)
        load_full_state_dict(layer, attn.state_dict())
        return layer

    def forward(self, x: Tensor, cos: Tensor | None = None, sin: Tensor | None = None,
                mask: Tensor | None = None, is_causal: bool = False,
                cache: KVCache | None = None, start_pos: int = 0) -> Tensor:
        """Same arguments as llama_edu.attention.Attention; a cache holds local KV heads."""
        if (mask is not None and mask.dim() >= 3 and mask.shape[-3] == self.n_heads
                and self.local_heads != self.n_heads):                 # per-head bias (ALiBi)
            first = self.q_proj.rank * self.local_heads                # this rank's heads
            mask = mask.narrow(-3, first, self.local_heads)
        x = copy_to_parallel(x)                                        # backward: all-reduce
        # Attention.forward on this rank's heads; o_proj (row-parallel) all-reduces
        return super().forward(x, cos, sin, mask, is_causal, cache, start_pos)   # (b, s, dim)

    def extra_repr(self) -> str:
        return (f"n_heads={self.n_heads} ({self.local_heads} here), n_kv_heads="
                f"{self.n_kv_heads} ({self.local_kv_heads} here), head_dim={self.head_dim}")
