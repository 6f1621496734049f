"""Tiled (flash) attention: the tile walk, the forward, the backward, a step-through (lesson 08).

softmax(q k^T / sqrt(d)) v is computed one (block_q x block_k) tile at a time, so the
(q_len, kv_len) score matrix never exists. The loop order is FlashAttention-2's (Dao 2023,
"FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning"): query
blocks outside, key/value blocks inside; each row's output is divided by its running sum l
once, after its last tile; and only the log-sum-exp L = m + log l of each row is saved, from
which the backward pass recomputes each tile's probabilities P = exp(S - L) instead of
storing them. FlashAttention-1 (Dao et al. 2022, "FlashAttention: Fast and Memory-Efficient
Exact Attention with IO-Awareness", Algorithm 1) has the key/value blocks outside,
renormalises the output after every block and stores l and m for the backward pass.

`tiles` is the one walk over the tile grid: the forward, the backward and
`tiled_attention_steps` all follow it. Under a causal mask a tile is "full" (wholly on or
below the diagonal), "partial" (the diagonal crosses it: masked) or "skip" (wholly above
it: never computed).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .softmax import online_step

__all__ = ["Tile", "TileState", "TiledAttentionFunction", "block_kind", "tiled_attention",
           "tiled_attention_steps", "tiles"]


# ---------------------------------------------------------------------------------------
# The tile walk

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


@dataclass(frozen=True)
class Tile:
    """Query rows q_start..q_end against keys k_start..k_end, and what a causal mask shows."""

    q_start: int
    q_end: int
    k_start: int
    k_end: int
    kind: str          # "full", "partial" or "skip"
    offset: int        # kv_len - q_len: query row i is position i + offset

    @property
    def rows(self) -> slice:
        return slice(self.q_start, self.q_end)

    @property
    def keys(self) -> slice:
        return slice(self.k_start, self.k_end)

    def visible(self, device: torch.device) -> Tensor:
        """True where a query row may see a key.   (rows, keys) bool"""
        rows = torch.arange(self.q_start, self.q_end, device=device)[:, None] + self.offset
        return torch.arange(self.k_start, self.k_end, device=device)[None, :] <= rows


def tiles(q_len: int, kv_len: int, block_q: int, block_k: int, causal: bool,
          q_start: int = 0, q_end: int | None = None,
          keep_skipped: bool = False) -> Iterator[Tile]:
    """The tile grid, query blocks in the outer loop and key blocks in the inner one.

    Query blocks of block_q rows cover q_start..q_end (all q_len rows by default), key
    blocks of block_k keys cover 0..kv_len; the last block of each may be smaller. Without
    `causal` every tile is "full". With it, once a tile is "skip" so is every later tile of
    its query block (they hold later keys), and the walk moves on to the next query block;
    `keep_skipped` yields those tiles too, for drawing.
    """
    _check_blocks(block_q, block_k)
    offset = kv_len - q_len
    q_end = q_len if q_end is None else q_end
    for qs in range(q_start, q_end, block_q):
        qe = min(qs + block_q, q_end)
        for ks in range(0, kv_len, block_k):
            ke = min(ks + block_k, kv_len)
            kind = block_kind(qs, qe, ks, ke, offset) if causal else "full"
            if kind == "skip" and not keep_skipped:
                break
            yield Tile(qs, qe, ks, ke, kind, offset)


# ---------------------------------------------------------------------------------------
# Tiled attention

def check_inputs(q: Tensor, k: Tensor, v: Tensor, causal: bool, block_q: int,
                 block_k: int) -> None:
    """Raise an error that says what to fix for q, k, v and block sizes attention can't use."""
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
    _check_blocks(block_q, block_k)


def _check_blocks(block_q: int, block_k: int) -> None:
    for name, size in (("block_q", block_q), ("block_k", block_k)):
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ValueError(f"{name} must be a positive int, got {size!r}")


def _accumulate_dtype(t: Tensor) -> torch.dtype:
    """fp32 for fp16/bf16/fp32 inputs (exponentials and sums need it); fp64 stays fp64."""
    return torch.promote_types(t.dtype, torch.float32)


