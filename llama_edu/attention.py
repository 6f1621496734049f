"""Attention: masks, multi-head / grouped-query attention and the KV cache (lessons 05-07).

Attention(Q, K, V) = softmax(Q K^T / sqrt(d) + mask) V          (Vaswani et al., 2017)
Grouped-query attention shares each key/value head among n_heads / n_kv_heads query heads
(Ainslie et al., 2023); n_kv_heads = n_heads is multi-head, n_kv_heads = 1 multi-query
(Shazeer, 2019). The KV cache keeps the keys and values of earlier positions so that a
decode step only computes the new token's: it trades memory (it costs
`model.kv_cache_bytes_per_token` per token and sequence) for compute, and its logits equal
the uncached ones up to the dtype's rounding, not bit for bit.

Masks here are boolean and follow `scaled_dot_product_attention`: True = may attend. A
float mask is an additive bias (0 keeps a key, -inf hides it; ALiBi adds its slopes).
"""

from __future__ import annotations

import dataclasses
import inspect
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .positions import apply_rope

# ---------------------------------------------------------------------------------------
# Masks (lesson 05)


def causal_mask(q_len: int, kv_len: int | None = None,
                device: torch.device | str | None = None) -> Tensor:
    """Lower-triangular mask, aligned bottom-right.   -> (q_len, kv_len) bool

    The queries are the last q_len of kv_len positions, so query i sits at position
    kv_len - q_len + i and may attend to keys 0 .. kv_len - q_len + i (this is what a
    decode step with a KV cache needs). For q_len = kv_len it is torch.tril.
    """
    kv_len = q_len if kv_len is None else kv_len
    if q_len < 0 or kv_len < q_len:
        raise ValueError(f"need 0 <= q_len <= kv_len, got q_len={q_len}, kv_len={kv_len}: "
                         "the queries are the last q_len of the kv_len positions")
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
    prefix) the mask is None so SDPA can use its fast causal kernels. The mask is
    (q_len, kv_len) or, with padding, (batch, 1, q_len, kv_len).
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


def _with_causal(mask: Tensor | None, q_len: int, kv_len: int, device) -> Tensor:
    """`mask` restricted to the causal pattern (bool stays bool, a float bias gets -inf)."""
    causal = causal_mask(q_len, kv_len, device)
    if mask is None:
        return causal
    if mask.dtype == torch.bool:
        return mask & causal
    return mask.masked_fill(~causal, float("-inf"))


# ---------------------------------------------------------------------------------------
# Attention from the formula (lesson 05)


def masked_softmax(scores: Tensor, mask: Tensor | None = None) -> Tensor:
    """softmax over the last dimension, with masked keys at weight 0.   -> scores' shape

    p_j = exp(s_j - m) / sum_k exp(s_k - m),  m = max_k s_k. Subtracting the row max m
    changes nothing mathematically but keeps exp() from overflowing (exp(89) is already
    inf in fp32). mask: bool (True = keep) or an additive float bias. A row whose keys
    are all masked returns zeros, not 0/0 = NaN.
    """
    scores = scores.float()
    if mask is not None:
        scores = (scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool
                  else scores + mask)
    row_max = scores.amax(dim=-1, keepdim=True)
    row_max = torch.where(torch.isfinite(row_max), row_max, torch.zeros_like(row_max))
    weights = torch.exp(scores - row_max)                # masked: exp(-inf) = 0
    total = weights.sum(dim=-1, keepdim=True)
    return torch.where(total > 0, weights / total.clamp_min(1e-38), torch.zeros_like(weights))


def attention_probs(q: Tensor, k: Tensor, mask: Tensor | None = None,
                    is_causal: bool = False) -> Tensor:
    """The attention weights softmax(q k^T / sqrt(d) + mask).

    q: (batch, n_heads, q_len, head_dim); k: (batch, n_heads, kv_len, head_dim).
    -> (batch, n_heads, q_len, kv_len) fp32, each visible row sums to 1.
    """
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k need the same head_dim, got q {tuple(q.shape)} and "
                         f"k {tuple(k.shape)}")
    if is_causal:
        mask = _with_causal(mask, q.shape[-2], k.shape[-2], q.device)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])   # (b, h, q_len, kv_len)
    return masked_softmax(scores, mask)


def attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
              is_causal: bool = False) -> Tensor:
    """Scaled dot-product attention written from the formula.

    q: (batch, n_heads, q_len, head_dim); k, v: (batch, n_heads, kv_len, head_dim);
    mask: broadcastable to (batch, n_heads, q_len, kv_len); bool (True = may attend) or a
    float bias added to the scores (-inf hides a key). Rows with no visible key return
    zeros, as SDPA does, instead of NaN.   -> (batch, n_heads, q_len, head_dim)

    `is_causal` uses the bottom-right causal mask (see `causal_mask`). SDPA's `is_causal`
    is top-left aligned: the two agree when q_len = kv_len, the only case where the model
    passes is_causal=True.
    """
    if k.shape[-2] != v.shape[-2] or k.shape[:-2] != v.shape[:-2]:
        raise ValueError(f"k and v must hold the same positions, got k {tuple(k.shape)} and "
                         f"v {tuple(v.shape)}")
    probs = attention_probs(q, k, mask, is_causal)                # (b, h, q_len, kv_len)
    return probs.to(v.dtype) @ v                                  # (b, h, q_len, head_dim)


def sdpa(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None,
         is_causal: bool = False) -> Tensor:
    """The fast path: `F.scaled_dot_product_attention`, given the grouped K/V as they are.

    q: (batch, n_heads, q_len, head_dim); k, v: (batch, n_kv_heads, kv_len, head_dim)
    with n_kv_heads dividing n_heads.   -> (batch, n_heads, q_len, head_dim)

    `enable_gqa` spares the caller a repeat_kv; it does not promise that no copy is made.
    torch's docstring documents GQA only for the flash and math kernels on CUDA tensors,
    and its math kernel repeat_interleaves K and V first, copies included (on the CPU as
    well). With torch 2.13 on the CPU, SDPA's default CPU flash kernel reads each shared
    head in place instead (lesson 07 counts the bytes each kernel allocates). Which kernel
    runs is SDPA's choice (device, dtype, mask).
    """
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                          enable_gqa=q.shape[1] > k.shape[1])


# ---------------------------------------------------------------------------------------
# Grouped-query attention (lesson 07)


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """Share each KV head with n_rep query heads: query head h reads KV head h // n_rep.

    (batch, seq, n_kv_heads, head_dim) -> (batch, seq, n_kv_heads * n_rep, head_dim)
    The same as torch.repeat_interleave(x, n_rep, dim=2).
    """
    if x.dim() != 4:
        raise ValueError(f"repeat_kv expects (batch, seq, n_kv_heads, head_dim), got shape "
                         f"{tuple(x.shape)}")
    if not isinstance(n_rep, int) or n_rep < 1:
        raise ValueError(f"n_rep must be a positive integer (n_heads // n_kv_heads), got "
                         f"{n_rep!r}")
    if n_rep == 1:
        return x
    batch, seq, n_kv_heads, head_dim = x.shape
    x = x[:, :, :, None, :].expand(batch, seq, n_kv_heads, n_rep, head_dim)
    return x.reshape(batch, seq, n_kv_heads * n_rep, head_dim)


