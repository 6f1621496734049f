"""Checks for lesson 11: temperature scaling, and the whole sampling step (temperature,
top-k, top-p with ties, the draw)."""

from __future__ import annotations

import math

import torch

from ..generate import sampling_probs
from ..numerics import tolerance
from ._common import call, expect, expect_tensor, passed, rng

__all__ = ["check_sample_step", "check_temperature_probs"]


# ---------------------------------------------------------------------------------------
# The sampling step


def _nudged(generator: torch.Generator, rows: int, vocab: int, temperature: float,
            top_k: int, top_p: float) -> torch.Tensor:
    """Random logits whose nucleus boundary lies clear of p (no rounding can move it)."""
    for _ in range(100):
        logits = torch.randn(rows, vocab, generator=generator) * 2.5
        z = logits / temperature
        if top_k:
            z = z.masked_fill(z < torch.topk(z, top_k).values[..., -1:], float("-inf"))
        probs = torch.sort(torch.softmax(z.double(), -1), descending=True).values
        above = probs.cumsum(-1) - probs
        if ((above - top_p).abs() > 1e-3).all():
            return logits
    raise RuntimeError("no random logits with a clear nucleus boundary")  # pragma: no cover


def _cases():
    """(description, logits, temperature, top_k, top_p, what the case is about)"""
    generator = rng(11)
    batch = _nudged(generator, 4, 50, 0.7, 20, 0.8)
    wide = _nudged(generator, 4, 50, 1.3, 0, 0.9)
    log = lambda values: torch.tensor(values).log()  # noqa: E731
    return [
        ("4 rows of 50 random logits, temperature 0.7, top_k 20, top_p 0.8", batch, 0.7,
         20, 0.8, "general"),
        ("4 rows of 50 random logits, temperature 1.3, top_k 0 (off), top_p 0.9", wide, 1.3,
         0, 0.9, "k=0"),
        ("4 rows of 50 random logits, temperature 1, top_k 0, top_p 1.0 (no filter)", batch,
         1.0, 0, 1.0, "k=0"),
        ("probabilities [0.5, 0.3, 0.2] as logits, top_p 0.6", log([[0.5, 0.3, 0.2]]), 1.0, 0,
         0.6, "crossing"),
        ("logits [3, 2, 2, 2, 1, 0, -1, -2], top_k 2 (three logits tie the 2nd largest)",
         torch.tensor([[3.0, 2, 2, 2, 1, 0, -1, -2]]), 1.0, 2, 1.0, "top-k ties"),
        ("probabilities [0.4, 0.15, 0.15, 0.1, 0.1, 0.1] as logits, top_p 0.5 (0.4 and one "
         "0.15 reach 0.5, the other 0.15 ties it)", log([[0.1, 0.15, 0.4, 0.1, 0.15, 0.1]]),
         1.0, 0, 0.5, "top-p ties"),
        ("probabilities [0.4, 0.3, 0.2, 0.1] as logits, top_k 2, top_p 0.5 (top-p sees the "
         "renormalised [0.57, 0.43])", log([[0.2, 0.4, 0.1, 0.3]]), 1.0, 2, 0.5, "order"),
        ("logits [1000, 999, 990, 0, 0], temperature 0.5, top_k 3, top_p 0.95",
         torch.tensor([[1000.0, 999, 990, 0, 0]]), 0.5, 3, 0.95, "large"),
        ("8 logits with top_k 20 (more than the vocabulary)",
         torch.tensor([[0.5, -1, 2, 0, 1, -0.5, 1.5, -2]]), 1.0, 20, 1.0, "big k"),
        ("4 rows of 50 random logits, temperature 0 (greedy), top_k 5, top_p 0.5", batch, 0.0,
         5, 0.5, "greedy"),
    ]


def _variant(logits, temperature, top_k, top_p, mistake: str) -> torch.Tensor:
    """The probabilities a classic mistake gives (to recognise it)."""
    if mistake == "after softmax":
        return sampling_probs(logits, 1.0, top_k, top_p) / temperature
    if mistake == "untempered top-p":
        kept = torch.isfinite(sampling_probs(logits, 1.0, top_k, top_p).log())
        z = (logits / temperature).masked_fill(~kept, float("-inf"))
        if top_k:
            kth = torch.topk(logits / temperature, min(top_k, logits.shape[-1])).values[..., -1:]
            z = z.masked_fill(logits / temperature < kth, float("-inf"))
        return torch.softmax(z, -1)
    if mistake == "top-p first":
        z = logits / temperature
        kept = torch.isfinite(sampling_probs(logits, temperature, 0, top_p).log())
        kept &= torch.isfinite(sampling_probs(logits, temperature, top_k, 1.0).log())
        return torch.softmax(z.masked_fill(~kept, float("-inf")), -1)
    if mistake == "no renormalisation":
        ref = sampling_probs(logits, temperature, top_k, top_p)
        return torch.softmax(logits / temperature, -1) * (ref > 0)
    raise ValueError(mistake)


