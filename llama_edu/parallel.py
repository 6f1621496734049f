"""Tensor and data parallelism on torch.distributed (lesson 12).

Tensor parallelism (Shoeybi et al., 2019, Megatron-LM) splits each weight across p ranks:

    column-parallel  W = [W_0; W_1; ...] by output rows:  y_r = x W_r^T,  y = concat_r(y_r)
    row-parallel     W = [W_0, W_1, ...] by input cols:   y = sum_r x_r W_r^T   (all-reduce)

A column-parallel layer followed by a row-parallel one needs a single all-reduce: Llama's
SwiGLU (gate, up | down) and attention (q, k, v | o) each cost one all-reduce forward and
one backward. Data parallelism instead copies the model and all-reduces the gradients.

Process groups: `init_distributed` reads torchrun's environment (gloo on CPU, NCCL on CUDA);
`launch` spawns N local processes on a free port so a notebook runs the same code.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import pickle
import socket
import sys
import time
import traceback
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import Tensor, nn

from .attention import Attention, KVCache, attention, repeat_kv
from .device import pick_device
from .ffn import SwiGLU
from .model import Llama, LlamaConfig
from .positions import apply_rope

# ---------------------------------------------------------------------------------------
# Process groups
# ---------------------------------------------------------------------------------------


def _env_int(name: str, default: int | None = None) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer; "
                         "torchrun sets it for you") from None


def default_backend(local_world_size: int | None = None) -> str:
    """'nccl' when every local rank can have its own CUDA GPU, else 'gloo' (CPU)."""
    if local_world_size is None:
        local_world_size = _env_int("LOCAL_WORLD_SIZE", _env_int("WORLD_SIZE", 1))
    if torch.cuda.is_available() and torch.cuda.device_count() >= local_world_size:
        return "nccl"
    return "gloo"


def current_device() -> torch.device:
    """The device this rank computes on: cuda:LOCAL_RANK under NCCL, else the CPU.

    Outside a process group: `pick_device()` (cuda > mps > cpu).
    """
    if not dist.is_initialized():
        return pick_device()
    if dist.get_backend() == "nccl":
        return torch.device("cuda", _env_int("LOCAL_RANK", 0))
    return torch.device("cpu")


def init_distributed(backend: str | None = None) -> tuple[int, int, torch.device]:
    """Join the process group described by torchrun's environment.

    Reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Without WORLD_SIZE it
    is a no-op for a single process and returns (0, 1, pick_device()). backend None picks
    NCCL when each local rank has a CUDA GPU (and sets that GPU from LOCAL_RANK), else gloo.
    Returns (rank, world_size, device).
    """
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), current_device()
    world_size = _env_int("WORLD_SIZE")
    if world_size is None:
        return 0, 1, pick_device()
    rank = _env_int("RANK")
    if rank is None:
        raise ValueError("WORLD_SIZE is set but RANK is not; start the script with "
                         "`torchrun --nproc_per_node N ...` or set both")
    if world_size <= 0 or not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} must lie in [0, WORLD_SIZE={world_size})")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise ValueError(f"{name} is not set; torchrun sets it, or export it yourself "
                             "(e.g. MASTER_ADDR=127.0.0.1 MASTER_PORT=29500)")
    local_rank = _env_int("LOCAL_RANK", rank)
    backend = backend or default_backend()
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' (CPU) or 'nccl' (CUDA), got {backend!r}")
    options = {}
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise ValueError("backend 'nccl' needs CUDA GPUs; use 'gloo' on a CPU")
        torch.cuda.set_device(local_rank)
        options["device_id"] = torch.device("cuda", local_rank)   # this rank's GPU
    dist.init_process_group(backend, rank=rank, world_size=world_size, **options)
    return rank, world_size, current_device()


def get_rank() -> int:
    """This process's rank; 0 outside a process group."""
    return dist.get_rank() if dist.is_initialized() else 0