def mean_pool_kv_heads(weight: Tensor, n_heads: int, n_kv_heads: int) -> Tensor:
    """Average the key (or value) projection heads within each group (Ainslie et al., 2023).

    weight: (n_heads * head_dim, dim), the rows of head h at h * head_dim.
    -> (n_kv_heads * head_dim, dim); group g pools heads g * n_rep .. (g + 1) * n_rep - 1,
    the same query heads that `repeat_kv` later hands group g's KV head to.
    """
    if n_kv_heads < 1 or n_heads % n_kv_heads:
        raise ValueError(f"n_kv_heads ({n_kv_heads}) must divide n_heads ({n_heads})")
    if weight.shape[0] % n_heads:
        raise ValueError(f"weight has {weight.shape[0]} rows, not a multiple of n_heads "
                         f"({n_heads}); pass the k_proj or v_proj weight of an MHA layer")
    head_dim = weight.shape[0] // n_heads
    grouped = weight.reshape(n_kv_heads, n_heads // n_kv_heads, head_dim, *weight.shape[1:])
    return grouped.mean(dim=1).reshape(n_kv_heads * head_dim, *weight.shape[1:])


def convert_to_gqa(model: nn.Module, n_kv_heads: int, method: str = "mean") -> nn.Module:
    """A copy of a Llama with fewer KV heads, built from its checkpoint.

    method "mean": each new K/V head is the mean of its group's heads (the GQA paper's
    choice, which then uptrains for ~5% of the original steps); "first": keep the first
    head of each group (the paper's weaker baseline). Works from any n_kv_heads that
    n_kv_heads divides, e.g. MHA -> GQA or GQA -> MQA.
    """
    if method not in ("mean", "first"):
        raise ValueError(f"method must be 'mean' or 'first', got {method!r}")
    config = model.config
    if config.n_kv_heads % n_kv_heads:
        raise ValueError(f"n_kv_heads ({n_kv_heads}) must divide the model's "
                         f"n_kv_heads ({config.n_kv_heads})")
    new = type(model)(dataclasses.replace(config, n_kv_heads=n_kv_heads))
    new.to(device=model.lm_head.weight.device, dtype=model.lm_head.weight.dtype)
    state = {}
    for name, tensor in model.state_dict().items():
        if name.endswith(("self_attn.k_proj.weight", "self_attn.v_proj.weight")):
            if method == "mean":
                tensor = mean_pool_kv_heads(tensor, config.n_kv_heads, n_kv_heads)
            else:
                step = config.n_kv_heads // n_kv_heads
                tensor = tensor.reshape(config.n_kv_heads, -1, tensor.shape[-1])[::step]
                tensor = tensor.reshape(-1, tensor.shape[-1])
        state[name] = tensor
    new.load_state_dict(state)
    return new.train(model.training)


# ---------------------------------------------------------------------------------------
# The KV cache (lesson 06)


class KVCache:
    """Keys and values of one layer, preallocated for max_seq_len positions.

    k, v: (batch, max_seq_len, n_kv_heads, head_dim). `update` writes new positions and
    returns everything written so far, ready for attention. One prefill of many tokens
    and then decode steps of one or more tokens each.

    What it costs and what it changes (lesson 06, correcting a source note that says it
    "greatly reduces memory pressure" and "does not affect precision"): it holds
    2 x batch x max_seq_len x n_kv_heads x head_dim values per layer, memory a run without a
    cache never needs; it saves the compute of recomputing past keys and values. A decode
    step sums in other shapes and orders than a full pass, so cached and uncached logits
    agree to rounding (about 1e-6 in fp32, bf16's bound in bf16), not exactly; near-tied
    greedy tokens may then differ (see `numerics.compare_greedy`).
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
        0 .. start_pos + seq, each (batch, start_pos + seq, n_kv_heads, head_dim).

        start_pos may go back (to overwrite a draft); positions after the write are then
        forgotten (length becomes start_pos + seq).
        """
        if k.shape != v.shape:
            raise ValueError(f"k {tuple(k.shape)} and v {tuple(v.shape)} must have one shape")
        batch, seq = k.shape[:2]
        end = start_pos + seq
        if end > self.max_seq_len:
            raise ValueError(f"KV cache overflow: writing positions {start_pos}..{end - 1} but "
                             f"the cache holds max_seq_len={self.max_seq_len}; make a larger "
                             "cache or stop generating earlier")
        if start_pos < 0:
            raise ValueError(f"start_pos must be non-negative, got {start_pos}")
        if start_pos > self.length:
            raise ValueError(f"start_pos={start_pos} leaves a gap: only {self.length} positions "
                             "are cached; continue from the cache length or reset it")
        if k.dim() != 4 or batch > self.k.shape[0] or k.shape[2:] != self.k.shape[2:]:
            raise ValueError(f"new keys {tuple(k.shape)} do not fit the cache "
                             f"{tuple(self.k.shape)} (batch, max_seq_len, n_kv_heads, head_dim)")
        self.k[:batch, start_pos:end] = k
        self.v[:batch, start_pos:end] = v
        self.length = end
        return self.k[:batch, :end], self.v[:batch, :end]

    def reset(self) -> None:
        """Forget every position (the memory stays allocated for the next sequence)."""
        self.length = 0

    def memory_bytes(self, used: bool = False) -> int:
        """Bytes held by k and v: all preallocated ones, or (used=True) those written."""
        positions = self.length if used else self.max_seq_len
        return 2 * self.k[:, :positions].numel() * self.k.element_size()

    def __repr__(self) -> str:
        return (f"KVCache(shape={tuple(self.k.shape)}, dtype={self.k.dtype}, "
                f"length={self.length})")


# ---------------------------------------------------------------------------------------
# The attention layer


class Attention(nn.Module):
    """Multi-head attention with grouped KV heads and RoPE on q and k.

    n_kv_heads = n_heads: MHA;  1: MQA;  in between: GQA. `use_sdpa` picks the fused
    kernel; otherwise `repeat_kv` + `attention` (the lesson's formula) run, and the tests
    hold the two equal. `llama_edu.parallel.TensorParallelAttention` runs this same forward
    on a rank's share of the heads.
    """

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int | None = None,
                 use_sdpa: bool = True):
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if dim % n_heads:
            raise ValueError(f"dim ({dim}) must be divisible by n_heads ({n_heads})")
        if n_kv_heads < 1 or n_heads % n_kv_heads:
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

    def project(self, x: Tensor, cos: Tensor | None = None,
                sin: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """q (batch, seq, n_heads, head_dim) and k, v (batch, seq, n_kv_heads, head_dim),
        with RoPE applied to q and k when cos/sin are given. The head counts are the
        projections' widths / head_dim (a tensor-parallel shard holds fewer heads)."""
        split = (-1, self.head_dim)                                    # features -> heads
        q = self.q_proj(x).unflatten(-1, split)                        # (b, s, h, hd)
        k = self.k_proj(x).unflatten(-1, split)                        # (b, s, kv, hd)
        v = self.v_proj(x).unflatten(-1, split)
        if cos is not None:                                            # RoPE (Llama)
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        return q, k, v

    def forward(self, x: Tensor, cos: Tensor | None = None, sin: Tensor | None = None,
                mask: Tensor | None = None, is_causal: bool = False,
                cache: KVCache | None = None, start_pos: int = 0) -> Tensor:
        """x: (batch, seq, dim); cos, sin: RoPE tables for the new positions (None: no RoPE);
        mask: bool or additive, broadcastable to (batch, n_heads, seq, kv_len)."""
        q, k, v = self.project(x, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, start_pos)                       # (b, kv_len, n_kv, hd)
        if self.use_sdpa:
            out = sdpa(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                       mask, is_causal)
        else:
            n_rep = q.shape[2] // k.shape[2]                           # query heads per KV head
            k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)            # (b, kv_len, h, hd)
            out = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                            mask, is_causal)
        out = out.transpose(1, 2).flatten(2)                           # (b, s, h * hd)
        return self.o_proj(out)                                        # (b, s, dim)

    def make_cache(self, batch_size: int, max_seq_len: int,
                   device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> KVCache:
        """An empty KVCache for the KV heads this module computes (a shard: its own)."""
        n_kv_heads = self.k_proj.weight.shape[0] // self.head_dim
        return KVCache(batch_size, max_seq_len, n_kv_heads, self.head_dim, device, dtype)

    def extra_repr(self) -> str:
        return (f"n_heads={self.n_heads}, n_kv_heads={self.n_kv_heads}, "
                f"head_dim={self.head_dim}, sdpa={self.use_sdpa}")


@torch.no_grad()
def attention_maps(model: nn.Module, tokens: Tensor, attention_mask: Tensor | None = None,
                   position_ids: Tensor | None = None, causal: bool = True) -> list[Tensor]:
    """The attention weights of every layer of `model` on `tokens` (no cache).

    -> one (batch, n_heads, seq, seq) fp32 tensor per Attention module, in order. With
    causal=False each layer's weights are recomputed from the same queries and keys
    without the causal mask (padding stays masked): what the heads would look at if they
    were allowed to see the future. The model's own forward stays causal.
    """
    modules = [m for m in model.modules() if isinstance(m, Attention)]
    if not modules:
        raise ValueError(f"{type(model).__name__} has no Attention modules")
    maps: list[Tensor] = []

    def capture(module: Attention, args, kwargs):
        bound = inspect.signature(module.forward).bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        if a["cache"] is not None:
            raise ValueError("attention_maps runs without a KV cache; call it on the "
                             "whole sequence")
        mask, is_causal = a["mask"], a["is_causal"]
        if not causal:
            if mask is not None and mask.dtype != torch.bool:
                raise ValueError("causal=False needs a boolean mask; this model adds a float "
                                 "bias (ALiBi) that already contains the causal mask")
            mask = None if attention_mask is None else padding_mask(attention_mask)
            is_causal = False
        q, k, _ = module.project(a["x"], a["cos"], a["sin"])
        k = repeat_kv(k, q.shape[2] // k.shape[2])
        maps.append(attention_probs(q.transpose(1, 2), k.transpose(1, 2), mask, is_causal))

    handles = [m.register_forward_pre_hook(capture, with_kwargs=True) for m in modules]
    try:
        model(tokens, attention_mask=attention_mask, position_ids=position_ids)
    finally:
        for handle in handles:
            handle.remove()
    return maps
