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

`train` runs the loop (matmuls in the chosen precision, see `llama_edu.precision`; data
parallel under torchrun), one `train_step` at a time, with optional `evaluators` (say, the
loss on held-out text of each language), and saves checkpoints with `llama_edu.checkpoint`.
`shift_tokens` turns padded windows of seq_len + 1 ids into inputs and targets.
`quick_train` is the few-line loop the early lessons use to compare variants of a model.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from .checkpoint import checkpoint_files, load_checkpoint, remove_checkpoint, save_checkpoint
from .data import TokenDataset, random_batch
from .model import Llama
from .precision import PRECISIONS, Precision, choose_precision

IGNORE = -100   # a target id the loss skips (padding), F.cross_entropy's ignore_index


def lm_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Mean next-token cross-entropy over the targets that are not IGNORE.
    logits (b, s, vocab), targets (b, s) -> scalar"""
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE)


def shift_tokens(tokens: Tensor, pad_id: int | None = None) -> tuple[Tensor, Tensor]:
    """Windows of seq_len + 1 ids -> (inputs, targets): position t predicts token t + 1, and
    a padding target becomes IGNORE.  tokens (b, s + 1) -> (b, s), (b, s)"""
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    if pad_id is not None:
        targets = targets.masked_fill(targets == pad_id, IGNORE)
    return inputs, targets


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
    """Two AdamW groups: matrices (dim >= 2) decay, vectors (norm gains, biases) do not.

    `model.parameters()` yields a tensor shared by two modules (a tied embedding and head)
    once, so each parameter lands in exactly one group; AdamW refuses a tensor listed twice.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]


def _option(default, help: str, choices: tuple | None = None, cli_default=None):
    """A TrainConfig field with the help text its command-line option shows (llama_edu.cli),
    and where the command's default differs from the function's, that default."""
    return field(default=default, metadata={"help": help, "choices": choices,
                                            "cli_default": cli_default})


@dataclass
class TrainConfig:
    """How to train: the Llama 2 recipe at a size that suits a laptop.

    Every field is also an option of `python -m llama_edu train` (`batch_size` is
    `--batch-size`), with the help text written here.
    """

    steps: int = _option(1000, "optimizer steps")
    batch_size: int = _option(16, "sequences per step (under torchrun: summed over processes)")
    seq_len: int = _option(128, "tokens per training sequence")
    lr: float = _option(3e-3, "the peak learning rate")
    min_lr_ratio: float = _option(0.1, "the cosine decays to this share of the peak")
    warmup: int = _option(100, "steps of linear warmup")
    weight_decay: float = _option(0.1, "AdamW's decoupled weight decay, on matrices only")
    beta1: float = _option(0.9, "AdamW's beta1 (momentum)")
    beta2: float = _option(0.95, "AdamW's beta2 (Llama 2 uses 0.95, not Adam's 0.999)")
    eps: float = _option(1e-5, "AdamW's eps")
    clip: float | None = _option(1.0, "max gradient norm; 0 turns clipping off")
    eval_every: int = _option(100, "steps between validation losses; 0: only at the end")
    eval_batches: int = _option(8, "batches per validation loss")
    save_every: int = _option(0, "steps between checkpoints; 0: only at the end")
    seed: int = _option(0, "seed for the weights and the batches")
    precision: str = _option("fp32", "compute dtype of the matmuls; auto picks bf16 where the "
                                     "hardware runs it fast", choices=PRECISIONS,
                             cli_default="auto")
    compile: bool = _option(False, "run the model through torch.compile (inductor)")

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
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got "
                             f"{self.precision!r}")
        if self.clip == 0:
            self.clip = None
        if self.clip is not None and not self.clip > 0:
            raise ValueError(f"clip must be positive, or 0 or None for no clipping, got "
                             f"{self.clip}")

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
    """What a run recorded: per step loss, lr, gradient norm; per evaluation val loss
    (and, in `val_by`, the value of each of train's `evaluators`)."""

    step: list[int] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)
    lr: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    val_step: list[int] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    val_by: dict[str, list[float]] = field(default_factory=dict)   # train's `evaluators`
    seconds: float = 0.0
    tokens: int = 0

    def record(self, step: int, loss: float, lr: float, grad_norm: float, tokens: int) -> None:
        """One training step (1-based), its batch's loss and `tokens` more tokens seen."""
        if not math.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss} at step {step}; lower --lr or "
                                     "keep clipping on")
        self.step.append(step)
        self.loss.append(loss)
        self.lr.append(lr)
        self.grad_norm.append(grad_norm)
        self.tokens += tokens

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
        for name, values in history.val_by.items():
            self.ax.plot(history.val_step, values, ".--", label=name)
        viz.label(self.ax, self.title, "step", "cross-entropy (nats per token)")
        self.ax.legend()
        if self.handle is not None:
            self.handle.update(self.fig)

    def close(self) -> None:
        import matplotlib.pyplot as plt

        plt.close(self.fig)


