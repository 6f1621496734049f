"""Functions to launch: the lesson's demos and the tests' comparisons (lesson 12).

Each `fn(rank, world_size, ...)` here is importable by its module path, so that
`launch(fn, world_size, ...)` can start it in fresh processes. Data parallelism copies the
model to every rank and all-reduces the gradients; `data_parallel_run` shows it equals one
process on the whole batch.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .collectives import _all_reduce
from .convert import parallelize, parallelize_llama
from .groups import _to_cpu, current_device, is_main_process
from .layers import _local, gather_state_dict


def hello_ranks(rank: int, world_size: int) -> dict:
    """Each rank reports itself and the all-reduced sum 1 + 2 + ... + world_size."""
    value = torch.tensor([float(rank + 1)], device=current_device())
    dist.all_reduce(value)
    return {"rank": rank, "world_size": world_size, "sum": float(value),
            "backend": dist.get_backend(), "main": is_main_process()}


def run_in_sequence(rank: int, world_size: int, calls: list) -> list:
    """Launch me to pay for starting processes once: calls is a list of (fn, args) pairs,
    each run as fn(rank, world_size, *args) in turn; returns their results in order."""
    return [fn(rank, world_size, *args) for fn, args in calls]


def time_all_reduce(rank: int, world_size: int, sizes: list[int], repeats: int = 10) -> dict:
    """Launch me: seconds per all-reduce of `size` float32 values, for each size: the best
    of `repeats` after one warm-up (the least disturbed by other work on the machine)."""
    device = current_device()
    seconds = {}
    for size in sizes:
        tensor = torch.ones(size, device=device)
        times = []
        for _ in range(repeats + 1):
            dist.barrier()
            start = time.perf_counter()
            dist.all_reduce(tensor)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
        seconds[size] = min(times[1:])
    return seconds


def probe_grad(shape, seed: int = 0) -> Tensor:
    """A fixed random output gradient, the same in every process: out.backward(probe_grad)
    checks every path at once, as the loss sum(out * probe) would. Scaled by
    1/sqrt(numel) so that gradients stay of order one however big the output is."""
    probe = torch.randn(tuple(shape), generator=torch.Generator().manual_seed(seed))
    return probe / max(probe.numel(), 1) ** 0.5


def _forward_backward(module: nn.Module, inputs: tuple, kwargs: dict, device) -> dict:
    inputs = tuple(x.detach().to(device) if isinstance(x, Tensor) else x for x in inputs)
    if inputs[0].is_floating_point():                       # the activations, not RoPE tables
        inputs[0].requires_grad_(True)
    kwargs = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in kwargs.items()}
    out = _local(module(*inputs, **kwargs))
    out.backward(probe_grad(out.shape).to(device, out.dtype))
    return {"output": out.detach(),
            "input_grads": [x.grad for x in inputs
                            if isinstance(x, Tensor) and x.grad is not None],
            "grads": gather_state_dict(module, grad=True)}


def forward_backward(module: nn.Module, *inputs, **kwargs) -> dict:
    """Single-process reference: output, the gradient of the first input (when it is a float
    tensor) and parameter gradients after out.backward(probe_grad(out.shape)).

    Works on a copy; `module` is left untouched.
    """
    module = copy.deepcopy(module)
    device = next(module.parameters()).device
    return _to_cpu(_forward_backward(module, inputs, kwargs, device))


def parallel_forward_backward(rank: int, world_size: int, jobs: list) -> list[dict]:
    """Launch me: for each job (module, inputs, kwargs, style) shard the single-process
    module for this rank, run forward and backward, and return what `forward_backward`
    returns (parameter gradients gathered back to full size)."""
    device = current_device()
    results = []
    for module, inputs, kwargs, style in jobs:
        parallel = parallelize(copy.deepcopy(module).to(device), rank, world_size, style)
        results.append(_forward_backward(parallel, inputs, kwargs, device))
    return results


def max_differences(expected: dict, actual: dict) -> dict[str, float]:
    """Largest absolute difference of output, input gradients and parameter gradients."""
    def worst(pairs):
        return max((float((a - b).abs().max()) for a, b in pairs), default=0.0)
    if set(expected["grads"]) != set(actual["grads"]):
        raise ValueError(f"different parameters: {sorted(expected['grads'])} vs "
                         f"{sorted(actual['grads'])}")
    return {"output": worst([(expected["output"], actual["output"])]),
            "input_grads": worst(zip(expected["input_grads"], actual["input_grads"], strict=True)),
            "param_grads": worst((expected["grads"][k], actual["grads"][k])
                                 for k in expected["grads"])}


def rank_batch(tokens: Tensor, rank: int, world_size: int, device) -> tuple[Tensor, Tensor]:
    """This rank's equal slice of a (batch, seq + 1) token batch, as inputs and targets."""
    if tokens.shape[0] % world_size:
        raise ValueError(f"the batch ({tokens.shape[0]} rows) must split evenly over "
                         f"{world_size} ranks")
    rows = tokens.chunk(world_size)[rank].to(device)       # (batch / world, seq + 1)
    return rows[:, :-1], rows[:, 1:]


