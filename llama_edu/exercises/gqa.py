"""Checks for lesson 07: repeat_kv, grouped-query attention without repeating K/V, and
grouping KV heads for MHA -> GQA."""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F

from ..attention import causal_mask, mean_pool_kv_heads, repeat_kv
from ..numerics import tolerance
from ._common import (
    ForbiddenCall,
    _from_the_grader,
    call,
    close,
    expect_tensor,
    forbids,
    passed,
    rng,
)
from .attention import _expect_shape

__all__ = ["check_repeat_kv", "check_gqa_attention", "check_group_kv_heads"]


def _same(actual, expected: torch.Tensor) -> bool:
    """True when actual is a tensor of expected's shape with exactly its values: repeating
    heads only copies, so no rounding can enter."""
    if not isinstance(actual, torch.Tensor) or actual.shape != expected.shape:
        return False
    return torch.allclose(actual.detach().double(), expected.double(), atol=0, rtol=0,
                          equal_nan=True)


# ---------------------------------------------------------------------------------------
# Warm-up: repeat_kv


@forbids("repeat_interleave", "repeat_kv")
def check_repeat_kv(fn) -> None:
    """fn(x, n_rep): (batch, seq, n_kv_heads, head_dim) -> (batch, seq, n_kv_heads * n_rep,
    head_dim), query head h reading KV head h // n_rep, written without repeat_interleave."""
    generator = rng(0)
    for shape, n_rep in (((2, 3, 2, 4), 3), ((1, 5, 4, 2), 1), ((2, 4, 1, 3), 4),
                         ((1, 2, 3, 2), 2)):
        x = torch.randn(shape, generator=generator)
        what = f"repeat_kv(x of shape {shape}, n_rep={n_rep})"
        with _GroupedReadGuard(what, copies=False):
            out = call(fn, x.clone(), n_rep, what=what,
                       forbidden=check_repeat_kv.forbidden_calls)
        ref = repeat_kv(x, n_rep)
        if isinstance(out, torch.Tensor) and out.shape != ref.shape and out.numel() == ref.numel():
            raise AssertionError(f"{what} returned shape {tuple(out.shape)}, expected "
                                 f"{tuple(ref.shape)}: repeat along dimension 2, the heads "
                                 "(x is batch, seq, n_kv_heads, head_dim)")
        _expect_shape(out, ref, what)
        if _same(out, ref):
            continue
        if _same(out, x.repeat(1, 1, n_rep, 1)):
            raise AssertionError(f"{what}: the heads come out tiled (kv0, kv1, kv0, kv1, ...), "
                                 "but query head h reads KV head h // n_rep, so each head's "
                                 "copies sit side by side (kv0, kv0, kv1, kv1, ...): expand a "
                                 "new axis after the heads and reshape")
        expect_tensor(out, ref, what)
    passed("repeat_kv is right: each KV head serves n_rep neighbouring query heads")


# ---------------------------------------------------------------------------------------
# Build: grouped-query attention that reads each KV head in place


_OWN = ("llama_edu.exercises._common", __name__)
_GATHERS = ("__getitem__", "index_select", "gather", "take", "take_along_dim")


def _copies_in_matmul(args) -> bool:
    """Whether torch.matmul must copy an operand: one whose batch axes are broadcast against
    the other's, yet hold more than one matrix (a single matrix is read with stride 0; a
    (2, 1) batch expanded to (2, 4) cannot be, so matmul expands and clones it)."""
    a, b = (args + (None, None))[:2]
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return False
    if a.dim() < 3 or b.dim() < 3:      # a 1-d or 2-d operand is folded in, not copied
        return False
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]).numel()
    return any(1 < t.shape[:-2].numel() < batch for t in (a, b))


