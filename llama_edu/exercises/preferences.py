"""Checks for lesson 14: DPO's loss from sequence log-probabilities, and the reward model's
ranking loss with a margin.

The references are `llama_edu.align.dpo_loss` (Rafailov et al., 2023, Eq. 7) and
`llama_edu.align.ranking_loss` (Touvron et al., 2023, §3.2.2, Eq. 2), each also written
out from the paper's formula in float64 here; tests/test_align.py checks both on
hand-computed cases.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..align import dpo_loss, ranking_loss
from ._common import call, close, expect, forbids, passed, rng
from .llama3 import _names

__all__ = ["check_dpo_loss", "check_ranking_loss"]

_PACKAGE = ("dpo_loss", "ranking_loss", "dpo_implicit_reward")


def _refuse_package(fn, names: tuple[str, ...], what: str) -> None:
    used = sorted(_names(fn) & set(names))
    expect(not used, f"{what} uses {', '.join(used)} from llama_edu.align, which this "
           "exercise asks you to write yourself: compute it from the formula")


def _scalar(got, what: str) -> torch.Tensor:
    expect(isinstance(got, torch.Tensor) and got.numel() == 1,
           f"{what} should return the mean loss as a one-element tensor, got "
           f"{getattr(got, 'shape', type(got).__name__)}")
    return got.detach().reshape(())


def _judge(name: str, got: torch.Tensor, want: torch.Tensor, wrongs, n: int) -> None:
    if not bool(torch.isfinite(got)) and bool(torch.isfinite(want)):
        for wrong, sentence in wrongs:
            if wrong is None:
                raise AssertionError(f"{name}: you returned {got.item()} where the loss is "
                                     f"{want.item():.4f}: {sentence}")
    if close(got, want, reduction=n, depth=3):
        return
    for wrong, sentence in wrongs:
        if wrong is None or not bool(torch.isfinite(wrong)):
            continue
        if not close(wrong, want, reduction=n, depth=3) and close(got, wrong, reduction=n,
                                                                  depth=3):
            raise AssertionError(f"{name}: {sentence}")
    raise AssertionError(f"{name}: expected the loss {want.item():.6f}, got {got.item():.6f}")


# ---------------------------------------------------------------------------------------
# DPO: -log sigmoid(beta [(pi_c - ref_c) - (pi_r - ref_r)]), mean over pairs


def _dpo_cases():
    generator = rng(141)

    def logps(n, scale=20.0):
        return -(torch.rand(4, n, generator=generator) * scale + 1)       # summed log-probs

    pc, pr, rc, rr = logps(6)
    yield "six pairs, beta 0.1", (pc, pr, rc, rr), 0.1
    yield "the same pairs, beta 0.5", (pc, pr, rc, rr), 0.5
    pc, pr, rc, rr = logps(1)
    yield "one pair, beta 1", (pc, pr, rc, rr), 1.0
    pc, pr = logps(2)[:2]
    yield "policy equal to the reference (the loss is log 2)", (pc, pr, pc.clone(),
                                                                pr.clone()), 0.1
    pc, pr, rc, rr = logps(3)
    yield ("large margins against the chosen answers",
           (pc - 300.0, pr, rc, rr), 1.0)


def _dpo_paper(pc, pr, rc, rr, beta):
    z = beta * ((pc.double() - rc.double()) - (pr.double() - rr.double()))
    return (-F.logsigmoid(z)).mean()


def _dpo_mistakes(pc, pr, rc, rr, beta):
    margin = (pc - rc) - (pr - rr)
    with torch.no_grad():
        yield (-F.logsigmoid(-beta * margin).mean(),
               "the sign is flipped: the loss is -log sigmoid(beta * margin) with the chosen "
               "answer's log-ratio first, so that it falls as the chosen answer gains")
        yield (-F.logsigmoid(beta * (pc - pr)).mean(),
               "the reference is missing: subtract the frozen reference's log-probs, "
               "(pi_c - ref_c) - (pi_r - ref_r)")
        yield (-beta * F.logsigmoid(margin).mean(),
               "beta sits outside the sigmoid: it scales the margin inside, "
               "-log sigmoid(beta * margin)")
        yield (-F.logsigmoid(beta * margin).sum(),
               "you summed over the pairs: return the mean")
        e = torch.exp
        yield (-F.logsigmoid(beta * ((e(pc) - e(rc)) - (e(pr) - e(rr)))).mean(),
               "you used probabilities: DPO works with log-probabilities, "
               "log pi(y) - log ref(y), not exp of them")
        yield (None, "log(sigmoid(x)) overflows for a large negative margin (sigmoid "
                     "rounds to 0): use F.logsigmoid, or -softplus(-x)")


@forbids(*_PACKAGE)
def check_dpo_loss(fn) -> None:
    """fn(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta) -> the mean loss."""
    _refuse_package(fn, check_dpo_loss.forbidden_calls, "dpo")
    for name, (pc, pr, rc, rr), beta in _dpo_cases():
        what = f"dpo(...) [{name}]"
        got = call(fn, pc.clone(), pr.clone(), rc.clone(), rr.clone(), beta, what=what,
                   forbidden=check_dpo_loss.forbidden_calls)
        got = _scalar(got, what)
        want = dpo_loss(pc, pr, rc, rr, beta)
        assert torch.allclose(want.double(), _dpo_paper(pc, pr, rc, rr, beta), rtol=1e-5)
        _judge(name, got, want, list(_dpo_mistakes(pc, pr, rc, rr, beta)), len(pc))
    passed("dpo equals -log sigmoid(beta [(pi_c - ref_c) - (pi_r - ref_r)]), averaged, "
           "and stays finite for large margins")


# ---------------------------------------------------------------------------------------
# The ranking loss: -log sigmoid(r_c - r_r - m), mean over pairs


def _ranking_cases():
    generator = rng(143)
    levels = torch.tensor([0.0, 1 / 3, 2 / 3, 1.0])          # Llama 2, Table 27, "small"
    c, r = torch.randn(2, 8, generator=generator)
    m = levels[torch.randint(4, (8,), generator=generator)]
    yield "eight pairs, margins 0 to 1", c, r, m
    c, r = torch.randn(2, 5, generator=generator) * 3
    yield "five pairs, the large margins 0 to 3", c, r, levels[torch.randint(
        4, (5,), generator=generator)] * 3
    c, r = torch.randn(2, 1, generator=generator)
    yield "one pair, margin 1", c, r, torch.ones(1)
    c, r = torch.randn(2, 4, generator=generator)
    yield "a margin given as a float (2/3)", c, r, 2 / 3
    c, r = torch.randn(2, 3, generator=generator)
    yield "rejected answers scored far above the chosen", c - 60.0, r + 60.0, torch.ones(3)


def _ranking_mistakes(c, r, m):
    with torch.no_grad():
        yield (-F.logsigmoid(c - r + m).mean(),
               "the margin is added: subtract it, -log sigmoid(r_c - r_r - m), so that a "
               "clearer preference asks for a larger gap")
        yield (-F.logsigmoid(c - r).mean(), "the margin is missing: -log sigmoid(r_c - r_r - m)")
        yield (F.softplus(c - r - m).mean(),
               "softplus has the wrong sign: -log sigmoid(x) = softplus(-x)")
        yield (-F.logsigmoid(c - r - m).sum(), "you summed over the pairs: return the mean")
        yield (None, "log(sigmoid(x)) overflows when the rejected answer scores far above "
                     "the chosen (sigmoid rounds to 0): use F.logsigmoid, or softplus(-x)")


@forbids(*_PACKAGE)
def check_ranking_loss(fn) -> None:
    """fn(chosen_rewards, rejected_rewards, margin) -> the mean ranking loss."""
    _refuse_package(fn, check_ranking_loss.forbidden_calls, "margin_ranking")
    for name, c, r, m in _ranking_cases():
        what = f"margin_ranking(...) [{name}]"
        given_m = m.clone() if isinstance(m, torch.Tensor) else m
        got = _scalar(call(fn, c.clone(), r.clone(), given_m, what=what,
                           forbidden=check_ranking_loss.forbidden_calls), what)
        want = ranking_loss(c, r, m)
        paper = (-F.logsigmoid(c.double() - r.double() - torch.as_tensor(m).double())).mean()
        assert math.isclose(want.item(), paper.item(), rel_tol=1e-5, abs_tol=1e-6)
        _judge(name, got, want, list(_ranking_mistakes(c, r, m)), len(c))
    passed("margin_ranking equals -log sigmoid(r_c - r_r - m), averaged, stable for large gaps")
