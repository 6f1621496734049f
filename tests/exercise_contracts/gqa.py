"""Lesson 07's checks: repeat_kv, grouped-query attention without repeating K/V, and
grouping KV heads."""

import math

import torch

from llama_edu.attention import repeat_kv

from ._contract import Contract

# ---- repeat_kv (warm-up) ----------------------------------------------------------------


def repeat_ok(x, n_rep):
    batch, seq, n_kv_heads, head_dim = x.shape
    x = x[:, :, :, None, :].expand(batch, seq, n_kv_heads, n_rep, head_dim)
    return x.reshape(batch, seq, n_kv_heads * n_rep, head_dim)


def repeat_ok_cat(x, n_rep):                      # each head's copies stacked with cat
    return torch.cat([x[:, :, h:h + 1] for h in range(x.shape[2]) for _ in range(n_rep)], dim=2)


# ---- grouped-query attention (build) ----------------------------------------------------


def gqa_with(q, k, v, *, order="blocked", scale=True, causal="bottom", dim=-1, out="heads"):
    """One parametrised answer, the grouped read done right; each keyword is one slip."""
    batch, n_heads, q_len, head_dim = q.shape
    n_kv_heads, kv_len = k.shape[1], k.shape[2]
    group = n_heads // n_kv_heads
    if order == "blocked":                        # query heads j*group .. j*group+group-1 -> j
        rows = q.reshape(batch, n_kv_heads, group * q_len, head_dim)
    else:                                         # interleaved: query head h -> h % n_kv_heads
        rows = q.reshape(batch, group, n_kv_heads, q_len, head_dim).transpose(1, 2)
        rows = rows.reshape(batch, n_kv_heads, group * q_len, head_dim)
    scores = rows @ k.transpose(-2, -1)           # (b, kv, g*t, s)
    if scale:
        scores = scores / math.sqrt(head_dim)
    scores = scores.view(batch, n_kv_heads, group, q_len, kv_len)
    ones = torch.ones(q_len, kv_len, dtype=torch.bool)
    visible = {"bottom": ones.tril(kv_len - q_len), "top": ones.tril(), "upper": ones.triu(),
               None: ones}[causal]
    weights = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=dim)
    weights = weights.nan_to_num(0.0).reshape(batch, n_kv_heads, group * q_len, kv_len)
    result = (weights @ v).view(batch, n_kv_heads, group, q_len, head_dim)
    if out == "grouped":
        return result
    if order != "blocked":
        result = result.transpose(1, 2)
    result = result.reshape(batch, n_heads, q_len, head_dim)
    return result.transpose(1, 2) if out == "seq first" else result


def gqa_ok(q, k, v):
    return gqa_with(q, k, v)


def gqa_ok_einsum(q, k, v):                       # einsum folds the group in, no copies
    batch, n_heads, q_len, head_dim = q.shape
    n_kv_heads, kv_len = k.shape[1], k.shape[2]
    q5 = q.view(batch, n_kv_heads, n_heads // n_kv_heads, q_len, head_dim)
    scores = torch.einsum("bjgtd,bjsd->bjgts", q5, k) / head_dim ** 0.5
    future = torch.arange(kv_len)[None, :] > torch.arange(kv_len - q_len, kv_len)[:, None]
    weights = torch.softmax(scores.masked_fill(future, float("-inf")), dim=-1)
    return torch.einsum("bjgts,bjsd->bjgtd", weights, v).reshape(q.shape)


def gqa_broadcast_matmul(q, k, v):                # k[:, :, None] broadcast: matmul copies it
    batch, n_heads, q_len, head_dim = q.shape
    n_kv_heads, kv_len = k.shape[1], k.shape[2]
    q5 = q.view(batch, n_kv_heads, n_heads // n_kv_heads, q_len, head_dim)
    scores = q5 @ k[:, :, None].transpose(-2, -1) / head_dim ** 0.5
    future = torch.ones(q_len, kv_len, dtype=torch.bool).tril(kv_len - q_len)
    weights = torch.softmax(scores.masked_fill(~future, float("-inf")), dim=-1)
    return (weights @ v[:, :, None]).reshape(q.shape)


def gqa_repeat_interleave(q, k, v):
    n_rep = q.shape[1] // k.shape[1]
    return gqa_with(q, k.repeat_interleave(n_rep, 1), v.repeat_interleave(n_rep, 1))


def gqa_expand(q, k, v):
    n_rep = q.shape[1] // k.shape[1]
    b, n_kv, s, d = k.shape
    k = k[:, :, None].expand(b, n_kv, n_rep, s, d).reshape(b, n_kv * n_rep, s, d)
    v = v[:, :, None].expand(b, n_kv, n_rep, s, d).reshape(b, n_kv * n_rep, s, d)
    return gqa_with(q, k, v)


def gqa_package_repeat_kv(q, k, v):
    n_rep = q.shape[1] // k.shape[1]
    k, v = (repeat_kv(t.transpose(1, 2), n_rep).transpose(1, 2) for t in (k, v))
    return gqa_with(q, k, v)


def gqa_index(q, k, v):                           # repeated heads by indexing: still a copy
    heads = torch.arange(q.shape[1]) // (q.shape[1] // k.shape[1])
    return gqa_with(q, k[:, heads], v[:, heads])


def gqa_sdpa(q, k, v):
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                            enable_gqa=True)


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
    "check_repeat_kv": Contract(references=[repeat_ok, repeat_ok_cat], mistakes=[
        (lambda x, n_rep: x.repeat(1, 1, n_rep, 1), "tiled"),
        (lambda x, n_rep: torch.cat([x] * n_rep, dim=1), "repeat along dimension 2"),
        (lambda x, n_rep: x, "returned shape"),
        (lambda x, n_rep: torch.repeat_interleave(x, n_rep, dim=2), "calls repeat_interleave"),
        (lambda x, n_rep: repeat_kv(x, n_rep), "calls llama_edu.attention.repeat_kv"),
    ]),
    "check_gqa_attention": Contract(references=[gqa_ok, gqa_ok_einsum], mistakes=[
        (lambda q, k, v: gqa_with(q, k, v, order="interleaved"), "groups are interleaved"),
        (lambda q, k, v: gqa_with(q, k, v, scale=False), "are not scaled"),
        (lambda q, k, v: gqa_with(q, k, v, causal=None), "no causal mask"),
        (lambda q, k, v: gqa_with(q, k, v, causal="upper"), "upper triangle"),
        (lambda q, k, v: gqa_with(q, k, v, causal="top"), "aligned top-left"),
        (lambda q, k, v: gqa_with(q, k, v, dim=-2), "over the queries"),
        (lambda q, k, v: gqa_with(q, k, v, out="grouped"), "still grouped"),
        (lambda q, k, v: gqa_with(q, k, v, out="seq first"), "keep the heads on dimension 1"),
        (gqa_broadcast_matmul, "broadcasts one operand"),
        (gqa_repeat_interleave, "calls repeat_interleave"),
        (gqa_expand, "calls expand"),
        (gqa_package_repeat_kv, "llama_edu.attention.repeat_kv"),
        (gqa_index, "into a larger one"),
        (gqa_sdpa, "calls scaled_dot_product_attention"),
    ]),
    "check_group_kv_heads": Contract(references=[group_ok], mistakes=[
        (group_sum, "you added the heads"),
        (group_strided, "g \\+ n_kv_heads"),
        (group_first, "kept the first head"),
        (group_over_rows, "keeps its head_dim rows"),
    ]),
}