def data_parallel_run(rank: int, world_size: int, model: nn.Module, tokens: Tensor,
                      steps: int = 3, lr: float = 1e-2) -> dict:
    """Launch me: each rank trains on its equal slice of the batch of token rows.

    Returns the first step's gradients averaged by hand (all-reduce / world_size), the
    first step's DistributedDataParallel gradients, and the weights after `steps` AdamW
    steps under DDP. With equal slices, the mean of the ranks' mean losses is the
    big-batch mean loss, so all three equal a single process on the whole batch.
    """
    from torch.nn.parallel import DistributedDataParallel

    from ..train import lm_loss

    device = current_device()
    x, y = rank_batch(tokens, rank, world_size, device)

    by_hand = copy.deepcopy(model).to(device)
    lm_loss(by_hand(x), y).backward()
    manual = {}
    for name, param in by_hand.named_parameters():
        manual[name] = _all_reduce(param.grad) / world_size   # the mean over ranks

    ddp = DistributedDataParallel(copy.deepcopy(model).to(device),
                                  device_ids=[device.index] if device.type == "cuda" else None)
    optimizer = torch.optim.AdamW(ddp.parameters(), lr=lr)
    first = {}
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        lm_loss(ddp(x), y).backward()                       # DDP all-reduces the gradients
        if step == 0:
            first = {n: p.grad.clone() for n, p in ddp.module.named_parameters()}
        optimizer.step()
    return {"manual_grads": manual, "ddp_grads": first,
            "weights": {n: p.detach() for n, p in ddp.module.named_parameters()}}


def single_process_run(model: nn.Module, tokens: Tensor, steps: int = 3,
                       lr: float = 1e-2) -> dict:
    """The reference for `data_parallel_run`: one process, the whole batch. Also returns
    every step's gradients ("step_grads"), from which a test bounds how far AdamW's
    normalised steps may amplify rounding."""
    from ..train import lm_loss

    model = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    x, y = tokens[:, :-1], tokens[:, 1:]
    step_grads = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        lm_loss(model(x), y).backward()
        step_grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
        optimizer.step()
    return {"grads": step_grads[0] if step_grads else {}, "step_grads": step_grads,
            "weights": {n: p.detach() for n, p in model.named_parameters()}}


def parallel_generate(rank: int, world_size: int, model: nn.Module, prompts: list,
                      max_new_tokens: int) -> list:
    """Launch me: greedy decoding, KV cache included, by this rank's tensor-parallel copy
    of `model`. Every rank returns the same new ids, those of `generate(model, ...)`."""
    from ..generate import generate

    sharded = parallelize_llama(model.to(current_device()), rank, world_size)
    return generate(sharded, prompts, max_new_tokens)


def _counted_pass(module: nn.Module, inputs: tuple, kwargs: dict, device) -> dict:
    """Forward and backward of `module`, counting dist.all_reduce calls in each pass."""
    real = dist.all_reduce
    seen: dict[str, list[int]] = {"forward": [], "backward": []}
    phase = ["forward"]

    def counting(tensor, *args, **kw):
        seen[phase[0]].append(tensor.numel())
        return real(tensor, *args, **kw)

    dist.all_reduce = counting                         # the collectives look it up here
    try:
        x = inputs[0].detach().to(device).requires_grad_(True)
        rest = [t.to(device) if isinstance(t, Tensor) else t for t in inputs[1:]]
        out = _local(module(x, *rest, **kwargs))
        phase[0] = "backward"
        out.backward(probe_grad(out.shape).to(device, out.dtype))
    finally:
        dist.all_reduce = real
    return {p: {"calls": len(v), "values": sum(v)} for p, v in seen.items()}


def count_all_reduces(rank: int, world_size: int, jobs: list) -> list[dict]:
    """Launch me: for each job (module, inputs, kwargs) run this rank's tensor-parallel
    copy forward and backward, counting the all-reduces of each pass (calls, values)."""
    device = current_device()
    return [_counted_pass(parallelize(copy.deepcopy(module).to(device), rank, world_size),
                          inputs, kwargs, device) for module, inputs, kwargs in jobs]


def mlp_on_ranks(rank: int, world_size: int, source: str | None, name: str, x: Tensor,
                 gate: Tensor, up: Tensor, down: Tensor, bias: Tensor) -> Tensor:
    """Launch me: run one rank of a tensor-parallel SwiGLU MLP, y = down(silu(gate x) *
    up x) + bias, with a real all-reduce.

    `source` is the code of a function `name(x, gate, up, down, bias, rank, world_size,
    all_reduce)` (lesson 12's exercise, written in a notebook, which a new process cannot
    import); it runs with torch, F (torch.nn.functional) and math in scope. None runs
    the package's TensorParallelSwiGLU instead, adding the bias once after its all-reduce.
    """
    import math

    import torch.nn.functional as F

    from ..ffn import SwiGLU

    def all_reduce(tensor: Tensor) -> Tensor:          # the sum, a new tensor
        total = tensor.detach().clone().contiguous()
        dist.all_reduce(total)
        return total

    device = current_device()
    x, gate, up, down, bias = (t.to(device) for t in (x, gate, up, down, bias))
    if source is None:
        ffn = SwiGLU(gate.shape[1], gate.shape[0]).to(device)
        ffn.load_state_dict({"gate_proj.weight": gate, "up_proj.weight": up,
                             "down_proj.weight": down})
        with torch.no_grad():
            return parallelize(ffn, rank, world_size)(x) + bias
    scope = {"torch": torch, "F": F, "nn": nn, "math": math}
    exec(compile(source, f"<{name} from the notebook>", "exec"), scope)
    with torch.no_grad():
        return scope[name](x, gate, up, down, bias, rank, world_size, all_reduce)
