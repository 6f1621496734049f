"""Checks for lessons 05-07: the causal mask, masked softmax, the cache update, the cache
memory formula, repeat_kv, and grouping KV heads for MHA -> GQA."""

from __future__ import annotations

import torch

from ..attention import causal_mask, masked_softmax, mean_pool_kv_heads, repeat_kv
from ._common import call, expect, expect_tensor, passed, rng

__all__ = ["check_causal_mask", "check_masked_softmax", "check_cache_update",
           "check_kv_cache_bytes", "check_repeat_kv", "check_group_kv_heads"]


def _same(actual, expected: torch.Tensor) -> bool:
    """True when actual is a tensor of expected's shape with (nearly) its values."""
    if not isinstance(actual, torch.Tensor) or actual.shape != expected.shape:
        return False
    if expected.dtype == torch.bool or actual.dtype == torch.bool:
        return actual.dtype == expected.dtype and bool((actual == expected).all())
    return torch.allclose(actual.detach().double(), expected.double(), atol=1e-5,
                          rtol=1e-5, equal_nan=True)


def _expect_shape(actual, expected: torch.Tensor, what: str, hint: str = "") -> None:
    """Type, shape and (for masks) dtype; the values are compared after the diagnosis."""
    if not isinstance(actual, torch.Tensor):
        raise AssertionError(f"{what} should return a torch.Tensor, got {type(actual).__name__}")
    if tuple(actual.shape) != tuple(expected.shape):
        raise AssertionError(f"{what} returned shape {tuple(actual.shape)}, expected "
                             f"{tuple(expected.shape)}" + (f". {hint}" if hint else ""))
    if expected.dtype == torch.bool and actual.dtype != torch.bool:
        raise AssertionError(f"{what} should return a bool tensor, got {actual.dtype}")


# ---------------------------------------------------------------------------------------
# Lesson 05


def check_causal_mask(fn) -> None:
    """fn(q_len, kv_len) -> (q_len, kv_len) bool, True = may attend, aligned bottom-right."""
    for q_len, kv_len in ((4, 4), (1, 1), (6, 6), (3, 7), (1, 5)):
        what = f"causal_mask({q_len}, {kv_len})"
        out = call(fn, q_len, kv_len, what=what)
        ref = causal_mask(q_len, kv_len)
        if isinstance(out, torch.Tensor) and out.is_floating_point() and out.shape == ref.shape:
            hint = ("it looks like the additive form (0 and -inf); here return the boolean "
                    "form, e.g. `mask == 0`" if bool(torch.isinf(out).any()) else
                    "compare or call .bool() on it")
            raise AssertionError(f"{what} should return a bool tensor (True = may attend), got "
                                 f"{out.dtype}: {hint}")
        _expect_shape(out, ref, what, hint="rows are queries, columns are keys: "
                      "(q_len, kv_len)")
        if _same(out, ref):
            continue
        if _same(out, ~ref):
            raise AssertionError(f"{what}: True and False are swapped. Here True means 'may "
                                 "attend', as in F.scaled_dot_product_attention")
        if q_len == kv_len and _same(out, torch.ones(q_len, q_len, dtype=torch.bool).triu()):
            raise AssertionError(f"{what}: your mask lets each query read the future (the upper "
                                 "triangle). A decoder keeps the lower triangle: torch.tril")
        if _same(out, torch.ones(q_len, kv_len, dtype=torch.bool).tril(kv_len - q_len - 1)):
            raise AssertionError(f"{what}: the diagonal is missing, so no token sees itself. "
                                 "Keep it: key j is allowed when j <= the query's position")
        if q_len != kv_len and _same(out, torch.ones(q_len, kv_len, dtype=torch.bool).tril()):
            raise AssertionError(
                f"{what}: with kv_len > q_len the queries are the LAST q_len positions (the "
                "earlier ones come from the cache), so query i sits at position "
                "kv_len - q_len + i. Align the triangle bottom-right: "
                "tril(diagonal=kv_len - q_len)")
        raise AssertionError(f"{what}: expected\n{ref.int()}\ngot\n{out.int()}")
    passed("causal_mask is right, also for a decode step whose keys include the cache")


