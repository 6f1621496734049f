"""Triton kernels for lesson 08: flash attention (forward and backward) and a fused RMSNorm.

The attention forward follows FlashAttention-2 (Dao 2023, "FlashAttention-2: Faster
Attention with Better Parallelism and Work Partitioning", Algorithm 1), as
`llama_edu.flash.tiled` does. Query blocks are the outer loop: one program (a kernel
instance) owns BLOCK_M query rows of one (batch, head) and walks the key/value tiles, each
in fast on-chip memory: load a K/V tile, score it, update the running max m, sum l and
output acc, move on. It divides acc by l once, after the last tile, and stores the output
and each row's log-sum-exp L = m + log l, the only statistic the backward pass needs.
FlashAttention-1 (Dao et al. 2022, Algorithm 1) has the K/V blocks in the outer loop,
re-reads and re-writes O, l and m in slow memory for every key block, and stores l and m.

The backward recomputes each tile's probabilities P = exp(S - L) (Dao 2023, Algorithm 2),
with D = rowsum(dO * O) computed first. dK and dV of a key block sum over every query row,
dQ of a query block over every key: one loop order cannot give both a single owner.
`flash_attention_dkdv_kernel` puts the K/V blocks outside (one program owns a K/V block and
writes its dK, dV once); `flash_attention_dq_kernel` puts the query blocks outside for dQ.
So no two programs add into the same output and no atomic adds are needed, at the price of
computing each tile's scores twice (the FA-2 paper instead adds dQ atomically, section 3.1).

Without a CUDA GPU the kernels run in Triton's interpreter on CPU tensors. The switch
(TRITON_INTERPRET=1) must be set before the @triton.jit decorators below run; import this
module through `llama_edu.flash.triton_kernels()`, which does so, or set it yourself.
The interpreter computes bf16 `tl.dot` wrongly, so use fp32 or fp16 there.
"""

from __future__ import annotations

import math
import os
import sys

import torch
from torch import Tensor

from ..tiled import check_inputs

_IMPORTED_EARLIER = "triton.language" in sys.modules and not os.environ.get("TRITON_INTERPRET")
if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"   # before any @triton.jit below

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"


def _reinterpret_triton_language() -> None:
    """Make triton's own library kernels (tl.max, tl.sum, tl.zeros, ...) interpretable.

    They are @triton.jit functions too, built when triton is first imported. If something
    imported triton before the switch (torch._dynamo does, e.g. under a TorchDispatchMode),
    they were built for compilation; rebuild them as importing under the interpreter would.
    """
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    for namespace in (tl, tl.standard):
        for name, value in list(vars(namespace).items()):
            if isinstance(value, JITFunction):
                setattr(namespace, name, InterpretedFunction(value.fn))


if INTERPRETED and _IMPORTED_EARLIER:
    _reinterpret_triton_language()


