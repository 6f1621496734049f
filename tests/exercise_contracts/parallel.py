"""Lesson 12's checks: column- or row-parallel, one rank's tensor-parallel SwiGLU MLP with
its one all-reduce, and which heads a rank holds under GQA."""

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


# ---- tp_mlp -----------------------------------------------------------------------------


def _slices(gate_weight, up_weight, down_weight, rank, world_size):
    h = gate_weight.shape[0] // world_size
    rows = slice(rank * h, (rank + 1) * h)
    return gate_weight[rows], up_weight[rows], down_weight[:, rows]


def mlp_ok(x, gate_weight, up_weight, down_weight, down_bias, rank, world_size, all_reduce):
    hidden = gate_weight.shape[0] // world_size                # this rank's hidden features
    start, end = rank * hidden, (rank + 1) * hidden
    gate = gate_weight[start:end]                              # (hidden/p, dim)
    up = up_weight[start:end]                                  # the same rows as gate
    down = down_weight[:, start:end]                           # (dim, hidden/p)
    h = F.silu(x @ gate.T) * (x @ up.T)                        # (..., hidden/p)
    partial = h @ down.T                                       # (..., dim), partial sum
    return all_reduce(partial) + down_bias


def mlp_ok_chunk(x, gate_weight, up_weight, down_weight, down_bias, rank, world_size,
                 all_reduce):
    gate = gate_weight.chunk(world_size, dim=0)[rank]
    up = up_weight.chunk(world_size, dim=0)[rank]
    down = down_weight.chunk(world_size, dim=1)[rank]
    out = F.linear(F.silu(F.linear(x, gate)) * F.linear(x, up), down)
    if world_size > 1:
        out = all_reduce(out)
    return out + down_bias


def mlp_reduce_after_up(x, gate_weight, up_weight, down_weight, down_bias, rank, world_size,
                        all_reduce):
    gate, up, down = _slices(gate_weight, up_weight, down_weight, rank, world_size)
    h = F.silu(x @ gate.T) * all_reduce(x @ up.T)
    return all_reduce(h @ down.T) + down_bias


def mlp_no_reduce(x, gate_weight, up_weight, down_weight, down_bias, rank, world_size,
                  all_reduce):
    gate, up, down = _slices(gate_weight, up_weight, down_weight, rank, world_size)
    return (F.silu(x @ gate.T) * (x @ up.T)) @ down.T + down_bias


def mlp_down_by_rows(x, gate_weight, up_weight, down_weight, down_bias, rank, world_size,
                     all_reduce):
    gate, up, _ = _slices(gate_weight, up_weight, down_weight, rank, world_size)
    down = down_weight.chunk(world_size, dim=0)[rank]          # output features: wrong
    return all_reduce((F.silu(x @ gate.T) * (x @ up.T)) @ down.T) + down_bias


def mlp_inconsistent(x, gate_weight, up_weight, down_weight, down_bias, rank, world_size,
                     all_reduce):
    gate, _, down = _slices(gate_weight, up_weight, down_weight, rank, world_size)
    up = up_weight[rank::world_size]                           # strided, unlike gate
    return all_reduce((F.silu(x @ gate.T) * (x @ up.T)) @ down.T) + down_bias


def mlp_bias_every_rank(x, gate_weight, up_weight, down_weight, down_bias, rank, world_size,
                        all_reduce):
    gate, up, down = _slices(gate_weight, up_weight, down_weight, rank, world_size)
    return all_reduce(F.linear(F.silu(x @ gate.T) * (x @ up.T), down, down_bias))


def mlp_reduce_input(x, gate_weight, up_weight, down_weight, down_bias, rank, world_size,
                     all_reduce):
    x = all_reduce(x)
    return mlp_ok(x, gate_weight, up_weight, down_weight, down_bias, rank, world_size,
                  all_reduce)


def mlp_mean(x, gate_weight, up_weight, down_weight, down_bias, rank, world_size, all_reduce):
    gate, up, down = _slices(gate_weight, up_weight, down_weight, rank, world_size)
    return all_reduce((F.silu(x @ gate.T) * (x @ up.T)) @ down.T) / world_size + down_bias


def mlp_in_place(x, gate_weight, up_weight, down_weight, down_bias, rank, world_size,
                 all_reduce):
    gate, up, down = _slices(gate_weight, up_weight, down_weight, rank, world_size)
    partial = (F.silu(x @ gate.T) * (x @ up.T)) @ down.T
    all_reduce(partial)                                        # as dist.all_reduce works
    return partial + down_bias


def mlp_twice(x, gate_weight, up_weight, down_weight, down_bias, rank, world_size,
              all_reduce):
    out = mlp_ok(x, gate_weight, up_weight, down_weight, down_bias, rank, world_size,
                 all_reduce)
    return all_reduce(out - down_bias) / world_size + down_bias


def mlp_concat(x, gate_weight, up_weight, down_weight, down_bias, rank, world_size,
               all_reduce):
    gate, up, down = _slices(gate_weight, up_weight, down_weight, rank, world_size)
    partial = (F.silu(x @ gate.T) * (x @ up.T)) @ down.T
    return torch.cat([all_reduce(partial)] * world_size, dim=-1)


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
    "check_tp_mlp": Contract(references=[mlp_ok, mlp_ok_chunk], mistakes=[
        (mlp_reduce_after_up, "after gate/up"),
        (mlp_no_reduce, "all_reduce was never called"),
        (mlp_down_by_rows, "splits its INPUT features"),
        (mlp_inconsistent, "the partial outputs of ranks"),
        (mlp_bias_every_rank, "the bias came out"),
        (mlp_reduce_input, "you all-reduced the input x"),
        (mlp_mean, "you averaged the partial outputs"),
        (mlp_in_place, "kept using its argument"),
        (mlp_twice, "called 2 times"),
        (mlp_concat, "every rank returns the full"),
    ]),
    "check_head_shards": Contract(references=[heads_ok], mistakes=[
        (heads_no_copy, "copy \\(replicate\\) it"),
        (heads_strided, "contiguous block"),
        (heads_wrong_group, "reads KV head h //"),
    ]),
}
