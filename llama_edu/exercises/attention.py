"""Checks for lessons 05 and 06: the causal mask, the attention forward with causal and
padding masks, the cache update and the cached greedy decode loop (lesson 07's are in
`exercises.gqa`)."""

from __future__ import annotations

import torch
from torch import nn

from ..attention import (
    attention,
    causal_mask,
    masked_softmax,
    padding_mask,
)
from ..generate import generate_no_cache
from ..model import Llama, LlamaConfig
from ..numerics import greedy_agreement, tolerance
from ._common import call, expect, expect_tensor, forbids, passed, rng

__all__ = ["check_causal_mask", "check_attention_forward", "check_cache_update",
           "check_greedy_cached"]


def _same(actual, expected: torch.Tensor) -> bool:
    """True when actual is a tensor of expected's shape with exactly its values: masks and
    cache writes are comparisons and copies, so no rounding can enter."""
    if not isinstance(actual, torch.Tensor) or actual.shape != expected.shape:
        return False
    if expected.dtype == torch.bool or actual.dtype == torch.bool:
        return actual.dtype == expected.dtype and bool((actual == expected).all())
    return torch.allclose(actual.detach().double(), expected.double(), atol=0, rtol=0,
                          equal_nan=True)


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


def _close(actual, expected: torch.Tensor, reduction: int, depth: int = 3) -> bool:
    """actual equals expected up to fp32 rounding (NaN where expected is NaN)."""
    if not isinstance(actual, torch.Tensor) or actual.shape != expected.shape:
        return False
    expected = expected.detach().double()
    finite = expected[torch.isfinite(expected)]
    scale = float(finite.abs().max()) if finite.numel() else 1.0
    tol = tolerance(torch.float32, reduction=reduction, depth=depth, scale=scale)
    return torch.allclose(actual.detach().double(), expected, rtol=tol["rtol"],
                          atol=tol["atol"], equal_nan=True)


def _attention_cases():
    """(name, q, k, v, attention_mask): the real (batch, heads, seq, head_dim) layout."""
    generator = rng(6)
    q, k, v = torch.randn(3, 2, 3, 6, 8, generator=generator).unbind(0)
    yield "2 texts, 3 heads, 6 tokens of head_dim 8, no padding (attention_mask=None)", \
        q, k, v, None
    q, k, v = torch.randn(3, 2, 2, 6, 16, generator=generator).unbind(0)
    left_padded = torch.tensor([[1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 1]])
    yield "a batch whose second text has 3 pad tokens on the left", q, k, v, left_padded
    q = torch.randn(2, 2, 2, 16, generator=generator)
    k, v = torch.randn(2, 2, 2, 7, 16, generator=generator).unbind(0)
    yield ("a decode step: 2 new queries reading 7 keys (5 of them from a cache), the "
           "second text left-padded by 2", q, k, v,
           torch.tensor([[1, 1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1, 1]]))
    q, k, v = torch.randn(3, 1, 2, 5, 8, generator=generator).unbind(0)
    yield "queries and keys so large that the scores reach about 1000", q * 40, k * 40, v, None


def _reference_mask(q_len: int, kv_len: int, attention_mask) -> torch.Tensor:
    mask = causal_mask(q_len, kv_len)
    if attention_mask is not None:
        mask = mask & padding_mask(attention_mask)
    return mask


def _softmax64(scores: torch.Tensor, dim: int = -1) -> torch.Tensor:
    return torch.softmax(scores, dim=dim)