@triton.jit
def flash_attention_kernel(
    Q, K, V, O, LSE, scale,                         # pointers to the first elements; 1/sqrt(d)
    stride_qb, stride_qh, stride_qs,                # strides in elements; head_dim is contiguous
    stride_kb, stride_kh, stride_ks,
    stride_vb, stride_vh, stride_vs,
    stride_ob, stride_oh, stride_os,
    n_heads, n_rep, q_len, kv_len, head_dim,        # LSE is contiguous (batch, n_heads, q_len)
    CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    block = tl.program_id(0)                        # which block of BLOCK_M query rows
    batch = tl.program_id(1) // n_heads
    head = tl.program_id(1) % n_heads
    kv_head = head // n_rep                         # GQA: the key/value head this head shares
    rows = block * BLOCK_M + tl.arange(0, BLOCK_M)  # query positions       (BLOCK_M,)
    cols = tl.arange(0, BLOCK_N)                    # key offsets in a tile (BLOCK_N,)
    dims = tl.arange(0, BLOCK_D)                    # feature index         (BLOCK_D,)
    row_ok = rows < q_len
    dim_ok = dims < head_dim

    q_ptrs = Q + batch * stride_qb + head * stride_qh + rows[:, None] * stride_qs + dims[None, :]
    q = tl.load(q_ptrs, mask=row_ok[:, None] & dim_ok[None, :], other=0.0)  # (BLOCK_M, BLOCK_D)
    k_base = K + batch * stride_kb + kv_head * stride_kh
    v_base = V + batch * stride_vb + kv_head * stride_vh

    m = tl.full([BLOCK_M], float("-inf"), tl.float32)   # running max of each row
    l = tl.zeros([BLOCK_M], tl.float32)                 # running sum of exp(s - m)
    acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)      # running sum of exp(s - m) v

    offset = kv_len - q_len                         # query i is position i + offset
    end = kv_len
    if CAUSAL:                                      # the causal skip: no later tile is visible
        end = tl.minimum(kv_len, (block + 1) * BLOCK_M + offset)
    for start in range(0, end, BLOCK_N):
        keys = start + cols
        key_ok = keys < kv_len
        tile_ok = key_ok[:, None] & dim_ok[None, :]
        k = tl.load(k_base + keys[:, None] * stride_ks + dims[None, :], mask=tile_ok, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale   # (BLOCK_M, BLOCK_N)
        visible = key_ok[None, :]                   # keys past kv_len are padding
        if CAUSAL:
            visible = visible & (keys[None, :] <= rows[:, None] + offset)
        s = tl.where(visible, s, float("-inf"))

        m_new = tl.maximum(m, tl.max(s, axis=1))
        alpha = tl.exp(m - m_new)                   # <= 1: shrink what the old max summed
        p = tl.exp(s - m_new[:, None])              # (BLOCK_M, BLOCK_N)
        l = alpha * l + tl.sum(p, axis=1)
        v = tl.load(v_base + keys[:, None] * stride_vs + dims[None, :], mask=tile_ok, other=0.0)
        acc = alpha[:, None] * acc + tl.dot(p.to(v.dtype), v, input_precision="ieee")
        m = m_new

    out = acc / l[:, None]                          # normalise once, at the end
    o_ptrs = O + batch * stride_ob + head * stride_oh + rows[:, None] * stride_os + dims[None, :]
    tl.store(o_ptrs, out.to(O.dtype.element_ty), mask=row_ok[:, None] & dim_ok[None, :])
    lse_ptrs = LSE + (batch * n_heads + head) * q_len + rows
    tl.store(lse_ptrs, m + tl.log(l), mask=row_ok)  # all the backward pass keeps of m and l


@triton.jit
def flash_attention_dkdv_kernel(
    Q, K, V, DO, LSE, DELTA, DK, DV, scale,         # q, do: (b, h, q_len, d); k, v, dk, dv:
    n_heads, n_kv_heads, n_rep, q_len, kv_len, head_dim,   # (b, n_kv, kv_len, d); contiguous
    CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """dK, dV of one key/value block: K/V blocks outside, every query row that sees them
    inside (all n_rep query heads sharing the kv head), so this program owns dK_j and dV_j."""
    block = tl.program_id(0)                        # which block of BLOCK_N keys
    batch = tl.program_id(1) // n_kv_heads
    kv_head = tl.program_id(1) % n_kv_heads
    keys = block * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,)
    dims = tl.arange(0, BLOCK_D)
    key_ok = keys < kv_len
    kv_mask = key_ok[:, None] & (dims < head_dim)[None, :]
    kv_rows = (batch * n_kv_heads + kv_head) * kv_len + keys       # (BLOCK_N,) row indices
    kv_offsets = kv_rows[:, None] * head_dim + dims[None, :]
    k = tl.load(K + kv_offsets, mask=kv_mask, other=0.0)           # (BLOCK_N, BLOCK_D)
    v = tl.load(V + kv_offsets, mask=kv_mask, other=0.0)
    dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
    dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)

    offset = kv_len - q_len                         # query i is position i + offset
    start = 0
    if CAUSAL:                                      # earlier query rows see none of these keys
        start = tl.maximum(block * BLOCK_N - offset, 0) // BLOCK_M * BLOCK_M
    for r in range(0, n_rep):                       # the query heads sharing this kv head
        head = kv_head * n_rep + r
        for q_start in range(start, q_len, BLOCK_M):
            rows = q_start + tl.arange(0, BLOCK_M)
            row_ok = rows < q_len
            q_mask = row_ok[:, None] & (dims < head_dim)[None, :]
            q_rows = (batch * n_heads + head) * q_len + rows
            q_offsets = q_rows[:, None] * head_dim + dims[None, :]
            q = tl.load(Q + q_offsets, mask=q_mask, other=0.0)      # (BLOCK_M, BLOCK_D)
            do = tl.load(DO + q_offsets, mask=q_mask, other=0.0)
            stats = (batch * n_heads + head) * q_len + rows
            lse = tl.load(LSE + stats, mask=row_ok, other=0.0)     # (BLOCK_M,)
            delta = tl.load(DELTA + stats, mask=row_ok, other=0.0)
            s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale   # (BLOCK_M, BLOCK_N)
            visible = row_ok[:, None] & key_ok[None, :]
            if CAUSAL:
                visible = visible & (keys[None, :] <= rows[:, None] + offset)
            p = tl.where(visible, tl.exp(s - lse[:, None]), 0.0)   # the forward's P, recomputed
            dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision="ieee")
            dp = tl.dot(do, tl.trans(v), input_precision="ieee")   # (BLOCK_M, BLOCK_N)
            ds = p * (dp - delta[:, None])
            dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision="ieee") * scale
    tl.store(DK + kv_offsets, dk.to(DK.dtype.element_ty), mask=kv_mask)
    tl.store(DV + kv_offsets, dv.to(DV.dtype.element_ty), mask=kv_mask)


