"""llama_edu.flash: online softmax, tiled attention (forward, backward, causal skip), the IO
model, memory as the sequence grows, and the Triton kernels (through the interpreter without
a GPU)."""

import os
import subprocess
import sys

import torch

if not torch.cuda.is_available():  # before anything imports triton (see flash.triton_kernels)
    os.environ["TRITON_INTERPRET"] = "1"

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from llama_edu import flash  # noqa: E402
from llama_edu.attention import attention, causal_mask  # noqa: E402
from llama_edu.norms import RMSNorm  # noqa: E402
from llama_edu.profiling import peak_memory  # noqa: E402


def qkv(batch, n_heads, n_kv_heads, q_len, kv_len, head_dim, dtype=torch.float32, seed=0,
        device="cpu"):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, n_heads, q_len, head_dim, generator=g, dtype=dtype)
    k = torch.randn(batch, n_kv_heads, kv_len, head_dim, generator=g, dtype=dtype)
    v = torch.randn(batch, n_kv_heads, kv_len, head_dim, generator=g, dtype=dtype)
    return q.to(device), k.to(device), v.to(device)


def naive(q, k, v, causal):
    """llama_edu.attention.attention with the kv heads repeated for GQA."""
    n_rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(n_rep, 1), v.repeat_interleave(n_rep, 1)
    return attention(q, k, v, is_causal=causal)


def sdpa(q, k, v, causal):
    """SDPA with the bottom-right causal mask (its own is_causal aligns top-left)."""
    mask = causal_mask(q.shape[2], k.shape[2], q.device) if causal else None
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                          enable_gqa=q.shape[1] != k.shape[1])


# ---------------------------------------------------------------------------------------
# tolerances, from the arithmetic
#
# With u the unit roundoff of the dtype a computation runs in (half its machine epsilon), a
# sum of n terms is off by at most gamma(n) = n u / (1 - n u) times the same sum over the
# terms' absolute values (Higham, "Accuracy and Stability of Numerical Algorithms", 2002,
# section 3.1). The bounds below are these worst cases, for two implementations that each
# round their own way (a parity test compares two), scaled by the inputs' sizes.

def unit_roundoff(dtype):
    return torch.finfo(dtype).eps / 2


def gamma(n, dtype):
    nu = n * unit_roundoff(dtype)
    return nu / (1 - nu)


def score_size(q, k):
    """A bound S on every score's size sum_l |q_il k_jl| / sqrt(d): by Cauchy-Schwarz,
    max ||q_i|| max ||k_j|| / sqrt(d)."""
    q_norm, k_norm = q.double().norm(dim=-1).max(), k.double().norm(dim=-1).max()
    return float(q_norm * k_norm) / q.shape[-1] ** 0.5


def attention_tolerance(q, k, v, out_dtype=None, rounded_p=None):
    """(atol, rtol) for two attention outputs from the same q, k, v.

    A score is a head_dim-term dot product and a scale; with the subtraction of the row max
    and the exponential, each exponent is off by at most ds = gamma(d + 3) (S + 1), S the
    largest score size: a weight's relative error. The output is an average of v's rows with
    normalised weights, so it moves by at most 2 ds max|v|; the sums of the weights and of
    weights times v (kv_len terms, the rescaling per tile, the division) add
    2 gamma(kv_len + 4) max|v|. `rounded_p`: the dtype the weights are cast to before the
    product with v (the Triton kernel's fp16 path), u max|v| more. Each side finally rounds
    to out_dtype: rtol. Two sides: twice each.
    """
    acc = torch.promote_types(q.dtype, torch.float32)   # every side sums in fp32 at least
    ds = gamma(q.shape[-1] + 3, acc) * (score_size(q, k) + 1)
    per_side = 2 * ds + 2 * gamma(k.shape[2] + 4, acc)
    if rounded_p is not None:
        per_side += unit_roundoff(rounded_p)
    atol = 2 * per_side * float(v.double().abs().max())
    return atol, 2 * unit_roundoff(out_dtype or q.dtype)


