"""Position information: rotary embeddings (lesson 02).

RoPE rotates each pair of query/key features by an angle proportional to the position:
    theta_i = rope_theta ** (-2i / head_dim),   angle(m, i) = m * theta_i
so that q_m . k_n depends only on the offset m - n  (Su et al., 2021, "RoFormer").

Two equivalent layouts exist for the pairs:
- half-split (HF checkpoints): feature i pairs with feature i + head_dim/2;
- interleaved (Meta's reference code): feature 2i pairs with feature 2i + 1.
This module uses the half-split layout with precomputed cos/sin tables (real arithmetic,
so it also runs on MPS).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def rope_inv_freq(head_dim: int, rope_theta: float = 10_000.0) -> Tensor:
    """theta_i = rope_theta ** (-2i / head_dim) for i in [0, head_dim/2).   -> (head_dim // 2,)"""
    if head_dim <= 0 or head_dim % 2:
        raise ValueError(f"RoPE needs an even, positive head_dim, got {head_dim}; "
                         "pick dim and n_heads so that dim // n_heads is even")
    if rope_theta <= 0:
        raise ValueError(f"rope_theta must be positive, got {rope_theta}")
    exponents = torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim
    return 1.0 / (rope_theta ** exponents)


def rope_cos_sin(seq_len: int, head_dim: int, rope_theta: float = 10_000.0,
                 device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """cos and sin tables in the half-split layout.   -> two (seq_len, head_dim) fp32 tensors"""
    inv_freq = rope_inv_freq(head_dim, rope_theta).to(device)
    positions = torch.arange(seq_len, device=device, dtype=torch.int64).float()
    angles = torch.outer(positions, inv_freq)              # (seq_len, head_dim/2)
    angles = torch.cat([angles, angles], dim=-1)           # (seq_len, head_dim)
    return angles.cos(), angles.sin()


def rotate_half(x: Tensor) -> Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate x by the angles in cos/sin (half-split layout).

    x: (batch, seq, n_heads, head_dim); cos, sin: (seq, head_dim) or (batch, seq, head_dim).
    """
    if x.shape[-1] != cos.shape[-1]:
        raise ValueError(f"x has head_dim {x.shape[-1]} but the RoPE table has {cos.shape[-1]}")
    cos = cos.unsqueeze(-2).to(x.dtype)                    # (..., seq, 1, head_dim)
    sin = sin.unsqueeze(-2).to(x.dtype)
    return x * cos + rotate_half(x) * sin


class RotaryEmbedding(nn.Module):
    """RoPE tables for positions 0 .. max_seq_len-1, computed once per device.

    The tables are not buffers: they are derived from the config, never saved in a
    checkpoint, and stay valid when a model is built on the meta device.
    """

    def __init__(self, head_dim: int, max_seq_len: int, rope_theta: float = 10_000.0):
        super().__init__()
        rope_inv_freq(head_dim, rope_theta)  # validates head_dim and rope_theta now
        self.head_dim, self.max_seq_len, self.rope_theta = head_dim, max_seq_len, rope_theta
        self._tables: dict[torch.device, tuple[Tensor, Tensor]] = {}

    def tables(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """cos, sin for every position.   -> two (max_seq_len, head_dim) fp32 tensors"""
        if device not in self._tables:
            self._tables[device] = rope_cos_sin(self.max_seq_len, self.head_dim,
                                                self.rope_theta, device=device)
        return self._tables[device]

    def forward(self, position_ids: Tensor) -> tuple[Tensor, Tensor]:
        """position_ids: (seq,) or (batch, seq) integers -> cos, sin of shape (..., head_dim)."""
        if position_ids.numel() and int(position_ids.max()) >= self.max_seq_len:
            raise ValueError(
                f"position {int(position_ids.max())} is beyond the RoPE table of "
                f"max_seq_len={self.max_seq_len}; raise max_seq_len in the config")
        cos, sin = self.tables(position_ids.device)
        return cos[position_ids], sin[position_ids]

    def extra_repr(self) -> str:
        return (f"head_dim={self.head_dim}, max_seq_len={self.max_seq_len}, "
                f"theta={self.rope_theta:g}")


def sinusoidal(seq_len: int, dim: int, base: float = 10_000.0) -> Tensor:
    """Absolute encodings of the original Transformer (Vaswani et al., 2017).

    PE[pos, 2i] = sin(pos / base^(2i/dim)),  PE[pos, 2i+1] = cos(pos / base^(2i/dim)).
    -> (seq_len, dim)
    """
    if dim <= 0 or dim % 2:
        raise ValueError(f"sinusoidal encodings need an even, positive dim, got {dim}")
    if seq_len < 0:
        raise ValueError(f"seq_len must be non-negative, got {seq_len}")
    inv_freq = rope_inv_freq(dim, base)                       # (dim/2,)
    angles = torch.outer(torch.arange(seq_len).float(), inv_freq)
    encoding = torch.empty(seq_len, dim)
    encoding[:, 0::2] = angles.sin()
    encoding[:, 1::2] = angles.cos()
    return encoding


def alibi_slopes(n_heads: int) -> Tensor:
    """Per-head ALiBi slopes (Press et al., 2022).

    For n heads a power of two: 2^(-8/n), 2^(-16/n), ..., 2^(-8). Otherwise the slopes of
    the nearest lower power of two, then every other slope of the next power of two.
    -> (n_heads,)
    """
    if n_heads <= 0:
        raise ValueError(f"n_heads must be positive, got {n_heads}")

    def power_of_two_slopes(n: int) -> list[float]:
        return [2.0 ** (-8.0 * (i + 1) / n) for i in range(n)]

    closest = 2 ** (n_heads.bit_length() - 1)
    slopes = power_of_two_slopes(closest)
    if closest < n_heads:
        slopes += power_of_two_slopes(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes)


def alibi_bias(slopes: Tensor, q_positions: Tensor, k_positions: Tensor) -> Tensor:
    """Linear distance penalty: bias[h, i, j] = -slope_h * (q_i - k_j).

    Only keys at or before the query matter (the causal mask hides the rest).
    slopes (n_heads,), q_positions (q_len,), k_positions (kv_len,) -> (n_heads, q_len, kv_len)
    """
    distance = (q_positions[:, None] - k_positions[None, :]).to(slopes.dtype)
    return -slopes[:, None, None] * distance