def _attention_mistakes(q, k, v, attention_mask):
    """What the classic slips return (in float64), each with the sentence that explains it."""
    dtype = q.dtype
    q, k, v = q.double(), k.double(), v.double()
    q_len, kv_len, d = q.shape[-2], k.shape[-2], q.shape[-1]
    mask = _reference_mask(q_len, kv_len, attention_mask)
    raw = q @ k.transpose(-2, -1)
    scores = raw / d ** 0.5
    inf = float("-inf")

    def weights_then_v(weights):
        return weights @ v

    def safe(s, m):                       # the right softmax, zeros for fully masked rows
        return masked_softmax(s, m).double()

    yield (weights_then_v(safe(raw, mask)),
           "the scores are not scaled: divide q @ k^T by sqrt(head_dim) before the softmax")
    yield (weights_then_v(safe(raw / d, mask)),
           "you divided the scores by head_dim; divide by its square root, sqrt(head_dim)")
    yield (weights_then_v(safe(scores, mask.transpose(-2, -1) if q_len == kv_len else mask)),
           "your causal mask is the upper triangle: each query reads the future. Query i may "
           "read keys j <= i (torch.tril)")
    no_causal = (torch.ones(q_len, kv_len, dtype=torch.bool) if attention_mask is None
                 else padding_mask(attention_mask))
    yield (weights_then_v(safe(scores, no_causal)),
           "there is no causal mask: query i reads keys after it. Hide the keys j > i")
    top_left = torch.ones(q_len, kv_len, dtype=torch.bool).tril()
    if attention_mask is not None:
        top_left = top_left & padding_mask(attention_mask)
    yield (weights_then_v(safe(scores, top_left)),
           "the causal mask is aligned top-left, as SDPA's is_causal=True is. With a cache the "
           "queries are the LAST q_len of the kv_len positions: query i sits at position "
           "kv_len - q_len + i, so use tril(diagonal=kv_len - q_len)")
    if attention_mask is not None:
        yield (weights_then_v(safe(scores, causal_mask(q_len, kv_len))),
               "the padding is ignored: real tokens still read the pad tokens. AND the causal "
               "mask with attention_mask[:, None, None, :] (pads hide their keys)")
        rows = attention_mask.bool()[:, None, -q_len:, None]
        yield (weights_then_v(safe(scores, causal_mask(q_len, kv_len) & rows)),
               "the padding mask hides rows (queries) instead of columns (keys): index it "
               "as attention_mask[:, None, None, :] so that it runs along the keys")
    yield (weights_then_v(_softmax64(scores.masked_fill(~mask, inf))),
           "a query whose keys are all masked (a pad query on the left) came back as NaN: "
           "softmax of a row of -inf is 0 / 0. Return zeros for such rows, as SDPA does")
    yield (weights_then_v(_softmax64(scores.masked_fill(~mask, -1e9))),
           "a query whose keys are all masked gets equal weights on all of them (a large "
           "negative fill makes every key tie); it should return zeros")
    yield (weights_then_v(_softmax64(scores.masked_fill(~mask, 0.0))),
           "masked keys still get weight: a fill of 0 leaves exp(0) = 1. Fill with -inf")
    yield (weights_then_v(safe(scores, None) * mask),
           "you masked after the softmax, so the rows no longer sum to 1. Mask the scores, "
           "then normalise")
    e = torch.exp(scores.to(dtype)).masked_fill(~mask, 0.0)    # overflows in the input dtype
    total = e.sum(-1, keepdim=True)
    yield (weights_then_v(torch.where(total > 0, e / total, torch.zeros_like(e)).double()),
           "exp of scores near 1000 overflows to inf (inf / inf = NaN): subtract each row's "
           "maximum before exp; the softmax is unchanged by it")
    wrong_dim = _softmax64(scores.masked_fill(~mask, inf), dim=-2).nan_to_num(0.0)
    yield (weights_then_v(wrong_dim),
           "you normalised over the queries (dimension -2); the softmax runs over the keys, "
           "the last dimension: each query's row of weights sums to 1")
    yield (safe(scores, mask),
           "you returned the attention weights; multiply them by v to get the output")


@forbids("scaled_dot_product_attention")
def check_attention_forward(fn) -> None:
    """fn(q, k, v, attention_mask) -> softmax(q k^T / sqrt(d) + causal + padding) v.

    q: (batch, n_heads, q_len, head_dim); k, v: (batch, n_heads, kv_len, head_dim), kv_len
    >= q_len (the queries are the last q_len positions); attention_mask: (batch, kv_len) of
    1 (real) and 0 (pad), or None. A query with no visible key returns zeros."""
    for name, q, k, v, attention_mask in _attention_cases():
        what = f"attention_forward on {name}"
        am = None if attention_mask is None else attention_mask.clone()
        out = call(fn, q.clone(), k.clone(), v.clone(), am, what=what,
                   forbidden=check_attention_forward.forbidden_calls)
        mask = _reference_mask(q.shape[-2], k.shape[-2], attention_mask)
        ref = attention(q, k, v, mask)
        if not isinstance(out, torch.Tensor):
            raise AssertionError(f"{what} should return a torch.Tensor, got "
                                 f"{type(out).__name__}")
        if tuple(out.shape) != tuple(ref.shape):
            if tuple(out.shape) == (*q.shape[:-1], k.shape[-2]):
                raise AssertionError(f"{what}: you returned the attention weights "
                                     f"{tuple(out.shape)}; multiply them by v to get the "
                                     f"output {tuple(ref.shape)}")
            raise AssertionError(f"{what} returned shape {tuple(out.shape)}, expected "
                                 f"{tuple(ref.shape)}: (batch, n_heads, q_len, head_dim)")
        reduction = max(q.shape[-1], k.shape[-2])
        if _close(out, ref, reduction):
            continue
        for mistake, hint in _attention_mistakes(q, k, v, attention_mask):
            if mistake.shape == ref.shape and _close(out, mistake, reduction):
                raise AssertionError(f"{what}: {hint}")
        if torch.isnan(out).any():
            raise AssertionError(f"{what}: the output holds NaN. Is a row of -inf left for "
                                 "the softmax (return zeros for it), or exp of a large score?")
        worst = float((out.detach().double() - ref.double()).abs().nan_to_num(1e30).max())
        raise AssertionError(f"{what} is off by up to {worst:.3g}. Expected "
                             "softmax(q @ k^T / sqrt(head_dim), masked) @ v with the causal "
                             "mask aligned bottom-right and pads hidden as keys")
    passed("attention_forward is right: scaled, causal (bottom-right), padding hidden, "
           "fully masked rows zero, stable for large scores")


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