def get_world_size() -> int:
    """Number of processes in the group; 1 outside a process group."""
    return dist.get_world_size() if dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 and in a single process: the one that prints and saves."""
    return get_rank() == 0


def cleanup() -> None:
    """Leave the process group (safe to call when there is none)."""
    if dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------
# A local launcher: torchrun for a notebook
# ---------------------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port that was free a moment ago on this machine."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _to_cpu(value):
    """Tensors (also inside lists, tuples and dicts) moved to the CPU and detached."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and type(value) in (list, tuple):
        return type(value)(_to_cpu(v) for v in value)
    return value


def _worker(rank: int, fn: Callable, world_size: int, port: int, backend: str | None,
            threads: int, queue, args: tuple) -> None:
    """Runs in each spawned process: set torchrun's variables, join the group, call fn."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_WORLD_SIZE=str(world_size), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(threads)
    try:
        init_distributed(backend)
        result = fn(rank, world_size, *args)
        # plain pickle to bytes: no shared-memory handles that die with this process
        queue.put((rank, "ok", pickle.dumps(_to_cpu(result))))
        dist.barrier()                  # nobody tears down while a peer still communicates
    except BaseException as error:
        try:
            payload = pickle.dumps(error)
        except Exception:
            payload = None
        queue.put((rank, "error", (traceback.format_exc(), payload)))
        raise
    finally:
        cleanup()


def _remove_error_files(context) -> None:
    """torch's spawn leaves a child's traceback in a temporary file; we keep it elsewhere."""
    for path in getattr(context, "error_files", []):
        if path and os.path.exists(path):
            os.remove(path)


def launch(fn: Callable, world_size: int, *args, backend: str | None = None,
           timeout: float = 300.0) -> list:
    """Run fn(rank, world_size, *args) in `world_size` new processes; return their results.

    Each process joins a process group on a free local port first (gloo on CPU, NCCL when
    there is a GPU per rank), exactly as under torchrun. `fn` must be importable from a
    module (spawned processes cannot unpickle functions defined in a notebook) and return
    something picklable; tensors come back on the CPU. An exception in any rank is raised
    here again, with the child's traceback attached.
    """
    if not callable(fn):
        raise TypeError(f"fn must be a function, got {type(fn).__name__}")
    interactive = (getattr(fn, "__module__", None) == "__main__"
                   and not hasattr(sys.modules["__main__"], "__file__"))
    if interactive or "<locals>" in getattr(fn, "__qualname__", ""):
        raise ValueError(f"{fn.__qualname__} is defined in a notebook or inside a function; "
                         "spawned processes cannot import it. Put it in a module (a .py file "
                         "next to the notebook, or llama_edu.parallel) and import it")
    if not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive integer, got {world_size!r}")
    threads = max(1, (os.cpu_count() or 1) // world_size)
    queue = mp.get_context("spawn").SimpleQueue()
    context = mp.start_processes(
        _worker, args=(fn, world_size, free_port(), backend, threads, queue, args),
        nprocs=world_size, join=False, start_method="spawn")
    results: dict[int, object] = {}
    errors: dict[int, tuple[str, bytes | None]] = {}

    def drain():
        while not queue.empty():
            rank, status, payload = queue.get()
            if status == "ok":
                results[rank] = pickle.loads(payload)
            else:
                errors[rank] = payload

    deadline = time.monotonic() + timeout
    spawn_log = logging.getLogger("torch.multiprocessing.spawn")
    level = spawn_log.level
    spawn_log.setLevel(logging.ERROR)  # no "Terminating process" warnings on stderr
    try:
        while not context.join(timeout=0.05):
            drain()
            if time.monotonic() > deadline:
                for process in context.processes:
                    process.kill()
                _remove_error_files(context)
                raise TimeoutError(f"launch: {world_size} processes did not finish in "
                                   f"{timeout:g} s (a rank waiting in a collective the "
                                   "others never reach?)")
    except mp.ProcessRaisedException:
        _remove_error_files(context)
        drain()
        if not errors:
            raise
        rank = min(errors)
        child_traceback, payload = errors[rank]
        error = None
        if payload is not None:
            try:
                error = pickle.loads(payload)
            except Exception:
                error = None
        cause = RuntimeError(f"rank {rank} of {world_size} failed:\n{child_traceback}")
        if isinstance(error, Exception):
            raise error from cause
        raise cause from None
    finally:
        spawn_log.setLevel(level)
    drain()
    missing = sorted(set(range(world_size)) - set(results))
    if missing:
        raise RuntimeError(f"launch: ranks {missing} finished without returning a result")
    return [results[rank] for rank in range(world_size)]


# ---------------------------------------------------------------------------------------
# The four communication steps as autograd Functions (Shoeybi et al., 2019, Megatron-LM)
#
#   copy_to_parallel      forward: identity              backward: all-reduce (sum)
#   reduce_from_parallel  forward: all-reduce (sum)      backward: identity
#   gather_from_parallel  forward: all-gather, concat    backward: keep this rank's slice
#   scatter_to_parallel   forward: keep this rank's slice backward: all-gather, concat
#
# Each pair is the other's transpose: a value copied to every rank gets a gradient from
# every rank (so the gradients add up), and a sum's gradient flows unchanged to each term.
# ---------------------------------------------------------------------------------------


def _group_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _all_reduce(x: Tensor) -> Tensor:
    """Sum of x over all ranks (a new tensor; x is left alone)."""
    if _group_size() == 1:
        return x
    out = x.contiguous().clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def _all_gather_last(x: Tensor) -> Tensor:
    """Every rank's x, concatenated along the last dimension.  (..., n) -> (..., world * n)"""
    world = _group_size()
    if world == 1:
        return x
    x = x.contiguous()
    parts = [torch.empty_like(x) for _ in range(world)]
    dist.all_gather(parts, x)
    return torch.cat(parts, dim=-1)