def _softmax_cases() -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    generator = rng(0)
    scores = torch.randn(2, 4, 6, generator=generator)
    mask = causal_mask(4, 6) & torch.tensor([True, True, False, True, True, True])
    big = torch.randn(2, 3, 5, generator=generator) * 100 + 1000
    full = torch.randn(3, 4, generator=generator)
    row_mask = torch.tensor([[True, False, True, True], [False] * 4, [True] * 4])
    return [("scores (2, 4, 6) with a causal-and-padding mask", scores, mask),
            ("scores around 1000 (2, 3, 5), nothing masked", big,
             torch.ones(5, dtype=torch.bool)),
            ("a (3, 4) score matrix whose second row is fully masked", full, row_mask)]


def check_masked_softmax(fn) -> None:
    """fn(scores, mask) -> softmax over the last dim, masked keys (mask False) at 0, rows with
    no visible key all 0; must not overflow for large scores."""
    for name, scores, mask in _softmax_cases():
        what = f"masked_softmax on {name}"
        out = call(fn, scores.clone(), mask, what=what)
        ref = masked_softmax(scores, mask)
        _expect_shape(out, ref, what, hint="the output has the scores' shape")
        if _same(out, ref):
            continue
        out = out.detach().double()
        keep = mask.expand_as(ref)
        visible = keep.any(-1)
        wrong_dim = torch.softmax(scores.masked_fill(~keep, float("-inf")).double(), dim=-2)
        if _same(out, wrong_dim) or visible.all() and torch.allclose(
                out.sum(-2), torch.ones_like(out.sum(-2))):
            raise AssertionError(f"{what}: you normalized over the queries (dimension -2). "
                                 "Normalize over the last dimension, the keys: each query's "
                                 "row sums to 1")
        if torch.isnan(out).any() or torch.isinf(out).any():
            if scores.abs().max() > 100:
                raise AssertionError(f"{what}: got NaN or inf. exp(1000) overflows; subtract "
                                     "each row's maximum before exp (the softmax is unchanged "
                                     "by it)")
            if not visible.all() and not torch.isnan(out[visible]).any():
                raise AssertionError(f"{what}: the fully masked row came back as NaN (0 / 0). "
                                     "A row with no visible key should be all zeros, as in "
                                     "F.scaled_dot_product_attention")
            raise AssertionError(f"{what}: got NaN or inf; is a division by a zero sum, or "
                                 "exp of a large number, left in?")
        if (out[~keep].abs() > 1e-6).any() and visible.all():
            zero_fill = torch.softmax(scores.masked_fill(~mask, 0.0).double(), -1)
            if _same(out, zero_fill):
                raise AssertionError(f"{what}: masked keys still get weight. Filling their "
                                     "scores with 0 leaves exp(0) = 1; fill with -inf")
            raise AssertionError(f"{what}: masked keys (mask False) should get weight 0, got up "
                                 f"to {float(out[~keep].abs().max()):.3g}")
        sums = out.sum(-1)
        if not visible.all() and torch.allclose(sums, torch.ones_like(sums)):
            raise AssertionError(f"{what}: the fully masked row sums to 1; with a large negative "
                                 "fill every key gets the same weight. Give rows with no "
                                 "visible key all zeros")
        if not torch.allclose(sums[visible], torch.ones_like(sums[visible]), atol=1e-5):
            raise AssertionError(f"{what}: rows should sum to 1, got sums from "
                                 f"{float(sums[visible].min()):.3g} to "
                                 f"{float(sums[visible].max()):.3g}. Did you mask after the "
                                 "softmax? Mask the scores first, then normalize")
        expect_tensor(out, ref.double(), what)
    passed("masked_softmax is right: stable for large scores, zero for masked keys and "
           "for fully masked rows")


# ---------------------------------------------------------------------------------------
# Lesson 06


