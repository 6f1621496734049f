"""Process groups and a local launcher (lesson 12).

`init_distributed` reads torchrun's environment (gloo on CPU, NCCL on CUDA); `launch` spawns
N local processes on a free port so that a notebook runs the same code as torchrun would.
"""

from __future__ import annotations

import logging
import os
import pickle
import socket
import sys
import time
import traceback
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ..device import pick_device

# ---------------------------------------------------------------------------------------
# Process groups
# ---------------------------------------------------------------------------------------


class _TorchrunEnv(NamedTuple):
    """Where this process sits, as torchrun (or `launch`) describes it in the environment."""

    rank: int
    world_size: int
    local_rank: int              # the rank among the processes on this machine: its GPU
    local_world_size: int


def _env_int(name: str, default: int | None = None) -> int | None:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name}={value!r} must be an integer; "
                         "torchrun sets it for you") from None


def _torchrun_env() -> _TorchrunEnv | None:
    """RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE from the environment, checked.

    None without WORLD_SIZE: a plain single process. The one place that reads them.
    """
    world_size = _env_int("WORLD_SIZE")
    if world_size is None:
        return None
    rank = _env_int("RANK")
    if rank is None:
        raise ValueError("WORLD_SIZE is set but RANK is not; start the script with "
                         "`torchrun --nproc_per_node N ...` or set both")
    if world_size <= 0 or not 0 <= rank < world_size:
        raise ValueError(f"RANK={rank} must lie in [0, WORLD_SIZE={world_size})")
    return _TorchrunEnv(rank, world_size, _env_int("LOCAL_RANK", rank),
                       _env_int("LOCAL_WORLD_SIZE", world_size))


def _in_group() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    """This process's rank; 0 outside a process group."""
    return dist.get_rank() if _in_group() else 0


def get_world_size() -> int:
    """Number of processes in the group; 1 outside a process group."""
    return dist.get_world_size() if _in_group() else 1


def is_main_process() -> bool:
    """True on rank 0 and in a single process: the one that prints and saves."""
    return get_rank() == 0


def default_backend(local_world_size: int | None = None) -> str:
    """'nccl' when every local rank can have its own CUDA GPU, else 'gloo' (CPU)."""
    if local_world_size is None:
        env = _torchrun_env()
        local_world_size = 1 if env is None else env.local_world_size
    if torch.cuda.is_available() and torch.cuda.device_count() >= local_world_size:
        return "nccl"
    return "gloo"


def current_device() -> torch.device:
    """The device this rank computes on: cuda:LOCAL_RANK under NCCL, else the CPU.

    Outside a process group: `pick_device()` (cuda > mps > cpu).
    """
    if not _in_group():
        return pick_device()
    if dist.get_backend() == "nccl":
        env = _torchrun_env()
        return torch.device("cuda", 0 if env is None else env.local_rank)
    return torch.device("cpu")


def init_distributed(backend: str | None = None) -> tuple[int, int, torch.device]:
    """Join the process group described by torchrun's environment.

    Reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT. Without WORLD_SIZE it
    is a no-op for a single process and returns (0, 1, pick_device()). backend None picks
    NCCL when each local rank has a CUDA GPU (and sets that GPU from LOCAL_RANK), else gloo.
    Returns (rank, world_size, device).
    """
    if _in_group():
        return get_rank(), get_world_size(), current_device()
    env = _torchrun_env()
    if env is None:
        return 0, 1, pick_device()
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise ValueError(f"{name} is not set; torchrun sets it, or export it yourself "
                             "(e.g. MASTER_ADDR=127.0.0.1 MASTER_PORT=29500)")
    backend = backend or default_backend(env.local_world_size)
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' (CPU) or 'nccl' (CUDA), got {backend!r}")
    options = {}
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise ValueError("backend 'nccl' needs CUDA GPUs; use 'gloo' on a CPU")
        torch.cuda.set_device(env.local_rank)
        options["device_id"] = torch.device("cuda", env.local_rank)   # this rank's GPU
    dist.init_process_group(backend, rank=env.rank, world_size=env.world_size, **options)
    return env.rank, env.world_size, current_device()


def cleanup() -> None:
    """Leave the process group (safe to call when there is none)."""
    if _in_group():
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