@torch.no_grad()
def evaluate(model: nn.Module, data: TokenDataset, config: TrainConfig,
             device: torch.device, split: str = "val", precision: Precision | None = None
             ) -> float:
    """Mean loss over `eval_batches` fixed random windows (the same ones every time), with
    the matmuls in `precision` (default: the config's) and the loss in fp32."""
    precision = precision or choose_precision(config.precision, device)
    was_training = model.training
    model.eval()
    generator = torch.Generator().manual_seed(config.seed + 1)
    seq_len = min(config.seq_len, len(data.val if split == "val" else data.train) - 2)
    losses = []
    for _ in range(max(1, config.eval_batches)):
        x, y = data.batch(split, config.batch_size, seq_len, generator)
        with precision.autocast():
            logits = model(x.to(device))
        losses.append(lm_loss(logits.float(), y.to(device)).item())
    model.train(was_training)
    return sum(losses) / len(losses)


def _distributed() -> tuple[int, int]:
    """(rank, world_size) of the process group, (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def train_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: Tensor, y: Tensor,
               lr: float, clip: float | None, precision: Precision | None = None,
               scaler: torch.amp.GradScaler | None = None) -> tuple[Tensor, float]:
    """One update at learning rate `lr`: forward, loss, backward, clip, AdamW step.

    x, y: (batch, seq_len) inputs and targets. The matmuls run in `precision` (default
    fp32); the loss, the weights and AdamW's moments stay fp32. With fp16 a `scaler`
    multiplies the loss before backward so that small gradients do not underflow, and
    divides the gradients again before clipping. -> (the loss, detached; the gradient
    norm before clipping)
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    with (precision.autocast() if precision is not None else contextlib.nullcontext()):
        logits = model(x)
    loss = lm_loss(logits.float(), y)                      # the loss in fp32
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)                         # true gradients, for clipping
    else:
        loss.backward()
    max_norm = clip if clip is not None else float("inf")
    grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), max_norm))
    if scaler is not None:
        scaler.step(optimizer)                             # skipped if a gradient overflowed
        scaler.update()
    else:
        optimizer.step()
    return loss.detach(), grad_norm


def _check_setup(model: Llama, config: TrainConfig) -> tuple[int, int]:
    """(rank, world_size), after checking that the config suits the model and processes."""
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if config.seq_len > model.config.max_seq_len:
        raise ValueError(f"seq_len ({config.seq_len}) exceeds the model's max_seq_len "
                         f"({model.config.max_seq_len}); use a shorter --seq-len")
    rank, world = _distributed()
    if config.batch_size % world:
        raise ValueError(f"batch_size ({config.batch_size}) must be divisible by the number "
                         f"of processes ({world})")
    return rank, world


def _prepare_out(out: str | os.PathLike, resume: bool, overwrite: bool, main: bool,
                 tokenizer_model: str | os.PathLike | None) -> None:
    """Refuse to write over another run in `out` unless told to; then clear it."""
    if resume and overwrite:
        raise ValueError("resume and overwrite contradict each other; pick one")
    existing = [] if resume else checkpoint_files(out)
    if existing and not overwrite:
        raise FileExistsError(f"{str(out)!r} already holds a checkpoint ({', '.join(existing)})"
                              "; pass resume=True to continue it or overwrite=True to replace it")
    if existing and tokenizer_model is not None and Path(tokenizer_model).resolve() in {
            (Path(out) / name).resolve() for name in existing}:
        raise ValueError(f"the tokenizer {str(tokenizer_model)!r} is a file of the checkpoint "
                         "that overwriting would delete; copy it elsewhere first")
    if existing and main:
        remove_checkpoint(out)


def _resume(out: str | os.PathLike | None, model: Llama, optimizer: torch.optim.Optimizer,
            generator: torch.Generator, config: TrainConfig) -> tuple[History, int]:
    """Load the run saved in `out` into model, optimizer and sampler: (history, next step)."""
    if out is None:
        raise ValueError("resume needs the checkpoint directory `out`")
    state = load_checkpoint(out, model, optimizer, generator)
    saved = TrainConfig(**state["train_config"])
    if saved != config:
        changed = [f.name for f in dataclasses.fields(config)
                   if getattr(saved, f.name) != getattr(config, f.name)]
        raise ValueError(f"resume needs the same training settings; these differ from "
                         f"the checkpoint: {changed}")
    return History.from_dict(state["history"]), state["step"]


