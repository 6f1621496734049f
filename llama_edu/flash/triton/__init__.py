"""The Triton kernels of lesson 08 (`kernels.py`), and loading them on demand.

Without a CUDA GPU the kernels run in Triton's CPU interpreter, whose switch
(TRITON_INTERPRET=1) must be set before triton is first imported. So nothing here imports
triton: `triton_kernels()` imports `kernels`, which sets the switch first.
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

import torch

__all__ = ["triton_available", "triton_kernels"]


def triton_available() -> bool:
    """True when triton is installed (it runs on a CUDA GPU, or on the CPU through its
    interpreter, which also needs numpy). Checked without importing triton: the interpreter
    switch must come before triton's first import."""
    if importlib.util.find_spec("triton") is None:
        return False
    return torch.cuda.is_available() or importlib.util.find_spec("numpy") is not None


def triton_kernels() -> ModuleType:
    """The Triton kernels module; without a CUDA GPU it runs in Triton's interpreter.

    TRITON_INTERPRET=1 must be set before triton is first imported, so the module (which
    sets it when there is no GPU) is imported only here, on demand.
    """
    if not triton_available():
        raise ImportError("triton is not installed: `pip install triton` (it runs on a CUDA "
                          "GPU, or on the CPU through its interpreter)")
    return importlib.import_module(f"{__name__}.kernels")
