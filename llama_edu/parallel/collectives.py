"""The four communication steps as autograd Functions (lesson 12).

Shoeybi et al., 2019 (Megatron-LM), f and g and their gather/scatter cousins:

    copy_to_parallel      forward: identity               backward: all-reduce (sum)
    reduce_from_parallel  forward: all-reduce (sum)       backward: identity
    gather_from_parallel  forward: all-gather, concat     backward: keep this rank's slice
    scatter_to_parallel   forward: keep this rank's slice backward: all-gather, concat

Each pair is the other's transpose: a value copied to every rank gets a gradient from
every rank (so the gradients add up), and a sum's gradient flows unchanged to each term.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from .groups import get_rank, get_world_size

# Each helper returns x itself in a single process; an autograd Function that returns its
# input unchanged hands back a view of it, so the graph stays intact.


def _all_reduce(x: Tensor) -> Tensor:
    """Sum of x over all ranks (a new tensor; x is left alone)."""
    if get_world_size() == 1:
        return x
    out = x.contiguous().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def _all_gather_last(x: Tensor) -> Tensor:
    """Every rank's x, concatenated along the last dimension.  (..., n) -> (..., world * n)"""
    world = get_world_size()
    if world == 1:
        return x
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x)
    return torch.cat(parts, dim=-1)


def _my_slice_last(x: Tensor) -> Tensor:
    """This rank's 1/world of the last dimension.  (..., world * n) -> (..., n)"""
    world = get_world_size()
    if world == 1:
        return x
    if x.shape[-1] % world:
        raise ValueError(f"last dimension {x.shape[-1]} is not divisible by the world size "
                         f"{world}")
    return x.chunk(world, dim=-1)[get_rank()].contiguous()


class _CopyToParallel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return _all_reduce(grad)


class _ReduceFromParallel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return _all_reduce(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class _GatherFromParallel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return _all_gather_last(x)

    @staticmethod
    def backward(ctx, grad):
        return _my_slice_last(grad)


class _ScatterToParallel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return _my_slice_last(x)

    @staticmethod
    def backward(ctx, grad):
        return _all_gather_last(grad)


def copy_to_parallel(x: Tensor) -> Tensor:
    """Identity forward; all-reduce of the gradient backward (Megatron's f)."""
    return _CopyToParallel.apply(x)


def reduce_from_parallel(x: Tensor) -> Tensor:
    """All-reduce (sum over ranks) forward; identity backward (Megatron's g)."""
    return _ReduceFromParallel.apply(x)


def gather_from_parallel(x: Tensor) -> Tensor:
    """Concatenate every rank's last dimension forward; keep this rank's slice backward."""
    return _GatherFromParallel.apply(x)


def scatter_to_parallel(x: Tensor) -> Tensor:
    """Keep this rank's slice of the last dimension forward; all-gather backward."""
    return _ScatterToParallel.apply(x)


class _ReplicatedWeight(torch.autograd.Function):
    """A weight shard that `replicas` ranks hold as copies: identity forward; backward, the
    gradient is summed over the ranks holding the same shard (through one all-reduce over a
    zero-padded buffer, so no sub-groups are needed)."""

    @staticmethod
    def forward(ctx, weight, shard_index, n_shards):
        ctx.shard_index, ctx.n_shards = shard_index, n_shards
        return weight.view_as(weight)

    @staticmethod
    def backward(ctx, grad):
        buffer = grad.new_zeros((ctx.n_shards, *grad.shape))    # (n_shards, *shard shape)
        buffer[ctx.shard_index] = grad
        return _all_reduce(buffer)[ctx.shard_index], None, None
