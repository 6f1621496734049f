"""Checks for lesson 08: the tiled (FlashAttention-2) forward of one query block, and
merging two partial attention results through their log-sum-exps."""

from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F

from ..flash import softmax as flash_softmax
from ..flash import tiled as flash_tiled
from ..numerics import tolerance
from ._common import ForbiddenCall, call, forbids, passed, rng

__all__ = ["check_flash_query_block", "check_merge_attention"]


# ---------------------------------------------------------------------------------------
# The cases: (description, q_block, k, v, first_pos, block_k, causal)

def _cases():
    g = rng(8)
    yield ("the first query block (8 queries at positions 0..7, whose first row sees only "
           "key 0) against 8 keys in tiles of 4, causal",
           torch.randn(8, 16, generator=g), *torch.randn(2, 8, 16, generator=g), 0, 4, True)
    k, v = torch.randn(2, 2, 3, 23, 8, generator=g)
    yield ("a later query block (6 queries at positions 10..15) of 23 keys in tiles of 5, "
           "batch 2, 3 heads, causal: the tile 15..19 holds only the last row's own key, "
           "and the tiles after it are skipped",
           torch.randn(2, 3, 6, 8, generator=g), k, v, 10, 5, True)
    yield ("8 queries at positions 4..11 of 12 keys in tiles of 4, causal: in the tile "
           "8..11 the rows 4..7 see no key at all",
           torch.randn(8, 8, generator=g), *torch.randn(2, 12, 8, generator=g), 4, 4, True)
    yield ("5 queries against 13 keys in tiles of 5, no mask (13 is not a multiple of 5: "
           "the last tile has 3 keys)",
           torch.randn(2, 5, 8, generator=g), *torch.randn(2, 2, 13, 8, generator=g), 0, 5,
           False)
    yield ("one decode query at position 19 of 20 keys in tiles of 6, causal",
           torch.randn(1, 8, generator=g), *torch.randn(2, 20, 8, generator=g), 19, 6, True)
    yield ("3 queries at positions 4..6 of 7 keys in one tile of 16 (block_k > kv_len), "
           "causal",
           torch.randn(3, 8, generator=g), *torch.randn(2, 7, 8, generator=g), 4, 16, True)
    near = torch.ones(4, 8) + 0.02 * torch.randn(4, 8, generator=g)      # all close to 1
    keys = torch.ones(9, 8) + 0.02 * torch.randn(9, 8, generator=g)
    yield ("scores around +100 (exp of them overflows float32, whose largest exp is about "
           "exp(88)), 4 queries against 9 keys in tiles of 3, no mask",
           near * 6, keys * 6, torch.randn(9, 8, generator=g), 0, 3, False)
    yield ("scores around -120 (exp(-120) is 0 in float32), 4 queries against 9 keys in "
           "tiles of 3, no mask",
           near * 6.5, keys * -6.5, torch.randn(9, 8, generator=g), 0, 3, False)


def _visible(rows: int, kv_len: int, first_pos: int, causal: bool) -> torch.Tensor:
    """(rows, kv_len) bool: row i sits at position first_pos + i and sees keys up to it."""
    if not causal:
        return torch.ones(rows, kv_len, dtype=torch.bool)
    return torch.arange(kv_len)[None, :] <= first_pos + torch.arange(rows)[:, None]


def _poisoned(k, v, first_pos: int, rows: int, block_k: int, causal: bool):
    """k and v with NaN in every tile wholly after the block's last position: a forward that
    skips those tiles (as it must) never reads them; one that computes them gets NaN."""
    if not causal:
        return k, v
    first_skipped = ((first_pos + rows - 1) // block_k + 1) * block_k
    k, v = k.clone(), v.clone()
    k[..., first_skipped:, :] = float("nan")
    v[..., first_skipped:, :] = float("nan")
    return k, v


def _reference(q, k, v, first_pos, causal):
    """SDPA's output and the log-sum-exp of each masked score row, in float64."""
    q, k, v = q.double(), k.double(), v.double()
    mask = _visible(q.shape[-2], k.shape[-2], first_pos, causal)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = (q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])).masked_fill(~mask,
                                                                           float("-inf"))
    return out, torch.logsumexp(scores, -1)


# ---------------------------------------------------------------------------------------
# The classic slips, as one parametrised forward in the inputs' dtype (float32, so that
# overflow and underflow happen as in the learner's code); the defaults are right

