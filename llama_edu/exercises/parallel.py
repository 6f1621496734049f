"""Checks for lesson 12: which Llama linears are column- and which row-parallel, where the
all-reduce goes in a tensor-parallel SwiGLU, and which heads a rank holds under GQA."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..parallel import attention_layout
from ._common import call, expect, expect_tensor, passed, rng

__all__ = ["check_parallel_style", "check_tp_swiglu", "check_head_shards"]

_STYLES = {"q_proj": "column", "k_proj": "column", "v_proj": "column", "o_proj": "row",
           "gate_proj": "column", "up_proj": "column", "down_proj": "row"}


def check_parallel_style(fn) -> None:
    """fn(name) -> 'column' or 'row' for each linear of a Llama layer."""
    answers = {}
    for name in _STYLES:
        answer = call(fn, name, what=f"parallel_style({name!r})")
        expect(isinstance(answer, str) and answer.strip().lower() in ("column", "row"),
               f"parallel_style({name!r}) should return 'column' or 'row', got {answer!r}")
        answers[name] = answer.strip().lower()
    wrong = sorted(n for n in _STYLES if answers[n] != _STYLES[n])
    if not wrong:
        passed("q, k, v, gate and up are column-parallel; o and down are row-parallel: one "
               "all-reduce per block")
        return
    if all(answers[n] != _STYLES[n] for n in _STYLES):
        raise AssertionError("every answer is swapped. A layer that reads the full x and makes "
                             "new features (q, k, v, gate, up) splits its OUTPUT features: "
                             "column-parallel. A layer whose input is already split (o, down) "
                             "splits its INPUT features: row-parallel")
    if answers["o_proj"] == "column" or answers["down_proj"] == "column":
        raise AssertionError(f"{wrong}: o_proj and down_proj receive what the column-parallel "
                             "layers left on each rank (its heads, its hidden slice). Made "
                             "column-parallel, they would first need an all-gather of that "
                             "input; row-parallel they use the slice as it is and end with "
                             "one all-reduce of partial sums")
    if answers["k_proj"] == "row" or answers["v_proj"] == "row":
        raise AssertionError(f"{wrong}: k and v are made from the full input x just like q, "
                             "and each rank needs the keys and values of its own heads: "
                             "column-parallel, split by heads")
    raise AssertionError(f"{wrong} came back wrong: gate and up see the full x and each rank "
                         "keeps a slice of the hidden features (column); q likewise keeps "
                         "its heads (column)")


def _reference_swiglu(x, gate_shards, up_shards, down_shards):
    gate, up = torch.cat(gate_shards, 0), torch.cat(up_shards, 0)
    down = torch.cat(down_shards, 1)
    return F.linear(F.silu(F.linear(x, gate)) * F.linear(x, up), down)


def _swiglu_cases():
    generator = rng(0)
    cases = []
    for batch_shape, dim, hidden, world in (((3,), 8, 12, 2), ((2, 5), 6, 16, 4),
                                            ((1, 1), 4, 6, 1), ((2, 3), 8, 18, 3)):
        x = torch.randn(*batch_shape, dim, generator=generator)
        gate = torch.randn(hidden, dim, generator=generator) / dim ** 0.5
        up = torch.randn(hidden, dim, generator=generator) / dim ** 0.5
        down = torch.randn(dim, hidden, generator=generator) / hidden ** 0.5
        cases.append((x, list(gate.chunk(world, 0)), list(up.chunk(world, 0)),
                      list(down.chunk(world, 1)), world))
    return cases


def check_tp_swiglu(fn) -> None:
    """fn(x, gate_shards, up_shards, down_shards, all_reduce) -> SwiGLU(x).

    Shard r of gate and up holds rows (hidden/p, dim); shard r of down holds columns
    (dim, hidden/p). all_reduce(list of one tensor per rank) returns their sum, as every
    rank would hold it after the collective. Exactly one all-reduce, of (..., dim) tensors.
    """
    for x, gates, ups, downs, world in _swiglu_cases():
        calls = []

        def all_reduce(tensors, world=world, calls=calls):
            if isinstance(tensors, torch.Tensor) or not isinstance(tensors, (list, tuple)):
                raise TypeError("all_reduce takes a list with one tensor per rank, got "
                                f"{type(tensors).__name__}")
            if len(tensors) != world:
                raise ValueError(f"all_reduce needs one tensor per rank ({world}), got "
                                 f"{len(tensors)}")
            calls.append(tuple(tensors[0].shape))
            return torch.stack(list(tensors)).sum(0)

        what = f"tp_swiglu with world size {world}, x of shape {tuple(x.shape)}"
        out = call(fn, x, gates, ups, downs, all_reduce, what=what)
        expected = _reference_swiglu(x, gates, ups, downs)
        hidden_shape = (*x.shape[:-1], gates[0].shape[0])
        if isinstance(out, torch.Tensor) and out.shape == (*x.shape[:-1], world * x.shape[-1]) \
                and world > 1:
            raise AssertionError(f"{what}: the output has {out.shape[-1]} features, world x dim: "
                                 "you concatenated the ranks' outputs. Concatenation is for "
                                 "column-parallel outputs; down_proj is row-parallel, so its "
                                 "partial outputs are summed (the all-reduce)")
        expect(hidden_shape not in calls or hidden_shape == tuple(x.shape), (
            f"{what}: you all-reduced the {hidden_shape} activations after gate/up. Those are "
            "different hidden features on each rank (column-parallel outputs), not partial "
            "sums of the same ones, so adding them mixes features. Each rank applies silu "
            "and the product to its own slice; the all-reduce belongs after down_proj"))
        if isinstance(out, torch.Tensor) and out.shape == expected.shape and world > 1 \
                and torch.allclose(out * world, expected, atol=1e-5, rtol=1e-4):
            raise AssertionError(f"{what}: the output is 1/{world} of the right one: you "
                                 "averaged the partial outputs. All-reduce sums them: each "
                                 "rank's down_proj covers different hidden features")
        expect_tensor(out, expected, what, hint="each rank: down_r(silu(gate_r x) * up_r x); "
                      "then one all_reduce of those partial outputs")
        expect(len(calls) > 0, f"{what}: the result is right but all_reduce was never called. "
               "In a process group each rank holds only its own partial output: combine them "
               "with the all_reduce you were given (once, after down_proj)")
        expect(len(calls) == 1, f"{what}: all_reduce was called {len(calls)} times, with shapes "
               f"{calls}. One is enough: the column-parallel gate and up need no "
               "communication, and the row-parallel down needs one sum")
    passed("one all-reduce per MLP, after down_proj: the tensor-parallel SwiGLU equals the "
           "full one")


def _reference_heads(n_heads, n_kv_heads, world_size, rank):
    local, local_kv, replicas = attention_layout(n_heads, n_kv_heads, world_size)
    first_kv = (rank // replicas) * local_kv
    return (list(range(rank * local, (rank + 1) * local)),
            list(range(first_kv, first_kv + local_kv)))


def check_head_shards(fn) -> None:
    """fn(n_heads, n_kv_heads, world_size, rank) -> (query heads, KV heads) of that rank."""
    cases = [(4, 2, 2), (32, 8, 4), (8, 8, 2), (64, 8, 16), (4, 1, 4), (4, 4, 1)]
    for n_heads, n_kv_heads, world in cases:
        for rank in range(world):
            what = f"head_shards(n_heads={n_heads}, n_kv_heads={n_kv_heads}, " \
                   f"world_size={world}, rank={rank})"
            out = call(fn, n_heads, n_kv_heads, world, rank, what=what)
            expect(isinstance(out, (tuple, list)) and len(out) == 2,
                   f"{what} should return two lists (query heads, kv heads), got {out!r}")
            q_heads, kv_heads = (sorted(int(h) for h in part) for part in out)
            q_ref, kv_ref = _reference_heads(n_heads, n_kv_heads, world, rank)
            if q_heads != q_ref:
                hint = ("rank r takes a contiguous block, heads r*n/p to (r+1)*n/p - 1: the "
                        "weights are split with chunk, block by block"
                        if len(q_heads) == len(q_ref) else
                        f"each rank holds n_heads / world_size = {len(q_ref)} query heads")
                raise AssertionError(f"{what}: query heads {q_heads}, expected {q_ref}; {hint}")
            if not kv_heads:
                raise AssertionError(f"{what}: no KV heads. With world_size > n_kv_heads a "
                                     "rank still needs the KV head its query heads share: "
                                     "copy (replicate) it, "
                                     f"here KV head {kv_ref[0]}")
            if kv_heads != kv_ref:
                n_rep = n_heads // n_kv_heads
                raise AssertionError(f"{what}: KV heads {kv_heads}, expected {kv_ref}. Query "
                                     f"head h reads KV head h // {n_rep} (n_heads // "
                                     "n_kv_heads): give the rank the KV heads of its own "
                                     "query heads")
    passed("each rank holds a block of query heads and the KV heads they share, copied when "
           "there are more ranks than KV heads")