class _GroupedReadGuard(torch.overrides.TorchFunctionMode):
    """Inside the learner's call: refuse the ways of materialising repeated K/V that no
    function name gives away (a broadcasting matmul, indexing that repeats heads, the
    package's own attention code)."""

    def __init__(self, what: str, copies: bool = True):
        super().__init__()
        self.what, self.copies = what, copies

    def __torch_function__(self, func, types, args=(), kwargs=None):
        frame = sys._getframe(1)
        while frame is not None and frame.f_globals.get("__name__") in _OWN:
            frame = frame.f_back            # past `call`'s own guard, to the real caller
        if not _from_the_grader(frame):
            module = frame.f_globals.get("__name__", "")
            name = getattr(func, "__name__", "")
            if module == "llama_edu.attention":
                raise ForbiddenCall(f"{self.what} calls llama_edu.attention."
                                    f"{frame.f_code.co_name}, the package's version of what "
                                    "this exercise asks you to write")
            matmul = name in ("matmul", "__matmul__", "__rmatmul__")
            if self.copies and matmul and _copies_in_matmul(tuple(args)):
                a, b = args[:2]
                raise ForbiddenCall(
                    f"{self.what}: your matmul of shapes {tuple(a.shape)} and {tuple(b.shape)} "
                    "broadcasts one operand over a batch axis, and torch.matmul then expands "
                    "and copies it (the repeated K/V in disguise). Fold the group into the "
                    "query rows instead: (batch, n_kv_heads, group * q_len, head_dim) against "
                    "k.transpose(-2, -1) of shape (batch, n_kv_heads, head_dim, kv_len)")
        out = func(*args, **(kwargs or {}))
        source = args[0] if args else None
        if (self.copies and getattr(func, "__name__", "") in _GATHERS
                and isinstance(out, torch.Tensor) and isinstance(source, torch.Tensor)
                and out.numel() > source.numel() and not _from_the_grader(frame)):
            raise ForbiddenCall(f"{self.what} indexes a tensor of shape {tuple(args[0].shape)} "
                                f"into a larger one {tuple(out.shape)}: that repeats heads, a "
                                "copy. Reshape the queries into groups instead")
        return out


def _gqa_cases():
    """(name, q, k, v) in SDPA's layout: q (b, n_heads, q_len, d), k, v (b, n_kv, kv_len, d)."""
    generator = rng(11)
    for name, (b, h, kv, q_len, kv_len, d) in (
            ("GQA: 8 query heads in 2 groups of 4, 6 tokens", (2, 8, 2, 6, 6, 16)),
            ("MHA: 4 query heads, 4 KV heads (groups of 1)", (1, 4, 4, 5, 5, 8)),
            ("MQA: 6 query heads sharing 1 KV head", (2, 6, 1, 4, 4, 8)),
            ("a decode step: 1 new query per head reading 7 keys, 8 heads in 2 groups",
             (2, 8, 2, 1, 7, 16)),
            ("3 new queries after 6 cached keys, 6 query heads in 3 groups of 2",
             (1, 6, 3, 3, 9, 4))):
        q = torch.randn(b, h, q_len, d, generator=generator)
        k, v = torch.randn(2, b, kv, kv_len, d, generator=generator).unbind(0)
        yield f"{name} (q {tuple(q.shape)}, k and v {tuple(k.shape)})", q, k, v


def _grouped(q, k, v, *, order="blocked", scale=True, causal="bottom", dim=-1, weights=False):
    """The checker's own grouped attention in float64, K/V repeated (outside the learner's
    call). The defaults are right; each keyword is one classic slip."""
    q, k, v = q.double(), k.double(), v.double()
    n_rep = q.shape[1] // k.shape[1]
    if order == "blocked":                              # KV head j -> query heads j*g .. j*g+g-1
        k, v = k.repeat_interleave(n_rep, 1), v.repeat_interleave(n_rep, 1)
    else:                                               # interleaved: query head h -> h % n_kv
        k, v = k.repeat(1, n_rep, 1, 1), v.repeat(1, n_rep, 1, 1)
    q_len, kv_len = q.shape[-2], k.shape[-2]
    scores = q @ k.transpose(-2, -1)
    if scale:
        scores = scores / q.shape[-1] ** 0.5
    ones = torch.ones(q_len, kv_len, dtype=torch.bool)
    mask = {"bottom": ones.tril(kv_len - q_len), "top": ones.tril(), "upper": ones.triu(),
            None: ones}[causal]
    probs = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=dim).nan_to_num(0.0)
    return probs if weights else probs @ v


