"""LoRA: fine-tuning through a low-rank update of frozen weights (lesson 13).

Hu et al. (2021), "LoRA: Low-Rank Adaptation of Large Language Models", §4.1: a frozen
weight W (out, in) gets a trainable update of rank r,

    h = W x + (alpha / r) * B A x,     A: (r, in), B: (out, r),

with A drawn at random and B zero, so that training starts from the base model exactly.
Only A and B train: r * (in + out) numbers per adapted matrix instead of in * out. After
training, `merge_lora` folds the update into W, and the model costs nothing extra to run.
The paper adapts the attention's query and value projections (§7.1); so does the default.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class LoRALinear(nn.Module):
    """A frozen `base` linear layer plus a trainable rank-`r` update scaled by alpha / r."""

    def __init__(self, base: nn.Linear, r: int = 8, alpha: float = 16.0, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear adapts an nn.Linear, got {type(base).__name__}")
        if not isinstance(r, int) or r <= 0 or r > min(base.in_features, base.out_features):
            raise ValueError(f"r must be a positive integer at most min(in, out) = "
                             f"{min(base.in_features, base.out_features)}, got {r!r}")
        self.base = base
        self.base.requires_grad_(False)
        self.r, self.alpha, self.scaling = r, alpha, alpha / r
        weight = base.weight
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, dtype=weight.dtype,
                                               device=weight.device))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, dtype=weight.dtype,
                                               device=weight.device))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))   # as nn.Linear and peft do
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:               # (..., in) -> (..., out)
        update = self.dropout(x) @ self.lora_A.T @ self.lora_B.T     # (..., r) -> (..., out)
        return self.base(x) + self.scaling * update

    def merged(self) -> nn.Linear:
        """A plain linear layer with W + (alpha / r) B A: the same function, no adapter."""
        merged = nn.Linear(self.base.in_features, self.base.out_features,
                           bias=self.base.bias is not None, device=self.base.weight.device,
                           dtype=self.base.weight.dtype)
        with torch.no_grad():
            merged.weight.copy_(self.base.weight + self.scaling * self.lora_B @ self.lora_A)
            if self.base.bias is not None:
                merged.bias.copy_(self.base.bias)
        return merged

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha:g}"


def _targets(model: nn.Module, targets: tuple[str, ...]) -> list[tuple[nn.Module, str]]:
    found = [(parent, name) for parent in model.modules()
             for name, child in parent.named_children()
             if name in targets and isinstance(child, nn.Linear)]
    if not found:
        raise ValueError(f"no nn.Linear named one of {targets} in the model; Llama's are "
                         "q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj")
    return found


def apply_lora(model: nn.Module, targets: tuple[str, ...] = ("q_proj", "v_proj"), r: int = 8,
               alpha: float = 16.0, dropout: float = 0.0) -> nn.Module:
    """Freeze every weight of `model` and wrap each linear layer named in `targets` in a
    LoRALinear, in place. Returns the model; only the adapters' A and B then train."""
    model.requires_grad_(False)
    for parent, name in _targets(model, targets):
        setattr(parent, name, LoRALinear(getattr(parent, name), r, alpha, dropout))
    return model


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every LoRALinear by its merged nn.Linear, in place. Returns the model."""
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, name, child.merged())
    return model


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def lora_parameter_count(config, targets: tuple[str, ...] = ("q_proj", "v_proj"),
                         r: int = 8) -> int:
    """r * (in + out) for every adapted matrix of a Llama with `config`, computed from the
    shapes alone (Llama-2-7B, r = 8 on q and v: 4,194,304)."""
    kv = config.n_kv_heads * config.head_dim
    shapes = {"q_proj": (config.dim, config.dim), "k_proj": (config.dim, kv),
              "v_proj": (config.dim, kv), "o_proj": (config.dim, config.dim),
              "gate_proj": (config.dim, config.ffn_hidden_dim),
              "up_proj": (config.dim, config.ffn_hidden_dim),
              "down_proj": (config.ffn_hidden_dim, config.dim)}
    unknown = set(targets) - set(shapes)
    if unknown:
        raise ValueError(f"unknown targets {sorted(unknown)}; choose from {sorted(shapes)}")
    return config.n_layers * sum(r * (shapes[t][0] + shapes[t][1]) for t in targets)
