"""Mixed precision: which dtype to compute in, and how fast each dtype multiplies (lesson 10).

Llama 2's weights were released in bf16, and large models train in mixed precision: the
matrix multiplications run in a 16-bit format while the master weights, the optimizer
state, the loss and the statistics of RMSNorm and softmax stay in fp32 (Micikevicius et
al., 2018, "Mixed Precision Training", §3). Two 16-bit formats:

    fp32: 1 sign, 8 exponent, 23 mantissa bits   range ~1e-38 .. 3e38, unit roundoff 6e-8
    bf16: 1 sign, 8 exponent,  7 mantissa bits   fp32's range,         unit roundoff 3.9e-3
    fp16: 1 sign, 5 exponent, 10 mantissa bits   ~6e-8 .. 65504,       unit roundoff 4.9e-4

bf16 keeps fp32's exponent, so small gradients do not underflow and no loss scaling is
needed; fp16's gradients below 2^-24 become zero unless the loss is scaled up first
(Micikevicius et al., §3.2), which `torch.amp.GradScaler` does.

`choose_precision("auto", device)` picks bf16 where the hardware multiplies it fast (a CUDA
GPU with bf16, or a CPU with AMX or AVX512-BF16 instructions) and fp32 elsewhere.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import torch

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_bf16_flags() -> set[str]:
    """The CPU's bf16 instruction sets among AMX-BF16 and AVX512-BF16 (Linux /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
            break
    return flags & {"amx_bf16", "avx512_bf16"}


@dataclass(frozen=True)
class Precision:
    """A compute dtype for matmuls under autocast; weights and optimizer stay fp32."""

    name: str     # fp32, bf16 or fp16
    device: torch.device
    reason: str   # why it was chosen, printed once by train and generate

    @property
    def dtype(self) -> torch.dtype:
        return DTYPES[self.name]

    def autocast(self):
        """The autocast context for a forward pass (a no-op for fp32)."""
        if self.name == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype)

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """fp16 needs loss scaling (its gradients underflow); fp32 and bf16 do not."""
        return torch.amp.GradScaler(self.device.type) if self.name == "fp16" else None

    def __str__(self) -> str:
        return f"{self.name} ({self.reason})"


def choose_precision(requested: str = "auto", device: torch.device | str = "cpu") -> Precision:
    """The precision to compute in: `requested` as given, or for "auto" bf16 where the
    hardware runs it fast and fp32 elsewhere."""
    device = torch.device(device)
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {requested!r}")
    if requested != "auto":
        if requested == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("this CUDA GPU has no bf16 support; use --precision fp16 or fp32")
        return Precision(requested, device, "asked for")
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", device, "auto: this CUDA GPU supports bf16")
        return Precision("fp32", device, "auto: this CUDA GPU has no bf16; fp16 needs "
                                         "--precision fp16")
    if device.type == "cpu":
        flags = cpu_bf16_flags()
        if flags:
            names = " and ".join(sorted(f.upper().replace("_", "-") for f in flags))
            return Precision("bf16", device, f"auto: the CPU has {names}")
        return Precision("fp32", device, "auto: the CPU has no bf16 instructions "
                                         "(AMX-BF16 or AVX512-BF16)")
    return Precision("fp32", device, f"auto: fp32 on {device.type}")
