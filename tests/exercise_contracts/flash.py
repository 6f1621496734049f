"""Lesson 08's checks: the rescaling step of online softmax, and the causal block skip."""

import torch

from llama_edu.flash import block_kind, online_step

from ._contract import Contract

# ---- the rescaling step -----------------------------------------------------------------


def step_without_rescaling(m, l, acc, scores, v):
    m_new = torch.maximum(m, scores.amax(-1))
    p = torch.exp(scores - m_new[..., None])
    return m_new, l + p.sum(-1), acc + p @ v


def step_with_flipped_factor(m, l, acc, scores, v):
    m_new = torch.maximum(m, scores.amax(-1))
    alpha = torch.exp(m_new - m)
    p = torch.exp(scores - m_new[..., None])
    return m_new, alpha * l + p.sum(-1), alpha[..., None] * acc + p @ v


def step_rescaling_only_l(m, l, acc, scores, v):
    m_new = torch.maximum(m, scores.amax(-1))
    p = torch.exp(scores - m_new[..., None])
    return m_new, torch.exp(m - m_new) * l + p.sum(-1), acc + p @ v


def step_rescaling_only_acc(m, l, acc, scores, v):
    m_new = torch.maximum(m, scores.amax(-1))
    alpha = torch.exp(m - m_new)
    p = torch.exp(scores - m_new[..., None])
    return m_new, l + p.sum(-1), alpha[..., None] * acc + p @ v


def step_normalising_early(m, l, acc, scores, v):
    m_new, l_new, acc_new = online_step(m, l, acc, scores, v)
    return m_new, l_new, acc_new / l_new[..., None]


def step_without_max(m, l, acc, scores, v):
    p = torch.exp(scores)
    return torch.maximum(m, scores.amax(-1)), l + p.sum(-1), acc + p @ v


def step_keeping_old_max(m, l, acc, scores, v):
    _, l_new, acc_new = online_step(m, l, acc, scores, v)
    return m, l_new, acc_new


def step_with_wrong_sum(m, l, acc, scores, v):
    m_new, l_new, acc_new = online_step(m, l, acc, scores, v)
    return m_new, l_new + 0.5, acc_new


def step_with_nan(m, l, acc, scores, v):
    m_new, l_new, acc_new = online_step(m, l, acc, scores, v)
    return m_new, l_new * float("nan"), acc_new


# ---- the causal block skip --------------------------------------------------------------


def kind_ignoring_offset(q_start, q_end, k_start, k_end, offset):
    return block_kind(q_start, q_end, k_start, k_end, 0)


def kind_skipping_by_first_row(q_start, q_end, k_start, k_end, offset):
    if k_start > q_start + offset:
        return "skip"
    return block_kind(q_start, q_end, k_start, k_end, offset)


def kind_full_by_last_row(q_start, q_end, k_start, k_end, offset):
    if k_end - 1 <= q_end - 1 + offset:
        return "full"
    return block_kind(q_start, q_end, k_start, k_end, offset)


def kind_skipping_the_diagonal(q_start, q_end, k_start, k_end, offset):
    if k_start >= q_end - 1 + offset:
        return "skip"
    return block_kind(q_start, q_end, k_start, k_end, offset)


def kind_never_full(q_start, q_end, k_start, k_end, offset):
    kind = block_kind(q_start, q_end, k_start, k_end, offset)
    return "partial" if kind == "full" else kind


CONTRACTS = {
    "check_rescale_step": Contract(references=[online_step], mistakes=[
        (step_without_rescaling, "the old l and acc were not rescaled"),
        (step_with_flipped_factor, "rescaling factor is upside down"),
        (step_rescaling_only_l, "l is right but acc was not rescaled"),
        (step_rescaling_only_acc, "acc is right but l was not rescaled"),
        (step_normalising_early, "acc was divided by l: keep acc unnormalised"),
        (step_without_max, "the raw scores were exponentiated"),
        (step_keeping_old_max, "the new running max is max\\(m_old"),
        (step_with_wrong_sum, "l_new is off by up to 0.5"),
        (step_with_nan, "l_new or acc_new holds inf or NaN"),
        (lambda *args: online_step(*args)[:2],
         "should return a tuple \\(m_new, l_new, acc_new\\)"),
        (lambda m, l, acc, s, v: (m, l, acc[..., :1]), "acc_new has shape"),
    ]),
    "check_causal_skip": Contract(references=[block_kind], mistakes=[
        (kind_ignoring_offset, "the offset is ignored"),
        (kind_skipping_by_first_row, "skip only if the last row \\(q_end - 1\\) sees nothing"),
        (kind_full_by_last_row, "it is full only if the first row does"),
        (kind_skipping_the_diagonal, "a query sees itself"),
        (kind_never_full, "tiles are wrong; e.g. tile .* is 'full', you said 'partial'"),
        (lambda *tile: True, "return one of 'skip', 'partial', 'full'"),
    ]),
}