def _my_slice_last(x: Tensor) -> Tensor:
    """This rank's 1/world of the last dimension.  (..., world * n) -> (..., n)"""
    world = _group_size()
    if world == 1:
        return x
    if x.shape[-1] % world:
        raise ValueError(f"last dimension {x.shape[-1]} is not divisible by the world size "
                         f"{world}")
    return x.chunk(world, dim=-1)[dist.get_rank()].contiguous()


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
        return _all_reduce(x) if _group_size() > 1 else x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad


class _GatherFromParallel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return _all_gather_last(x) if _group_size() > 1 else x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return _my_slice_last(grad)


class _ScatterToParallel(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return _my_slice_last(x) if _group_size() > 1 else x.view_as(x)

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


# ---------------------------------------------------------------------------------------
# Sharding a full weight, gathering it back
# ---------------------------------------------------------------------------------------


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
        if _group_size() != self.world_size:
            raise ValueError(f"{type(self).__name__} was built for world size "
                             f"{self.world_size} but the process group has {_group_size()} "
                             "rank(s); run it under llama_edu.parallel.launch or torchrun "
                             "with that many processes")
        if self.world_size > 1 and dist.get_rank() != self.rank:
            raise ValueError(f"{type(self).__name__} holds rank {self.rank}'s shard but runs "
                             f"on rank {dist.get_rank()}; build it with rank=None")

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


# ---------------------------------------------------------------------------------------
# Tensor-parallel blocks: one all-reduce forward (and one backward) per block
# ---------------------------------------------------------------------------------------


class TensorParallelSwiGLU(nn.Module):
    """SwiGLU with gate and up column-parallel and down row-parallel.

    Rank r computes down_r(silu(gate_r x) * up_r x): silu and the product act feature by
    feature, so the hidden slice never leaves the rank. The only communication is the sum
    of the (..., dim) partial outputs: one all-reduce forward, one backward (at the copy).
    """

    def __init__(self, dim: int, hidden_dim: int, rank: int | None = None,
                 world_size: int | None = None, device=None, dtype=None):
        super().__init__()
        rank, world_size = _resolve(rank, world_size)
        _check_divides(hidden_dim, world_size, "the FFN hidden_dim")
        common = dict(rank=rank, world_size=world_size, device=device, dtype=dtype)
        self.gate_proj = ColumnParallelLinear(dim, hidden_dim, copy_input=False, **common)
        self.up_proj = ColumnParallelLinear(dim, hidden_dim, copy_input=False, **common)
        self.down_proj = RowParallelLinear(hidden_dim, dim, **common)

    @classmethod
    def from_swiglu(cls, ffn: SwiGLU, rank: int | None = None,
                    world_size: int | None = None) -> TensorParallelSwiGLU:
        """This rank's shard of a full single-process SwiGLU."""
        if not isinstance(ffn, SwiGLU):
            raise TypeError(f"from_swiglu needs a llama_edu.ffn.SwiGLU, got "
                            f"{type(ffn).__name__}")
        weight = ffn.gate_proj.weight
        layer = cls(weight.shape[1], weight.shape[0], rank, world_size, weight.device,
                    weight.dtype)
        load_full_state_dict(layer, ffn.state_dict())
        return layer

    def forward(self, x: Tensor) -> Tensor:                # (..., dim) -> (..., dim)
        x = copy_to_parallel(x)                             # backward: one all-reduce
        hidden = F.silu(self.gate_proj(x)) * self.up_proj(x)  # (..., hidden/p), stays here
        return self.down_proj(hidden)                       # all-reduce: (..., dim)


def attention_layout(n_heads: int, n_kv_heads: int, world_size: int) -> tuple[int, int, int]:
    """How GQA heads are split: (query heads per rank, KV heads per rank, KV replicas).

    Query heads are always split: n_heads / world per rank. KV heads follow their query
    groups: split when world_size divides n_kv_heads; when world_size exceeds n_kv_heads
    (and is a multiple of it), each rank holds the one KV head its query heads share, so
    world / n_kv_heads ranks hold copies of each KV head. Splitting inside a head would cut
    the q.k dot product in pieces and need communication inside attention.
    """
    if n_heads % world_size:
        raise ValueError(f"n_heads ({n_heads}) must be divisible by the world size "
                         f"({world_size}): each rank computes n_heads / world query heads; "
                         f"use a world size in {_divisors(n_heads)}")
    if n_kv_heads % world_size == 0:
        return n_heads // world_size, n_kv_heads // world_size, 1
    if world_size % n_kv_heads == 0:
        return n_heads // world_size, 1, world_size // n_kv_heads
    fits = [d for d in _divisors(n_heads) if n_kv_heads % d == 0 or d % n_kv_heads == 0]
    raise ValueError(f"n_kv_heads ({n_kv_heads}) and the world size ({world_size}) must "
                     "divide one another: KV heads are split when the world size divides "
                     "n_kv_heads and copied when it is a multiple of it; use a world size "
                     f"in {fits}")


class TensorParallelAttention(nn.Module):
    """Grouped-query attention with the heads split across ranks (Megatron-LM style).

    q, k, v projections are column-parallel (each rank makes its own heads from the full
    x), attention runs head by head with no communication, and o_proj is row-parallel (its
    input is exactly the rank's heads) with one all-reduce. See `attention_layout` for the
    KV heads.
    """

    def __init__(self, dim: int, n_heads: int, n_kv_heads: int | None = None,
                 use_sdpa: bool = True, rank: int | None = None, world_size: int | None = None,
                 device=None, dtype=None):
        super().__init__()
        rank, world_size = _resolve(rank, world_size)
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if dim % n_heads or n_heads % n_kv_heads:
            raise ValueError(f"dim ({dim}), n_heads ({n_heads}) and n_kv_heads "
                             f"({n_kv_heads}) must be divisible in that order")
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, dim // n_heads
        self.local_heads, self.local_kv_heads, kv_replicas = attention_layout(
            n_heads, n_kv_heads, world_size)
        self.n_rep = self.local_heads // self.local_kv_heads
        self.use_sdpa = use_sdpa
        common = dict(rank=rank, world_size=world_size, device=device, dtype=dtype,
                      copy_input=False)
        kv_dim = n_kv_heads * self.head_dim
        self.q_proj = ColumnParallelLinear(dim, n_heads * self.head_dim, **common)
        self.k_proj = ColumnParallelLinear(dim, kv_dim, replicas=kv_replicas, **common)
        self.v_proj = ColumnParallelLinear(dim, kv_dim, replicas=kv_replicas, **common)
        common.pop("copy_input")
        self.o_proj = RowParallelLinear(n_heads * self.head_dim, dim, **common)

    @classmethod
    def from_attention(cls, attn: Attention, rank: int | None = None,
                       world_size: int | None = None) -> TensorParallelAttention:
        """This rank's shard of a full single-process Attention."""
        if not isinstance(attn, Attention):
            raise TypeError(f"from_attention needs a llama_edu.attention.Attention, got "
                            f"{type(attn).__name__}")
        weight = attn.q_proj.weight
        layer = cls(weight.shape[1], attn.n_heads, attn.n_kv_heads, attn.use_sdpa, rank,
                    world_size, weight.device, weight.dtype)
        load_full_state_dict(layer, attn.state_dict())
        return layer

    def forward(self, x: Tensor, cos: Tensor | None = None, sin: Tensor | None = None,
                mask: Tensor | None = None, is_causal: bool = False,
                cache: KVCache | None = None, start_pos: int = 0) -> Tensor:
        """Same arguments as llama_edu.attention.Attention; a cache holds local KV heads."""
        batch, seq, _ = x.shape                                        # (b, s, dim)
        x = copy_to_parallel(x)                                        # backward: all-reduce
        q = self.q_proj(x).view(batch, seq, self.local_heads, self.head_dim)
        k = self.k_proj(x).view(batch, seq, self.local_kv_heads, self.head_dim)
        v = self.v_proj(x).view(batch, seq, self.local_kv_heads, self.head_dim)
        if cos is not None:
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, start_pos)                       # (b, kv_len, kv/p, hd)
        if (mask is not None and mask.dim() >= 3 and mask.shape[-3] == self.n_heads
                and self.local_heads != self.n_heads):                 # per-head bias (ALiBi)
            first = self.q_proj.rank * self.local_heads                # this rank's heads
            mask = mask.narrow(-3, first, self.local_heads)
        if self.use_sdpa:
            out = F.scaled_dot_product_attention(
                q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                attn_mask=mask, is_causal=is_causal, enable_gqa=self.n_rep > 1)
        else:
            k, v = repeat_kv(k, self.n_rep), repeat_kv(v, self.n_rep)
            out = attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                            mask, is_causal)
        out = out.transpose(1, 2).reshape(batch, seq, self.local_heads * self.head_dim)
        return self.o_proj(out)                                        # all-reduce: (b, s, dim)

    def extra_repr(self) -> str:
        return (f"n_heads={self.n_heads} ({self.local_heads} here), n_kv_heads="
                f"{self.n_kv_heads} ({self.local_kv_heads} here), head_dim={self.head_dim}")


