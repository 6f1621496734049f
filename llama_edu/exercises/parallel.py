"""Checks for lesson 12: which Llama linears are column- and which row-parallel, a
tensor-parallel SwiGLU MLP written for one rank of a group (run here rank by rank, with an
all_reduce the check provides), and which heads a rank holds under GQA."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..parallel import attention_layout
from ._common import call, expect, expect_tensor, passed, rng

__all__ = ["check_parallel_style", "check_tp_mlp", "check_head_shards"]

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


def _reference_mlp(x, gate, up, down, bias):
    return F.linear(F.silu(F.linear(x, gate)) * F.linear(x, up), down) + bias


_MAX_ALL_REDUCES = 4
_DOWN_SPLIT = ("shapes cannot be multiplied", "size mismatch", "must match the size")


def _run_rank(fn, inputs, rank, world, sums, what):
    """One rank's call. Its k-th all_reduce returns sums[k] when that is known, else (not
    known yet) its own argument. Returns (output, the all_reduce arguments)."""
    log = []

    def all_reduce(tensor):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"all_reduce takes this rank's tensor, got {type(tensor).__name__}")
        log.append(tensor.detach().clone())
        k = len(log) - 1
        if k < len(sums) and sums[k].shape == tensor.shape:
            return sums[k].clone()
        return tensor.detach().clone()

    try:
        out = call(fn, *inputs, rank, world, all_reduce, what=f"{what}, rank {rank}")
    except AssertionError as error:
        if any(words in str(error) for words in _DOWN_SPLIT):
            raise AssertionError(
                f"{error}. If that is down_proj: a row-parallel layer splits its INPUT "
                "features, the columns of the (dim, hidden) down_weight, "
                "down_weight[:, r*h:(r+1)*h] with h = hidden / world_size, to match this "
                "rank's hidden slice; down_weight[r*h:(r+1)*h] (its rows) would split the "
                "output features instead") from None
        raise
    return out, log


def _run_ranks(fn, inputs, world, what):
    """Run fn once per rank, in this process, as a process group would run it.

    A rank's k-th all_reduce returns the sum over ranks of their k-th all_reduce argument.
    The ranks run one after the other, so the sums are found pass by pass: a call whose sum
    is not known yet gets its own argument back, and the next pass knows the sum. The
    learner's function is deterministic, so the pass in which every call got its true sum
    is what a process group computes. Returns (each rank's output, each rank's all_reduce
    arguments)."""
    sums: list = []
    for _ in range(2 * _MAX_ALL_REDUCES + 2):
        outs, logs = zip(*(_run_rank(fn, inputs, rank, world, sums, what)
                           for rank in range(world)), strict=True)
        counts = [len(log) for log in logs]
        expect(len(set(counts)) == 1, (
            f"{what}: the ranks called all_reduce different numbers of times {counts}. "
            "Every rank must reach a collective the same number of times, or a real "
            "process group hangs"))
        if counts[0] > _MAX_ALL_REDUCES:
            raise AssertionError(f"{what}: all_reduce was called {counts[0]} times per rank; "
                                 "one, after down_proj, is enough")
        true_sums = []
        for k in range(counts[0]):
            shapes = sorted({tuple(log[k].shape) for log in logs})
            expect(len(shapes) == 1, (
                f"{what}: all_reduce call {k + 1} got tensors of different shapes on "
                f"different ranks {shapes}; every rank must all-reduce a tensor of the same "
                "shape"))
            true_sums.append(torch.stack([log[k] for log in logs]).sum(0))
        settled = len(true_sums) == len(sums) and all(
            torch.equal(a, b) for a, b in zip(true_sums, sums, strict=True))
        if settled:
            return list(outs), list(logs)
        sums = true_sums
    raise AssertionError(f"{what}: what your function all-reduces keeps changing with what "
                         "all_reduce returns; all-reduce each rank's partial output once")


def _mlp_cases():
    generator = rng(0)
    cases = []
    for batch_shape, dim, hidden, world in (((3,), 8, 12, 2), ((2, 5), 6, 16, 4),
                                            ((1, 1), 4, 6, 1), ((2, 3), 8, 18, 3),
                                            ((4,), 4, 16, 2)):
        x = torch.randn(*batch_shape, dim, generator=generator)
        gate = torch.randn(hidden, dim, generator=generator) / dim ** 0.5
        up = torch.randn(hidden, dim, generator=generator) / dim ** 0.5
        down = torch.randn(dim, hidden, generator=generator) / hidden ** 0.5
        bias = torch.randn(dim, generator=generator)
        cases.append((x, gate, up, down, bias, world))
    return cases


def _close(a, b) -> bool:
    return (isinstance(a, torch.Tensor) and a.shape == b.shape
            and torch.allclose(a.float(), b.float(), atol=1e-5, rtol=1e-4))


def check_tp_mlp(fn) -> None:
    """fn(x, gate_weight, up_weight, down_weight, down_bias, rank, world_size, all_reduce)
    -> down(silu(gate x) * up x) + down_bias, computed as rank `rank` of a group would.

    The weights are the full single-process ones: gate and up (hidden, dim), down
    (dim, hidden), the bias (dim,). all_reduce(tensor) returns the sum of every rank's
    tensor (each rank calls it with its own). Every rank must return the full output.
    """
    for x, gate, up, down, bias, world in _mlp_cases():
        what = (f"tp_mlp with world size {world}, dim {x.shape[-1]}, hidden "
                f"{gate.shape[0]}, x of shape {tuple(x.shape)}")
        outs, logs = _run_ranks(fn, (x, gate, up, down, bias), world, what)
        expected = _reference_mlp(x, gate, up, down, bias)
        h = gate.shape[0] // world
        hidden_shape, out_shape = (*x.shape[:-1], h), tuple(x.shape)
        partials = [_reference_mlp(x, gate[r * h:(r + 1) * h], up[r * h:(r + 1) * h],
                                   down[:, r * h:(r + 1) * h], torch.zeros_like(bias))
                    for r in range(world)]
        calls = [tuple(t.shape) for t in logs[0]]
        if world > 1 and any(torch.equal(t, x) for log in logs for t in log):
            raise AssertionError(
                f"{what}: you all-reduced the input x. Every rank already holds all of x "
                "(gate and up are column-parallel: they read the whole input), and summing "
                "it over the ranks multiplies it by the world size. The input's all-reduce "
                "belongs to the backward pass (Megatron's f: the gradient of x); forward, "
                "nothing is sent before down_proj")
        expect(hidden_shape not in calls or world == 1, (
            f"{what}: you all-reduced a {hidden_shape} tensor, this rank's hidden features "
            "after gate/up. Those are different hidden features on each rank "
            "(column-parallel outputs), not partial sums of the same ones, so adding them "
            "mixes features. Each rank applies silu and the product to its own slice; the "
            "all-reduce belongs after down_proj"))
        expect(world == 1 or len(calls) <= 1, (
            f"{what}: all_reduce was called {len(calls)} times, with shapes {calls}. One "
            "is enough: the column-parallel gate and up need no communication, and the "
            "row-parallel down needs one sum"))
        for rank, out in enumerate(outs):
            who = f"{what}, rank {rank}"
            if not logs[rank] and world > 1 and _close(out, partials[rank] + bias):
                raise AssertionError(f"{who}: all_reduce was never called, so the rank "
                                     "returned only its own partial output. down_proj is "
                                     "row-parallel: each rank's product covers only its "
                                     "hidden features, and the sum over ranks (all_reduce, "
                                     "once, after down_proj) is the output")
            if world > 1 and _close(out, expected + (world - 1) * bias):
                raise AssertionError(f"{who}: the bias came out {world} times: every rank "
                                     "added it before the all-reduce, which sums it too. "
                                     "The bias is not split; add it once, after the sum")
            if world > 1 and logs[rank] and _close(out, partials[rank] + bias):
                raise AssertionError(f"{who}: you called all_reduce but kept using its "
                                     "argument. This all_reduce returns the sum and leaves "
                                     "its argument alone (unlike torch.distributed's "
                                     "in-place all_reduce): use what it returns")
            if world > 1 and _close(out, (expected - bias) / world + bias):
                raise AssertionError(f"{who}: the output is 1/{world} of the right one: you "
                                     "averaged the partial outputs. All-reduce sums them: "
                                     "each rank's down_proj covers different hidden features")
            if isinstance(out, torch.Tensor) and world > 1 and out.shape[-1] != x.shape[-1]:
                raise AssertionError(f"{who} returned shape {tuple(out.shape)}, expected "
                                     f"{out_shape}: every rank returns the full (..., dim) "
                                     "output, the all-reduced sum")
            if len(calls) == 1 and calls[0] == out_shape and world > 1 and not _close(
                    out, expected) and isinstance(out, torch.Tensor) and \
                    out.shape == expected.shape:
                wrong = [r for r in range(world)
                         if not _close(logs[r][0], partials[r])]
                raise AssertionError(f"{who}: one all-reduce of a {out_shape} tensor, the "
                                     "right place, but the partial outputs of ranks "
                                     f"{wrong} are wrong. Rank r takes the same hidden "
                                     "features from all three weights: rows r*h:(r+1)*h of "
                                     "gate and of up (h = hidden / world_size), and the "
                                     "same columns of down, down_weight[:, r*h:(r+1)*h], so "
                                     "that silu(gate_j x) * up_j x meets down's column j")
            expect_tensor(out, expected, who, hint="each rank: its hidden slice "
                          "h_r = silu(x gate_r^T) * (x up_r^T), its partial output h_r "
                          "down_r^T, one all_reduce, then the bias once")
    passed("every rank computes its hidden slice, one all-reduce after down_proj, the bias "
           "once: the tensor-parallel MLP equals the full one")


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