def _local_batch(data: TokenDataset, config: TrainConfig, generator: torch.Generator,
                 rank: int, world: int) -> tuple[Tensor, Tensor]:
    """Every process draws the same global batch and keeps its own slice of the rows."""
    x, y = random_batch(data.train, config.batch_size, config.seq_len, generator)
    local = config.batch_size // world
    return x[rank * local:(rank + 1) * local], y[rank * local:(rank + 1) * local]


def _global_mean(loss: Tensor, world: int) -> float:
    """The loss averaged over the processes (the loss of the global batch)."""
    if world > 1:
        loss = loss.clone()
        dist.all_reduce(loss)
        loss /= world
    return float(loss)


def _run_evaluators(model: nn.Module, evaluators: dict, history: History) -> None:
    model.eval()
    with torch.no_grad():
        for name, fn in evaluators.items():
            history.val_by.setdefault(name, []).append(float(fn(model)))
    model.train()


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


class _Progress:
    """What rank 0 shows while training: a tqdm bar and, in a notebook, a live plot."""

    def __init__(self, total: int, initial: int, bar: bool, plot: bool):
        self.bar = self.plot = None
        if bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=initial, desc="training", unit="step")
        if plot:
            self.plot = LivePlot()

    def update(self, history: History, evaluated: bool) -> None:
        if evaluated and self.plot is not None:
            self.plot.update(history)
        if self.bar is not None:
            postfix = {"loss": f"{history.loss[-1]:.3f}"}
            if history.val_loss:
                postfix["val"] = f"{history.val_loss[-1]:.3f}"
            self.bar.update(1)
            self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.plot is not None:
            self.plot.close()


def train(model: Llama, data: TokenDataset, config: TrainConfig, out: str | os.PathLike |
          None = None, resume: bool = False, progress: bool = True, live_plot: bool = False,
          save_optimizer: bool = True, extra_state: dict | None = None,
          tokenizer_model: str | os.PathLike | None = None,
          overwrite: bool = False, evaluators: dict | None = None) -> History:
    """Train `model` on `data` with the Llama 2 recipe; returns the run's History.

    out: a checkpoint directory (llama_edu.checkpoint), written every `save_every` steps
    and at the end by rank 0, with `tokenizer_model` (a SentencePiece file) stored beside
    the weights. A folder that already holds a checkpoint is refused unless `resume`
    (continue that run, with the same configs: the batches, weights and optimizer moments
    carry on as if never stopped) or `overwrite` (delete it first). Under torchrun (a
    process group initialised, e.g. by `llama_edu.parallel.init_distributed`) the model is
    wrapped in DistributedDataParallel and each rank takes its slice of the same global batch.
    evaluators: {name: fn(model) -> float} run beside each validation loss (in eval mode,
    without gradients), e.g. the loss on held-out text of one language; -> History.val_by.
    """
    rank, world = _check_setup(model, config)
    main = rank == 0
    device = next(model.parameters()).device
    generator = torch.Generator().manual_seed(config.seed)    # draws the batches
    optimizer = make_optimizer(model, config)
    history, start = History(), 0
    if out is not None:
        _prepare_out(out, resume, overwrite, main, tokenizer_model)
    if resume:
        history, start = _resume(out, model, optimizer, generator, config)
    net = model
    if world > 1:
        net = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    if config.compile:
        net = torch.compile(net)
    precision = choose_precision(config.precision, device)
    scaler = precision.grad_scaler()
    if progress and main:
        print(f"precision: {precision}", flush=True)

    def checkpoint(step: int) -> None:
        if out is not None and main:
            state = {"step": step, "train_config": dataclasses.asdict(config),
                     "history": history.to_dict(), **(extra_state or {})}
            save_checkpoint(out, model, optimizer, state, generator, save_optimizer,
                            tokenizer_model)

    shown = _Progress(config.steps, start, progress and main, live_plot and main)
    model.train()
    try:
        for step in range(start, config.steps):
            began = time.perf_counter()
            x, y = _local_batch(data, config, generator, rank, world)
            lr = config.lr_at(step)
            loss, grad_norm = train_step(net, optimizer, x.to(device), y.to(device), lr,
                                         config.clip, precision, scaler)
            history.record(step + 1, _global_mean(loss, world), lr, grad_norm,
                           config.batch_size * config.seq_len)
            last = step + 1 == config.steps
            evaluated = _due(step + 1, config.eval_every) or last
            if evaluated:
                history.val_step.append(step + 1)
                history.val_loss.append(evaluate(model, data, config, device,
                                                 precision=precision))
                _run_evaluators(model, evaluators or {}, history)
            shown.update(history, evaluated)
            history.seconds += time.perf_counter() - began      # saving is not counted
            if _due(step + 1, config.save_every) or last:
                checkpoint(step + 1)
    finally:
        shown.close()
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