def _grouped(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Share each kv head with its n_rep query heads by broadcasting, without copies.

    q (b, h, q_len, d) -> (b, n_kv, n_rep, q_len, d); k, v -> (b, n_kv, 1, kv_len, d)
    """
    n_kv_heads = k.shape[1]
    return q.unflatten(1, (n_kv_heads, q.shape[1] // n_kv_heads)), k[:, :, None], v[:, :, None]


def _scores(q_tile: Tensor, k_tile: Tensor, tile: Tile) -> Tensor:
    """q_tile k_tile^T, with -inf where the causal mask hides a key.   (..., rows, keys)

    q_tile (..., rows, d) is already scaled by 1/sqrt(d); k_tile is (..., keys, d).
    """
    scores = q_tile @ k_tile.transpose(-1, -2)
    if tile.kind == "partial":
        scores = scores.masked_fill(~tile.visible(scores.device), float("-inf"))
    return scores


def _tiled_forward(q: Tensor, k: Tensor, v: Tensor, causal: bool, block_q: int,
                   block_k: int) -> tuple[Tensor, Tensor]:
    """Output (b, h, q_len, dv) and the log-sum-exp of each score row (b, h, q_len), kept in
    fp32 (fp64 for fp64 inputs)."""
    scale, f32 = 1.0 / math.sqrt(q.shape[-1]), _accumulate_dtype(q)
    qg, kg, vg = _grouped(q, k, v)
    m = torch.full(qg.shape[:-1], float("-inf"), dtype=f32, device=q.device)
    l = torch.zeros_like(m)                                        # (b, n_kv, n_rep, q_len)
    acc = torch.zeros(*m.shape, v.shape[-1], dtype=f32, device=q.device)  # (..., q_len, dv)
    for tile in tiles(q.shape[2], k.shape[2], block_q, block_k, causal):
        rows, keys = tile.rows, tile.keys
        scores = _scores(qg[..., rows, :].to(f32) * scale, kg[..., keys, :].to(f32), tile)
        m[..., rows], l[..., rows], acc[..., rows, :] = online_step(
            m[..., rows], l[..., rows], acc[..., rows, :], scores, vg[..., keys, :].to(f32))
    out = (acc / l[..., None]).to(q.dtype)                         # normalise once, at the end
    return out.flatten(1, 2), (m + torch.log(l)).flatten(1, 2)


def _tiled_backward(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor,
                    lse: Tensor, causal: bool, block_q: int,
                    block_k: int) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients by recomputing each tile's probabilities P = exp(S - lse) (Dao 2023,
    Algorithm 2; Dao et al. 2022, section 3.1).

    dV = P^T dO;  dP = dO V^T;  dS = P * (dP - D) with D = rowsum(dO * O) = rowsum(P * dP);
    dQ = dS K * scale;  dK = dS^T Q * scale. Shared kv heads sum over their query heads.
    The tiles are walked in the forward's order (query blocks outside) and each adds into
    both dQ_i and dK_j, dV_j: safe here, one tile after another. A GPU kernel, whose blocks
    run in parallel, puts the K/V blocks outside instead so that dK_j, dV_j have one owner
    (no atomic adds); see `llama_edu.flash.triton.kernels`.
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
    for tile in tiles(q.shape[2], k.shape[2], block_q, block_k, causal):
        rows, keys = tile.rows, tile.keys
        q_tile, do_tile = qg[..., rows, :].to(f32) * scale, grad_g[..., rows, :]
        k_tile, v_tile = kg[..., keys, :].to(f32), vg[..., keys, :].to(f32)
        p = torch.exp(_scores(q_tile, k_tile, tile) - lse_g[..., rows, None])  # the forward's P
        dv[..., keys, :] += (p.transpose(-1, -2) @ do_tile).sum(2, keepdim=True)
        ds = p * (do_tile @ v_tile.transpose(-1, -2) - delta[..., rows, None])  # (..., bq, bk)
        dq[..., rows, :] += (ds @ k_tile) * scale
        dk[..., keys, :] += (ds.transpose(-1, -2) @ q_tile).sum(2, keepdim=True)  # q_tile: scaled
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
    check_inputs(q, k, v, causal, block_q, block_k)
    return TiledAttentionFunction.apply(q, k, v, bool(causal), block_q, block_k)


# ---------------------------------------------------------------------------------------
# Step by step, for plots and widgets

@dataclass
class TileState:
    """The running statistics after one tile of one query block (for plots and widgets)."""

    k_start: int
    k_end: int
    kind: str          # "full", "partial" or "skip"
    m: Tensor          # (batch, n_heads, rows) running max
    l: Tensor          # (batch, n_heads, rows) running sum
    out: Tensor        # (batch, n_heads, rows, dv) acc / l: the output if no more keys came


def tiled_attention_steps(q: Tensor, k: Tensor, v: Tensor, q_start: int, q_end: int,
                          causal: bool = False, block_k: int = 64) -> Iterator[TileState]:
    """Walk the key blocks for the queries q_start..q_end, yielding the state after each.

    The forward's tiles for that query block, in its order; skipped tiles are yielded too
    (kind "skip", state unchanged), so a plot can show them.
    """
    check_inputs(q, k, v, causal, 1, block_k)        # the query block is q_start..q_end
    q_len = q.shape[2]
    if not (isinstance(q_start, int) and isinstance(q_end, int)
            and 0 <= q_start < q_end <= q_len):
        raise ValueError(f"need 0 <= q_start < q_end <= q_len ({q_len}), got q_start = "
                         f"{q_start!r}, q_end = {q_end!r}")
    scale, f32 = 1.0 / math.sqrt(q.shape[-1]), _accumulate_dtype(q)
    qg, kg, vg = _grouped(q, k, v)
    q_tile = qg[..., q_start:q_end, :].to(f32) * scale            # (b, n_kv, n_rep, rows, d)
    m = torch.full(q_tile.shape[:-1], float("-inf"), dtype=f32, device=q.device)
    l = torch.zeros_like(m)
    acc = q_tile.new_zeros(*q_tile.shape[:-1], v.shape[-1])
    for tile in tiles(q_len, k.shape[2], q_end - q_start, block_k, causal, q_start, q_end,
                      keep_skipped=True):
        if tile.kind != "skip":
            scores = _scores(q_tile, kg[..., tile.keys, :].to(f32), tile)
            m, l, acc = online_step(m, l, acc, scores, vg[..., tile.keys, :].to(f32))
        yield TileState(tile.k_start, tile.k_end, tile.kind, m.flatten(1, 2), l.flatten(1, 2),
                        (acc / l[..., None]).flatten(1, 2))