def _slipped(q, k, v, first_pos, block_k, causal, *, rescale="both", m_init=float("-inf"),
             running_max=True, stable=True, skip="last_row", positions="global",
             see_self=True, normalise="end", scale=True):
    rows, d, kv_len = q.shape[-2], q.shape[-1], k.shape[-2]
    pos = torch.arange(rows) + (first_pos if positions == "global" else 0)
    m = torch.full(q.shape[:-1], m_init, dtype=q.dtype)
    l = torch.zeros(q.shape[:-1], dtype=q.dtype)
    acc = torch.zeros(*q.shape[:-1], v.shape[-1], dtype=q.dtype)
    q = q / math.sqrt(d) if scale else q
    for start in range(0, kv_len, block_k):
        end = min(start + block_k, kv_len)
        if causal and skip != "none":
            limit = {"last_row": pos[-1], "first_row": pos[0], "diagonal": pos[-1] - 1}[skip]
            if start > limit:
                break
        s = q @ k[..., start:end, :].transpose(-1, -2)
        if causal:
            keys = torch.arange(start, end)[None, :]
            hidden = keys > pos[:, None] if see_self else keys >= pos[:, None]
            s = s.masked_fill(hidden, float("-inf"))
        m_new = torch.maximum(m, s.amax(-1)) if running_max else s.amax(-1)
        if not stable:
            m_new = torch.zeros_like(m_new)
        alpha = torch.exp(m - m_new)
        p = torch.exp(s - m_new[..., None])
        l_scale = alpha if rescale in ("both", "l") else torch.ones_like(alpha)
        acc_scale = alpha if rescale in ("both", "acc") else torch.ones_like(alpha)
        l = l_scale * l + p.sum(-1)
        acc = acc_scale[..., None] * acc + p @ v[..., start:end, :]
        if normalise == "inside":
            acc = acc / l[..., None]
        m = m_new
    out = acc / l[..., None] if normalise == "end" else acc
    return out, m + torch.log(l)


_SLIPS = [
    ({"rescale": "none"}, "neither l nor acc was rescaled when the running max grew: both "
     "were summed under the old max, so multiply both by alpha = exp(m_old - m_new)"),
    ({"rescale": "l"}, "l was rescaled but acc (the unnormalised output) was not: the old "
     "acc needs the same factor alpha = exp(m_old - m_new) as l"),
    ({"rescale": "acc"}, "acc was rescaled but l was not: the old l needs the same factor "
     "alpha = exp(m_old - m_new) as acc"),
    ({"m_init": 0.0}, "the running max starts at 0 instead of -inf: when every score of a row "
     "is below about -88, exp(s - 0) underflows to 0 in float32 and l stays 0. Start m at "
     "-inf (nothing seen yet)"),
    ({"running_max": False}, "the new max is the tile's max alone; it must be max(m_old, the "
     "tile's max), else a row that sees none of a tile's keys gets m = -inf and NaN"),
    ({"stable": False}, "the raw scores were exponentiated: exp(s) overflows in float32 once "
     "s passes about 88; subtract the running max, p = exp(s - m_new)"),
    ({"skip": "first_row"}, "tiles were skipped when the block's FIRST row sees none of their "
     "keys, but later rows may: skip a tile only if even the last row (position "
     "first_pos + rows - 1) sees none of it"),
    ({"skip": "diagonal"}, "the tile that starts at the last row's own position was skipped: "
     "a query sees itself, so skip only tiles that start AFTER the last row's position"),
    ({"positions": "local"}, "the block's rows were taken as positions 0..rows-1: row i of a "
     "block starting at first_pos sits at position first_pos + i, and sees keys up to it"),
    ({"see_self": False}, "the causal mask hides each query's own key (keys >= position); a "
     "query sees keys up to AND including its own position (hide only keys > position)"),
    ({"normalise": "inside"}, "acc was divided by l inside the loop: FlashAttention-2 keeps acc "
     "unnormalised through the loop and divides by l once, after the last tile"),
    ({"normalise": "never"}, "out is acc, not acc / l: divide the unnormalised output by the "
     "running sum once, after the last tile"),
    ({"scale": False}, "the scores were not scaled: s = q k^T / sqrt(head_dim)"),
]

_NO_SKIP = ("a tile wholly after the block's last position was computed (its keys and "
            "values are NaN here on purpose; a correct forward never loads them): with "
            "causal=True stop the loop at the first tile whose first key is after the last "
            "row's position, first_pos + rows - 1")


class _RefusePackage(torch.overrides.TorchFunctionMode):
    """Refuse any torch call made from inside llama_edu.flash's own tiled forward."""

    CODES = {f.__code__: name for f, name in (
        (flash_tiled._tiled_forward, "llama_edu.flash.tiled_attention"),
        (flash_tiled.tiled_attention_steps, "llama_edu.flash.tiled_attention_steps"),
        (flash_softmax.online_step, "llama_edu.flash.online_step"),
        (flash_softmax.online_softmax, "llama_edu.flash.online_softmax"))}

    def __torch_function__(self, func, types, args=(), kwargs=None):
        frame = sys._getframe(1)
        while frame is not None:
            name = self.CODES.get(frame.f_code)
            if name:
                raise ForbiddenCall(f"your flash_query_block calls {name}, which this "
                                    "exercise asks you to write yourself")
            frame = frame.f_back
        return func(*args, **(kwargs or {}))


