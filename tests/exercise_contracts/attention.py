"""Lessons 05 and 06's checks: the causal mask, the attention forward, the cache update and
the cached greedy decode loop."""

import math

import torch

from ._contract import Contract

# ---- lesson 05: the causal mask ---------------------------------------------------------


def causal_ok(q_len, kv_len):
    return torch.ones(q_len, kv_len, dtype=torch.bool).tril(diagonal=kv_len - q_len)


# ---- lesson 05: the attention forward (build) -------------------------------------------


def forward_with(q, k, v, attention_mask, *, scale=None, fill=float("-inf"), causal="bottom",
                 pad="keys", zero_rows=True, stable=True, dim=-1, after=False, weights=False):
    """One parametrised answer: the defaults are right, each keyword is one slip."""
    q_len, kv_len = q.shape[-2], k.shape[-2]
    scores = q @ k.transpose(-2, -1) / (scale or q.shape[-1] ** 0.5)
    ones = torch.ones(q_len, kv_len, dtype=torch.bool)
    mask = {"bottom": ones.tril(kv_len - q_len), "top": ones.tril(), "upper": ones.triu(),
            None: ones}[causal]
    if attention_mask is not None and pad == "keys":
        mask = mask & attention_mask.bool()[:, None, None, :]
    elif attention_mask is not None and pad == "queries":
        mask = mask & attention_mask.bool()[:, None, -q_len:, None]
    if after:
        w = torch.softmax(scores, -1) * mask
    else:
        scores = scores.masked_fill(~mask, fill)
        top = scores.amax(dim, keepdim=True) if stable else torch.zeros_like(scores)
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        e = torch.exp(scores - top)
        total = e.sum(dim, keepdim=True)
        w = torch.where(total > 0, e / total, torch.zeros_like(e)) if zero_rows else e / total
    return w if weights else w @ v


def forward_ok(q, k, v, attention_mask):
    return forward_with(q, k, v, attention_mask)


def forward_ok_builtin(q, k, v, attention_mask):          # torch.softmax, then fix the NaN rows
    q_len, kv_len = q.shape[-2], k.shape[-2]
    mask = torch.ones(q_len, kv_len, dtype=torch.bool).tril(kv_len - q_len)
    if attention_mask is not None:
        mask = mask & attention_mask.bool()[:, None, None, :]
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(q.shape[-1])
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    return torch.nan_to_num(weights, nan=0.0) @ v


def forward_sdpa(q, k, v, attention_mask):                # the forbidden shortcut
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)


# ---- lesson 06: the cache update --------------------------------------------------------


def update_ok(cache_k, cache_v, k, v, start_pos):
    end = start_pos + k.shape[1]
    if end > cache_k.shape[1]:
        raise ValueError("cache overflow")
    cache_k[:, start_pos:end] = k
    cache_v[:, start_pos:end] = v
    return cache_k[:, :end], cache_v[:, :end]


def update_whole_cache(cache_k, cache_v, k, v, start_pos):
    update_ok(cache_k, cache_v, k, v, start_pos)
    return cache_k, cache_v


def update_new_only(cache_k, cache_v, k, v, start_pos):
    update_ok(cache_k, cache_v, k, v, start_pos)
    return k, v


def update_not_in_place(cache_k, cache_v, k, v, start_pos):
    return (torch.cat([cache_k[:, :start_pos], k], 1), torch.cat([cache_v[:, :start_pos], v], 1))


def update_off_by_one(cache_k, cache_v, k, v, start_pos):
    end = start_pos + k.shape[1]
    cache_k[:, start_pos + 1:end + 1] = k
    cache_v[:, start_pos + 1:end + 1] = v
    return cache_k[:, :end], cache_v[:, :end]


def update_swapped(cache_k, cache_v, k, v, start_pos):
    keys, values = update_ok(cache_k, cache_v, k, v, start_pos)
    return values, keys


def update_no_overflow_check(cache_k, cache_v, k, v, start_pos):
    end = start_pos + k.shape[1]
    cache_k[:, start_pos:end] = k
    cache_v[:, start_pos:end] = v
    return cache_k[:, :end], cache_v[:, :end]


def update_silent_overflow(cache_k, cache_v, k, v, start_pos):
    end = min(start_pos + k.shape[1], cache_k.shape[1])
    cache_k[:, start_pos:end] = k[:, :end - start_pos]
    cache_v[:, start_pos:end] = v[:, :end - start_pos]
    return cache_k[:, :end], cache_v[:, :end]


# ---- lesson 06: the cached greedy decode loop (build) ------------------------------------


def greedy_with(model, prompts, n_new, *, cache="once", prefill="whole", feed="newest",
                start="right", mask_decode="grown", first="last", keep_prompt=False,
                steps=None, wasted_call=False):
    """One parametrised answer: the defaults are right, each keyword is one slip."""
    longest = max(len(p) for p in prompts)
    tokens = torch.tensor([[0] * (longest - len(p)) + list(p) for p in prompts])
    mask = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts])
    padded = bool((mask == 0).any())
    kv = model.make_cache(len(prompts), longest + n_new + 1) if cache == "once" else None
    new = []
    with torch.no_grad():
        if prefill == "whole":
            logits = model(tokens, 0, kv, mask if padded else None)
        else:                                               # the prompt one token at a time
            for t in range(longest):
                logits = model(tokens[:, t:t + 1], t, kv, mask[:, :t + 1] if padded else None)
        for step in range(n_new if steps is None else steps):
            row = logits[:, -1] if (step or first == "last") else logits[:, 0]
            token = row.argmax(-1, keepdim=True)            # (batch, 1)
            new.append(token)
            tokens = torch.cat([tokens, token], 1)
            mask = torch.cat([mask, torch.ones_like(token)], 1)
            if step == n_new - 1 and not wasted_call:
                break
            if cache == "none":
                logits = model(tokens, 0, None, mask if padded else None)
                continue
            if cache == "every step":
                kv = model.make_cache(len(prompts), longest + n_new + 1)
                logits = model(tokens, 0, kv, mask if padded else None)
                continue
            if feed == "all":
                logits = model(tokens, 0, kv, mask if padded else None)
                continue
            pos = {"right": longest + step, "stuck": longest, "one past": longest + step + 1}[start]
            m = {"grown": mask, "none": None, "new only": mask[:, -1:]}[mask_decode]
            logits = model(token, pos, kv, m if padded else None)
    out = torch.cat(new, 1)
    if keep_prompt:
        out = tokens
    return out.tolist()


