"""Lesson 11's checks: the sampling step, and temperature scaling."""

import torch

from ._contract import Contract

# ---- the sampling step ------------------------------------------------------------------


def sample_ok(logits, temperature, top_k, top_p, generator):
    if temperature == 0:
        ids = logits.argmax(-1)
        return torch.nn.functional.one_hot(ids, logits.shape[-1]).float(), ids
    z = logits / temperature
    if top_k > 0:
        kth = torch.topk(z, min(top_k, z.shape[-1]), dim=-1).values[..., -1:]
        z = z.masked_fill(z < kth, float("-inf"))
    if top_p < 1.0:
        sorted_z, _ = torch.sort(z, dim=-1, descending=True)
        sorted_p = torch.softmax(sorted_z, dim=-1)
        n_kept = (sorted_p.cumsum(-1) - sorted_p < top_p).sum(-1, keepdim=True)
        cutoff = sorted_z.gather(-1, n_kept - 1)
        z = z.masked_fill(z < cutoff, float("-inf"))
    probs = torch.softmax(z, dim=-1)
    return probs, torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def sample_ok_in_probabilities(logits, temperature, top_k, top_p, generator):
    """Filters on probabilities, renormalising by the kept mass, a draw by inverse CDF."""
    if temperature == 0:
        ids = logits.argmax(-1)
        return torch.zeros_like(logits).scatter(-1, ids[:, None], 1.0), ids
    probs = torch.softmax(logits / temperature, dim=-1)
    if 0 < top_k < probs.shape[-1]:
        kth = probs.sort(-1, descending=True).values[..., top_k - 1:top_k]
        probs = torch.where(probs >= kth, probs, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    if top_p < 1.0:
        sorted_p = probs.sort(-1, descending=True).values
        last = ((sorted_p.cumsum(-1) - sorted_p) < top_p).sum(-1, keepdim=True) - 1
        probs = torch.where(probs >= sorted_p.gather(-1, last), probs, 0.0)
        probs = probs / probs.sum(-1, keepdim=True)
    u = torch.rand(probs.shape[0], 1, generator=generator)
    ids = (probs.cumsum(-1) < u).sum(-1).clamp(max=probs.shape[-1] - 1)
    return probs, ids


def sample_with(logits, temperature, top_k, top_p, generator, **mistake):
    """sample_ok with one classic mistake switched on."""
    get = mistake.get
    if temperature == 0 and not get("divide_by_zero"):
        ids = logits.argmax(-1)
        return torch.nn.functional.one_hot(ids, logits.shape[-1]).float(), ids
    z = logits if get("after_softmax") else logits / temperature
    untempered = logits.clone()
    if top_k > 0 or get("k_zero"):
        k = top_k if get("no_clamp") else min(top_k, z.shape[-1])
        if get("topk_indices"):
            keep = torch.zeros_like(z, dtype=torch.bool).scatter(
                -1, torch.topk(z, k, dim=-1).indices, True)
            z = z.masked_fill(~keep, float("-inf"))
        elif get("k_zero") and k == 0:
            z = torch.full_like(z, float("-inf"))
        else:
            kth = torch.topk(z, k, dim=-1, largest=not get("ascending")).values[..., -1:]
            z = z.masked_fill(z > kth if get("ascending") else z < kth, float("-inf"))
    if top_p < 1.0:
        base = z
        if get("top_p_first"):
            base = logits / temperature
        if get("untempered"):
            base = untempered.masked_fill(torch.isinf(z), float("-inf"))
        sorted_z, order = torch.sort(base, dim=-1, descending=not get("ascending"))
        sorted_p = torch.softmax(sorted_z, dim=-1)
        if get("crossing"):
            remove = sorted_p.cumsum(-1) > top_p
            remove[..., 0] = False
        else:
            remove = sorted_p.cumsum(-1) - sorted_p >= top_p
        if get("topp_no_ties") or get("crossing") or get("ascending"):
            z = z.masked_fill(remove.scatter(-1, order, remove), float("-inf"))
        else:
            n_kept = (~remove).sum(-1, keepdim=True)
            z = z.masked_fill(base < sorted_z.gather(-1, n_kept - 1), float("-inf"))
    probs = torch.softmax(z, dim=-1)
    if get("after_softmax"):
        probs = probs / temperature
    if get("no_renormalisation"):
        probs = torch.softmax(logits / temperature, -1) * (probs > 0)
    draw_from = torch.softmax(logits / temperature, -1) if get("unfiltered_draw") else probs
    if get("argmax"):
        return probs, probs.argmax(-1)
    if get("uniform"):
        draw_from = (probs > 0).float()
    if get("no_generator"):
        generator = None
    ids = torch.multinomial(draw_from, 1, generator=generator)
    return probs, ids if get("unsqueezed") else ids.squeeze(-1)


def _mistake(**flags):
    return lambda logits, t, k, p, g: sample_with(logits, t, k, p, g, **flags)


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
    "check_sample_step": Contract(
        references=[sample_ok, sample_ok_in_probabilities], passed="sample_step is right",
        mistakes=[
            (_mistake(after_softmax=True), "after the softmax"),
            (_mistake(crossing=True), "carries the mass past p"),
            (_mistake(no_renormalisation=True), "not renormalised"),
            (_mistake(topk_indices=True), "tied with the k-th largest"),
            (_mistake(topp_no_ties=True), "ties the last token of the nucleus"),
            (_mistake(ascending=True), "sort in descending order"),
            (_mistake(divide_by_zero=True), "temperature 0 means greedy"),
            (_mistake(k_zero=True), "top_k = 0 switches top-k off"),
            (_mistake(no_clamp=True), "larger than the vocabulary"),
            (_mistake(top_p_first=True), "before top-k removed tokens"),
            (_mistake(untempered=True), "before the temperature"),
            (_mistake(unfiltered_draw=True), "which the filters removed"),
            (_mistake(no_generator=True), "ignores the generator"),
            (_mistake(argmax=True), "not the argmax"),
            (_mistake(uniform=True), "do not follow the probabilities"),
            (_mistake(unsqueezed=True), "one token per row"),
            (lambda logits, t, k, p, g: sample_ok(logits, t, k, p, g)[0], r"\(probs, ids\)"),
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
