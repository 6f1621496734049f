"""Training a small Llama (lesson 10).

Next-token cross-entropy, AdamW (Loshchilov & Hutter, 2019), linear warmup, gradient
clipping. `quick_train` is the few-line loop the early lessons use to compare variants of
the same model on the same data and budget.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .data import random_batch


def lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean next-token cross-entropy.  logits (b, s, vocab), targets (b, s) -> scalar"""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


def quick_train(model: nn.Module, tokens: Tensor, steps: int, batch_size: int = 16,
                seq_len: int = 64, lr: float = 3e-3, warmup: int = 0, clip: float | None = 1.0,
                weight_decay: float = 0.0, seed: int = 0) -> list[float]:
    """Train on random windows of a token stream; returns the loss of every step.

    The learning rate rises linearly over `warmup` steps and then stays at `lr`. A
    non-finite loss stops the run early (the list is then shorter than `steps`).
    """
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95),
                                  weight_decay=weight_decay)
    model.train()
    losses = []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / warmup) if warmup else lr
        x, y = random_batch(tokens, batch_size, seq_len, generator)
        loss = lm_loss(model(x.to(device)), y.to(device))
        if not torch.isfinite(loss):
            break
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip is not None:
            nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    return losses
