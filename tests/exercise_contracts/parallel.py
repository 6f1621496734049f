"""Lesson 12's checks: column- or row-parallel, the tensor-parallel SwiGLU's one all-reduce,
and which heads a rank holds under GQA."""

import torch
import torch.nn.functional as F

from ._contract import Contract

# ---- parallel_style ---------------------------------------------------------------------


def style_ok(name):
    return "row" if name in ("o_proj", "down_proj") else "column"


def style_swapped(name):
    return "column" if style_ok(name) == "row" else "row"


def style_row_kv(name):
    return "row" if name in ("k_proj", "v_proj", "o_proj", "down_proj") else "column"


# ---- tp_swiglu --------------------------------------------------------------------------


def swiglu_ok(x, gate_shards, up_shards, down_shards, all_reduce):
    partials = [F.linear(F.silu(x @ g.T) * (x @ u.T), d)
                for g, u, d in zip(gate_shards, up_shards, down_shards, strict=True)]
    return all_reduce(partials)


def swiglu_reduce_hidden(x, gates, ups, downs, all_reduce):
    hidden = [all_reduce([F.silu(x @ g.T) for g in gates]) for _ in range(1)][0]
    return sum(F.linear(hidden * (x @ u.T), d) for u, d in zip(ups, downs, strict=True))


def swiglu_concat(x, gates, ups, downs, all_reduce):
    return torch.cat([F.linear(F.silu(x @ g.T) * (x @ u.T), d)
                      for g, u, d in zip(gates, ups, downs, strict=True)], dim=-1)


def swiglu_mean(x, gates, ups, downs, all_reduce):
    return swiglu_ok(x, gates, ups, downs, all_reduce) / len(gates)


def swiglu_by_hand(x, gates, ups, downs, all_reduce):
    return sum(F.linear(F.silu(x @ g.T) * (x @ u.T), d)
               for g, u, d in zip(gates, ups, downs, strict=True))


def swiglu_twice(x, gates, ups, downs, all_reduce):
    out = swiglu_ok(x, gates, ups, downs, all_reduce)
    return all_reduce([out] + [torch.zeros_like(out)] * (len(gates) - 1))


# ---- head_shards ------------------------------------------------------------------------


def heads_ok(n_heads, n_kv_heads, world_size, rank):
    per_rank = n_heads // world_size
    q_heads = list(range(rank * per_rank, (rank + 1) * per_rank))
    group = n_heads // n_kv_heads
    return q_heads, sorted({h // group for h in q_heads})


def heads_no_copy(n_heads, n_kv_heads, world_size, rank):
    q_heads, _ = heads_ok(n_heads, n_kv_heads, world_size, rank)
    per = n_kv_heads // world_size
    return q_heads, list(range(rank * per, (rank + 1) * per))


def heads_strided(n_heads, n_kv_heads, world_size, rank):
    q_heads = list(range(rank, n_heads, world_size))
    return q_heads, heads_ok(n_heads, n_kv_heads, world_size, rank)[1]


def heads_wrong_group(n_heads, n_kv_heads, world_size, rank):
    q_heads, kv = heads_ok(n_heads, n_kv_heads, world_size, rank)
    return q_heads, [(h + 1) % n_kv_heads for h in kv]


CONTRACTS = {
    "check_parallel_style": Contract(references=[style_ok], mistakes=[
        (lambda name: "column", "o_proj and down_proj receive"),
        (style_swapped, "every answer is swapped"),
        (style_row_kv, "k and v are made from the full input"),
        (lambda name: 0, "should return 'column' or 'row'"),
    ]),
    "check_tp_swiglu": Contract(references=[swiglu_ok], mistakes=[
        (swiglu_reduce_hidden, "all-reduce belongs after down_proj"),
        (swiglu_concat, "you concatenated the ranks' outputs"),
        (swiglu_mean, "you averaged the partial outputs"),
        (swiglu_by_hand, "all_reduce was never called"),
        (swiglu_twice, "called 2 times"),
    ]),
    "check_head_shards": Contract(references=[heads_ok], mistakes=[
        (heads_no_copy, "copy \\(replicate\\) it"),
        (heads_strided, "contiguous block"),
        (heads_wrong_group, "reads KV head h //"),
    ]),
}