def _explain_probs(what, probs, ref, logits, temperature, top_k, top_p, topic):
    """Raise the message that names the mistake behind wrong probabilities."""
    probs = probs.detach().double()
    if torch.isnan(probs).any():
        if topic == "greedy":
            raise AssertionError(f"{what}: the probabilities hold NaN: temperature 0 means "
                                 "greedy; return the one-hot vector of the argmax (and the "
                                 "argmax as the token) instead of dividing by 0")
        if topic == "k=0":
            raise AssertionError(f"{what}: the probabilities hold NaN: top_k = 0 switches "
                                 "top-k off; with every logit at -inf the softmax is 0/0")
        raise AssertionError(f"{what}: the probabilities hold NaN; subtract the row maximum "
                             "(or use torch.softmax) and keep at least one token per row")
    tol = tolerance(torch.float32, reduction=logits.shape[-1])
    near = lambda a, b: torch.allclose(a.double(), b.double(), **tol)  # noqa: E731
    if topic == "greedy":
        raise AssertionError(f"{what}: at temperature 0 the distribution is the one-hot vector "
                             f"of the argmax (greedy), got {probs.tolist()}")
    kept, keep = probs > 0, ref > 0
    for mistake, message in (
            ("after softmax", "you divided the probabilities by the temperature after the "
             "softmax; divide the logits by T before it"),
            ("no renormalisation", "the removed tokens are 0 but the kept ones were not "
             "renormalised, so each row sums to less than 1; take the softmax of the filtered "
             "logits"),
            ("untempered top-p", "top-p measured the mass of the distribution before the "
             "temperature; apply the temperature first, then top-k, then top-p"),
            ("top-p first", "top-p measured the mass before top-k removed tokens; top-p "
             "works on the distribution left after top-k (renormalised), as in HF")):
        if near(probs, _variant(logits, temperature, top_k, top_p, mistake)):
            raise AssertionError(f"{what}: {message}")
    top = logits.argmax(-1, keepdim=True)
    if not kept.gather(-1, top).all():
        raise AssertionError(f"{what}: the most likely token was removed: sort in descending "
                             "order (torch.sort(..., descending=True), torch.topk keeps the "
                             "largest)")
    sums = probs.sum(-1)
    if torch.equal(kept, keep) and not near(sums, torch.ones_like(sums)):
        raise AssertionError(f"{what}: the probabilities sum to {sums.tolist()}, not 1")
    missing = keep & ~kept
    if missing.any() and (kept <= keep).all():
        z = logits / temperature
        if topic == "top-k ties":
            raise AssertionError(f"{what}: you kept {int(kept.sum())} tokens, expected "
                                 f"{int(keep.sum())}: you dropped a token tied with the k-th "
                                 "largest logit; keep every logit >= the k-th largest")
        if topic == "top-p ties":
            raise AssertionError(f"{what}: you kept {int(kept.sum())} tokens, expected "
                                 f"{int(keep.sum())}: a token whose logit ties the last token "
                                 "of the nucleus was dropped; keep every logit >= that last "
                                 "one, whatever order the sort gave the ties")
        if topic == "crossing" or bool((z[missing] > -math.inf).all()):
            raise AssertionError(f"{what}: you kept {int(kept.sum())} tokens, expected "
                                 f"{int(keep.sum())}: you dropped the token that carries the "
                                 "mass past p. Keep a token while the mass ranked above it "
                                 "(cumsum minus itself) is below p")
    if kept.sum() > keep.sum() and (kept >= keep).all():
        raise AssertionError(f"{what}: you kept {int(kept.sum())} tokens, expected "
                             f"{int(keep.sum())}: the nucleus is the smallest set of most "
                             "likely tokens whose mass reaches p")
    if not torch.equal(kept, keep):
        raise AssertionError(f"{what}: kept tokens {kept.int().tolist()}, expected "
                             f"{keep.int().tolist()} (temperature, then top-k, then top-p, "
                             "per row)")
    diff = float((probs - ref.double()).abs().max())
    raise AssertionError(f"{what}: the kept tokens are right but their probabilities are off "
                         f"by up to {diff:.3g}: softmax of the filtered logits")