@triton.jit
def flash_attention_dq_kernel(
    Q, K, V, DO, LSE, DELTA, DQ, scale,             # the layouts of flash_attention_dkdv_kernel
    n_heads, n_kv_heads, n_rep, q_len, kv_len, head_dim,
    CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    """dQ of one query block: query blocks outside, key tiles inside (the forward's order)."""
    block = tl.program_id(0)
    batch = tl.program_id(1) // n_heads
    head = tl.program_id(1) % n_heads
    kv_head = head // n_rep
    rows = block * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.arange(0, BLOCK_N)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < q_len
    dim_ok = dims < head_dim
    q_mask = row_ok[:, None] & dim_ok[None, :]
    q_offsets = ((batch * n_heads + head) * q_len + rows[:, None]) * head_dim + dims[None, :]
    q = tl.load(Q + q_offsets, mask=q_mask, other=0.0)
    do = tl.load(DO + q_offsets, mask=q_mask, other=0.0)
    stats = (batch * n_heads + head) * q_len + rows
    lse = tl.load(LSE + stats, mask=row_ok, other=0.0)
    delta = tl.load(DELTA + stats, mask=row_ok, other=0.0)
    dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)

    offset = kv_len - q_len
    end = kv_len
    if CAUSAL:                                      # the forward's causal skip
        end = tl.minimum(kv_len, (block + 1) * BLOCK_M + offset)
    kv_base = (batch * n_kv_heads + kv_head) * kv_len
    for start in range(0, end, BLOCK_N):
        keys = start + cols
        key_ok = keys < kv_len
        kv_mask = key_ok[:, None] & dim_ok[None, :]
        kv_offsets = (kv_base + keys[:, None]) * head_dim + dims[None, :]
        k = tl.load(K + kv_offsets, mask=kv_mask, other=0.0)
        v = tl.load(V + kv_offsets, mask=kv_mask, other=0.0)
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale
        visible = row_ok[:, None] & key_ok[None, :]
        if CAUSAL:
            visible = visible & (keys[None, :] <= rows[:, None] + offset)
        p = tl.where(visible, tl.exp(s - lse[:, None]), 0.0)
        dp = tl.dot(do, tl.trans(v), input_precision="ieee")
        ds = p * (dp - delta[:, None])
        dq += tl.dot(ds.to(k.dtype), k, input_precision="ieee") * scale
    tl.store(DQ + q_offsets, dq.to(DQ.dtype.element_ty), mask=q_mask)


