"""LayerNorm and RMSNorm (lesson 03).

LayerNorm(x) = (x - mean(x)) / sqrt(var(x) + eps) * g + b       (Ba et al., 2016)
RMSNorm(x)   = x / sqrt(mean(x^2) + eps) * g                     (Zhang & Sennrich, 2019)

Both work over the last axis, one vector (one token) at a time. LayerNorm re-centres and
re-scales, so it is invariant to shifting and to scaling its input; RMSNorm only re-scales,
so it is invariant to scaling alone. Llama uses RMSNorm before attention and before the FFN
(Pre-LN, Xiong et al., 2020), computed in fp32 and cast back to the input's dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def _wide(x: Tensor) -> Tensor:
    """x in at least fp32 (bf16 and fp16 are widened, fp64 stays fp64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def rms_norm(x: Tensor, weight: Tensor | None = None, eps: float = 1e-5) -> Tensor:
    """x / sqrt(mean(x^2) + eps) * weight over the last axis, the way Llama computes it:
    the statistics in (at least) fp32, the result cast back to x's dtype, then times the gain
    (so a bf16 gain gives bf16 out, an fp32 gain promotes, as in Meta's and HF's code).

    (..., dim) -> (..., dim)
    """
    x32 = _wide(x)
    inv_rms = x32.pow(2).mean(-1, keepdim=True).add(eps).rsqrt()    # (..., 1)
    y = (x32 * inv_rms).to(x.dtype)
    return y if weight is None else weight * y


def layer_norm(x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """(x - mean) / sqrt(var + eps) * weight + bias over the last axis, with the biased
    variance (divide by dim, not dim - 1). Everything, gain and bias included, is computed
    in fp32 and rounded once to x's dtype, as `torch.nn.LayerNorm` does.

    (..., dim) -> (..., dim)
    """
    x32 = _wide(x)
    mean = x32.mean(-1, keepdim=True)                                 # (..., 1)
    centred = x32 - mean
    var = centred.pow(2).mean(-1, keepdim=True)                       # (..., 1)
    y = centred * (var + eps).rsqrt()
    if weight is not None:
        y = y * _wide(weight)
    if bias is not None:
        y = y + _wide(bias)
    return y.to(x.dtype)


def _check(kind: str, dim: int, eps: float) -> None:
    if not isinstance(dim, int) or isinstance(dim, bool) or dim <= 0:
        raise ValueError(f"{kind} dim must be a positive integer (the size of the last axis), "
                         f"got {dim!r}")
    if not eps >= 0:
        raise ValueError(f"{kind} eps must be >= 0 (it is added under the square root to "
                         f"avoid dividing by zero), got {eps!r}")


def _check_input(module: nn.Module, x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"{type(module).__name__} expects a tensor, got {type(x).__name__}")
    dim = module.weight.shape[0]
    if x.dim() == 0 or x.shape[-1] != dim:
        raise ValueError(f"{type(module).__name__}({dim}) normalises the last axis, which must "
                         f"have size {dim}; got input of shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{type(module).__name__} needs a floating-point input, got {x.dtype}")


class RMSNorm(nn.Module):
    """Re-scales each vector to unit root-mean-square, then by a learned gain (no bias)."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        _check("RMSNorm", dim, eps)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:                  # (..., dim) -> (..., dim)
        _check_input(self, x)
        return rms_norm(x, self.weight, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class LayerNorm(nn.Module):
    """Re-centres each vector to zero mean and re-scales to unit variance, then g and b."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        _check("LayerNorm", dim, eps)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: Tensor) -> Tensor:                  # (..., dim) -> (..., dim)
        _check_input(self, x)
        return layer_norm(x, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, bias={self.bias is not None}"