# ---------------------------------------------------------------------------------------
# A whole Llama in tensor-parallel form; loading and gathering state dicts
# ---------------------------------------------------------------------------------------


def parallelize_llama(model: Llama, rank: int | None = None,
                      world_size: int | None = None) -> Llama:
    """A copy of `model` holding this rank's shards: tensor-parallel attention and SwiGLU
    in every layer, the embedding split along dim, the LM head column-parallel (gathered).

    Norms (and a tied embedding/LM head) stay replicated. Same forward, same logits.
    """
    if not isinstance(model, Llama):
        raise TypeError(f"parallelize_llama needs a llama_edu.model.Llama, got "
                        f"{type(model).__name__}")
    config = model.config
    rank, world_size = _resolve(rank, world_size)
    if config.ffn_type != "swiglu":
        raise ValueError(f"tensor parallelism here covers the SwiGLU FFN, got ffn_type="
                         f"{config.ffn_type!r}; use ffn_type='swiglu'")
    attention_layout(config.n_heads, config.n_kv_heads, world_size)   # clear errors first
    _check_divides(config.ffn_hidden_dim, world_size, "the FFN hidden_dim")
    if not config.tie_word_embeddings:
        _check_divides(config.dim, world_size, "dim")
        _check_divides(config.vocab_size, world_size, "vocab_size")
    tp_model = copy.deepcopy(model)
    for layer in tp_model.layers:
        layer.self_attn = TensorParallelAttention.from_attention(layer.self_attn, rank,
                                                                  world_size)
        layer.mlp = TensorParallelSwiGLU.from_swiglu(layer.mlp, rank, world_size)
    if not config.tie_word_embeddings:
        tp_model.embed_tokens = ParallelEmbedding.from_embedding(model.embed_tokens, rank,
                                                                 world_size)
        tp_model.lm_head = ColumnParallelLinear.from_linear(model.lm_head, rank, world_size,
                                                            gather_output=True)
    return tp_model


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