@triton.jit
def rmsnorm_kernel(X, W, Y, stride_x, stride_y, dim, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0)                          # one program normalises one row
    cols = tl.arange(0, BLOCK)
    ok = cols < dim
    x = tl.load(X + row * stride_x + cols, mask=ok, other=0.0).to(tl.float32)
    inv_rms = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / dim + eps)
    w = tl.load(W + cols, mask=ok, other=0.0)
    y = (x * inv_rms).to(X.dtype.element_ty).to(Y.dtype.element_ty) * w.to(Y.dtype.element_ty)
    tl.store(Y + row * stride_y + cols, y, mask=ok)


def _check_device(*tensors: Tensor) -> None:
    want = "cpu" if INTERPRETED else "cuda"
    for t in tensors:
        if t.device.type != want:
            where = ("Triton's CPU interpreter is on (no CUDA GPU), so pass CPU tensors"
                     if INTERPRETED else "the kernels are compiled for the GPU, so pass CUDA "
                     "tensors")
            raise ValueError(f"got a tensor on {t.device}: {where}")
    if INTERPRETED and any(t.dtype == torch.bfloat16 for t in tensors):
        raise TypeError("bf16 tl.dot is computed wrongly by Triton's interpreter; "
                        "use float32 or float16 on the CPU")


def _check_attention(q, k, v, causal, block_m, block_n) -> None:
    check_inputs(q, k, v, causal, block_m, block_n)
    _check_device(q, k, v)
    for name, size in (("block_m", block_m), ("block_n", block_n)):
        if size < 16 or size & (size - 1):
            raise ValueError(f"{name} must be a power of two >= 16 for tl.dot, got {size}")
    if v.shape[-1] != q.shape[-1]:
        raise ValueError(f"the Triton kernel needs v's head_dim ({v.shape[-1]}) equal to q's "
                         f"({q.shape[-1]})")


def _block_d(head_dim: int) -> int:
    return max(16, triton.next_power_of_2(head_dim))


def flash_attention_forward(q: Tensor, k: Tensor, v: Tensor, causal: bool = False,
                            block_m: int = 64, block_n: int = 64) -> tuple[Tensor, Tensor]:
    """The Triton forward: (out, lse), same contract as `llama_edu.flash.tiled_attention`.

    q: (batch, n_heads, q_len, head_dim); k, v: (batch, n_kv_heads, kv_len, head_dim).
    -> out (batch, n_heads, q_len, head_dim), lse (batch, n_heads, q_len) in fp32.
    Blocks are powers of two >= 16 (what `tl.dot` accepts).
    """
    _check_attention(q, k, v, causal, block_m, block_n)
    q, k, v = (t if t.stride(-1) == 1 else t.contiguous() for t in (q, k, v))
    batch, n_heads, q_len, head_dim = q.shape
    out = torch.empty_like(q, memory_format=torch.contiguous_format)   # (b, h, q_len, d)
    lse = torch.empty(batch, n_heads, q_len, dtype=torch.float32, device=q.device)
    grid = (triton.cdiv(q_len, block_m), batch * n_heads)
    flash_attention_kernel[grid](
        q, k, v, out, lse, 1.0 / math.sqrt(head_dim),
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), out.stride(0), out.stride(1), out.stride(2),
        n_heads, n_heads // k.shape[1], q_len, k.shape[2], head_dim,
        CAUSAL=bool(causal), BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_D=_block_d(head_dim))
    return out, lse