def _gqa_mistakes(q, k, v):
    q_len, kv_len, n_kv = q.shape[-2], k.shape[-2], k.shape[1]
    group = q.shape[1] // n_kv
    if group > 1 and n_kv > 1:
        yield (_grouped(q, k, v, order="interleaved"),
               "your groups are interleaved: query head h reads KV head h % n_kv_heads (as "
               "q.view(batch, group, n_kv_heads, ...) does). KV head j serves the neighbouring "
               f"query heads j*group .. j*group + group - 1 (here group = {group}): view q as "
               "(batch, n_kv_heads, group, q_len, head_dim)")
    yield (_grouped(q, k, v, scale=False),
           "the scores are not scaled: divide q @ k^T by sqrt(head_dim) before the softmax")
    if q_len > 1 or kv_len > 1:
        yield (_grouped(q, k, v, causal=None),
               "there is no causal mask: a query reads the keys after it. Hide keys j > "
               "kv_len - q_len + i for query i")
    if q_len > 1:
        yield (_grouped(q, k, v, causal="upper"),
               "your causal mask is the upper triangle: each query reads the future. Query i "
               "may read keys j <= kv_len - q_len + i (torch.tril)")
        yield (_grouped(q, k, v, dim=-2),
               "you normalised over the queries (dimension -2); the softmax runs over the keys, "
               "the last dimension")
    if q_len < kv_len:
        yield (_grouped(q, k, v, causal="top"),
               "the causal mask is aligned top-left: with cached keys the queries are the LAST "
               "q_len of the kv_len positions, so use tril(diagonal=kv_len - q_len)")


def _close(actual, expected: torch.Tensor, reduction: int) -> bool:
    if not isinstance(actual, torch.Tensor) or actual.shape != expected.shape:
        return False
    expected = expected.detach().double()
    tol = tolerance(torch.float32, reduction=reduction, depth=3,
                    scale=float(expected.abs().max()))
    return torch.allclose(actual.detach().double(), expected, rtol=tol["rtol"],
                          atol=tol["atol"])


@forbids("repeat_interleave", "repeat", "expand", "expand_as", "broadcast_to", "tile",
         "repeat_kv", "scaled_dot_product_attention")