def _close(actual, expected, tol) -> bool:
    return (isinstance(actual, torch.Tensor) and actual.shape == expected.shape
            and torch.allclose(actual.detach().double(), expected.double(), rtol=tol["rtol"],
                               atol=tol["atol"], equal_nan=True))


def _tolerances(q, k, v):
    """(out, lse) tolerances: fp32 rounding over the longer of the dot products and the sum
    over keys, three steps deep (scores, exponentials, weighted sum). A score of size S is
    off by about u S, which moves each weight by that much relatively: scale by S + 1."""
    size = float(q.double().norm(dim=-1).max() * k.double().norm(dim=-1).max()) \
        / math.sqrt(q.shape[-1])
    n = max(q.shape[-1], k.shape[-2])
    out = tolerance(torch.float32, reduction=n, depth=3,
                    scale=float(v.abs().max()) * (size + 1))
    return out, tolerance(torch.float32, reduction=n, depth=3, scale=size + 1)


@forbids("scaled_dot_product_attention", "softmax", "logsumexp", "tiled_attention",
         "online_step", "online_softmax", "tiled_attention_steps")
def check_flash_query_block(fn) -> None:
    """fn(q_block, k, v, first_pos, block_k, causal) -> (out, lse).

    q_block: (..., rows, d), the queries at positions first_pos .. first_pos + rows - 1;
    k, v: (..., kv_len, d). One pass over key tiles of block_k with a running max m, sum l
    and unnormalised output acc; under `causal` each row sees keys up to its position and
    tiles wholly after the last row's position are skipped. out = acc / l, lse = m + log l.
    """
    what = "your flash_query_block"
    results = []
    for description, q, k, v, first_pos, block_k, causal in _cases():
        k_in, v_in = _poisoned(k, v, first_pos, q.shape[-2], block_k, causal)
        with _RefusePackage():
            result = call(fn, q.clone(), k_in.clone(), v_in.clone(), first_pos, block_k,
                          causal, what=what, forbidden=check_flash_query_block.forbidden_calls)
        case = f"{what} on {description}"
        if not (isinstance(result, (tuple, list)) and len(result) == 2
                and all(isinstance(t, torch.Tensor) for t in result)):
            raise AssertionError(f"{case} should return a pair of tensors (out, lse), got "
                                 f"{type(result).__name__}")
        out, lse = result
        ref_out, ref_lse = _reference(q, k, v, first_pos, causal)
        for name, got, ref in (("out", out, ref_out), ("lse", lse, ref_lse)):
            if tuple(got.shape) != tuple(ref.shape):
                raise AssertionError(f"{case}: {name} has shape {tuple(got.shape)}, expected "
                                     f"{tuple(ref.shape)} (out: (..., rows, d), lse: "
                                     "(..., rows))")
        out_tol, lse_tol = _tolerances(q, k, v)
        results.append((description, q, k_in, v_in, first_pos, block_k, causal, out, lse,
                        ref_out, ref_lse, out_tol, lse_tol))
    wrong = [r for r in results if not (_close(r[7], r[9], r[11]) and _close(r[8], r[10], r[12]))]
    if not wrong:
        passed(f"flash_query_block equals SDPA on all {len(results)} cases: the first row, "
               "ragged last tiles, skipped and partly hidden tiles, a decode step, scores "
               "near +-100")
        return
    _diagnose(what, results, wrong[0])


def _diagnose(what, results, first_wrong) -> None:
    (description, q, k, v, first_pos, block_k, causal, out, lse, ref_out, ref_lse, out_tol,
     lse_tol) = first_wrong
    case = f"{what} on {description}"
    for slip, message in _SLIPS:                   # a slip that explains every case
        if all(_close(r[7], _slipped(*r[1:7], **slip)[0], r[11]) for r in results):
            raise AssertionError(f"{case}: {message}")
    if _close(out, ref_out, out_tol):
        worst = float((lse.detach().double() - ref_lse).abs().nan_to_num(1e30).max())
        raise AssertionError(f"{case}: out is right but lse is off by up to {worst:.3g}: "
                             "lse = m + log(l), the running max plus the log of the running "
                             "sum (the log of the whole row's sum of exp(scores))")
    if causal and torch.isnan(out).any() and not torch.isnan(ref_out).any():
        raise AssertionError(f"{case}: {_NO_SKIP}")
    for slip, message in _SLIPS:                   # a slip that explains the first wrong case
        if _close(out, _slipped(q, k, v, first_pos, block_k, causal, **slip)[0], out_tol):
            raise AssertionError(f"{case}: {message}")
    worst = float((out.detach().double() - ref_out).abs().nan_to_num(1e30).max())
    raise AssertionError(f"{case}: out is off by up to {worst:.3g}. Per tile: s = q k^T / "
                         "sqrt(d) with hidden keys at -inf, m_new = max(m, max(s)), "
                         "alpha = exp(m - m_new), p = exp(s - m_new), l = alpha l + sum(p), "
                         "acc = alpha acc + p v; after the loop out = acc / l")