def gradient_tolerances(q, k, v, grad_out, causal):
    """atol for dq, dk, dv of two attention backward passes in fp32 from the same inputs.

    P = exp(S - L) is off, relatively, by twice the exponent error ds of attention_tolerance
    (once in S, once in the log-sum-exp L) and by L's kv_len-term sum; D = rowsum(dO * O)
    carries the forward's error in O (or, summed as rowsum(P * dP) by autograd, kv_len more
    terms): another kv_len-term sum. The rest is a chain of sums: dP = dO V^T and D (dv
    terms; O averages v's rows, so |O| <= max|v|), dS = P * (dP - D), then dq = dS K / sqrt(d)
    (kv_len terms), and dk = dS^T Q / sqrt(d) and dv = P^T dO (n_rep * q_len terms: every
    query row sharing the key). Each is off by at most gamma(its depth) times the same sums
    over absolute values, computed here in fp64 from the exact P.
    """
    n_rep = q.shape[1] // k.shape[1]
    q64, g64 = q.double(), grad_out.double()
    k64, v64 = (t.double().repeat_interleave(n_rep, 1) for t in (k, v))
    scale = q.shape[-1] ** -0.5
    scores = (q64 @ k64.transpose(-1, -2)) * scale
    if causal:
        scores = scores.masked_fill(~causal_mask(q.shape[2], k.shape[2]), float("-inf"))
    p = scores.softmax(-1)                                          # (b, h, q_len, kv_len)
    dp_size = g64.abs() @ v64.abs().transpose(-1, -2)
    d_size = (g64.abs() * v64.abs().amax(-2, keepdim=True)).sum(-1, keepdim=True)
    ds_size = p * (dp_size + d_size)                                # >= |dS| term by term
    sizes = (scale * ds_size @ k64.abs(),
             (scale * ds_size.transpose(-1, -2) @ q64.abs()).unflatten(1, (-1, n_rep)).sum(2),
             (p.transpose(-1, -2) @ g64.abs()).unflatten(1, (-1, n_rep)).sum(2))
    f32, dv, kv_len, rows = torch.float32, v.shape[-1], k.shape[2], n_rep * q.shape[2]
    p_error = 2 * gamma(q.shape[-1] + 3, f32) * (score_size(q, k) + 1) + 2 * gamma(kv_len + 5, f32)
    depths = (dv + 3 + kv_len + 1, dv + 3 + rows + 1, rows)
    return [2 * (gamma(depth, f32) + p_error) * float(size.max())
            for depth, size in zip(depths, sizes, strict=True)]


def assert_attention_close(out, expected, q, k, v, **kwargs):
    atol, rtol = attention_tolerance(q, k, v, **kwargs)
    torch.testing.assert_close(out, expected, atol=atol, rtol=rtol)


# ---------------------------------------------------------------------------------------
# softmax from parts

def test_softmax_of_a_concatenation_from_its_parts():
    g = torch.Generator().manual_seed(1)
    x1, x2 = torch.randn(4, 7, generator=g) * 5, torch.randn(4, 3, generator=g) * 5 + 4
    (m1, l1), (m2, l2) = flash.softmax_stats(x1), flash.softmax_stats(x2)
    m, l = flash.merge_softmax_stats(m1, l1, m2, l2)
    whole = torch.cat([x1, x2], -1)
    torch.testing.assert_close(m, whole.amax(-1))
    torch.testing.assert_close(l, torch.exp(whole - m[:, None]).sum(-1))
    parts = [torch.exp(x1 - m[:, None]), torch.exp(x2 - m[:, None])]
    from_parts = torch.cat(parts, -1) / l[:, None]
    torch.testing.assert_close(from_parts, torch.softmax(whole, -1))


def test_merging_with_an_empty_part_keeps_the_other():
    m, l = flash.merge_softmax_stats(torch.tensor([-float("inf")]), torch.tensor([0.0]),
                                     torch.tensor([2.0]), torch.tensor([3.0]))
    assert m.item() == 2.0 and l.item() == 3.0       # exact: exp(-inf) = 0 and exp(0) = 1


@pytest.mark.parametrize("dim, block_size", [(-1, 1), (-1, 3), (0, 2), (1, 100)])
def test_online_softmax_equals_torch_softmax(dim, block_size):
    x = torch.randn(5, 11, 3, generator=torch.Generator().manual_seed(2)) * 10
    torch.testing.assert_close(flash.online_softmax(x, dim, block_size), torch.softmax(x, dim))


def test_online_softmax_does_not_overflow_and_handles_masked_entries():
    x = torch.tensor([[1000.0, 1001.0, -float("inf"), 999.0], [-1e4, 0.0, 5.0, -float("inf")]])
    out = flash.online_softmax(x, block_size=1)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, torch.softmax(x, -1))


