"""Training a small Llama (lesson 10).

The objective is next-token cross-entropy. The recipe is Llama 2's (Touvron et al., 2023,
section 2.2): AdamW (Loshchilov & Hutter, 2019) with beta1 = 0.9, beta2 = 0.95,
eps = 1e-5 and weight decay 0.1; a linear warmup, then cosine decay to 10% of the peak
learning rate; gradient clipping at norm 1.0.

    lr(t) = peak * (t + 1) / warmup                                   t < warmup
    lr(t) = min + (peak - min) * (1 + cos(pi * (t - warmup) / (T - warmup))) / 2,
            min = 0.1 * peak                                          otherwise

Weight decay goes to the weight matrices (every parameter with two or more dimensions,
the embedding table and the output head included) and not to the RMSNorm gains: a gain
rescales a normalised activation, so pulling it towards zero fights the normalisation
itself, and the gains are too few to overfit with.

`train` runs the loop (bf16 autocast on CUDA, fp32 on CPU; data parallel under torchrun)
and saves checkpoints with `llama_edu.checkpoint`. `quick_train` is the few-line loop the
early lessons use to compare variants of a model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import load_checkpoint, save_checkpoint
from .data import TokenDataset, random_batch
from .model import Llama


def lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean next-token cross-entropy.  logits (b, s, vocab), targets (b, s) -> scalar"""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())


# ---------------------------------------------------------------------------------------
# The recipe: schedule, parameter groups, optimizer