# ---------------------------------------------------------------------------------------
# Warm-up: merge two partial attention results through their log-sum-exp

def _merge_cases():
    g = rng(9)
    out1, out2 = torch.randn(2, 2, 3, 5, 8, generator=g)
    lse1, lse2 = torch.randn(2, 2, 3, 5, generator=g) * 2
    yield "two random halves (batch 2, 3 heads, 5 rows, d = 8)", out1, lse1, out2, lse2
    yield ("halves whose log-sum-exps are near 1000 (exp of them overflows)",
           out1, lse1 + 1000.0, out2, lse2 + 1001.0)
    empty = torch.full((2, 3, 5), float("-inf"))
    yield ("a second half that no row sees (lse = -inf, out = 0)", out1, lse1,
           torch.zeros_like(out2), empty)


def _merge_reference(out1, lse1, out2, lse2):
    out1, lse1, out2, lse2 = (t.double() for t in (out1, lse1, out2, lse2))
    lse = torch.logaddexp(lse1, lse2)
    w1, w2 = torch.exp(lse1 - lse), torch.exp(lse2 - lse)
    return w1[..., None] * out1 + w2[..., None] * out2, lse


def _merge_mistakes(out1, lse1, out2, lse2):
    out1, lse1, out2, lse2 = (t.double() for t in (out1, lse1, out2, lse2))
    right_out, right_lse = _merge_reference(out1, lse1, out2, lse2)
    yield ((out1 + out2) / 2, "the two outputs were averaged: each half must count by its "
           "share of the softmax mass, exp(lse_i - lse)")
    yield (torch.exp(lse1)[..., None] * out1 + torch.exp(lse2)[..., None] * out2,
           "the outputs were weighted by exp(lse_i) without dividing by the total: weights "
           "are exp(lse_i - lse) with lse = log(exp(lse1) + exp(lse2))")
    yield (right_out, "out is right but lse is not: the merged lse is log(exp(lse1) + "
           "exp(lse2)), torch.logaddexp(lse1, lse2), not the max or the sum")
    e1, e2 = torch.exp(lse1.float()).double(), torch.exp(lse2.float()).double()
    yield ((e1[..., None] * out1 + e2[..., None] * out2) / (e1 + e2)[..., None],
           "exp(lse) overflows float32 for large log-sum-exps: subtract the larger one (or "
           "use torch.logaddexp) before exponentiating")


def check_merge_attention(fn) -> None:
    """fn(out1, lse1, out2, lse2) -> (out, lse): attention over keys A and B from the results
    over A and over B alone (out_i (..., rows, d), lse_i (..., rows))."""
    what = "your merge_attention"
    for description, out1, lse1, out2, lse2 in _merge_cases():
        case = f"{what} on {description}"
        result = call(fn, out1.clone(), lse1.clone(), out2.clone(), lse2.clone(), what=what)
        if not (isinstance(result, (tuple, list)) and len(result) == 2
                and all(isinstance(t, torch.Tensor) for t in result)):
            raise AssertionError(f"{case} should return a pair of tensors (out, lse), got "
                                 f"{type(result).__name__}")
        out, lse = result
        ref_out, ref_lse = _merge_reference(out1, lse1, out2, lse2)
        tol = tolerance(torch.float32, reduction=2, depth=2,
                        scale=float(ref_lse.abs().max()) + 1)
        if _close(out, ref_out, tol) and _close(lse, ref_lse, tol):
            continue
        for mistake, message in _merge_mistakes(out1, lse1, out2, lse2):
            if _close(out, mistake, tol):
                raise AssertionError(f"{case}: {message}")
        worst = float((out.detach().double() - ref_out).abs().nan_to_num(1e30).max()) \
            if isinstance(out, torch.Tensor) and out.shape == ref_out.shape else float("nan")
        raise AssertionError(f"{case}: out is off by up to {worst:.3g} (or has the wrong "
                             f"shape {tuple(out.shape)}); expected lse = logaddexp(lse1, "
                             "lse2) and out = exp(lse1 - lse) out1 + exp(lse2 - lse) out2")
    passed("merge_attention is right: random halves, huge log-sum-exps, an empty half")
