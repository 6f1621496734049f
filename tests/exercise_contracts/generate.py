"""Lesson 11's checks: top-p (nucleus) filtering and temperature scaling."""

import torch

from ._contract import Contract

# ---- top-p ------------------------------------------------------------------------------


def top_p_ok(logits, p):
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    before = probs.cumsum(-1) - probs
    remove = (before >= p).scatter(-1, order, before >= p)
    return logits.masked_fill(remove, float("-inf"))


def top_p_drops_crossing(logits, p):
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    remove = probs.cumsum(-1) > p                       # drops the token that crosses p
    remove[..., 0] = False
    return logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))


def top_p_empty_rows(logits, p):
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    remove = torch.softmax(sorted_logits, dim=-1).cumsum(-1) > p
    return logits.masked_fill(remove.scatter(-1, order, remove), float("-inf"))


def top_p_zero_fill(logits, p):
    out = top_p_ok(logits, p)
    return torch.where(torch.isfinite(out), out, torch.zeros_like(out))


def top_p_sorted(logits, p):
    sorted_logits, _ = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    return sorted_logits.masked_fill(probs.cumsum(-1) - probs >= p, float("-inf"))


def top_p_one_row(logits, p):
    sorted_logits, order = torch.sort(logits.flatten(), descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    remove = (probs.cumsum(-1) - probs >= p)
    return logits.flatten().masked_fill(remove.scatter(-1, order, remove), float("-inf"))


def top_p_probs(logits, p):
    out = top_p_ok(logits, p)
    return torch.where(torch.isfinite(out), torch.softmax(logits, -1), out)


# ---- temperature ------------------------------------------------------------------------


def temperature_ok(logits, temperature):
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    return torch.softmax(logits / temperature, dim=-1)


def temperature_times(logits, temperature):
    if temperature == 0:
        return temperature_ok(logits, 0)
    return torch.softmax(logits * temperature, dim=-1)


def temperature_after_softmax(logits, temperature):
    if temperature == 0:
        return temperature_ok(logits, 0)
    return torch.softmax(logits, dim=-1) / temperature


def temperature_divides_by_zero(logits, temperature):
    return torch.softmax(logits / temperature, dim=-1)


def temperature_unstable(logits, temperature):
    if temperature == 0:
        return temperature_ok(logits, 0)
    e = torch.exp(logits / temperature)
    return e / e.sum(-1, keepdim=True)


def temperature_ignored(logits, temperature):
    if temperature == 0:
        return temperature_ok(logits, 0)
    return torch.softmax(logits, dim=-1)


CONTRACTS = {
    "check_top_p_filter": Contract(
        references=[top_p_ok], passed="top_p_filter is right",
        mistakes=[
            (top_p_drops_crossing, "dropped the token that carries the mass past p"),
            (top_p_empty_rows, "kept no token"),
            (top_p_zero_fill, "a logit of 0 still has probability"),
            (top_p_sorted, "in sorted order"),
            (top_p_one_row, "not for a batch"),
            (top_p_probs, "must stay as they were"),
        ]),
    "check_temperature_probs": Contract(
        references=[temperature_ok], passed="temperature_probs is right",
        mistakes=[
            (temperature_times, "multiplied by the temperature"),
            (temperature_after_softmax, "sum to"),
            (temperature_divides_by_zero, "one-hot"),
            (temperature_unstable, "subtract the row maximum"),
            (temperature_ignored, "changed nothing"),
        ]),
}