def _new_cache(batch: int = 2, max_seq_len: int = 8, n_kv_heads: int = 2, head_dim: int = 3):
    shape = (batch, max_seq_len, n_kv_heads, head_dim)
    return torch.zeros(shape), torch.zeros(shape)


def check_cache_update(fn) -> None:
    """fn(cache_k, cache_v, k, v, start_pos) writes k, v (batch, seq, n_kv_heads, head_dim)
    into the preallocated (batch, max_seq_len, n_kv_heads, head_dim) buffers in place and
    returns (keys, values) for positions 0 .. start_pos + seq - 1; overflow raises ValueError."""
    generator = rng(0)
    cache_k, cache_v = _new_cache()
    ref_k, ref_v = _new_cache()
    for start_pos, seq in ((0, 3), (3, 1), (4, 2), (6, 1)):
        what = f"cache_update(start_pos={start_pos}, {seq} new position(s))"
        k = torch.randn(2, seq, 2, 3, generator=generator)
        v = torch.randn(2, seq, 2, 3, generator=generator)
        end = start_pos + seq
        ref_k[:, start_pos:end], ref_v[:, start_pos:end] = k, v
        out = call(fn, cache_k, cache_v, k.clone(), v.clone(), start_pos, what=what)
        expect(isinstance(out, (tuple, list)) and len(out) == 2,
               f"{what} should return a pair (keys, values), got {type(out).__name__}")
        keys, values = out
        expect(isinstance(keys, torch.Tensor) and isinstance(values, torch.Tensor),
               f"{what} should return two tensors")
        if keys.shape[1] == cache_k.shape[1] and end < cache_k.shape[1]:
            raise AssertionError(f"{what} returned all {cache_k.shape[1]} slots; return only the "
                                 f"positions written so far, [:, :start_pos + seq] (here "
                                 f"{end}): the empty slots would take part in attention")
        if keys.shape[1] == seq and start_pos > 0:
            raise AssertionError(f"{what} returned only the {seq} new position(s); return every "
                                 f"cached position 0..{end - 1}: the new query reads all "
                                 "earlier keys too")
        if _same(keys, ref_v[:, :end]) and _same(values, ref_k[:, :end]):
            raise AssertionError(f"{what}: keys and values are swapped; return (keys, values)")
        if not _same(cache_k, ref_k) or not _same(cache_v, ref_v):
            if _same(cache_k, ref_k.new_zeros(ref_k.shape)) or start_pos > 0 and _same(
                    cache_k[:, :start_pos], ref_k.new_zeros(2, start_pos, 2, 3)):
                raise AssertionError(f"{what}: the cache buffers were not written. Assign into "
                                     "cache_k[:, start_pos:start_pos + seq] in place, so the "
                                     "next step finds these keys")
            raise AssertionError(f"{what}: the buffers hold the wrong values; the new keys "
                                 f"belong at positions {start_pos}..{end - 1} (dimension 1)")
        expect_tensor(keys, ref_k[:, :end], f"{what}: keys")
        expect_tensor(values, ref_v[:, :end], f"{what}: values")
    k = torch.zeros(2, 2, 2, 3)
    try:
        fn(cache_k, cache_v, k, k.clone(), 7)
    except ValueError:
        pass
    except NotImplementedError:
        raise AssertionError("cache_update is not written yet: replace "
                             "`raise NotImplementedError()` with your code") from None
    except Exception as error:
        raise AssertionError(f"writing 2 positions at start_pos=7 into a cache of 8 raised "
                             f"{type(error).__name__} ({error}); check the size first and raise "
                             "ValueError with a message that says what to do") from None
    else:
        raise AssertionError("writing 2 positions at start_pos=7 into a cache of 8 should raise "
                             "ValueError (the cache overflows), but nothing was raised")
    passed("cache_update writes in place, returns every cached position and refuses to "
           "overflow")


def _kv_bytes(n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value) -> int:
    return 2 * n_layers * n_kv_heads * head_dim * seq_len * batch_size * bytes_per_value


