"""Lesson 14's checks: DPO's loss from sequence log-probs, the ranking loss with a margin."""

import torch
import torch.nn.functional as F

from ._contract import Contract

# ---- DPO --------------------------------------------------------------------------------


def dpo_ok(pc, pr, rc, rr, beta):
    logits = beta * ((pc - rc) - (pr - rr))
    return -F.logsigmoid(logits).mean()


def dpo_softplus(pc, pr, rc, rr, beta):          # -log sigmoid(x) = softplus(-x)
    return F.softplus(-beta * ((pc - pr) - (rc - rr))).mean()


# ---- ranking ----------------------------------------------------------------------------


def ranking_ok(chosen, rejected, margin):
    return -F.logsigmoid(chosen - rejected - margin).mean()


def ranking_softplus(chosen, rejected, margin):
    return F.softplus(rejected - chosen + margin).mean()


CONTRACTS = {
    "check_dpo_loss": Contract(
        references=[dpo_ok, dpo_softplus],
        mistakes=[
            (lambda pc, pr, rc, rr, b: -F.logsigmoid(-b * ((pc - rc) - (pr - rr))).mean(),
             "sign is flipped"),
            (lambda pc, pr, rc, rr, b: -F.logsigmoid(b * (pc - pr)).mean(),
             "reference is missing"),
            (lambda pc, pr, rc, rr, b: -b * F.logsigmoid((pc - rc) - (pr - rr)).mean(),
             "beta sits outside the sigmoid"),
            (lambda pc, pr, rc, rr, b: -F.logsigmoid(b * ((pc - rc) - (pr - rr))).sum(),
             "summed over the pairs"),
            (lambda pc, pr, rc, rr, b: -F.logsigmoid(
                b * ((pc.exp() - rc.exp()) - (pr.exp() - rr.exp()))).mean(),
             "used probabilities"),
            (lambda pc, pr, rc, rr, b: -torch.log(torch.sigmoid(
                b * ((pc - rc) - (pr - rr)))).mean(), "overflows for a large negative margin"),
        ]),
    "check_ranking_loss": Contract(
        references=[ranking_ok, ranking_softplus],
        mistakes=[
            (lambda c, r, m: -F.logsigmoid(c - r + m).mean(), "margin is added"),
            (lambda c, r, m: -F.logsigmoid(c - r).mean(), "margin is missing"),
            (lambda c, r, m: F.softplus(c - r - m).mean(), "softplus has the wrong sign"),
            (lambda c, r, m: -F.logsigmoid(c - r - m).sum(), "summed over the pairs"),
            (lambda c, r, m: -torch.log(torch.sigmoid(c - r - m)).mean(),
             "overflows when the rejected answer"),
        ]),
}