def test_online_softmax_rejects_bad_arguments():
    with pytest.raises(ValueError, match="block_size must be at least 1"):
        flash.online_softmax(torch.randn(3), block_size=0)
    with pytest.raises(TypeError, match="floating-point"):
        flash.online_softmax(torch.arange(3))


# ---------------------------------------------------------------------------------------
# tiled attention: forward

SHAPES = [  # batch, n_heads, n_kv_heads, q_len, kv_len, head_dim, block_q, block_k
    (2, 4, 4, 37, 37, 16, 8, 16),     # lengths that are not multiples of the blocks
    (1, 8, 2, 50, 50, 8, 16, 7),      # GQA, odd block_k
    (1, 4, 1, 20, 20, 32, 64, 64),    # MQA, one tile larger than the sequence
    (2, 2, 2, 5, 41, 8, 4, 8),        # q_len < kv_len: queries after a cached prefix
    (1, 2, 1, 1, 33, 8, 64, 5),       # one decode step
    (1, 1, 1, 1, 1, 4, 64, 64),       # a single position
]


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_tiled_attention_equals_naive_attention_and_sdpa(shape, causal):
    batch, n_heads, n_kv_heads, q_len, kv_len, head_dim, block_q, block_k = shape
    q, k, v = qkv(batch, n_heads, n_kv_heads, q_len, kv_len, head_dim)
    out = flash.tiled_attention(q, k, v, causal=causal, block_q=block_q, block_k=block_k)
    assert out.shape == q.shape and out.dtype == q.dtype
    assert_attention_close(out, naive(q, k, v, causal), q, k, v)
    assert_attention_close(out, sdpa(q, k, v, causal), q, k, v)


@settings(max_examples=20, deadline=None)
@given(q_len=st.integers(1, 40), extra=st.integers(0, 20), block_q=st.integers(1, 24),
       block_k=st.integers(1, 24), n_kv_heads=st.sampled_from([1, 2, 4]),
       causal=st.booleans())
def test_tiled_attention_matches_sdpa_for_any_lengths_and_blocks(q_len, extra, block_q,
                                                                  block_k, n_kv_heads, causal):
    q, k, v = qkv(1, 4, n_kv_heads, q_len, q_len + extra, 8, seed=q_len * 31 + extra)
    out = flash.tiled_attention(q, k, v, causal, block_q, block_k)
    assert_attention_close(out, sdpa(q, k, v, causal), q, k, v)


def test_defaults_are_non_causal_with_64_blocks_and_accept_non_contiguous_inputs():
    x = torch.randn(2, 130, 4, 16, generator=torch.Generator().manual_seed(3))  # (b, s, h, d)
    q = k = v = x.transpose(1, 2)                                              # (b, h, s, d)
    assert not q.is_contiguous()
    assert_attention_close(flash.tiled_attention(q, k, v),
                           F.scaled_dot_product_attention(q, k, v), q, k, v)


def test_causal_skips_every_tile_above_the_diagonal(monkeypatch):
    visited = []
    real_step = flash.online_step

    def counting_step(m, l, acc, scores, v):
        visited.append(scores.shape[-2:])
        return real_step(m, l, acc, scores, v)

    monkeypatch.setattr(flash.tiled, "online_step", counting_step)   # where the forward finds it
    q, k, v = qkv(1, 1, 1, 64, 64, 8)
    flash.tiled_attention(q, k, v, causal=True, block_q=16, block_k=16)
    assert len(visited) == 4 + 3 + 2 + 1                     # of the 16 tiles
    visited.clear()
    flash.tiled_attention(q, k, v, causal=False, block_q=16, block_k=16)
    assert len(visited) == 16
    visited.clear()
    q, k, v = qkv(1, 1, 1, 8, 40, 8)                          # offset 32: row i is position 32+i
    flash.tiled_attention(q, k, v, causal=True, block_q=4, block_k=16)
    assert len(visited) == 2 * 3                              # keys 32..39 sit in tile 2