def flash_attention_backward(grad_out: Tensor, q: Tensor, k: Tensor, v: Tensor, out: Tensor,
                             lse: Tensor, causal: bool = False, block_m: int = 64,
                             block_n: int = 64) -> tuple[Tensor, Tensor, Tensor]:
    """dq, dk, dv from the saved out and lse, by recomputation in two Triton kernels.

    D = rowsum(dO * O) (a (batch, n_heads, q_len) elementwise sum, done in PyTorch), then
    `flash_attention_dkdv_kernel` (K/V blocks outside) and `flash_attention_dq_kernel`
    (query blocks outside): each output block has one owner, so nothing is added atomically.
    """
    _check_attention(q, k, v, causal, block_m, block_n)
    _check_device(grad_out, out, lse)
    q, k, v, grad_out = (t.contiguous() for t in (q, k, v, grad_out))
    batch, n_heads, q_len, head_dim = q.shape
    n_kv_heads, kv_len = k.shape[1], k.shape[2]
    delta = (grad_out.float() * out.float()).sum(-1).contiguous()   # D: (b, h, q_len)
    lse = lse.float().contiguous()
    dq = torch.empty_like(q)
    dk, dv = torch.empty_like(k), torch.empty_like(v)
    sizes = dict(CAUSAL=bool(causal), BLOCK_M=block_m, BLOCK_N=block_n,
                 BLOCK_D=_block_d(head_dim))
    scale = 1.0 / math.sqrt(head_dim)
    flash_attention_dkdv_kernel[(triton.cdiv(kv_len, block_n), batch * n_kv_heads)](
        q, k, v, grad_out, lse, delta, dk, dv, scale,
        n_heads, n_kv_heads, n_heads // n_kv_heads, q_len, kv_len, head_dim, **sizes)
    flash_attention_dq_kernel[(triton.cdiv(q_len, block_m), batch * n_heads)](
        q, k, v, grad_out, lse, delta, dq, scale,
        n_heads, n_kv_heads, n_heads // n_kv_heads, q_len, kv_len, head_dim, **sizes)
    return dq, dk, dv


class FlashAttentionTriton(torch.autograd.Function):
    """The Triton forward and backward as one differentiable function; saves q, k, v, the
    output and the log-sum-exp, never a (q_len, kv_len) matrix."""

    @staticmethod
    def forward(ctx, q, k, v, causal, block_m, block_n):
        out, lse = flash_attention_forward(q, k, v, causal, block_m, block_n)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.settings = (causal, block_m, block_n)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        dq, dk, dv = flash_attention_backward(grad_out, q, k, v, out, lse, *ctx.settings)
        return dq, dk, dv, None, None, None


def flash_attention(q: Tensor, k: Tensor, v: Tensor, causal: bool = False,
                    block_m: int = 64, block_n: int = 64) -> Tensor:
    """Triton flash attention, differentiable: `flash_attention_forward`'s output, with
    `flash_attention_backward` as its gradient. Same contract as `tiled_attention`."""
    return FlashAttentionTriton.apply(q, k, v, bool(causal), block_m, block_n)


def rmsnorm(x: Tensor, weight: Tensor, eps: float = 1e-5) -> Tensor:
    """Fused RMSNorm: one read of x and one write of y, the same numbers as
    `llama_edu.norms.RMSNorm` (normalise in fp32, cast to x's dtype, times the weight)."""
    if x.dim() == 0 or weight.dim() != 1 or x.shape[-1] != weight.shape[0]:
        raise ValueError(f"x's last dimension must match weight (dim,): got x "
                         f"{tuple(x.shape)}, weight {tuple(weight.shape)}")
    if not x.is_floating_point() or not weight.is_floating_point():
        raise TypeError(f"rmsnorm needs floating-point tensors, got {x.dtype}, {weight.dtype}")
    _check_device(x, weight)
    dim = x.shape[-1]
    rows = x.reshape(-1, dim)                       # (n_rows, dim), a view when possible
    if rows.stride(-1) != 1:
        rows = rows.contiguous()
    y = torch.empty(rows.shape, dtype=torch.promote_types(x.dtype, weight.dtype),
                    device=x.device)
    if rows.shape[0]:
        rmsnorm_kernel[(rows.shape[0],)](rows, weight.contiguous(), y, rows.stride(0),
                                         y.stride(0), dim, eps,
                                         BLOCK=triton.next_power_of_2(dim))
    return y.reshape(x.shape)