def _unpack(out, logits, what):
    expect(isinstance(out, (tuple, list)) and len(out) == 2
           and all(isinstance(t, torch.Tensor) for t in out),
           f"{what} should return (probs, ids), two tensors, got {type(out).__name__}")
    probs, ids = out
    batch, vocab = logits.shape
    expect(tuple(probs.shape) == (batch, vocab), f"{what}: probs should have shape "
           f"{(batch, vocab)} (batch, vocab), got {tuple(probs.shape)}")
    expect(tuple(ids.shape) == (batch,), f"{what}: ids should have shape ({batch},), one token "
           f"per row, got {tuple(ids.shape)}")
    expect(not ids.dtype.is_floating_point, f"{what}: ids should be integer token ids, got "
           f"{ids.dtype}")
    return probs, ids


def _run(fn, logits, temperature, top_k, top_p, generator, what, topic):
    try:
        return call(fn, logits.clone(), temperature, top_k, top_p, generator, what=what)
    except AssertionError as error:
        if "not written yet" in str(error) or " raised " not in str(error):
            raise
        hint = {"greedy": "temperature 0 means greedy: return the one-hot vector of the argmax "
                          "and the argmax, never divide by 0",
                "k=0": "top_k = 0 switches top-k off (do not ask torch.topk for 0 values)",
                "big k": "a top_k larger than the vocabulary keeps every token: use "
                         "min(top_k, vocab)"}.get(topic)
        raise AssertionError(f"{error}. {hint}" if hint else str(error)) from None


def check_sample_step(fn) -> None:
    """fn(logits, temperature, top_k, top_p, generator) -> (probs, ids).

    logits (batch, vocab). probs (batch, vocab): the distribution of the draw: softmax of
    logits / temperature after top-k (top_k 0: off; ties with the k-th logit kept) and
    top-p (top_p 1.0: off; the smallest most likely set with mass >= p, measured after
    top-k, plus any token whose logit ties the last one it needs). Temperature 0 is greedy:
    the one-hot vector of the argmax. ids (batch,): one token per row drawn from probs with
    `generator`. Checked exactly on the kept tokens, to rounding on the probabilities, and
    statistically on 20000 draws.
    """
    for i, (name, logits, temperature, top_k, top_p, topic) in enumerate(_cases()):
        what = f"sample_step on {name}"
        out = _run(fn, logits, temperature, top_k, top_p, rng(100 + i), what, topic)
        probs, ids = _unpack(out, logits, what)
        ref = sampling_probs(logits, temperature, top_k, top_p)
        tol = tolerance(torch.float32, reduction=logits.shape[-1])
        if not (torch.equal(probs > 0, ref > 0)
                and torch.allclose(probs.detach().double(), ref.double(), **tol)):
            _explain_probs(what, probs, ref, logits, temperature, top_k, top_p, topic)
        if topic == "greedy" and not torch.equal(ids.long(), logits.argmax(-1)):
            raise AssertionError(f"{what}: at temperature 0 the token is the argmax "
                                 f"{logits.argmax(-1).tolist()}, got {ids.tolist()}")
        _drawn_from_kept(ids, ref, what)
    _check_draws(fn)
    passed("sample_step is right: temperature, top-k and top-p (ties kept) give the expected "
           "distribution, and 20000 draws follow it")


def _drawn_from_kept(ids, ref, what):
    ids = ids.long()
    if ((ids < 0) | (ids >= ref.shape[-1])).any():
        raise AssertionError(f"{what}: ids {ids.tolist()} are not token ids in "
                             f"[0, {ref.shape[-1]})")
    chosen = ref.gather(-1, ids[:, None])[:, 0]
    if (chosen == 0).any():
        row = int((chosen == 0).nonzero()[0])
        raise AssertionError(f"{what}: row {row} drew token {int(ids[row])}, which the filters "
                             "removed (probability 0): draw from the filtered probabilities")