def check_kv_cache_bytes(fn) -> None:
    """fn(n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value) -> bytes."""
    cases = [((3, 5, 7, 11, 13, 4), "3 layers, 5 KV heads, head_dim 7, 11 tokens, batch 13, "
                                    "fp32"),
             ((32, 32, 128, 4096, 1, 2), "Llama-2-7B, 4096 tokens, fp16"),
             ((80, 8, 128, 4096, 1, 2), "Llama-2-70B (GQA), 4096 tokens, fp16"),
             ((1, 1, 1, 1, 1, 1), "one of everything")]
    for args, name in cases:
        what = f"kv_cache_bytes for {name}"
        out = call(fn, *args, what=what)
        expected = _kv_bytes(*args)
        if isinstance(out, torch.Tensor) and out.numel() == 1:
            out = out.item()
        expect(isinstance(out, (int, float)) and not isinstance(out, bool),
               f"{what} should return a number of bytes, got {type(out).__name__}")
        if out == expected:
            continue
        ratio = out / expected
        n_layers, _, _, _, batch_size, bytes_per_value = args
        known = {0.5: "only one of K and V was counted: the cache holds both, so multiply by 2",
                 8.0: "that is bits; a value takes bytes_per_value bytes, not 8 * that",
                 1 / bytes_per_value: "that counts values, not bytes: multiply by "
                                      "bytes_per_value",
                 1 / batch_size: "every sequence in the batch has its own cache: multiply by "
                                 "batch_size",
                 1 / n_layers: "every layer keeps its own K and V: multiply by n_layers"}
        hint = next((text for r, text in known.items() if abs(ratio - r) < 1e-9), "")
        raise AssertionError(f"{what}: expected {expected:,} bytes, got {out:,}"
                             + (f". {hint}" if hint else ""))
    passed("kv_cache_bytes is right: Llama-2-7B needs 2.0 GiB per 4096-token sequence in "
           "fp16, the 70B with 8 KV heads 1.25 GiB")


# ---------------------------------------------------------------------------------------
# Lesson 07


def check_repeat_kv(fn) -> None:
    """fn(x, n_rep): (batch, seq, n_kv_heads, head_dim) -> (batch, seq, n_kv_heads * n_rep,
    head_dim), query head h reading KV head h // n_rep."""
    generator = rng(0)
    for shape, n_rep in (((2, 3, 2, 4), 3), ((1, 5, 4, 2), 1), ((2, 4, 1, 3), 4),
                         ((1, 2, 3, 2), 2)):
        x = torch.randn(shape, generator=generator)
        what = f"repeat_kv(x of shape {shape}, n_rep={n_rep})"
        out = call(fn, x.clone(), n_rep, what=what)
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
                                 "copies sit side by side (kv0, kv0, kv1, kv1, ...): use "
                                 "repeat_interleave, or expand a new axis and reshape")
        expect_tensor(out, ref, what)
    passed("repeat_kv is right: each KV head serves n_rep neighbouring query heads")


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
        if _same(out, ref):
            continue
        n_rep = n_heads // n_kv_heads
        heads = weight.reshape(n_heads, head_dim, dim)
        if _same(out, ref * n_rep):
            raise AssertionError(f"{what}: you added the heads of each group; average them "
                                 f"(divide by the group size n_heads // n_kv_heads = {n_rep})")
        strided = heads.reshape(n_rep, n_kv_heads, head_dim, dim).mean(0).reshape(ref.shape)
        if _same(out, strided):
            raise AssertionError(f"{what}: you grouped heads g, g + n_kv_heads, g + 2 n_kv_heads"
                                 "...; a group is the neighbouring heads g*n_rep .. "
                                 "(g+1)*n_rep - 1, the query heads repeat_kv hands KV head g to")
        first = heads.reshape(n_kv_heads, n_rep, head_dim, dim)[:, 0].reshape(ref.shape)
        if _same(out, first):
            raise AssertionError(f"{what}: you kept the first head of each group. The GQA "
                                 "paper starts from the mean of the group's heads, which "
                                 "keeps more of what every head knew")
        expect_tensor(out, ref, what)
    passed("group_kv_heads is right: each KV head is the mean of its group's heads")