def greedy_ok(model, prompts, n_new):
    return greedy_with(model, prompts, n_new)


def greedy_ok_extra_call(model, prompts, n_new):          # one decode call too many: harmless
    return greedy_with(model, prompts, n_new, wasted_call=True)


CONTRACTS = {
    "check_causal_mask": Contract(references=[causal_ok], mistakes=[
        (lambda q, kv: ~causal_ok(q, kv), "True and False are swapped"),
        (lambda q, kv: torch.ones(q, kv, dtype=torch.bool).triu(), "read the future"),
        (lambda q, kv: torch.ones(q, kv, dtype=torch.bool).tril(kv - q - 1),
         "diagonal is missing"),
        (lambda q, kv: torch.ones(q, kv, dtype=torch.bool).tril(), "bottom-right"),
        (lambda q, kv: torch.zeros(q, kv).masked_fill(~causal_ok(q, kv), float("-inf")),
         "additive form"),
        (lambda q, kv: causal_ok(q, kv).float(), "should return a bool tensor"),
        (lambda q, kv: causal_ok(q, kv)[None], r"rows are queries"),
    ]),
    "check_attention_forward": Contract(references=[forward_ok, forward_ok_builtin], mistakes=[
        (lambda q, k, v, m: forward_with(q, k, v, m, scale=1.0), "are not scaled"),
        (lambda q, k, v, m: forward_with(q, k, v, m, scale=q.shape[-1]),
         "divide by its square root"),
        (lambda q, k, v, m: forward_with(q, k, v, m, causal="upper"), "upper triangle"),
        (lambda q, k, v, m: forward_with(q, k, v, m, causal=None), "no causal mask"),
        (lambda q, k, v, m: forward_with(q, k, v, m, causal="top"), "aligned top-left"),
        (lambda q, k, v, m: forward_with(q, k, v, m, pad=None), "padding is ignored"),
        (lambda q, k, v, m: forward_with(q, k, v, m, pad="queries"), "hides rows"),
        (lambda q, k, v, m: forward_with(q, k, v, m, zero_rows=False), "came back as NaN"),
        (lambda q, k, v, m: forward_with(q, k, v, m, fill=-1e9), "equal weights"),
        (lambda q, k, v, m: forward_with(q, k, v, m, fill=0.0), "exp\\(0\\) = 1"),
        (lambda q, k, v, m: forward_with(q, k, v, m, after=True), "masked after the softmax"),
        (lambda q, k, v, m: forward_with(q, k, v, m, stable=False), "overflows"),
        (lambda q, k, v, m: forward_with(q, k, v, m, dim=-2), "over the queries"),
        (lambda q, k, v, m: forward_with(q, k, v, m, weights=True),
         "returned the attention weights"),
        (forward_sdpa, "calls scaled_dot_product_attention"),
        (lambda q, k, v, m: forward_ok(q, k, v, m)[..., :-1], "returned shape"),
    ]),
    "check_cache_update": Contract(references=[update_ok], mistakes=[
        (update_whole_cache, "return only the positions written so far"),
        (update_new_only, "returned only the 1 new position"),
        (update_not_in_place, "buffers were not written"),
        (update_off_by_one, "belong at positions 0..2"),
        (update_swapped, "keys and values are swapped"),
        (update_no_overflow_check, "raised RuntimeError"),
        (update_silent_overflow, "nothing was raised"),
    ]),
    "check_greedy_cached": Contract(references=[greedy_ok, greedy_ok_extra_call], mistakes=[
        (lambda m, p, n: greedy_with(m, p, n, cache="none"), "never passed the cache"),
        (lambda m, p, n: greedy_with(m, p, n, cache="every step"), "made a new cache"),
        (lambda m, p, n: greedy_with(m, p, n, prefill="tokenwise"), "the prefill"),
        (lambda m, p, n: greedy_with(m, p, n, feed="all"), "feed only the newest token"),
        (lambda m, p, n: greedy_with(m, p, n, start="stuck"), "must advance by one"),
        (lambda m, p, n: greedy_with(m, p, n, start="one past"), "sits at position 5"),
        (lambda m, p, n: greedy_with(m, p, n, mask_decode="none"), "has no attention_mask"),
        (lambda m, p, n: greedy_with(m, p, n, mask_decode="new only"), "covers 1 positions"),
        (lambda m, p, n: greedy_with(m, p, n, first="first"), "logits of the first position"),
        (lambda m, p, n: greedy_with(m, p, n, keep_prompt=True), "not the prompt with them"),
        (lambda m, p, n: greedy_with(m, p, n, steps=n - 1), "new tokens, expected"),
        (lambda m, p, n: "tokens", "one list of new token ids per prompt"),
    ]),
}
