"""LayerNorm and RMSNorm (lesson 03).

LayerNorm(x) = (x - mean(x)) / sqrt(var(x) + eps) * g + b       (Ba et al., 2016)
RMSNorm(x)   = x / sqrt(mean(x^2) + eps) * g                     (Zhang & Sennrich, 2019)

Llama uses RMSNorm before attention and before the MLP (Pre-LN), computed in fp32.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RMSNorm(nn.Module):
    """Re-scales each vector to unit root-mean-square, then by a learned gain."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        if dim <= 0:
            raise ValueError(f"RMSNorm dim must be positive, got {dim}")
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:                  # (..., dim) -> (..., dim)
        x32 = x.float()
        inv_rms = x32.pow(2).mean(-1, keepdim=True).add(self.eps).rsqrt()
        return self.weight * (x32 * inv_rms).to(x.dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}"


class LayerNorm(nn.Module):
    """Re-centres each vector to zero mean and re-scales to unit variance, then g and b."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True):
        super().__init__()
        if dim <= 0:
            raise ValueError(f"LayerNorm dim must be positive, got {dim}")
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: Tensor) -> Tensor:                  # (..., dim) -> (..., dim)
        x32 = x.float()
        mean = x32.mean(-1, keepdim=True)
        var = (x32 - mean).pow(2).mean(-1, keepdim=True)      # biased variance, as in the paper
        y = ((x32 - mean) * (var + self.eps).rsqrt()).to(x.dtype) * self.weight
        return y + self.bias if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"{self.weight.shape[0]}, eps={self.eps}, bias={self.bias is not None}"