@settings(max_examples=50, deadline=None)
@given(q_len=st.integers(1, 30), extra=st.integers(0, 10), data=st.data())
def test_block_kind_agrees_with_the_causal_mask(q_len, extra, data):
    mask = causal_mask(q_len, q_len + extra)
    qs = data.draw(st.integers(0, q_len - 1))
    qe = data.draw(st.integers(qs + 1, q_len))
    ks = data.draw(st.integers(0, q_len + extra - 1))
    ke = data.draw(st.integers(ks + 1, q_len + extra))
    tile = mask[qs:qe, ks:ke]
    expected = "skip" if not tile.any() else "full" if tile.all() else "partial"
    assert flash.block_kind(qs, qe, ks, ke, extra) == expected


@settings(max_examples=50, deadline=None)
@given(q_len=st.integers(1, 30), extra=st.integers(0, 10), block_q=st.integers(1, 12),
       block_k=st.integers(1, 12), causal=st.booleans())
def test_the_tile_walk_visits_each_visible_score_once(q_len, extra, block_q, block_k, causal):
    kv_len = q_len + extra
    walk = list(flash.tiles(q_len, kv_len, block_q, block_k, causal))
    seen = torch.zeros(q_len, kv_len, dtype=torch.int64)
    for tile in walk:
        assert tile.kind != "skip"
        seen[tile.rows, tile.keys] += tile.visible("cpu") if tile.kind == "partial" else 1
    visible = causal_mask(q_len, kv_len) if causal else torch.ones(q_len, kv_len, dtype=bool)
    assert torch.equal(seen, visible.long())
    grid = list(flash.tiles(q_len, kv_len, block_q, block_k, causal, keep_skipped=True))
    assert len(grid) == -(-q_len // block_q) * -(-kv_len // block_k)
    assert [tile for tile in grid if tile.kind != "skip"] == walk


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_other_dtypes_keep_their_dtype_and_accumulate_in_at_least_fp32(dtype):
    q, k, v = qkv(1, 2, 2, 30, 30, 16, dtype=dtype)
    out = flash.tiled_attention(q, k, v, causal=True, block_q=8, block_k=8)
    assert out.dtype == dtype
    expected = sdpa(q.double(), k.double(), v.double(), True)
    # the sums run in fp32 (fp64 for fp64) and only the result is rounded to fp16 / bf16,
    # so the bound is fp32's plus one rounding in dtype; summing in fp16 would miss it
    assert_attention_close(out.double(), expected, q, k, v, out_dtype=dtype)


def test_tiled_attention_steps_converge_to_the_exact_rows():
    q, k, v = qkv(1, 2, 2, 24, 24, 8)
    states = list(flash.tiled_attention_steps(q, k, v, 8, 16, causal=True, block_k=8))
    assert [s.kind for s in states] == ["full", "partial", "skip"]
    exact = naive(q, k, v, True)[..., 8:16, :]
    atol, rtol = attention_tolerance(q, k, v)
    torch.testing.assert_close(states[-1].out, exact, atol=atol, rtol=rtol)
    assert (states[0].out - exact).abs().max() > 10 * atol  # keys 8..15 not seen yet
    assert states[1].m.shape == (1, 2, 8) and (states[1].m >= states[0].m).all()


def test_tiled_attention_steps_share_kv_heads_and_check_the_query_range():
    q, k, v = qkv(1, 4, 2, 12, 12, 8)                                 # GQA: 2 heads per kv head
    last = list(flash.tiled_attention_steps(q, k, v, 4, 9, causal=True, block_k=4))[-1]
    assert last.out.shape == (1, 4, 5, 8)
    assert_attention_close(last.out, naive(q, k, v, True)[..., 4:9, :], q, k, v)
    with pytest.raises(ValueError, match="need 0 <= q_start < q_end <= q_len \\(12\\)"):
        list(flash.tiled_attention_steps(q, k, v, 8, 13))


@pytest.mark.parametrize("args, error, match", [
    ((torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.randn(2, 3, 4)), ValueError,
     "must be \\(batch, n_heads, seq, head_dim\\)"),
    ((torch.randn(1, 6, 4, 8), torch.randn(1, 4, 4, 8), torch.randn(1, 4, 4, 8)), ValueError,
     "must be divisible by k's n_kv_heads \\(4\\); try n_kv_heads in \\[1, 2, 3, 6\\]"),
    ((torch.randn(1, 2, 4, 8), torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4)), ValueError,
     "shape mismatch"),
    ((torch.randn(1, 2, 4, 8), torch.randn(1, 2, 0, 8), torch.randn(1, 2, 0, 8)), ValueError,
     "kv_len = 0"),
    ((torch.ones(1, 2, 4, 8, dtype=torch.long),) * 3, TypeError, "floating point"),
])
def test_bad_inputs_raise_clear_errors(args, error, match):
    with pytest.raises(error, match=match):
        flash.tiled_attention(*args)


