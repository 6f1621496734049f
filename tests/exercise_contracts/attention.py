"""Lessons 05-07's checks: the causal mask, masked softmax, the cache update, the cache
memory formula, repeat_kv, and grouping KV heads."""

import torch

from ._contract import Contract

# ---- lesson 05: the causal mask ---------------------------------------------------------


def causal_ok(q_len, kv_len):
    return torch.ones(q_len, kv_len, dtype=torch.bool).tril(diagonal=kv_len - q_len)


# ---- lesson 05: masked softmax ----------------------------------------------------------


def softmax_ok(scores, mask):
    scores = scores.masked_fill(~mask, float("-inf"))
    row_max = scores.amax(-1, keepdim=True).nan_to_num(0.0, neginf=0.0)
    e = torch.exp(scores - row_max)
    total = e.sum(-1, keepdim=True)
    return torch.where(total > 0, e / total, torch.zeros_like(e))


def softmax_naive(scores, mask):            # no max subtraction
    e = torch.exp(scores) * mask
    return e / e.sum(-1, keepdim=True)


def softmax_builtin_nan_rows(scores, mask):  # right except for fully masked rows
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), -1)


def softmax_fill_zero(scores, mask):
    return torch.softmax(scores.masked_fill(~mask, 0.0), -1)


def softmax_after(scores, mask):
    return torch.softmax(scores, -1) * mask


def softmax_big_negative(scores, mask):
    return torch.softmax(scores.masked_fill(~mask, -1e9), -1)


def softmax_wrong_dim(scores, mask):
    return torch.softmax(scores.masked_fill(~mask, float("-inf")), -2)


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


# ---- lesson 06: the cache's size in bytes -----------------------------------------------


def bytes_ok(n_layers, n_kv_heads, head_dim, seq_len, batch_size, bytes_per_value):
    return 2 * n_layers * n_kv_heads * head_dim * seq_len * batch_size * bytes_per_value


# ---- lesson 07: repeat_kv and grouping heads --------------------------------------------


def repeat_ok(x, n_rep):
    return torch.repeat_interleave(x, n_rep, dim=2)


def group_ok(weight, n_heads, n_kv_heads):
    head_dim = weight.shape[0] // n_heads
    grouped = weight.reshape(n_kv_heads, n_heads // n_kv_heads, head_dim, -1)
    return grouped.mean(1).reshape(n_kv_heads * head_dim, -1)


def group_sum(weight, n_heads, n_kv_heads):
    return group_ok(weight, n_heads, n_kv_heads) * (n_heads // n_kv_heads)


def group_strided(weight, n_heads, n_kv_heads):
    head_dim = weight.shape[0] // n_heads
    grouped = weight.reshape(n_heads // n_kv_heads, n_kv_heads, head_dim, -1)
    return grouped.mean(0).reshape(n_kv_heads * head_dim, -1)


def group_first(weight, n_heads, n_kv_heads):
    head_dim = weight.shape[0] // n_heads
    grouped = weight.reshape(n_kv_heads, n_heads // n_kv_heads, head_dim, -1)
    return grouped[:, 0].reshape(n_kv_heads * head_dim, -1)


def group_over_rows(weight, n_heads, n_kv_heads):
    return weight.reshape(n_kv_heads, -1, weight.shape[1]).mean(1)


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
    "check_masked_softmax": Contract(references=[softmax_ok], mistakes=[
        (softmax_naive, "subtract each row's maximum"),
        (softmax_builtin_nan_rows, "fully masked row came back as NaN"),
        (softmax_fill_zero, "exp\\(0\\) = 1"),
        (softmax_after, "mask after the softmax"),
        (softmax_big_negative, "fully masked row sums to 1"),
        (softmax_wrong_dim, "normalized over the queries"),
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
    "check_kv_cache_bytes": Contract(references=[bytes_ok], mistakes=[
        (lambda n, h, d, s, b, by: n * h * d * s * b * by, "multiply by 2"),
        (lambda n, h, d, s, b, by: 2 * n * h * d * s * b * by * 8, "that is bits"),
        (lambda n, h, d, s, b, by: 2 * n * h * d * s * b, "counts values, not bytes"),
        (lambda n, h, d, s, b, by: 2 * n * h * d * s * by, "multiply by batch_size"),
        (lambda n, h, d, s, b, by: 2 * h * d * s * b * by, "multiply by n_layers"),
        (lambda n, h, d, s, b, by: "2 GiB", "should return a number of bytes"),
        (lambda n, h, d, s, b, by: 2 * n * h * d * s * b * by + 1,     # no known slip
         "expected 120,120 bytes, got 120,121"),
    ]),
    "check_repeat_kv": Contract(references=[repeat_ok], mistakes=[
        (lambda x, n_rep: x.repeat(1, 1, n_rep, 1), "tiled"),
        (lambda x, n_rep: torch.repeat_interleave(x, n_rep, dim=1), "repeat along dimension 2"),
        (lambda x, n_rep: x, "returned shape"),
    ]),
    "check_group_kv_heads": Contract(references=[group_ok], mistakes=[
        (group_sum, "you added the heads"),
        (group_strided, "g \\+ n_kv_heads"),
        (group_first, "kept the first head"),
        (group_over_rows, "keeps its head_dim rows"),
    ]),
}
