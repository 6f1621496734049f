"""Checks for lesson 11: top-p (nucleus) filtering and temperature scaling."""

from __future__ import annotations

import torch

from ..generate import top_p_filter
from ._common import call, expect, expect_tensor, passed, rng

__all__ = ["check_top_p_filter", "check_temperature_probs"]


def _top_p_cases() -> list[tuple[str, torch.Tensor, float]]:
    probs = torch.tensor([0.05, 0.5, 0.2, 0.25])
    generator = rng(0)
    batch = torch.randn(3, 12, generator=generator) * 2
    return [("probabilities [0.05, 0.5, 0.2, 0.25] as logits, p=0.3 (below the top token's "
             "0.5)", probs.log(), 0.3),
            ("the same logits, p=0.6", probs.log(), 0.6),
            ("the same logits, p=1.0", probs.log(), 1.0),
            ("a batch of 3 rows of 12 random logits, p=0.8", batch, 0.8),
            ("a batch of 3 rows of 12 random logits, p=0.95", batch, 0.95)]


def check_top_p_filter(fn) -> None:
    """fn(logits, p) -> logits of the same shape where every token outside the nucleus is
    -inf. The nucleus is the smallest set of most likely tokens whose probabilities add up
    to at least p; it always holds the most likely token."""
    for name, logits, p in _top_p_cases():
        what = f"top_p_filter on {name}"
        out = call(fn, logits.clone(), p, what=what)
        ref = top_p_filter(logits, p)
        if isinstance(out, torch.Tensor) and out.shape != ref.shape and logits.dim() == 2:
            raise AssertionError(f"{what} returned shape {tuple(out.shape)}, expected "
                                 f"{tuple(ref.shape)}: it works for one row but not for a "
                                 "batch; sort and cumsum along dim=-1")
        expect(isinstance(out, torch.Tensor), f"{what} should return a tensor of logits, got "
                                              f"{type(out).__name__}")
        expect(out.shape == ref.shape, f"{what} returned shape {tuple(out.shape)}, expected "
                                       f"{tuple(ref.shape)}")
        keep, kept = torch.isfinite(ref), torch.isfinite(out)
        if torch.equal(kept, keep) and torch.allclose(out[kept].float(), ref[keep].float()):
            continue
        removed_as_zero = (out[~keep] == 0).all() if (~keep).any() else False
        if removed_as_zero and torch.allclose(out[keep].float(), ref[keep].float()):
            raise AssertionError(f"{what}: removed tokens got 0, but a logit of 0 still has "
                                 "probability; give them float('-inf')")
        if not kept.any(-1).all():
            raise AssertionError(f"{what}: a row kept no token at all; the most likely token "
                                 "always stays (keep a token while the mass ranked above it "
                                 "is below p)")
        sorted_out = torch.sort(logits, dim=-1, descending=True).values
        if torch.equal(torch.isfinite(out), torch.isfinite(top_p_filter(sorted_out, p))) \
                and not torch.equal(kept, keep):
            raise AssertionError(f"{what}: the result is in sorted order; scatter the mask "
                                 "back to the vocabulary positions (tensor.scatter with the "
                                 "indices from torch.sort)")
        if kept.sum() < keep.sum() and (kept <= keep).all():
            raise AssertionError(f"{what}: kept {int(kept.sum())} tokens, expected "
                                 f"{int(keep.sum())}: you dropped the token that carries the "
                                 "mass past p. Keep a token while the probability ranked "
                                 "above it (cumsum minus itself) is below p")
        if kept.sum() > keep.sum() and (kept >= keep).all():
            raise AssertionError(f"{what}: kept {int(kept.sum())} tokens, expected "
                                 f"{int(keep.sum())}: the nucleus is the smallest set whose "
                                 "mass reaches p; compare the mass before each token with p")
        if torch.equal(kept, keep):
            expect_tensor(out[kept], ref[keep], what, hint="the kept logits must stay as "
                          "they were (not probabilities, not rescaled)")
        raise AssertionError(f"{what}: kept tokens {kept.int().tolist()}, expected "
                             f"{keep.int().tolist()}; sort by probability (descending) first")
    passed("top_p_filter is right: the smallest nucleus reaching p, the top token always in")


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