def test_bad_settings_raise_clear_errors():
    q, k, v = qkv(1, 2, 2, 8, 4, 8)
    with pytest.raises(ValueError, match="causal attention needs kv_len \\(4\\) >= q_len"):
        flash.tiled_attention(q, k, v, causal=True)
    with pytest.raises(ValueError, match="block_k must be a positive int"):
        flash.tiled_attention(q, k, v, block_k=0)
    with pytest.raises(ValueError, match="block_q must be a positive int"):
        flash.tiled_attention(q, k, v, block_q=8.0)
    with pytest.raises(ValueError, match="block_k must be a positive int"):
        list(flash.tiles(8, 8, 4, 0, causal=True))


# ---------------------------------------------------------------------------------------
# tiled attention: backward by recomputation

@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", [(2, 4, 2, 19, 19, 8, 8, 5), (1, 2, 1, 6, 23, 16, 4, 8),
                                   (1, 3, 3, 33, 33, 8, 64, 16)],
                         ids=["gqa-odd", "prefix-mqa", "mha"])
def test_gradients_equal_naive_attentions(shape, causal):
    batch, n_heads, n_kv_heads, q_len, kv_len, head_dim, block_q, block_k = shape
    inputs = qkv(batch, n_heads, n_kv_heads, q_len, kv_len, head_dim, seed=5)
    grad_out = torch.randn(batch, n_heads, q_len, head_dim,
                           generator=torch.Generator().manual_seed(6))
    tiled_in = [t.clone().requires_grad_() for t in inputs]
    naive_in = [t.clone().requires_grad_() for t in inputs]
    flash.tiled_attention(*tiled_in, causal, block_q, block_k).backward(grad_out)
    naive(*naive_in, causal).backward(grad_out)
    atols = gradient_tolerances(*inputs, grad_out, causal)
    for name, a, b, atol in zip("qkv", tiled_in, naive_in, atols, strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=atol, rtol=0, msg=f"d{name}")


def test_gradcheck_in_float64():
    inputs = [t.requires_grad_() for t in qkv(1, 2, 1, 5, 7, 3, dtype=torch.float64, seed=7)]
    assert torch.autograd.gradcheck(
        lambda q, k, v: flash.tiled_attention(q, k, v, True, 2, 3), inputs)


def test_backward_saves_no_score_matrix():
    q, k, v = (t.requires_grad_() for t in qkv(1, 2, 2, 64, 64, 8))
    out = flash.tiled_attention(q, k, v, causal=True, block_q=16, block_k=16)
    saved = out.grad_fn.saved_tensors
    assert max(t.numel() for t in saved) == 2 * 64 * 8   # q, k, v, out; no 64 x 64 matrix


# ---------------------------------------------------------------------------------------
# the IO model and the memory meter

def test_naive_io_counts_every_pass_over_slow_memory():
    n, d = 10, 4
    cost = flash.naive_io(n, d)
    assert cost.reads == 2 * n * d + n * n + n * n + n * d           # Q K, S, P and V
    assert cost.writes == n * n + n * n + n * d                        # S, P, O
    assert cost.bytes(2) == 2 * cost.total


def counted_forward_io(monkeypatch, seq_len, head_dim, block_q, block_k, causal):
    """Run the tiled forward and count, in FlashAttention-2's terms, what its tile walk moves:
    a query block's Q read and its O and L written once, when the walk reaches a new query
    block; each computed tile's K and V rows read. Counts the tiles the forward computes
    (through online_step) to make sure the walk counted is the one it follows."""
    counts = {"reads": 0, "writes": 0, "tiles": 0, "steps": 0}
    real_tiles, real_step = flash.tiled.tiles, flash.tiled.online_step

    def counting_tiles(*args, **kwargs):
        block = None
        for tile in real_tiles(*args, **kwargs):
            rows = tile.q_end - tile.q_start
            if tile.q_start != block:                        # a new query block: Q in, O out
                block = tile.q_start
                counts["reads"] += rows * head_dim
                counts["writes"] += rows * head_dim + rows
            counts["reads"] += 2 * (tile.k_end - tile.k_start) * head_dim   # K_j and V_j
            counts["tiles"] += 1
            yield tile

    def counting_step(*args):
        counts["steps"] += 1
        return real_step(*args)

    monkeypatch.setattr(flash.tiled, "tiles", counting_tiles)
    monkeypatch.setattr(flash.tiled, "online_step", counting_step)
    q, k, v = qkv(1, 1, 1, seq_len, seq_len, head_dim)
    flash.tiled_attention(q, k, v, causal=causal, block_q=block_q, block_k=block_k)
    assert counts["steps"] == counts["tiles"]
    return flash.IOCost(counts["reads"], counts["writes"])