def parallelize(module: nn.Module, rank: int | None = None, world_size: int | None = None,
                style: str | None = None) -> nn.Module:
    """This rank's tensor-parallel version of a single-process module.

    Llama -> parallelize_llama; Attention -> TensorParallelAttention; SwiGLU ->
    TensorParallelSwiGLU; nn.Linear with style "column" (full input, gathered output) or
    "row" (full input scattered, outputs summed). style="torch" shards a SwiGLU with
    PyTorch's own tensor-parallel API instead, as an outside reference.
    """
    if style == "torch":
        return _torch_tensor_parallel(module)
    if isinstance(module, Llama):
        return parallelize_llama(module, rank, world_size)
    if isinstance(module, Attention):
        return TensorParallelAttention.from_attention(module, rank, world_size)
    if isinstance(module, SwiGLU):
        return TensorParallelSwiGLU.from_swiglu(module, rank, world_size)
    if isinstance(module, nn.Linear):
        if style == "column":
            return ColumnParallelLinear.from_linear(module, rank, world_size,
                                                    gather_output=True)
        if style == "row":
            return RowParallelLinear.from_linear(module, rank, world_size,
                                                 input_is_parallel=False)
        raise ValueError(f"an nn.Linear needs style='column' or 'row', got {style!r}")
    raise TypeError(f"no tensor-parallel form for {type(module).__name__}; use Llama, "
                    "Attention, SwiGLU or nn.Linear")


