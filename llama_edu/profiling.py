"""Measuring a call's peak memory, a dtype's matmul speed and a model's FLOPs (lessons 08
onwards, and `benchmarks/`).

`peak_memory(fn, *args)` is the largest number of bytes the call held at once beyond what
existed before it. A CUDA GPU counts this itself (`torch.cuda.max_memory_allocated`); on the
CPU PyTorch keeps no such counter, so every tensor an ATen operation returns is added when
it appears and subtracted when its storage is freed, like `tracemalloc` for tensors.

`timer(device)` times a block, waiting for the device before and after; `median_ms(fn)` is
the median of several such timings after warm-up runs (lessons 03, 04, 06).

`matmul_flops(dtype)` measures the machine's matmul peak in a dtype, and `mfu` says what
share of it a training run reaches, counting `train_flops_per_token` as PaLM does.
"""

from __future__ import annotations

import contextlib
import statistics
import time
import weakref
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

# Why a private module: the accounting needs every ATen operation, and only a dispatch mode
# sees them all. The public alternatives fall short. torch.profiler(profile_memory=True)
# gives each recorded range only its net memory (allocated minus freed inside it), with no
# timeline of allocations, so a peak inside a range is lost: it reports tiled attention,
# which runs inside one autograd.Function range, at the size of its output. Its memory
# timeline export is deprecated, and the replacement it names is CUDA-only.
# torch.overrides.TorchFunctionMode sees Python-level calls only: not the operations inside
# a composite function (SDPA's math path) nor those autograd runs for backward.
# No public module exports TorchDispatchMode (torch 2.13); torch's own public
# torch.utils.flop_counter.FlopCounterMode counts operations with it in the same way.
from torch.utils._python_dispatch import TorchDispatchMode

from .device import synchronize

__all__ = ["matmul_flops", "median_ms", "mfu", "peak_memory", "timer",
           "train_flops_per_token"]


class Timing:
    """What `timer` measured: `seconds` (set when the block ends) and `ms`."""

    seconds: float = float("nan")

    @property
    def ms(self) -> float:
        return self.seconds * 1e3


@contextlib.contextmanager
def timer(device: torch.device | str = "cpu") -> Iterator[Timing]:
    """`with timer(device) as t: ...` then `t.seconds`: wall time of the block, with the
    device's queued work waited for before and after (a GPU runs asynchronously)."""
    timing = Timing()
    synchronize(device)
    began = time.perf_counter()
    try:
        yield timing
    finally:
        synchronize(device)
        timing.seconds = time.perf_counter() - began


def median_ms(fn: Callable, *args, reps: int = 10, warmup: int = 2,
              device: torch.device | str = "cpu", **kwargs) -> float:
    """Median milliseconds of `fn(*args, **kwargs)` over `reps` runs, after `warmup` runs
    that are not counted (first calls pay for allocation and kernel selection)."""
    if reps < 1 or warmup < 0:
        raise ValueError(f"median_ms needs reps >= 1 and warmup >= 0, got {reps}, {warmup}")
    times = []
    for _ in range(warmup + reps):
        with timer(device) as t:
            fn(*args, **kwargs)
        times.append(t.ms)
    return statistics.median(times[warmup:])


class _LiveTensorBytes(TorchDispatchMode):
    """Counts the storage bytes of every tensor an ATen op returns until it is freed."""

    def __init__(self):
        super().__init__()
        self.live = self.peak = 0
        self._storages: dict[int, weakref.ref] = {}

    def _freed(self, key: int, nbytes: int) -> None:
        self.live -= nbytes
        self._storages.pop(key, None)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        outputs = result if isinstance(result, (tuple, list)) else (result,)
        for tensor in outputs:
            if not isinstance(tensor, Tensor) or tensor.device.type == "meta":
                continue
            storage = tensor.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes == 0 or key in self._storages:               # a view of a known storage
                continue
            self._storages[key] = weakref.ref(storage, lambda _, k=key, n=nbytes:
                                              self._freed(k, n))
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        return result


def peak_memory(fn: Callable, *args, device: torch.device | str | None = None,
                **kwargs) -> int:
    """Peak bytes allocated while `fn(*args, **kwargs)` runs, beyond what existed before.

    CUDA: `torch.cuda.max_memory_allocated` (the caching allocator's own count).
    CPU and others: the largest total size of live tensors that ATen ops returned during the
    call, tracked with a dispatch mode; scratch buffers a single kernel allocates inside
    itself (SDPA's fused CPU kernel, for one) are invisible to it.
    `device` defaults to that of the first tensor argument, else the CPU.
    """
    device = torch.device(device) if device is not None else _first_device(args)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn(*args, **kwargs)
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - before
    with _LiveTensorBytes() as tracker:
        fn(*args, **kwargs)
    return tracker.peak


def _first_device(args) -> torch.device:
    for arg in args:
        if isinstance(arg, Tensor):
            return arg.device
    return torch.device("cpu")


# ---------------------------------------------------------------------------------------
# how fast, and how much of it a model uses

def matmul_flops(dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
                 size: int = 2048, repeats: int = 5) -> float:
    """Measured FLOP/s of a size x size matmul in `dtype`: the peak a model can hope for.

    The best of `repeats` timings after one warm-up, 2 * size^3 floating-point operations
    each (a multiply and an add per term)."""
    device = torch.device(device)
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, generator=generator).to(dtype)
    b = torch.randn(size, size, device=device, generator=generator).to(dtype)
    best = float("inf")
    for i in range(repeats + 1):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        if i:
            best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def train_flops_per_token(config, seq_len: int) -> float:
    """FLOPs of one training token (forward and backward): 6 N + 12 n_layers dim seq_len.

    6 N counts the weight matmuls (2 N forward, 4 N backward) with N the parameters outside
    the embedding table; 12 L d T adds the attention scores and their weighted sum
    (Chowdhery et al., 2022, PaLM, Appendix B)."""
    from .model import count_parameters

    embedding = config.vocab_size * config.dim
    n = count_parameters(config) - embedding
    return 6 * n + 12 * config.n_layers * config.dim * seq_len


def mfu(tokens_per_second: float, flops_per_token: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: the share of the measured peak that training achieves."""
    return tokens_per_second * flops_per_token / peak_flops