@pytest.mark.parametrize("seq_len, head_dim, block_q, block_k", [
    (64, 8, 16, 16), (37, 4, 8, 5), (50, 8, 64, 16), (9, 2, 1, 1)])
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_flash2_io_counts_the_implemented_walk(monkeypatch, seq_len, head_dim, block_q,
                                               block_k, causal):
    counted = counted_forward_io(monkeypatch, seq_len, head_dim, block_q, block_k, causal)
    assert flash.flash2_io(seq_len, head_dim, block_q, block_k, causal) == counted   # exact


def test_flash2_io_reads_q_once_writes_o_once_and_k_v_once_per_query_block():
    n, d, bq, bk = 1000, 64, 100, 50
    cost = flash.flash2_io(n, d, bq, bk)
    t_r = n // bq
    assert cost.reads == n * d + t_r * 2 * n * d
    assert cost.writes == n * d + n                                    # O and L
    whole = flash.flash2_io(n, d, n, bk)                               # one query block
    assert whole.reads == 3 * n * d


def test_flash1_io_passes_over_q_o_l_m_once_per_key_block():
    n, d, bk = 1000, 64, 250
    cost, t_c = flash.flash1_io(n, d, bk), n // bk
    assert cost.reads == 2 * n * d + t_c * (2 * n * d + 2 * n)        # K, V; Q, O, l, m each
    assert cost.writes == (n * d + 2 * n) + t_c * (n * d + 2 * n)     # init; O, l, m each


def test_both_orders_follow_theta_n2_d2_over_m():
    d, m = 64, 100 * 1024 // 2                         # 100 KB of fp16: the paper's example
    block_q, block_k = flash.paper_blocks(m, d)
    assert (block_q, block_k) == (64, 200)
    for count in (lambda n, mm: flash.flash1_io(n, d, flash.paper_blocks(mm, d)[1]),
                  lambda n, mm: flash.flash2_io(n, d, *flash.paper_blocks(mm, d))):
        small, big = count(4096, m), count(8192, m)
        assert 3.8 < big.total / small.total < 4.1    # N^2
        assert count(4096, m).total < flash.naive_io(4096, d).total
    # with the same blocks, FA-2 moves K, V (2Nd) per query block where FA-1 moves Q in and
    # O in and out (3Nd) plus l and m per key block
    assert flash.flash2_io(4096, d, 128, 128).total < flash.flash1_io(4096, d, 128).total
    # FA-1's count falls as 1 / M through B_c = M / 4d
    assert 1.75 < (flash.flash1_io(4096, d, 200).total / flash.flash1_io(4096, d, 400).total) < 2.05


def test_the_papers_memory_hierarchy():
    sram = flash.HIERARCHY["SRAM"]
    assert sram["bytes_per_sm"] * sram["n_sm"] == 192 * 1024 * 108     # about 20 MB
    assert flash.HIERARCHY["HBM"]["bandwidth_tb_s"] == (1.5, 2.0)


def test_io_models_reject_bad_sizes():
    with pytest.raises(ValueError, match="seq_len must be a positive int"):
        flash.naive_io(0, 64)
    with pytest.raises(ValueError, match="must hold at least 4 \\* head_dim"):
        flash.paper_blocks(100, 64)
    with pytest.raises(ValueError, match="block_q must be a positive int"):
        flash.flash2_io(128, 64, 0, 16)