def _check_draws(fn):
    n = 20000
    base = torch.tensor([0.35, 0.25, 0.15, 0.1, 0.08, 0.04, 0.02, 0.01]).log()
    logits = base[torch.randperm(8, generator=rng(12))].expand(n, 8)
    settings = (0.8, 6, 0.95)
    what = f"sample_step on {n} copies of one row of 8 logits, temperature 0.8, top_k 6, " \
           "top_p 0.95"
    ref = sampling_probs(logits[:1], *settings)[0]                      # (8,)
    probs, ids = _unpack(_run(fn, logits, *settings, rng(30), what, "draws"), logits, what)
    _drawn_from_kept(ids, ref.expand(n, 8), what)
    _, again = _unpack(_run(fn, logits, *settings, rng(30), what, "draws"), logits, what)
    if not torch.equal(ids, again):
        raise AssertionError(f"{what}: two calls with generators of the same seed drew "
                             "different tokens: the draw ignores the generator; pass "
                             "generator=generator to torch.multinomial")
    counts = torch.bincount(ids.long(), minlength=8).double()
    if counts.max() == n:
        raise AssertionError(f"{what}: every draw was token {int(ids[0])}, the most likely "
                             "one: draw at random in proportion to the probabilities "
                             "(torch.multinomial), not the argmax")
    expected = n * ref.double()
    bound = 5 * (expected * (1 - ref.double())).sqrt() + 1             # 5 sigma, binomial
    far = ((counts - expected).abs() > bound).nonzero().flatten()
    if len(far):
        j = int(far[0])
        raise AssertionError(f"{what}: token {j} was drawn {int(counts[j])} times in {n} draws, "
                             f"expected {expected[j]:.0f} +- {bound[j]:.0f} (probability "
                             f"{float(ref[j]):.3f}): the draws do not follow the "
                             "probabilities; draw each row with torch.multinomial(probs, 1)")


# ---------------------------------------------------------------------------------------
# Temperature alone (a warm-up)


def _temperature_reference(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    return torch.softmax(logits.double() / temperature, dim=-1).float()


def check_temperature_probs(fn) -> None:
    """fn(logits, temperature) -> softmax(logits / temperature) over the last dimension;
    temperature 0 gives the one-hot vector of the argmax (the greedy limit)."""
    generator = rng(0)
    base = torch.tensor([2.0, 1.0, 0.5, -1.0])
    cases = [(base, 1.0), (base, 0.5), (base, 2.0), (torch.randn(3, 7, generator=generator), 0.7),
             (torch.tensor([1000.0, 999.0, 990.0]), 0.1), (base, 0.0)]
    for logits, temperature in cases:
        what = f"temperature_probs({logits.tolist() if logits.dim() == 1 else 'a (3, 7) batch'}, " \
               f"{temperature})"
        out = call(fn, logits.clone(), temperature, what=what)
        ref = _temperature_reference(logits, temperature)
        expect(isinstance(out, torch.Tensor), f"{what} should return a tensor, got "
                                              f"{type(out).__name__}")
        expect(out.shape == ref.shape, f"{what} returned shape {tuple(out.shape)}, expected "
                                       f"{tuple(ref.shape)}")
        out = out.detach().float()
        if torch.allclose(out, ref, atol=1e-5):
            continue
        if torch.isnan(out).any() or torch.isinf(out).any():
            hint = ("at temperature 0 return the one-hot vector of the argmax (the greedy "
                    "limit) instead of dividing by 0" if temperature == 0 else
                    "exp of large logits overflows; subtract the row maximum first or use "
                    "torch.softmax")
            raise AssertionError(f"{what}: got NaN or inf: {hint}")
        if temperature == 0:
            raise AssertionError(f"{what}: temperature 0 should give the one-hot vector of the "
                                 f"argmax {ref.tolist()}, got {out.tolist()}")
        sums = out.sum(-1)
        if not torch.allclose(sums, torch.ones_like(sums), atol=1e-4):
            raise AssertionError(f"{what}: the probabilities sum to {sums.tolist()}, not 1; "
                                 "scale the logits, then apply the softmax (not the other way "
                                 "round)")
        times = torch.softmax(logits * temperature, dim=-1)
        if torch.allclose(out, times, atol=1e-5):
            raise AssertionError(f"{what}: you multiplied by the temperature; divide instead, "
                                 "so that T > 1 flattens the distribution and T < 1 sharpens it")
        if torch.allclose(out, torch.softmax(logits, dim=-1), atol=1e-5):
            raise AssertionError(f"{what}: the temperature changed nothing; divide the logits "
                                 "by it before the softmax")
        expect_tensor(out, ref, what)
    passed("temperature_probs is right: T < 1 sharpens, T > 1 flattens, T = 0 is greedy")
