"""Online softmax, tiled (flash) attention and its IO cost (lesson 08).

Softmax of a concatenation from its parts, with m = max(x) and l = sum(exp(x - m)):
    m = max(m1, m2),   l = exp(m1 - m) l1 + exp(m2 - m) l2
so one pass over blocks keeps a running max m, a running sum l and an unnormalised output
acc, rescaling l and acc by exp(m_old - m_new) whenever the max grows (Milakov & Gimelshein 2018,
"Online normalizer calculation for softmax"). FlashAttention walks key/value blocks this way
and never holds the (q_len, kv_len) score matrix (Dao et al. 2022, "FlashAttention: Fast and
Memory-Efficient Exact Attention with IO-Awareness"); the backward pass recomputes the
scores from q, k and the saved log-sum-exp instead of storing them.

The Triton versions live in `llama_edu.flash.triton_kernels`; load them with
`triton_kernels()`, which switches on Triton's CPU interpreter when there is no CUDA GPU.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import Tensor

__all__ = [
    "IOCost", "TiledAttentionFunction", "block_kind", "merge_softmax_stats", "naive_io",
    "online_softmax", "online_step", "softmax_stats", "tiled_attention",
    "tiled_attention_steps", "tiled_io", "triton_available", "triton_kernels",
]


# ---------------------------------------------------------------------------------------
# Softmax from parts

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


def block_kind(q_start: int, q_end: int, k_start: int, k_end: int, offset: int = 0) -> str:
    """Which part of a causal tile is visible: "skip", "partial" or "full".

    Query row i sits at position i + offset (offset = kv_len - q_len, the cached prefix) and
    sees keys 0 .. i + offset. The tile's bottom-left corner (row q_end - 1, key k_start)
    decides whether anything is visible; its top-right corner (row q_start, key k_end - 1)
    decides whether everything is.
    """
    if k_start > q_end - 1 + offset:
        return "skip"
    if k_end - 1 <= q_start + offset:
        return "full"
    return "partial"


# ---------------------------------------------------------------------------------------
# Tiled attention

def _check_inputs(q: Tensor, k: Tensor, v: Tensor, causal: bool, block_q: int,
                  block_k: int) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must be (batch, n_heads, seq, head_dim), got shape "
                             f"{tuple(t.shape)}; transpose (batch, seq, heads, dim) with "
                             ".transpose(1, 2)")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be floating point, got {t.dtype}")
    if q.device != k.device or q.device != v.device:
        raise ValueError(f"q, k, v must be on one device, got {q.device}, {k.device}, {v.device}")
    if k.shape[:3] != v.shape[:3] or q.shape[0] != k.shape[0] or q.shape[-1] != k.shape[-1]:
        raise ValueError(f"shape mismatch: q {tuple(q.shape)}, k {tuple(k.shape)}, "
                         f"v {tuple(v.shape)}; k and v need q's batch and k q's head_dim")
    n_heads, n_kv_heads = q.shape[1], k.shape[1]
    if n_heads % n_kv_heads:
        options = [d for d in range(1, n_heads + 1) if n_heads % d == 0]
        raise ValueError(f"q's n_heads ({n_heads}) must be divisible by k's n_kv_heads "
                         f"({n_kv_heads}); try n_kv_heads in {options}")
    if k.shape[2] == 0:
        raise ValueError("k and v hold no positions (kv_len = 0): there is nothing to attend to")
    if causal and k.shape[2] < q.shape[2]:
        raise ValueError(f"causal attention needs kv_len ({k.shape[2]}) >= q_len "
                         f"({q.shape[2]}): the queries are the last q_len positions")
    for name, size in (("block_q", block_q), ("block_k", block_k)):
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"{name} must be a positive int, got {size!r}")


def _tile_mask(q_start: int, q_end: int, k_start: int, k_end: int, offset: int,
               device: torch.device) -> Tensor:
    """True where query (q_start..q_end) may see key (k_start..k_end).   (rows, cols) bool"""
    rows = torch.arange(q_start, q_end, device=device)[:, None] + offset
    return torch.arange(k_start, k_end, device=device)[None, :] <= rows


def _accumulate_dtype(t: Tensor) -> torch.dtype:
    """fp32 for fp16/bf16/fp32 inputs (exponentials and sums need it); fp64 stays fp64."""
    return torch.promote_types(t.dtype, torch.float32)


def _grouped(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Share each kv head with its n_rep query heads by broadcasting, without copies.

    q (b, h, q_len, d) -> (b, n_kv, n_rep, q_len, d); k, v -> (b, n_kv, 1, kv_len, d)
    """
    n_kv_heads = k.shape[1]
    return q.unflatten(1, (n_kv_heads, q.shape[1] // n_kv_heads)), k[:, :, None], v[:, :, None]


def _tiled_forward(q: Tensor, k: Tensor, v: Tensor, causal: bool, block_q: int,
                   block_k: int) -> tuple[Tensor, Tensor]:
    """Output (b, h, q_len, dv) and the log-sum-exp of each score row (b, h, q_len), kept in
    fp32 (fp64 for fp64 inputs)."""
    scale, f32 = 1.0 / math.sqrt(q.shape[-1]), _accumulate_dtype(q)
    qg, kg, vg = _grouped(q, k, v)
    q_len, kv_len, offset = q.shape[2], k.shape[2], k.shape[2] - q.shape[2]
    out = q.new_empty(*qg.shape[:-1], v.shape[-1])                 # (b, n_kv, n_rep, q_len, dv)
    lse = torch.empty(qg.shape[:-1], dtype=f32, device=q.device)
    for qs in range(0, q_len, block_q):
        qe = min(qs + block_q, q_len)
        q_tile = qg[..., qs:qe, :].to(f32) * scale                 # (b, n_kv, n_rep, bq, d)
        m = torch.full(q_tile.shape[:-1], float("-inf"), dtype=f32, device=q.device)
        l = torch.zeros_like(m)                                    # (b, n_kv, n_rep, bq)
        acc = q_tile.new_zeros(*q_tile.shape[:-1], v.shape[-1])    # (b, n_kv, n_rep, bq, dv)
        for ks in range(0, kv_len, block_k):
            ke = min(ks + block_k, kv_len)
            kind = block_kind(qs, qe, ks, ke, offset) if causal else "full"
            if kind == "skip":                                     # this and all later tiles
                break
            scores = q_tile @ kg[..., ks:ke, :].to(f32).transpose(-1, -2)  # (..., bq, bk)
            if kind == "partial":
                scores = scores.masked_fill(~_tile_mask(qs, qe, ks, ke, offset, q.device),
                                            float("-inf"))
            m, l, acc = online_step(m, l, acc, scores, vg[..., ks:ke, :].to(f32))
        out[..., qs:qe, :] = (acc / l[..., None]).to(out.dtype)
        lse[..., qs:qe] = m + torch.log(l)
    return out.flatten(1, 2), lse.flatten(1, 2)


def _tiled_backward(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor,
                    lse: Tensor, causal: bool, block_q: int,
                    block_k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients by recomputing each tile's probabilities P = exp(S - lse) (Dao et al. 2022).

    dV = P^T dO;  dP = dO V^T;  dS = P * (dP - D) with D = rowsum(dO * O);
    dQ = dS K * scale;  dK = dS^T Q * scale. Shared kv heads sum over their query heads.
    """
    scale, f32 = 1.0 / math.sqrt(q.shape[-1]), _accumulate_dtype(q)
    qg, kg, vg = _grouped(q, k, v)
    n_kv_heads, n_rep = qg.shape[1], qg.shape[2]
    grad_g = grad_out.to(f32).unflatten(1, (n_kv_heads, n_rep))    # (b, n_kv, n_rep, q_len, dv)
    lse_g = lse.unflatten(1, (n_kv_heads, n_rep))                  # (b, n_kv, n_rep, q_len)
    delta = (grad_g * out.to(f32).unflatten(1, (n_kv_heads, n_rep))).sum(-1)
    dq = torch.zeros(qg.shape, dtype=f32, device=q.device)
    dk = torch.zeros(kg.shape, dtype=f32, device=q.device)         # (b, n_kv, 1, kv_len, d)
    dv = torch.zeros(vg.shape, dtype=f32, device=q.device)
    q_len, kv_len, offset = q.shape[2], k.shape[2], k.shape[2] - q.shape[2]
    for qs in range(0, q_len, block_q):
        qe = min(qs + block_q, q_len)
        q_tile, do_tile = qg[..., qs:qe, :].to(f32), grad_g[..., qs:qe, :]
        for ks in range(0, kv_len, block_k):
            ke = min(ks + block_k, kv_len)
            kind = block_kind(qs, qe, ks, ke, offset) if causal else "full"
            if kind == "skip":
                break
            k_tile, v_tile = kg[..., ks:ke, :].to(f32), vg[..., ks:ke, :].to(f32)
            scores = (q_tile @ k_tile.transpose(-1, -2)) * scale   # (..., bq, bk)
            if kind == "partial":
                scores = scores.masked_fill(~_tile_mask(qs, qe, ks, ke, offset, q.device),
                                            float("-inf"))
            p = torch.exp(scores - lse_g[..., qs:qe, None])        # the forward's probabilities
            dv[..., ks:ke, :] += (p.transpose(-1, -2) @ do_tile).sum(2, keepdim=True)
            dp = do_tile @ v_tile.transpose(-1, -2)                # (..., bq, bk)
            ds = p * (dp - delta[..., qs:qe, None])
            dq[..., qs:qe, :] += (ds @ k_tile) * scale
            dk[..., ks:ke, :] += (ds.transpose(-1, -2) @ q_tile).sum(2, keepdim=True) * scale
    return (dq.flatten(1, 2).to(q.dtype), dk.squeeze(2).to(k.dtype),
            dv.squeeze(2).to(v.dtype))


class TiledAttentionFunction(torch.autograd.Function):
    """Tiled attention whose backward recomputes the scores instead of storing them.

    Saved for backward: q, k, v, the output and one log-sum-exp per query row, O(N d) in
    all, where autograd through naive attention would keep the (q_len, kv_len) matrices.
    """

    @staticmethod
    def forward(ctx, q, k, v, causal, block_q, block_k):
        out, lse = _tiled_forward(q, k, v, causal, block_q, block_k)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.settings = (causal, block_q, block_k)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = _tiled_backward(grad_out, q, k, v, out, lse, *ctx.settings)
        return dq, dk, dv, None, None, None


def tiled_attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = False, block_q: int = 64,
                    block_k: int = 64) -> Tensor:
    """softmax(q k^T / sqrt(d)) v, one (block_q x block_k) tile at a time.

    q: (batch, n_heads, q_len, head_dim); k, v: (batch, n_kv_heads, kv_len, head_dim) with
    n_kv_heads dividing n_heads (GQA).   -> (batch, n_heads, q_len, head_dim)
    causal: query i is position kv_len - q_len + i (aligned bottom-right, as
    `llama_edu.attention.causal_mask`); tiles wholly above the diagonal are skipped.
    Any lengths work; the last tiles are simply smaller. Differentiable (recomputation).
    """
    _check_inputs(q, k, v, causal, block_q, block_k)
    return TiledAttentionFunction.apply(q, k, v, bool(causal), block_q, block_k)


@dataclass
class TileState:
    """The running statistics after one tile of one query block (for plots and widgets)."""

    k_start: int
    k_end: int
    kind: str          # "full", "partial" or "skip"
    m: Tensor          # (..., rows) running max
    l: Tensor          # (..., rows) running sum
    out: Tensor        # (..., rows, d) acc / l: the output if no more keys came


def tiled_attention_steps(q: Tensor, k: Tensor, v: Tensor, q_start: int, q_end: int,
                          causal: bool = False, block_k: int = 64) -> Iterator[TileState]:
    """Walk the key blocks for the queries q_start..q_end, yielding the state after each.

    Skipped tiles are yielded too (kind "skip", state unchanged), so a plot can show them.
    """
    _check_inputs(q, k, v, causal, max(q_end - q_start, 1), block_k)
    scale, f32 = 1.0 / math.sqrt(q.shape[-1]), _accumulate_dtype(q)
    offset = k.shape[2] - q.shape[2]
    q_tile = q[..., q_start:q_end, :].to(f32) * scale
    m = torch.full(q_tile.shape[:-1], float("-inf"), dtype=f32, device=q.device)
    l = torch.zeros_like(m)
    acc = q_tile.new_zeros(*q_tile.shape[:-1], v.shape[-1])
    for ks in range(0, k.shape[2], block_k):
        ke = min(ks + block_k, k.shape[2])
        kind = block_kind(q_start, q_end, ks, ke, offset) if causal else "full"
        if kind != "skip":
            scores = q_tile @ k[..., ks:ke, :].to(f32).transpose(-1, -2)
            if kind == "partial":
                mask = _tile_mask(q_start, q_end, ks, ke, offset, q.device)
                scores = scores.masked_fill(~mask, float("-inf"))
            m, l, acc = online_step(m, l, acc, scores, v[..., ks:ke, :].to(f32))
        yield TileState(ks, ke, kind, m, l, acc / l[..., None])


# ---------------------------------------------------------------------------------------
# IO cost (Dao et al. 2022, section 3.2 and Theorem 2), counted per (batch, head)

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
    """FlashAttention's forward (the paper's Algorithm 1): Theta(N^2 d^2 / M) accesses.

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


# ---------------------------------------------------------------------------------------
# Triton, loaded on demand

def triton_available() -> bool:
    """True when triton is installed (it runs on a CUDA GPU, or on the CPU through its
    interpreter, which also needs numpy). Checked without importing triton: the interpreter
    switch must come before triton's first import."""
    if importlib.util.find_spec("triton") is None:
        return False
    return torch.cuda.is_available() or importlib.util.find_spec("numpy") is not None


def triton_kernels() -> ModuleType:
    """The Triton kernels module; without a CUDA GPU it runs in Triton's interpreter.

    TRITON_INTERPRET=1 must be set before triton is first imported, so the module (which
    sets it when there is no GPU) is imported only here, on demand.
    """
    if not triton_available():
        raise ImportError("triton is not installed: `pip install triton` (it runs on a CUDA "
                          "GPU, or on the CPU through its interpreter)")
    return importlib.import_module(f"{__name__}.triton_kernels")
