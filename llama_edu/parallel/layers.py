"""Sharded layers: column- and row-parallel linears, a split embedding (lesson 12).

Tensor parallelism (Shoeybi et al., 2019, Megatron-LM) splits each weight across p ranks:

    column-parallel  W = [W_0; W_1; ...] by output rows:  y_r = x W_r^T,  y = concat_r(y_r)
    row-parallel     W = [W_0, W_1, ...] by input cols:   y = sum_r x_r W_r^T   (all-reduce)

`load_full_state_dict` and `gather_state_dict` move between a single-process state dict and
the shards.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .collectives import (
    _ReplicatedWeight,
    copy_to_parallel,
    gather_from_parallel,
    reduce_from_parallel,
    scatter_to_parallel,
)
from .groups import get_rank, get_world_size


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _resolve(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """rank and world size: given, else the process group's, else (0, 1)."""
    world_size = get_world_size() if world_size is None else world_size
    rank = get_rank() if rank is None else rank
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
    if not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank must be an integer in [0, {world_size}), got {rank!r}")
    return rank, world_size


def _check_divides(size: int, parts: int, what: str) -> None:
    if size % parts:
        raise ValueError(f"{what} ({size}) must be divisible by the world size ({parts}) to "
                         f"split it evenly across ranks; use a world size in {_divisors(size)}")


def shard(full: Tensor, dim: int, rank: int, world_size: int, what: str = "size") -> Tensor:
    """Rank `rank`'s contiguous 1/world_size of `full` along `dim` (a copy)."""
    _check_divides(full.shape[dim], world_size, f"{what} along dim {dim}")
    return full.chunk(world_size, dim=dim)[rank].clone()


class _Sharded(nn.Module):
    """A module whose parameters are split along one dimension each (None: replicated).

    `replicas` consecutive ranks hold the same shard: shard index = rank // replicas, of
    n_shards = world_size // replicas.
    """

    shard_dims: dict[str, int | None] = {}

    def _setup(self, rank, world_size, replicas: int = 1) -> None:
        self.rank, self.world_size = _resolve(rank, world_size)
        if replicas < 1 or self.world_size % replicas:
            raise ValueError(f"replicas ({replicas}) must divide the world size "
                             f"({self.world_size})")
        self.replicas = replicas
        self.n_shards = self.world_size // replicas
        self.shard_index = self.rank // replicas

    def _check_group(self) -> None:
        if get_world_size() != self.world_size:
            raise ValueError(f"{type(self).__name__} was built for world size "
                             f"{self.world_size} but the process group has {get_world_size()} "
                             "rank(s); run it under llama_edu.parallel.launch or torchrun "
                             "with that many processes")
        if self.world_size > 1 and get_rank() != self.rank:
            raise ValueError(f"{type(self).__name__} holds rank {self.rank}'s shard but runs "
                             f"on rank {get_rank()}; build it with rank=None")

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int | None = None,
                    world_size: int | None = None, **kwargs):
        """This rank's shard of a full nn.Linear (column- or row-parallel, by the class)."""
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None,
                    rank=rank, world_size=world_size, device=linear.weight.device,
                    dtype=linear.weight.dtype, **kwargs)
        layer.load_full_("weight", linear.weight)
        if linear.bias is not None:
            layer.load_full_("bias", linear.bias)
        return layer

    @torch.no_grad()
    def load_full_(self, name: str, full: Tensor) -> None:
        """Copy this rank's shard of the full single-process tensor into parameter `name`."""
        param = getattr(self, name)
        dim = self.shard_dims[name]
        piece = full if dim is None else shard(full, dim, self.shard_index, self.n_shards,
                                               what=f"{name} {tuple(full.shape)}")
        if piece.shape != param.shape:
            raise ValueError(f"{name}: the full tensor {tuple(full.shape)} gives a shard of "
                             f"{tuple(piece.shape)}, but this rank holds "
                             f"{tuple(param.shape)}")
        param.copy_(piece)

    def gather_full(self, name: str, grad: bool = False) -> Tensor | None:
        """The full single-process tensor (or its gradient), put together from every rank.

        A collective: every rank must call it, in the same order.
        """
        param = getattr(self, name)
        value = param.grad if grad else param.detach()
        if value is None:
            return None
        dim = self.shard_dims[name]
        if dim is None or self.world_size == 1:
            return value.clone()
        self._check_group()
        parts = [torch.empty_like(value) for _ in range(self.world_size)]
        dist.all_gather(parts, value.contiguous())
        return torch.cat(parts[::self.replicas], dim=dim)     # one copy of each shard


class ColumnParallelLinear(_Sharded):
    """y = x W^T with W's rows (the output features) split across ranks.

    Rank r holds W[r*out/p : (r+1)*out/p, :]   (out/p, in); it needs the whole input x and
    computes its slice of y: (..., in) -> (..., out/p). gather_output=True concatenates the
    slices (all-gather) into (..., out). copy_input=False skips the copy_to_parallel step
    when a block has already done it once for several layers (q, k, v; gate, up).
    """

    shard_dims = {"weight": 0, "bias": 0}

    def __init__(self, in_features: int, out_features: int, bias: bool = False,
                 gather_output: bool = False, copy_input: bool = True,
                 rank: int | None = None, world_size: int | None = None, replicas: int = 1,
                 device=None, dtype=None):
        super().__init__()
        self._setup(rank, world_size, replicas)
        _check_divides(out_features, self.n_shards, "out_features")
        if gather_output and replicas != 1:
            raise ValueError("gather_output needs replicas=1 (each rank a different slice)")
        self.in_features, self.out_features = in_features, out_features
        self.gather_output, self.copy_input = gather_output, copy_input
        local = out_features // self.n_shards
        bound = 1 / math.sqrt(in_features)              # nn.Linear's default init range
        self.weight = nn.Parameter(torch.empty(local, in_features, device=device, dtype=dtype)
                                   .uniform_(-bound, bound))
        self.bias = (nn.Parameter(torch.empty(local, device=device, dtype=dtype)
                                  .uniform_(-bound, bound)) if bias else None)

    def forward(self, x: Tensor) -> Tensor:                # (..., in) -> (..., out/p or out)
        self._check_group()
        if self.copy_input:
            x = copy_to_parallel(x)
        weight = self.weight
        if self.replicas > 1:
            weight = _ReplicatedWeight.apply(weight, self.shard_index, self.n_shards)
        y = F.linear(x, weight, self.bias)                  # (..., out/p)
        return gather_from_parallel(y) if self.gather_output else y

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features} "
                f"({self.weight.shape[0]} on rank {self.rank} of {self.world_size}"
                + (f", {self.replicas} replicas" if self.replicas > 1 else "") + ")")


