"""Weight-only quantisation of a Llama's matrices: int8 per row, 4-bit per group (lesson 09).

int8, absmax per output row r (weight-only: activations stay in float):
    s_r = max_j |W_rj| / 127,   q_rj = round(W_rj / s_r) in [-127, 127],   W_rj ~ s_r q_rj
4-bit, per group of `group_size` consecutive weights of a row (as GPTQ, AWQ and QLoRA store
their blocks; Frantar et al. 2023, Lin et al. 2024, Dettmers et al. 2023):
    absmax:  s = max |w| / 7,            q = round(w / s) in [-7, 7],     w ~ s q
    minmax:  s = (max w - min w) / 15,   q = round((w - min w) / s) in [0, 15],  w ~ min w + s q
Two 4-bit codes share a byte. Scales (and minima) are stored in fp16, 2 bytes each.

This is not LLM.int8() (Dettmers et al., 2022): that method quantises the activations too,
per row of the input (vector-wise), and keeps the feature dimensions with an outlier above
6.0 in fp16 in a separate matmul (mixed-precision decomposition, its Section 3). Here only
the weights are rounded; `quantize_model` puts the rounded values back as float weights, so
the model computes exactly what a weight-only kernel computes after dequantising.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["Quantized", "quantize_int8", "quantize_4bit", "dequantize", "pack_4bit",
           "unpack_4bit", "quantize_model", "quantized_bytes"]

SCALE_DTYPE = torch.float16


@dataclass
class Quantized:
    """A quantised matrix: integer codes (int8, or 4-bit packed two per uint8), fp16 scales
    per row or per group, fp16 group minima for the minmax scheme, and the original shape."""

    codes: Tensor                  # int8 (rows, cols), or uint8 (rows, cols // 2) packed
    scale: Tensor                  # (rows, n_groups) fp16
    shape: tuple[int, int]
    bits: int
    group_size: int
    minimum: Tensor | None = None  # (rows, n_groups) fp16, minmax only

    @property
    def nbytes(self) -> int:
        """Storage bytes: the codes, the scales and the minima, as they sit in memory."""
        parts = [self.codes, self.scale] + ([self.minimum] if self.minimum is not None else [])
        return sum(t.numel() * t.element_size() for t in parts)


def _check_matrix(weight: Tensor) -> None:
    if not isinstance(weight, Tensor) or weight.dim() != 2 or not weight.is_floating_point():
        raise TypeError("quantisation takes a 2-D float weight matrix (out_features, "
                        f"in_features), got {getattr(weight, 'shape', type(weight).__name__)}")


def quantize_int8(weight: Tensor) -> Quantized:
    """Per-row absmax int8: (rows, cols) float -> codes in [-127, 127] and one scale per row."""
    _check_matrix(weight)
    w = weight.detach().float()
    scale = (w.abs().amax(dim=1, keepdim=True) / 127).to(SCALE_DTYPE)   # (rows, 1)
    safe = scale.float().clamp_min(torch.finfo(SCALE_DTYPE).tiny)        # an all-zero row
    codes = torch.round(w / safe).clamp(-127, 127).to(torch.int8)
    return Quantized(codes, scale, tuple(w.shape), 8, w.shape[1])


def quantize_4bit(weight: Tensor, group_size: int | None = 64,
                  scheme: str = "absmax") -> Quantized:
    """4-bit codes per group of `group_size` weights along each row (None: the whole row)."""
    _check_matrix(weight)
    rows, cols = weight.shape
    group_size = cols if group_size is None else group_size
    if group_size <= 0 or cols % group_size or group_size % 2:
        raise ValueError(f"group_size ({group_size}) must be even and divide the row length "
                         f"{cols}; try one of {[g for g in (16, 32, 64, 128) if cols % g == 0]}")
    if scheme not in ("absmax", "minmax"):
        raise ValueError(f"scheme must be 'absmax' or 'minmax', got {scheme!r}")
    w = weight.detach().float().reshape(rows, cols // group_size, group_size)
    tiny = torch.finfo(SCALE_DTYPE).tiny
    if scheme == "absmax":
        scale = (w.abs().amax(-1) / 7).to(SCALE_DTYPE)                  # (rows, groups)
        codes = torch.round(w / scale.float().clamp_min(tiny)[..., None]).clamp(-7, 7) + 8
        minimum = None
    else:
        minimum = w.amin(-1).to(SCALE_DTYPE)
        scale = ((w.amax(-1) - minimum.float()) / 15).to(SCALE_DTYPE)
        shifted = w - minimum.float()[..., None]
        codes = torch.round(shifted / scale.float().clamp_min(tiny)[..., None]).clamp(0, 15)
    codes = pack_4bit(codes.reshape(rows, cols).to(torch.uint8))
    return Quantized(codes, scale, (rows, cols), 4, group_size, minimum)


def pack_4bit(codes: Tensor) -> Tensor:
    """(rows, cols) uint8 values 0..15 -> (rows, cols // 2) uint8, two codes per byte."""
    return codes[:, 0::2] | (codes[:, 1::2] << 4)


def unpack_4bit(packed: Tensor) -> Tensor:
    """The inverse of `pack_4bit`: (rows, cols // 2) -> (rows, cols) values 0..15."""
    return torch.stack([packed & 0xF, packed >> 4], dim=-1).flatten(1)


def dequantize(q: Quantized, dtype: torch.dtype = torch.float32) -> Tensor:
    """The float matrix the codes stand for: s * q (absmax) or min + s * q (minmax)."""
    rows, cols = q.shape
    if q.bits == 8:
        return (q.codes.float() * q.scale.float()).to(dtype)
    codes = unpack_4bit(q.codes).float().reshape(rows, cols // q.group_size, q.group_size)
    if q.minimum is None:
        values = (codes - 8) * q.scale.float()[..., None]
    else:
        values = q.minimum.float()[..., None] + codes * q.scale.float()[..., None]
    return values.reshape(rows, cols).to(dtype)


def _quantize(weight: Tensor, bits: int, group_size: int | None, scheme: str) -> Quantized:
    if bits == 8:
        return quantize_int8(weight)
    if bits == 4:
        return quantize_4bit(weight, group_size, scheme)
    raise ValueError(f"bits must be 8 or 4, got {bits!r}")


def quantize_model(model: nn.Module, bits: int, group_size: int | None = 64,
                   scheme: str = "absmax") -> tuple[nn.Module, int]:
    """A copy of `model` whose 2-D weights (embedding, projections, LM head) hold their
    quantised values, and the bytes the quantised model takes: the codes and scales of the
    matrices (a tied matrix once) plus the 1-D norm gains kept in their own dtype."""
    quantized = copy.deepcopy(model).eval()
    total, seen = 0, set()
    with torch.no_grad():
        for param in quantized.parameters():                 # a shared (tied) one once
            if id(param) in seen:
                continue
            seen.add(id(param))
            if param.dim() != 2:
                total += param.numel() * param.element_size()
                continue
            q = _quantize(param, bits, group_size, scheme)
            param.copy_(dequantize(q, param.dtype))
            total += q.nbytes
    return quantized, total


def quantized_bytes(shape: tuple[int, int], bits: int, group_size: int | None = 64,
                    scheme: str = "absmax") -> int:
    """The storage of one (rows, cols) matrix, by formula: codes plus fp16 scales (and
    minima): int8 rows*cols + 2 rows; 4-bit rows*cols/2 + 2 (or 4) bytes per group."""
    rows, cols = shape
    if bits == 8:
        return rows * cols + 2 * rows
    groups = rows * (cols // (cols if group_size is None else group_size))
    return rows * cols // 2 + groups * (4 if scheme == "minmax" else 2)
