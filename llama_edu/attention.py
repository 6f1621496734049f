"""Attention: masks, multi-head / grouped-query attention and the KV cache (lessons 05-07).

Attention(Q, K, V) = softmax(Q K^T / sqrt(d) + mask) V          (Vaswani et al., 2017)
Grouped-query attention shares each key/value head among n_heads / n_kv_heads query heads
(Ainslie et al., 2023); n_kv_heads = n_heads is multi-head, n_kv_heads = 1 multi-query.

Masks here are boolean and follow `scaled_dot_product_attention`: True = may attend.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .positions import apply_rope


def causal_mask(q_len: int, kv_len: int | None = None,
                device: torch.device | str | None = None) -> Tensor:
    """Lower-triangular mask, aligned bottom-right.   -> (q_len, kv_len) bool

    The queries are the last q_len of kv_len positions, so query i sits at position
    kv_len - q_len + i and may attend to keys 0 .. kv_len - q_len + i (this is what a
    decode step with a KV cache needs).
    """
    kv_len = q_len if kv_len is None else kv_len
    if kv_len < q_len:
        raise ValueError(f"kv_len ({kv_len}) must be at least q_len ({q_len})")
    q_pos = torch.arange(kv_len - q_len, kv_len, device=device)
    k_pos = torch.arange(kv_len, device=device)
    return k_pos[None, :] <= q_pos[:, None]


def padding_mask(attention_mask: Tensor) -> Tensor:
    """(batch, kv_len) with 1 for real tokens and 0 for padding -> (batch, 1, 1, kv_len) bool."""
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be (batch, seq) of 0/1, got shape "
                         f"{tuple(attention_mask.shape)}")
    return attention_mask.bool()[:, None, None, :]


def build_mask(q_len: int, kv_len: int, attention_mask: Tensor | None = None,
               device: torch.device | str | None = None) -> tuple[Tensor | None, bool]:
    """The mask a decoder needs: causal, combined with padding when given.

    Returns (mask, is_causal). Where plain `is_causal` is exact (no padding, no cached
    prefix) the mask is None so SDPA can use its fast causal kernels.
    """
    if attention_mask is not None:
        if attention_mask.shape[-1] != kv_len:
            raise ValueError(f"attention_mask covers {attention_mask.shape[-1]} positions but "
                             f"the keys span {kv_len} (cached + new); pass a mask for all of them")
        return causal_mask(q_len, kv_len, device) & padding_mask(attention_mask), False
    if q_len == kv_len:
        return None, q_len > 1
    if q_len == 1:
        return None, False
    return causal_mask(q_len, kv_len, device), False


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
              is_causal: bool = False) -> Tensor:
    """Scaled dot-product attention written from the formula.

    q: (batch, n_heads, q_len, head_dim); k, v: (batch, n_heads, kv_len, head_dim);
    mask: broadcastable to (batch, n_heads, q_len, kv_len); bool (True = may attend) or a
    float bias added to the scores (-inf hides a key). Rows with no visible key return
    zeros, as SDPA does, instead of NaN.   -> (batch, n_heads, q_len, head_dim)
    """
    if q.shape[-1] != k.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}")
    if is_causal:
        causal = causal_mask(q.shape[-2], k.shape[-2], q.device)
        if mask is None:
            mask = causal
        elif mask.dtype == torch.bool:
            mask = mask & causal
        else:
            mask = mask.masked_fill(~causal, float("-inf"))
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])   # (b, h, q_len, kv_len)
    if mask is not None:
        if mask.dtype == torch.bool:
            scores = scores.masked_fill(~mask, float("-inf"))
        else:                                                     # an additive bias (ALiBi)
            scores = scores + mask
    probs = torch.softmax(scores.float(), dim=-1).to(q.dtype)    # subtracts the row max inside
    if mask is not None:                                          # rows that see no key at all
        probs = probs.masked_fill(~(scores != float("-inf")).any(-1, keepdim=True), 0.0)
    return probs @ v


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """Share each KV head with n_rep query heads.

    (batch, seq, n_kv_heads, head_dim) -> (batch, seq, n_kv_heads * n_rep, head_dim)
    """
    if n_rep == 1:
        return x
    batch, seq, n_kv_heads, head_dim = x.shape
    x = x[:, :, :, None, :].expand(batch, seq, n_kv_heads, n_rep, head_dim)
    return x.reshape(batch, seq, n_kv_heads * n_rep, head_dim)


class KVCache:
    """Keys and values of one layer, preallocated for max_seq_len positions.

    k, v: (batch, max_seq_len, n_kv_heads, head_dim). `update` writes new positions and
    returns everything written so far, ready for attention.
    """

    def __init__(self, batch_size: int, max_seq_len: int, n_kv_heads: int, head_dim: int,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32):
        if min(batch_size, max_seq_len, n_kv_heads, head_dim) <= 0:
            raise ValueError("KVCache sizes must be positive, got batch_size="
                             f"{batch_size}, max_seq_len={max_seq_len}, "
                             f"n_kv_heads={n_kv_heads}, head_dim={head_dim}")
        shape = (batch_size, max_seq_len, n_kv_heads, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.max_seq_len = max_seq_len
        self.length = 0  # positions written so far

    def update(self, k: Tensor, v: Tensor, start_pos: int) -> tuple[Tensor, Tensor]:
        """Write k, v (batch, seq, n_kv_heads, head_dim) at start_pos; return positions
        0 .. start_pos + seq, each (batch, start_pos + seq, n_kv_heads, head_dim)."""
        batch, seq = k.shape[:2]
        end = start_pos + seq
        if end > self.max_seq_len:
            raise ValueError(f"KV cache overflow: writing positions {start_pos}..{end - 1} but "
                             f"the cache holds max_seq_len={self.max_seq_len}; make a larger "
                             "cache or stop generating earlier")
        if start_pos > self.length:
            raise ValueError(f"start_pos={start_pos} leaves a gap: only {self.length} positions "
                             "are cached; continue from the cache length or reset it")
        if batch > self.k.shape[0] or k.shape[2:] != self.k.shape[2:]:
            raise ValueError(f"new keys {tuple(k.shape)} do not fit the cache "
                             f"{tuple(self.k.shape)}")
        self.k[:batch, start_pos:end] = k
        self.v[:batch, start_pos:end] = v
        self.length = end
        return self.k[:batch, :end], self.v[:batch, :end]

    def reset(self) -> None:
        self.length = 0

    def memory_bytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()

    def __repr__(self) -> str:
        return (f"KVCache(shape={tuple(self.k.shape)}, dtype={self.k.dtype}, "
                f"length={self.length})")


class Attention(nn.Module):
    """Multi-head attention with grouped KV heads and RoPE on q and k."""

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int | None = None,
                 use_sdpa: bool = True):
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if dim % n_heads:
            raise ValueError(f"dim ({dim}) must be divisible by n_heads ({n_heads})")
        if n_heads % n_kv_heads:
            options = [d for d in range(1, n_heads + 1) if n_heads % d == 0]
            raise ValueError(f"n_heads ({n_heads}) must be divisible by n_kv_heads "
                             f"({n_kv_heads}); try n_kv_heads in {options}")
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.head_dim = dim // n_heads
        self.n_rep = n_heads // n_kv_heads
        self.use_sdpa = use_sdpa
        self.q_proj = nn.Linear(dim, n_heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(dim, n_kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(n_heads * self.head_dim, dim, bias=False)

    def forward(self, x: Tensor, cos: Tensor | None = None, sin: Tensor | None = None,
                mask: Tensor | None = None, is_causal: bool = False,
                cache: KVCache | None = None, start_pos: int = 0) -> Tensor:
        """x: (batch, seq, dim); cos, sin: RoPE tables for the new positions (None: no RoPE);
        mask: bool or additive, broadcastable to (batch, n_heads, seq, kv_len)."""
        batch, seq, _ = x.shape                                        # (b, s, dim)
        q = self.q_proj(x).view(batch, seq, self.n_heads, self.head_dim)
        k = self.k_proj(x).view(batch, seq, self.n_kv_heads, self.head_dim)
        v = self.v_proj(x).view(batch, seq, self.n_kv_heads, self.head_dim)
        if cos is not None:                                            # RoPE (Llama)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, start_pos)                       # (b, kv_len, n_kv, hd)
        if self.use_sdpa:
            out = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                attn_mask=mask, is_causal=is_causal, enable_gqa=self.n_rep > 1)
        else:
            k, v = repeat_kv(k, self.n_rep), repeat_kv(v, self.n_rep)  # (b, kv_len, h, hd)
            out = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                            mask, is_causal)
        out = out.transpose(1, 2).reshape(batch, seq, self.n_heads * self.head_dim)
        return self.o_proj(out)                                        # (b, s, dim)

    def extra_repr(self) -> str:
        return (f"n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}, "
                f"head_dim={self.head_dim}, sdpa={self.use_sdpa}")
