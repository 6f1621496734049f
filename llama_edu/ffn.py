"""Feed-forward blocks: the classic MLP and SwiGLU (lesson 04).

MLP(x)    = down(act(up(x)))                        act = ReLU or GELU
SwiGLU(x) = down(silu(gate(x)) * up(x))             (Shazeer, 2020, "GLU Variants")

SwiGLU has three matrices instead of two, so Llama shrinks the hidden size to 2/3 of 4*dim
to keep the parameter count, then rounds up to a multiple of `multiple_of`.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


def ffn_hidden_dim(dim: int, multiple_of: int = 256,
                   ffn_dim_multiplier: float | None = None) -> int:
    """The Llama hidden-size rule: int(2 * 4 * dim / 3), times the multiplier, rounded up.

    >>> ffn_hidden_dim(4096), ffn_hidden_dim(5120), ffn_hidden_dim(8192, 4096, 1.3)
    (11008, 13824, 28672)
    """
    if dim <= 0 or multiple_of <= 0:
        raise ValueError(f"dim ({dim}) and multiple_of ({multiple_of}) must be positive")
    hidden = int(2 * (4 * dim) / 3)
    if ffn_dim_multiplier is not None:
        if ffn_dim_multiplier <= 0:
            raise ValueError(f"ffn_dim_multiplier must be positive, got {ffn_dim_multiplier}")
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


class SwiGLU(nn.Module):
    """Llama's MLP: gate and up project to hidden_dim, down projects back."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden_dim, bias=False)
        self.up_proj = nn.Linear(dim, hidden_dim, bias=False)
        self.down_proj = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:                  # (..., dim) -> (..., dim)
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


_ACTIVATIONS = {"relu": F.relu, "gelu": F.gelu, "silu": F.silu}


class MLP(nn.Module):
    """The original Transformer FFN with a choice of activation (ReLU or GELU)."""

    def __init__(self, dim: int, hidden_dim: int, activation: str = "relu"):
        super().__init__()
        if activation not in _ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of "
                             f"{sorted(_ACTIVATIONS)}")
        self.activation = activation
        self.up_proj = nn.Linear(dim, hidden_dim, bias=False)
        self.down_proj = nn.Linear(hidden_dim, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:                  # (..., dim) -> (..., dim)
        return self.down_proj(_ACTIVATIONS[self.activation](self.up_proj(x)))

    def extra_repr(self) -> str:
        return f"activation={self.activation}"