def lr_at(step: int, peak_lr: float, warmup: int, total_steps: int,
          min_ratio: float = 0.1) -> float:
    """Learning rate of step `step` (0-based): linear warmup, then cosine to min_ratio * peak."""
    if step < warmup:
        return peak_lr * (step + 1) / warmup
    min_lr = min_ratio * peak_lr
    decay_steps = max(1, total_steps - warmup)
    progress = min(1.0, (step - warmup) / decay_steps)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float = 0.1) -> list[dict]:
    """Two AdamW groups: matrices (dim >= 2) decay, vectors (norm gains, biases) do not."""
    decay, no_decay, seen = [], [], set()
    for param in model.parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))                     # a tied embedding / head counts once
        (decay if param.dim() >= 2 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


@dataclass
class TrainConfig:
    """How to train: the Llama 2 recipe at a size that suits a laptop."""

    steps: int = 1000
    batch_size: int = 16            # sequences per step (the global batch under torchrun)
    seq_len: int = 128
    lr: float = 3e-3                # the peak learning rate
    min_lr_ratio: float = 0.1       # cosine decays to 10% of the peak (Llama 2)
    warmup: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-5
    clip: float | None = 1.0        # max gradient norm; None: no clipping
    eval_every: int = 100           # steps between validation losses (0: only at the end)
    eval_batches: int = 8
    save_every: int = 0             # steps between checkpoints (0: only at the end)
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size", "seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        for name in ("warmup", "eval_every", "eval_batches", "save_every"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be zero or positive, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"clip must be positive or None, got {self.clip}")

    def lr_at(self, step: int) -> float:
        return lr_at(step, self.lr, self.warmup, self.steps, self.min_lr_ratio)


def make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW with Llama 2's betas and eps, weight decay on the matrices only."""
    return torch.optim.AdamW(param_groups(model, config.weight_decay), lr=config.lr,
                             betas=(config.beta1, config.beta2), eps=config.eps)


# ---------------------------------------------------------------------------------------
# The loop


@dataclass
class History:
    """What a run recorded: per step loss, lr, gradient norm; per evaluation val loss."""

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    val_step: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    seconds: float = 0.0
    tokens: int = 0

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> History:
        return cls(**values)


class LivePlot:
    """A loss plot that redraws in place in a notebook (a no-op elsewhere)."""

    def __init__(self, title: str = "Training loss"):
        from IPython.display import display

        from . import viz

        self.fig, self.ax = viz.figure(height=3.2)
        self.title = title
        self.handle = display(self.fig, display_id=True)

    def update(self, history: History) -> None:
        from . import viz

        self.ax.clear()
        self.ax.plot(history.step, history.loss, lw=0.8, alpha=0.6, label="training batch")
        if history.val_step:
            self.ax.plot(history.val_step, history.val_loss, "o-", label="validation")
        viz.label(self.ax, self.title, "step", "cross-entropy (nats per token)")
        self.ax.legend()
        if self.handle is not None:
            self.handle.update(self.fig)

    def close(self) -> None:
        import matplotlib.pyplot as plt

        plt.close(self.fig)


@torch.no_grad()
def evaluate(model: nn.Module, data: TokenDataset, config: TrainConfig,
             device: torch.device, split: str = "val") -> float:
    """Mean loss over `eval_batches` fixed random windows (the same ones every time)."""
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(config.seed + 1)
    seq_len = min(config.seq_len, len(data.val if split == "val" else data.train) - 2)
    losses = []
    for _ in range(max(1, config.eval_batches)):
        x, y = data.batch(split, config.batch_size, seq_len, generator)
        with _autocast(device):
            losses.append(lm_loss(model(x.to(device)), y.to(device)).item())
    model.train(was_training)
    return sum(losses) / len(losses)


def _autocast(device: torch.device):
    """bf16 autocast on CUDA; plain fp32 elsewhere."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _distributed() -> tuple[int, int]:
    """(rank, world_size) of the process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train(model: Llama, data: TokenDataset, config: TrainConfig, out: str | os.PathLike |
          None = None, resume: bool = False, progress: bool = True, live_plot: bool = False,
          save_optimizer: bool = True, extra_state: dict | None = None,
          tokenizer_model: str | os.PathLike | None = None) -> History:
    """Train `model` on `data` with the Llama 2 recipe; returns the run's History.

    out: a checkpoint directory (llama_edu.checkpoint), written every `save_every` steps
    and at the end (by rank 0 only), with `tokenizer_model` (a SentencePiece file) stored
    beside the weights. resume: continue the run saved in `out` (same configs; the
    batches, weights and optimizer moments carry on as if never stopped). Under torchrun
    (a process group initialised, e.g. by `llama_edu.parallel.init_distributed`) the model
    is wrapped in DistributedDataParallel and each rank takes its slice of the same global
    batch.
    """
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if config.seq_len > model.config.max_seq_len:
        raise ValueError(f"seq_len ({config.seq_len}) exceeds the model's max_seq_len "
                         f"({model.config.max_seq_len}); use a shorter --seq-len")
    rank, world = _distributed()
    if config.batch_size % world:
        raise ValueError(f"batch_size ({config.batch_size}) must be divisible by the number "
                         f"of processes ({world})")
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(config.seed)
    optimizer = make_optimizer(model, config)
    history, start = History(), 0
    if resume:
        if out is None:
            raise ValueError("resume needs the checkpoint directory `out`")
        state = load_checkpoint(out, model, optimizer, generator)
        saved = TrainConfig(**state["train_config"])
        if saved != config:
            changed = [f.name for f in dataclasses.fields(config)
                       if getattr(saved, f.name) != getattr(config, f.name)]
            raise ValueError(f"resume needs the same training settings; these differ from "
                             f"the checkpoint: {changed}")
        history, start = History.from_dict(state["history"]), state["step"]

    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    main = rank == 0
    local = config.batch_size // world
    plot = LivePlot() if live_plot and main else None
    bar = None
    if progress and main:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, initial=start, desc="training", unit="step")

    def checkpoint(step: int) -> None:
        if out is not None and main:
            state = {"step": step, "train_config": dataclasses.asdict(config),
                     "history": history.to_dict(), **(extra_state or {})}
            save_checkpoint(out, model, optimizer, state, generator, save_optimizer,
                            tokenizer_model)

    model.train()
    began = time.perf_counter()
    for step in range(start, config.steps):
        lr = config.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        x, y = random_batch(data.train, config.batch_size, config.seq_len, generator)
        x, y = x[rank * local:(rank + 1) * local], y[rank * local:(rank + 1) * local]
        with _autocast(device):
            loss = lm_loss(net(x.to(device)), y.to(device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = config.clip if config.clip is not None else float("inf")
        grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), clip))
        optimizer.step()

        loss_value = loss.detach()
        if world > 1:                                   # the global batch's mean loss
            dist.all_reduce(loss_value)
            loss_value /= world
        history.step.append(step + 1)
        history.loss.append(float(loss_value))
        history.lr.append(lr)
        history.grad_norm.append(grad_norm)
        history.tokens += config.batch_size * config.seq_len
        if not math.isfinite(history.loss[-1]):
            raise FloatingPointError(f"the loss became {history.loss[-1]} at step {step + 1}; "
                                     "lower --lr or keep clipping on")
        last = step + 1 == config.steps
        if (config.eval_every and (step + 1) % config.eval_every == 0) or last:
            history.val_step.append(step + 1)
            history.val_loss.append(evaluate(model, data, config, device))
            if plot is not None:
                plot.update(history)
        if bar is not None:
            bar.update(1)
            postfix = {"loss": f"{history.loss[-1]:.3f}"}
            if history.val_loss:
                postfix["val"] = f"{history.val_loss[-1]:.3f}"
            bar.set_postfix(postfix, refresh=False)
        history.seconds += time.perf_counter() - began
        began = time.perf_counter()
        if (config.save_every and (step + 1) % config.save_every == 0) or last:
            checkpoint(step + 1)
    if bar is not None:
        bar.close()
    if plot is not None:
        plot.close()
    model.eval()
    return history


# ---------------------------------------------------------------------------------------
# The early lessons' loop


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