class _StepLog(nn.Module):
    """A Llama that notes each call in buffers (so that a graded run's record carries them):
    how many tokens it was fed, at which start_pos, with a cache or not, and how many
    positions the attention_mask covered (-1: none). Everything else is the model's."""

    MAX_CALLS = 64

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.config = model.config
        self.register_buffer("calls", torch.full((self.MAX_CALLS, 4), -1, dtype=torch.long))
        self.register_buffer("n_calls", torch.zeros((), dtype=torch.long))
        self.register_buffer("n_caches", torch.zeros((), dtype=torch.long))

    def forward(self, tokens, start_pos=0, cache=None, attention_mask=None, position_ids=None):
        i = int(self.n_calls)
        if i < self.MAX_CALLS:
            n = tokens.shape[-1] if isinstance(tokens, torch.Tensor) and tokens.dim() else -1
            width = attention_mask.shape[-1] if isinstance(attention_mask, torch.Tensor) else -1
            self.calls[i] = torch.tensor([n, int(start_pos), int(cache is not None), width])
        self.n_calls += 1
        return self.model(tokens, start_pos, cache, attention_mask, position_ids)

    def make_cache(self, *args, **kwargs):
        self.n_caches += 1
        return self.model.make_cache(*args, **kwargs)

    def log(self) -> list[list[int]]:
        return self.calls[:min(int(self.n_calls), self.MAX_CALLS)].tolist()


def _greedy_model(generator: torch.Generator) -> Llama:
    """A small random Llama (2 layers, GQA) whose weights come from `generator`, with logits
    spread widely enough that greedy decoding wanders over the vocabulary."""
    config = LlamaConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=96,
                         multiple_of=16, max_seq_len=40)
    model = Llama(config).eval()
    with torch.no_grad():
        for param in model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=generator)
                            / param.shape[1] ** 0.5)
    return model


def _greedy_diagnose(log: list[list[int]], n_caches: int, lengths: list[int], n_new: int,
                     what: str) -> None:
    """Sentences for the loop's shape, read from the model's call log."""
    longest, padded = max(lengths), len(set(lengths)) > 1
    if not log:
        raise AssertionError(f"{what}: the model was never called")
    if not any(c[2] for c in log):
        raise AssertionError(f"{what}: you never passed the cache, so every step ran the whole "
                             "sequence again. Make it once with model.make_cache(batch, "
                             "longest prompt + n_new) and pass it: model(tokens, start_pos, "
                             "cache, ...)")
    if n_caches > 1:
        raise AssertionError(f"{what}: you made a new cache {n_caches} times. Make it once, "
                             "before the loop: the point is that it keeps the earlier keys "
                             "and values from step to step")
    n, start_pos = log[0][:2]
    if n != longest or start_pos != 0:
        raise AssertionError(f"{what}: the first call (the prefill) should take the whole "
                             f"left-padded prompt, {longest} tokens at start_pos 0; it got {n} "
                             f"token(s) at start_pos {start_pos}")
    for j, (n, start_pos, cached, width) in enumerate(log[1:]):
        if n != 1:
            raise AssertionError(f"{what}: after the prefill, feed only the newest token "
                                 f"(1 per call); call {j + 2} got {n} tokens. The cache "
                                 "already holds the keys and values of the earlier ones")
        if not cached:
            raise AssertionError(f"{what}: decode call {j + 1} ran without the cache; pass "
                                 "the same cache to every call")
        if start_pos != longest + j:
            raise AssertionError(f"{what}: decode call {j + 1} ran at start_pos {start_pos}, but "
                                 f"the token it gets sits at position {longest + j} (the "
                                 "number of tokens so far minus 1): start_pos must advance by "
                                 "one per step")
        if padded and width == -1:
            raise AssertionError(f"{what}: decode call {j + 1} has no attention_mask, so the "
                                 "padded prompts' new tokens read the pad keys. Pass the mask "
                                 "at every step, grown by a column of ones")
        if padded and width != start_pos + 1:
            raise AssertionError(f"{what}: at decode call {j + 1} the attention_mask covers "
                                 f"{width} positions; it must cover every key, cached and new: "
                                 f"start_pos + 1 = {start_pos + 1}")
    if padded and log[0][3] == -1:
        raise AssertionError(f"{what}: the prefill has no attention_mask, so real tokens read "
                             "the pads of the shorter prompts; pass 1 for tokens, 0 for pads")