def check_gqa_attention(fn) -> None:
    """fn(q, k, v) -> causal grouped-query attention, (batch, n_heads, q_len, head_dim).

    q: (batch, n_heads, q_len, head_dim); k, v: (batch, n_kv_heads, kv_len, head_dim),
    kv_len >= q_len (the queries are the last q_len positions). KV head j serves query heads
    j*group .. j*group + group - 1. Written without repeating K/V: no repeat_interleave,
    repeat, expand, tile, repeat_kv or SDPA, no matmul that broadcasts (and so copies) an
    operand, no indexing that repeats heads. Compared with SDPA's enable_gqa."""
    for name, q, k, v in _gqa_cases():
        what = f"gqa_attention on {name}"
        with _GroupedReadGuard(what):
            out = call(fn, q.clone(), k.clone(), v.clone(), what=what,
                       forbidden=check_gqa_attention.forbidden_calls)
        mask = causal_mask(q.shape[-2], k.shape[-2])
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                             enable_gqa=q.shape[1] > k.shape[1])
        if not isinstance(out, torch.Tensor):
            raise AssertionError(f"{what} should return a torch.Tensor, got "
                                 f"{type(out).__name__}")
        if tuple(out.shape) != tuple(ref.shape):
            group = q.shape[1] // k.shape[1]
            hints = {(q.shape[0], k.shape[1], group, q.shape[2], q.shape[3]):
                     "that is still grouped (batch, n_kv_heads, group, q_len, head_dim); "
                     "reshape it back to (batch, n_heads, q_len, head_dim)",
                     (q.shape[0], q.shape[2], q.shape[1], q.shape[3]):
                     "that is (batch, q_len, n_heads, head_dim); keep the heads on dimension 1",
                     (*q.shape[:-1], k.shape[-2]):
                     "you returned the attention weights; multiply them by v"}
            hint = hints.get(tuple(out.shape), "expected (batch, n_heads, q_len, head_dim)")
            raise AssertionError(f"{what} returned shape {tuple(out.shape)}, expected "
                                 f"{tuple(ref.shape)}: {hint}")
        reduction = max(q.shape[-1], k.shape[-2])
        if _close(out, ref, reduction):
            continue
        for mistake, hint in _gqa_mistakes(q, k, v):
            if _close(out, mistake, reduction):
                raise AssertionError(f"{what}: {hint}")
        if torch.isnan(out).any():
            raise AssertionError(f"{what}: the output holds NaN; is a row of the scores all "
                                 "-inf (the causal mask must leave each query its own key)?")
        worst = float((out.detach().double() - ref.double()).abs().max())
        raise AssertionError(f"{what} is off by up to {worst:.3g}. Expected softmax(q @ k^T / "
                             "sqrt(head_dim), causal) @ v, query head h reading KV head "
                             "h // group; check the order of the reshapes")
    passed("gqa_attention is right: each KV head read in place by its group of query heads, "
           "equal to SDPA's enable_gqa for MHA, GQA, MQA and decode steps")


# ---------------------------------------------------------------------------------------
# Grouping the heads of an MHA checkpoint


def check_group_kv_heads(fn) -> None:
    """fn(weight, n_heads, n_kv_heads): mean-pool the (n_heads * head_dim, dim) key or value
    projection into (n_kv_heads * head_dim, dim), group g = heads g*n_rep .. (g+1)*n_rep - 1."""
    generator = rng(0)
    for n_heads, n_kv_heads, head_dim, dim in ((4, 2, 3, 5), (6, 2, 2, 4), (4, 1, 2, 3),
                                               (4, 4, 2, 3)):
        weight = torch.randn(n_heads * head_dim, dim, generator=generator)
        what = f"group_kv_heads(n_heads={n_heads}, n_kv_heads={n_kv_heads}, head_dim={head_dim})"
        out = call(fn, weight.clone(), n_heads, n_kv_heads, what=what)
        ref = mean_pool_kv_heads(weight, n_heads, n_kv_heads)
        _expect_shape(out, ref, what, hint="each KV head keeps its head_dim rows: "
                      "(n_kv_heads * head_dim, dim)")
        n_rep = n_heads // n_kv_heads      # a mean of n_rep heads: one sum of n_rep terms
        if close(out, ref, reduction=n_rep):
            continue
        heads = weight.reshape(n_heads, head_dim, dim)
        if close(out, ref * n_rep, reduction=n_rep):
            raise AssertionError(f"{what}: you added the heads of each group; average them "
                                 f"(divide by the group size n_heads // n_kv_heads = {n_rep})")
        strided = heads.reshape(n_rep, n_kv_heads, head_dim, dim).mean(0).reshape(ref.shape)
        if close(out, strided, reduction=n_rep):
            raise AssertionError(f"{what}: you grouped heads g, g + n_kv_heads, g + 2 n_kv_heads"
                                 "...; a group is the neighbouring heads g*n_rep .. "
                                 "(g+1)*n_rep - 1, the query heads repeat_kv hands KV head g to")
        first = heads.reshape(n_kv_heads, n_rep, head_dim, dim)[:, 0].reshape(ref.shape)
        if close(out, first, reduction=n_rep):
            raise AssertionError(f"{what}: you kept the first head of each group. The GQA "
                                 "paper starts from the mean of the group's heads, which "
                                 "keeps more of what every head knew")
        expect_tensor(out, ref, what, reduction=n_rep)
    passed("group_kv_heads is right: each KV head is the mean of its group's heads")