class RowParallelLinear(_Sharded):
    """y = x W^T with W's columns (the input features) split across ranks.

    Rank r holds W[:, r*in/p : (r+1)*in/p]   (out, in/p); it takes its slice of x and
    computes a partial y of full width: (..., in/p) -> (..., out). The partial results are
    summed over ranks (all-reduce). input_is_parallel=False first keeps this rank's slice
    of a full input; the bias (replicated) is added once, after the sum.
    """

    shard_dims = {"weight": 1, "bias": None}

    def __init__(self, in_features: int, out_features: int, bias: bool = False,
                 input_is_parallel: bool = True, rank: int | None = None,
                 world_size: int | None = None, device=None, dtype=None):
        super().__init__()
        self._setup(rank, world_size)
        _check_divides(in_features, self.world_size, "in_features")
        self.in_features, self.out_features = in_features, out_features
        self.input_is_parallel = input_is_parallel
        local = in_features // self.world_size
        bound = 1 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(out_features, local, device=device, dtype=dtype)
                                   .uniform_(-bound, bound))
        self.bias = (nn.Parameter(torch.empty(out_features, device=device, dtype=dtype)
                                  .uniform_(-bound, bound)) if bias else None)

    def forward(self, x: Tensor) -> Tensor:                # (..., in/p or in) -> (..., out)
        self._check_group()
        if not self.input_is_parallel:
            x = scatter_to_parallel(x)                      # (..., in/p)
        y = reduce_from_parallel(F.linear(x, self.weight))  # sum of partials: (..., out)
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features} ({self.weight.shape[1]} on rank "
                f"{self.rank} of {self.world_size}), out_features={self.out_features}")


class ParallelEmbedding(_Sharded):
    """Token embedding with the embedding dimension split across ranks (as in Meta's
    reference Llama): each rank looks up (..., dim/p) and an all-gather joins the slices."""

    shard_dims = {"weight": 1}

    def __init__(self, vocab_size: int, dim: int, rank: int | None = None,
                 world_size: int | None = None, device=None, dtype=None):
        super().__init__()
        self._setup(rank, world_size)
        _check_divides(dim, self.world_size, "the embedding dim")
        self.num_embeddings, self.embedding_dim = vocab_size, dim
        self.weight = nn.Parameter(torch.randn(vocab_size, dim // self.world_size,
                                               device=device, dtype=dtype))

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding, rank: int | None = None,
                       world_size: int | None = None) -> ParallelEmbedding:
        layer = cls(embedding.num_embeddings, embedding.embedding_dim, rank, world_size,
                    device=embedding.weight.device, dtype=embedding.weight.dtype)
        layer.load_full_("weight", embedding.weight)
        return layer

    def forward(self, tokens: Tensor) -> Tensor:           # (b, s) -> (b, s, dim)
        self._check_group()
        return gather_from_parallel(F.embedding(tokens, self.weight))   # (b, s, dim/p) first


def load_full_state_dict(module: nn.Module, state_dict: dict[str, Tensor]) -> None:
    """Load a single-process state dict into a tensor-parallel module: each rank keeps
    its shard of every split tensor and a copy of every replicated one."""
    own = dict(module.named_parameters())
    missing = sorted(set(own) - set(state_dict))
    if missing:
        raise ValueError(f"the state dict lacks {missing[:5]}; is it for the same model?")
    for prefix, sub in module.named_modules():
        for name, _ in sub.named_parameters(recurse=False):
            key = f"{prefix}.{name}" if prefix else name
            if isinstance(sub, _Sharded):
                sub.load_full_(name, state_dict[key])
            else:
                with torch.no_grad():
                    getattr(sub, name).copy_(state_dict[key])


def gather_state_dict(module: nn.Module, grad: bool = False) -> dict[str, Tensor]:
    """The full single-process tensors (or gradients) of a tensor-parallel module, with the
    single-process names: `Llama(config).load_state_dict(gather_state_dict(tp_model))`.

    A collective: call it on every rank.
    """
    out = {}
    for prefix, sub in module.named_modules():
        for name, param in sub.named_parameters(recurse=False):
            key = f"{prefix}.{name}" if prefix else name
            if isinstance(sub, _Sharded):
                value = sub.gather_full(name, grad=grad)
            else:
                value = param.grad if grad else param.detach()
                value = None if value is None else _local(value).clone()
            if value is not None:
                out[key] = value
    return out


def _local(value):
    """A plain tensor from PyTorch's DTensor / AsyncCollectiveTensor (full size)."""
    if hasattr(value, "full_tensor"):
        value = value.full_tensor()
    if type(value).__name__ == "AsyncCollectiveTensor":
        value = value * 1                          # waits for the collective, keeps autograd
    return value