def _torch_tensor_parallel(ffn: nn.Module) -> nn.Module:
    """PyTorch's own tensor parallelism (DTensor): gate and up Colwise, down Rowwise."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    if not isinstance(ffn, SwiGLU):
        raise TypeError(f"style='torch' covers a SwiGLU, got {type(ffn).__name__}")
    mesh = init_device_mesh(current_device().type, (get_world_size(),))
    return parallelize_module(ffn, mesh, {"gate_proj": ColwiseParallel(),
                                          "up_proj": ColwiseParallel(),
                                          "down_proj": RowwiseParallel()})


def _local(value):
    """A plain tensor from PyTorch's DTensor / AsyncCollectiveTensor (full size)."""
    if hasattr(value, "full_tensor"):
        value = value.full_tensor()
    if type(value).__name__ == "AsyncCollectiveTensor":
        value = value * 1                          # waits for the collective, keeps autograd
    return value


# ---------------------------------------------------------------------------------------
# Functions to launch: the lesson's demos and the tests' comparisons
# ---------------------------------------------------------------------------------------


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


def data_parallel_run(rank: int, world_size: int, model: nn.Module, tokens: Tensor,
                      steps: int = 3, lr: float = 1e-2) -> dict:
    """Launch me: each rank trains on its equal slice of the batch of token rows.

    Returns the first step's gradients averaged by hand (all-reduce / world_size), the
    first step's DistributedDataParallel gradients, and the weights after `steps` AdamW
    steps under DDP. With equal slices, the mean of the ranks' mean losses is the
    big-batch mean loss, so all three equal a single process on the whole batch.
    """
    from torch.nn.parallel import DistributedDataParallel

    from .train import lm_loss

    device = current_device()
    if tokens.shape[0] % world_size:
        raise ValueError(f"the batch ({tokens.shape[0]} rows) must split evenly over "
                         f"{world_size} ranks")
    rows = tokens.chunk(world_size)[rank].to(device)       # (batch / world, seq + 1)
    x, y = rows[:, :-1], rows[:, 1:]

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
    """The reference for `data_parallel_run`: one process, the whole batch."""
    from .train import lm_loss

    model = copy.deepcopy(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    x, y = tokens[:, :-1], tokens[:, 1:]
    first = {}
    for step in range(steps):
        optimizer.zero_grad(set_to_none=True)
        lm_loss(model(x), y).backward()
        if step == 0:
            first = {n: p.grad.clone() for n, p in model.named_parameters()}
        optimizer.step()
    return {"grads": first, "weights": {n: p.detach() for n, p in model.named_parameters()}}


# ---------------------------------------------------------------------------------------
# Communication volume
# ---------------------------------------------------------------------------------------


def tensor_parallel_traffic(config: LlamaConfig, world_size: int,
                            bytes_per_value: int = 2) -> dict[str, float]:
    """What tensor parallelism sends, per token, in a forward pass.

    Each layer all-reduces two (tokens, dim) activations (after o_proj and down_proj): 2*dim
    values per token per layer. A ring all-reduce makes each rank send (and receive)
    2*(p-1)/p times the tensor (Patarasuk & Yuan, 2009). Backward sends as much again.
    """
    dim, layers, p = config.dim, config.n_layers, world_size
    values_per_layer = 2 * dim                               # two all-reduces of dim values
    ring = 2 * (p - 1) / p
    kv_dim = config.n_kv_heads * config.head_dim
    layer_params = 2 * dim * dim + 2 * dim * kv_dim + 3 * dim * config.ffn_hidden_dim
    return {
        "all_reduces_per_layer": 2,
        "values_per_token_per_layer": values_per_layer,
        "bytes_per_token_per_layer": values_per_layer * bytes_per_value,
        "bytes_per_token": values_per_layer * bytes_per_value * layers,
        "sent_per_rank_per_token": values_per_layer * bytes_per_value * layers * ring,
        "flops_per_token_per_rank": 2 * layer_params * layers / p,   # matmuls, forward
    }


def tensor_parallel_times(config: LlamaConfig, world_size: int, bandwidth_gb_s: float,
                          tflops: float = 989.0, bytes_per_value: int = 2) -> tuple[float, float]:
    """(compute, communication) seconds per token per layer of a forward pass, at peak speed.

    compute = 2 * layer parameters / p / FLOP/s; communication = ring all-reduce bytes sent
    per rank / link bandwidth (bytes each way). Latency and overlap are left out. The
    default 989 TFLOP/s is an H100 SXM's dense BF16 peak (NVIDIA's datasheet).
    """
    if bandwidth_gb_s <= 0 or tflops <= 0 or world_size < 1:
        raise ValueError("bandwidth_gb_s and tflops must be positive and world_size >= 1")
    traffic = tensor_parallel_traffic(config, world_size, bytes_per_value)
    compute = traffic["flops_per_token_per_rank"] / config.n_layers / (tflops * 1e12)
    sent = traffic["sent_per_rank_per_token"] / config.n_layers
    return compute, sent / (bandwidth_gb_s * 1e9)
