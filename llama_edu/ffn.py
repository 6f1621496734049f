"""Feed-forward blocks: the classic MLP and SwiGLU (lesson 04).

MLP(x)    = down(act(up(x)))                        act = ReLU or GELU   (Vaswani et al., 2017)
SwiGLU(x) = down(silu(gate(x)) * up(x))             (Shazeer, 2020, "GLU Variants")
Swish_b(x) = x * sigmoid(b * x); SiLU is Swish_1    (Ramachandran et al., 2017)

SwiGLU has three matrices instead of two, so Llama shrinks the hidden size to 2/3 of 4*dim
to keep the parameter count, then rounds up to a multiple of `multiple_of`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def swish(x: Tensor, beta: float = 1.0) -> Tensor:
    """Swish_beta(x) = x * sigmoid(beta * x): beta=1 is SiLU, beta -> inf tends to ReLU,
    beta = 0 is x / 2 (a straight line)."""
    return x * torch.sigmoid(beta * x)


ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu}


def _positive_int(name: str, value) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def ffn_hidden_dim(dim: int, multiple_of: int = 256,
                   ffn_dim_multiplier: float | None = None) -> int:
    """The Llama hidden-size rule: int(2 * 4 * dim / 3), times the multiplier, rounded up
    to a multiple of `multiple_of`.

    >>> ffn_hidden_dim(4096), ffn_hidden_dim(5120), ffn_hidden_dim(8192, 4096, 1.3)
    (11008, 13824, 28672)
    """
    _positive_int("dim", dim)
    _positive_int("multiple_of", multiple_of)
    hidden = int(2 * (4 * dim) / 3)                  # 2/3 of the 4*dim of a two-matrix FFN
    if ffn_dim_multiplier is not None:
        if not ffn_dim_multiplier > 0:
            raise ValueError(f"ffn_dim_multiplier must be positive or None, got "
                             f"{ffn_dim_multiplier!r}")
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def ffn_parameter_count(dim: int, hidden_dim: int, ffn_type: str = "swiglu") -> int:
    """Weights of one FFN (no biases): 3 * dim * hidden for SwiGLU, 2 * dim * hidden else.

    >>> ffn_parameter_count(4096, 11008), ffn_parameter_count(4096, 4 * 4096, "relu")
    (135266304, 134217728)
    """
    _positive_int("dim", dim)
    _positive_int("hidden_dim", hidden_dim)
    if ffn_type == "swiglu":
        return 3 * dim * hidden_dim
    if ffn_type in ACTIVATIONS:
        return 2 * dim * hidden_dim
    raise ValueError(f"unknown ffn_type {ffn_type!r}; choose 'swiglu' or one of "
                     f"{sorted(ACTIVATIONS)}")


def swiglu(x: Tensor, gate_weight: Tensor, up_weight: Tensor, down_weight: Tensor) -> Tensor:
    """down(silu(gate(x)) * up(x)) with nn.Linear-shaped weights (out_features, in_features).

    x (..., dim), gate/up (hidden, dim), down (dim, hidden) -> (..., dim)
    """
    hidden = F.silu(x @ gate_weight.T) * (x @ up_weight.T)           # (..., hidden)
    return hidden @ down_weight.T                                     # (..., dim)


class SwiGLU(nn.Module):
    """Llama's FFN: gate and up project to hidden_dim, down projects back."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        _positive_int("SwiGLU dim", dim)
        _positive_int("SwiGLU hidden_dim", hidden_dim)
        self.gate_proj = nn.Linear(dim, hidden_dim, bias=False)
        self.up_proj = nn.Linear(dim, hidden_dim, bias=False)
        self.down_proj = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:                  # (..., dim) -> (..., dim)
        hidden = F.silu(self.gate_proj(x)) * self.up_proj(x)          # (..., hidden_dim)
        return self.down_proj(hidden)


class MLP(nn.Module):
    """The original Transformer FFN with a choice of activation (ReLU, GELU or SiLU)."""

    def __init__(self, dim: int, hidden_dim: int, activation: str = "relu"):
        super().__init__()
        _positive_int("MLP dim", dim)
        _positive_int("MLP hidden_dim", hidden_dim)
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of "
                             f"{sorted(ACTIVATIONS)}")
        self.activation = activation
        self.up_proj = nn.Linear(dim, hidden_dim, bias=False)
        self.down_proj = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:                  # (..., dim) -> (..., dim)
        return self.down_proj(ACTIVATIONS[self.activation](self.up_proj(x)))

    def extra_repr(self) -> str:
        return f"activation={self.activation}"