def test_tiled_attention_memory_grows_linearly_and_naive_quadratically():
    peaks = {}
    for n in (256, 512):
        q, k, v = qkv(1, 2, 2, n, n, 16)
        with torch.no_grad():
            peaks[n] = (peak_memory(attention, q, k, v, is_causal=True),
                        peak_memory(flash.tiled_attention, q, k, v, causal=True,
                                    block_q=128, block_k=128))
    naive_ratio, tiled_ratio = peaks[512][0] / peaks[256][0], peaks[512][1] / peaks[256][1]
    assert 3.5 < naive_ratio < 4.5 and tiled_ratio < 2.1   # N^2 vs at most N
    assert peaks[512][1] * 8 < peaks[512][0]


# ---------------------------------------------------------------------------------------
# Triton kernels (native on a CUDA GPU, interpreted on the CPU)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
needs_triton = pytest.mark.skipif(not flash.triton_available(), reason="triton not installed")


@pytest.fixture(scope="module")
def kernels():
    return flash.triton_kernels()


@needs_triton
@pytest.mark.parametrize("shape, causal, dtype", [
    ((1, 2, 1, 40, 40, 16), True, torch.float32),      # GQA, q_len not a multiple of 16
    ((1, 2, 2, 40, 40, 16), False, torch.float32),
    ((1, 2, 2, 5, 37, 8), True, torch.float32),        # cached prefix, head_dim padded to 16
    ((1, 2, 1, 24, 24, 16), True, torch.float16),
], ids=["gqa-causal", "full", "prefix", "fp16"])
def test_triton_flash_attention_equals_sdpa(kernels, shape, causal, dtype):
    q, k, v = qkv(*shape, dtype=dtype, device=DEVICE)
    out = kernels.flash_attention(q, k, v, causal=causal, block_m=16, block_n=16)
    assert out.shape == q.shape and out.dtype == dtype
    expected = sdpa(q.float(), k.float(), v.float(), causal)
    # the kernel sums in fp32, but casts the weights p to fp16 before p @ v on fp16 inputs
    assert_attention_close(out.float(), expected, q, k, v, out_dtype=dtype,
                           rounded_p=None if dtype == torch.float32 else dtype)
    if dtype == torch.float32:
        assert_attention_close(out, flash.tiled_attention(q, k, v, causal), q, k, v)


@needs_triton
def test_triton_forward_returns_the_log_sum_exp(kernels):
    q, k, v = qkv(1, 2, 1, 21, 29, 16, device=DEVICE)
    out, lse = kernels.flash_attention_forward(q, k, v, causal=True, block_m=16, block_n=16)
    assert lse.shape == q.shape[:3] and lse.dtype == torch.float32
    scores = (q @ k.repeat_interleave(2, 1).transpose(-1, -2)) / 4.0
    scores = scores.masked_fill(~causal_mask(21, 29, q.device), float("-inf"))
    # L = m + log l: the scores' rounding (d-term dot products) plus a kv_len-term sum
    f32 = torch.float32
    atol = 2 * (gamma(16 + 3, f32) * (score_size(q, k) + 1) + gamma(29 + 4, f32))
    torch.testing.assert_close(lse, torch.logsumexp(scores, -1), atol=atol, rtol=0)
    assert_attention_close(out, sdpa(q, k, v, True), q, k, v)


@needs_triton
@pytest.mark.parametrize("shape, causal", [((1, 4, 2, 40, 40, 16), True),
                                           ((1, 2, 2, 9, 37, 8), True),
                                           ((2, 2, 1, 24, 24, 16), False)],
                         ids=["gqa-causal", "prefix", "mqa-full"])
def test_triton_backward_equals_sdpa_gradients(kernels, shape, causal):
    # fp32: the interpreter computes bf16 tl.dot wrongly; shapes small: it is slow
    inputs = qkv(*shape, seed=11, device=DEVICE)
    grad_out = torch.randn(*shape[:2], shape[3], shape[5],
                           generator=torch.Generator().manual_seed(12)).to(DEVICE)
    triton_in = [t.clone().requires_grad_() for t in inputs]
    sdpa_in = [t.clone().requires_grad_() for t in inputs]
    kernels.flash_attention(*triton_in, causal=causal, block_m=16, block_n=16).backward(grad_out)
    sdpa(*sdpa_in, causal).backward(grad_out)
    atols = gradient_tolerances(*(t.cpu() for t in inputs), grad_out.cpu(), causal)
    for name, a, b, atol in zip("qkv", triton_in, sdpa_in, atols, strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=atol, rtol=0, msg=f"d{name}")


