"""Picking a device, seeding, and describing the environment (every lesson).

The course runs on a CPU; a CUDA or Apple-silicon GPU is used automatically when present.
Set LLAMA_EDU_DEVICE=cpu (or cuda, mps) to override the choice.
"""

from __future__ import annotations

import os
import platform
import random

import numpy as np
import torch

_VALID = ("cuda", "mps", "cpu")


def pick_device(prefer: str | None = None) -> torch.device:
    """The best available device: `prefer`, else $LLAMA_EDU_DEVICE, else cuda > mps > cpu."""
    choice = prefer or os.environ.get("LLAMA_EDU_DEVICE")
    if choice:
        kind = choice.split(":")[0]
        if kind not in _VALID:
            raise ValueError(f"unknown device {choice!r}; use one of {', '.join(_VALID)}")
        if kind == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda' was asked for but torch sees no CUDA GPU; "
                             "use 'cpu' or install a CUDA build of torch")
        if kind == "mps" and not torch.backends.mps.is_available():
            raise ValueError("device 'mps' was asked for but is not available; use 'cpu'")
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); returns a CPU generator with that seed."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    return torch.Generator().manual_seed(seed)


def synchronize(device: torch.device | str) -> None:
    """Wait for queued GPU work, so that timings measure the work and not the queueing."""
    kind = torch.device(device).type
    if kind == "cuda":
        torch.cuda.synchronize()
    elif kind == "mps":
        torch.mps.synchronize()


def values_checkable(tensor: torch.Tensor) -> bool:
    """Whether a range check may read `tensor`'s values for free.

    Reading values of a GPU tensor (`int(t.max())`) makes the host wait for the device, and
    under `torch.compile` it breaks the graph. So the model checks token ids and positions
    only for CPU tensors in eager mode; on a GPU an out-of-range id still fails, inside the
    embedding or the table lookup, with the device's less friendly message.
    """
    return tensor.device.type == "cpu" and not torch.compiler.is_compiling()


def describe(device: torch.device | None = None) -> str:
    """One line about the machine: Python, torch, device, threads."""
    device = device or pick_device()
    parts = [f"Python {platform.python_version()}", f"torch {torch.__version__}",
             f"device {device}"]
    if device.type == "cuda":
        parts.append(torch.cuda.get_device_name(device))
    parts.append(f"{torch.get_num_threads()} CPU threads")
    return ", ".join(parts)