def _greedy_cases():
    generator = rng(7)
    model = _greedy_model(generator)
    yield "one prompt of 5 tokens, 6 new tokens", model, [
        torch.randint(0, 96, (5,), generator=generator).tolist()], 6
    lengths = (7, 3, 5)
    yield "3 prompts of 7, 3 and 5 tokens (left-padded), 9 new tokens", model, [
        torch.randint(0, 96, (n,), generator=generator).tolist() for n in lengths], 9


def check_greedy_cached(fn) -> None:
    """fn(model, prompts, n_new) -> the n_new greedy tokens after each prompt, a list of lists
    of ints, computed with one prefill of the left-padded prompts into a cache made once,
    then one token per call; equal to decoding without a cache (a near tie, which rounding
    may break either way, is reported and accepted)."""
    ties = []
    for name, model, prompts, n_new in _greedy_cases():
        what = f"greedy_cached on {name}"
        logged = _StepLog(model)
        lengths = [len(p) for p in prompts]
        try:
            out = call(fn, logged, [list(p) for p in prompts], n_new, what=what)
        except AssertionError as error:  # a crash: say first what the calls so far show
            if logged.log() and "not written yet" not in str(error):
                _greedy_diagnose(logged.log(), int(logged.n_caches), lengths, n_new, what)
            raise
        if isinstance(out, torch.Tensor):
            out = out.tolist()
        expect(isinstance(out, (list, tuple)) and len(out) == len(prompts)
               and all(isinstance(row, (list, tuple)) for row in out),
               f"{what} should return one list of new token ids per prompt ({len(prompts)} "
               f"lists), got {type(out).__name__}")
        for row, prompt in zip(out, prompts, strict=True):
            if len(row) == len(prompt) + n_new or len(row) == max(lengths) + n_new:
                raise AssertionError(f"{what}: return only the {n_new} new tokens of each "
                                     f"prompt, not the prompt with them (got {len(row)} ids)")
            if len(row) != n_new:
                raise AssertionError(f"{what}: a row holds {len(row)} new tokens, expected "
                                     f"n_new = {n_new}; count the prefill's token as the first")
        _greedy_diagnose(logged.log(), int(logged.n_caches), lengths, n_new, what)
        reference = generate_no_cache(model, [list(p) for p in prompts], n_new)
        for b, (row, ref, prompt) in enumerate(zip(out, reference, prompts, strict=True)):
            row = [int(t) for t in row]
            try:
                verdict = greedy_agreement(model, prompt, row, ref)
            except AssertionError as error:
                with torch.no_grad():
                    first = int(model(torch.tensor([prompt]))[0, 0].argmax())
                if row[0] != ref[0] and row[0] == first:
                    raise AssertionError(f"{what}: the first new token of prompt {b} comes from "
                                         "the logits of the first position; take the last: "
                                         "logits[:, -1]") from None
                raise AssertionError(f"{what}, prompt {b}: {error}. Expected {ref}, got "
                                     f"{row}") from None
            if verdict != "equal":
                ties.append(f"prompt {b}: {verdict}")
    note = f" (near ties, accepted: {'; '.join(ties)})" if ties else ""
    passed("greedy_cached is right: one prefill, then one token per step into one cache, the "
           f"same tokens as decoding without a cache{note}")