@needs_triton
def test_the_triton_loader_can_be_called_again(kernels):
    assert flash.triton_kernels() is kernels          # loading did not replace the loader


@needs_triton
def test_triton_flash_attention_rejects_what_it_cannot_do(kernels):
    q, k, v = qkv(1, 2, 2, 16, 16, 16, device=DEVICE)
    with pytest.raises(ValueError, match="power of two >= 16"):
        kernels.flash_attention(q, k, v, block_m=24)
    if kernels.INTERPRETED:
        with pytest.raises(TypeError, match="bf16"):
            kernels.flash_attention(*(t.bfloat16() for t in (q, k, v)))
        with pytest.raises(ValueError, match="pass CPU tensors"):
            kernels.flash_attention(*(t.to("meta") for t in (q, k, v)))


@needs_triton
@pytest.mark.parametrize("shape, dtype", [((3, 5, 100), torch.float32), ((7, 64), torch.float32),
                                          ((4, 33), torch.float16)])
def test_triton_rmsnorm_equals_llama_edu_rmsnorm(kernels, shape, dtype):
    g = torch.Generator().manual_seed(9)
    norm = RMSNorm(shape[-1], eps=1e-5)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(shape[-1], generator=g))
    x = torch.randn(shape, generator=g).to(dtype)
    expected = norm(x)
    out = kernels.rmsnorm(x.to(DEVICE), norm.weight.detach().to(DEVICE), norm.eps)
    assert out.shape == expected.shape and out.dtype == expected.dtype
    # Both normalise in fp32: a mean of dim squares, rsqrt and a product, gamma(dim + 4)
    # each. Casting the normalised x to x's dtype can then round the two to neighbouring
    # values, one ulp (2 u) apart, and the product with the weight rounds once more in
    # y's dtype. All relative to |y|; below x's smallest normal the ulp is absolute.
    x_type, y_type = torch.finfo(dtype), torch.finfo(expected.dtype)
    rtol = 2 * gamma(shape[-1] + 4, torch.float32) + x_type.eps + y_type.eps
    atol = x_type.smallest_normal * x_type.eps * float(norm.weight.detach().abs().max())
    torch.testing.assert_close(out.cpu(), expected.detach(), atol=atol, rtol=rtol)


@needs_triton
def test_triton_rmsnorm_rejects_a_mismatched_weight(kernels):
    with pytest.raises(ValueError, match="last dimension must match weight"):
        kernels.rmsnorm(torch.randn(2, 8, device=DEVICE), torch.ones(9, device=DEVICE))


@needs_triton
@pytest.mark.skipif(torch.cuda.is_available(), reason="about the CPU interpreter")
def test_kernels_run_interpreted_even_if_triton_was_imported_first(tmp_path):
    # torch._dynamo (used by dispatch modes, torch.compile) imports triton without the switch
    code = ("import sys, triton.language, torch\n"
            "from llama_edu import flash\n"
            "kernels = flash.triton_kernels()\n"
            "q = torch.randn(1, 2, 20, 16, generator=torch.Generator().manual_seed(0))\n"
            "out = kernels.flash_attention(q, q, q, causal=True, block_m=16, block_n=16)\n"
            "torch.save({'q': q, 'out': out, 'interpreted': kernels.INTERPRETED}, sys.argv[1])\n")
    env = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run.pt")], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    run = torch.load(tmp_path / "run.pt", weights_only=True)
    assert run["interpreted"]
    q = run["q"]
    assert_attention_close(run["out"], sdpa(q, q, q, True), q, q, q)


# ---------------------------------------------------------------------------------------
# the tile explorer

def test_tile_explorer_shows_the_skip_and_redraws():
    from llama_edu.widgets.flash import tile_explorer

    explorer = tile_explorer(seq_len=24, block=8, head_dim=8)
    fig = explorer.figure(q_block=1, step=2, causal=True)   # rows 8..15, keys 16..23
    assert "tile 2 is skip" in fig._suptitle.get_text()
    assert {"running max m", "running sum l", "partial output vs exact"} <= {
        ax.get_title() for ax in fig.axes}
    plt.close(fig)
    redraws = explorer.redraws
    explorer.controls["causal"].value = False
    assert explorer.redraws == redraws + 1 and plt.get_fignums() == []
    with pytest.raises(ValueError, match="must be positive"):
        tile_explorer(block=0)
