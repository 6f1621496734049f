"""Checks for lesson 10: the training step and the weight-decay parameter groups."""

from __future__ import annotations

import math
import numbers
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ..numerics import model_shape, tolerance
from ..train import lr_at, shift_tokens, train_step
from ._common import call, expect, passed, rng

__all__ = ["check_training_step", "check_param_groups"]


# ---------------------------------------------------------------------------------------
# The training step


def _step(model, optimizer, scheduler, tokens, pad_id, max_norm, *, shift="ok", loss="ok",
          clip="ok", zero_grad=True, schedule="ok") -> float:
    """One update as written right (all "ok") or with one classic mistake, to name it."""
    if shift == "none":
        inputs, targets = tokens[:, :-1], tokens[:, :-1]
    elif shift == "backwards":
        inputs, targets = tokens[:, 1:], tokens[:, :-1]
    else:
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
    logits = model(inputs).float()                                       # (b, s, vocab)
    each = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
    real = (targets != pad_id).flatten().float()
    value = {"ok": (each * real).sum() / real.sum(), "pad_targets": each.mean(),
             "all_positions": (each * real).sum() / real.numel(),
             "row_mean": ((each * real).view(targets.shape).sum(1)
                          / real.view(targets.shape).sum(1).clamp(min=1)).mean()}[loss]
    if schedule == "before":
        with warnings.catch_warnings():           # torch warns about this order, rightly
            warnings.simplefilter("ignore")
            scheduler.step()
    value.backward()
    if clip == "ok":
        nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    elif clip == "value":
        nn.utils.clip_grad_value_(model.parameters(), max_norm)
    optimizer.step()
    if schedule == "ok":
        scheduler.step()
    if zero_grad:
        optimizer.zero_grad()
    return float(value.detach())


_STEP_MISTAKES = {   # how each mistake is written, and what the learner reads
    "no_shift": (dict(shift="none"), "the targets are the inputs themselves, so the model "
                 "learns to copy: position t predicts token t + 1, so inputs = tokens[:, :-1] "
                 "and targets = tokens[:, 1:]"),
    "backwards": (dict(shift="backwards"), "the shift goes the wrong way (the model predicts "
                  "the previous token): inputs = tokens[:, :-1], targets = tokens[:, 1:]"),
    "pad_targets": (dict(loss="pad_targets"), "padding is counted as a target: leave out the "
                    "targets equal to pad_id (F.cross_entropy(..., ignore_index=-100) with "
                    "those targets set to -100, or drop them) so the loss averages over real "
                    "tokens only"),
    "all_positions": (dict(loss="all_positions"), "the padded targets are left out of the sum "
                      "but the loss is divided by every position, padding included: divide by "
                      "the number of real target tokens"),
    "row_mean": (dict(loss="row_mean"), "the loss averages each row first and then the rows, "
                 "so a short row weighs as much as a long one: average over all real target "
                 "tokens of the batch together"),
    "no_clip": (dict(clip="none"), "the update used unclipped gradients: clip with "
                "torch.nn.utils.clip_grad_norm_ between loss.backward() and optimizer.step() "
                "(clipping after the step, or not at all, changes nothing)"),
    "clip_value": (dict(clip="value"), "clip_grad_value_ caps every entry on its own; Llama "
                   "clips the global norm of all gradients: clip_grad_norm_(params, max_norm)"),
    "no_zero_grad": (dict(zero_grad=False), "the first step is right but later ones are not: "
                     "the gradients of the previous step were still there and backward() adds "
                     "to them; call optimizer.zero_grad() once per step"),
    "schedule_before": (dict(schedule="before"), "scheduler.step() ran before "
                        "optimizer.step(), so the update used the next step's learning rate; "
                        "step the scheduler after the optimizer"),
    "schedule_never": (dict(schedule="never"), "the learning rate never changed: call "
                       "scheduler.step() once per step, after optimizer.step()"),
}


def _step_cases() -> list[tuple[str, torch.Tensor, int, float]]:
    """(what, tokens, pad_id, max_norm): real shapes, padding, a batch of one, clipping on
    and off."""
    generator = rng(30)
    cases = []
    for what, batch, seq_len, lengths, max_norm in (
            ("4 windows of 16 tokens, no padding, clipping at 0.05", 4, 16, None, 0.05),
            ("4 windows, padded after 17, 12, 5 and 9 real tokens, clipping at 0.05", 4, 16,
             (17, 12, 5, 9), 0.05),
            ("1 window padded after 6 tokens, clipping at 100 (never active)", 1, 12, (6,),
             100.0)):
        tokens = torch.randint(1, 256, (batch, seq_len + 1), generator=generator)
        for row, length in enumerate(lengths or ()):
            tokens[row, length:] = 0
        cases.append((what, tokens, 0, max_norm))
    return cases


def _setup(seed: int):
    """A micro Llama, SGD with momentum (rounding is not magnified as by Adam's 1/sqrt(v))
    and a warmup schedule that changes the rate every step."""
    from ..model import Llama, LlamaConfig

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Llama(LlamaConfig.from_preset("micro"))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_at(s, 1.0, 3, 6))
    return model, optimizer, scheduler


_STEPS = 2   # a stale gradient or a schedule left standing shows at the second call


def _trajectory(run, seed: int) -> tuple[list, list[torch.Tensor]]:
    """Losses returned and flat weights after each of _STEPS calls of run(model, opt, sched)."""
    model, optimizer, scheduler = _setup(seed)
    losses, weights = [], []
    for step in range(_STEPS):
        losses.append(run(model, optimizer, scheduler, step))
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    return losses, weights


def _reference_step(model, optimizer, scheduler, tokens, pad_id, max_norm) -> float:
    """llama_edu.train's step: shift, loss over real targets, clip, update; then the schedule."""
    inputs, targets = shift_tokens(tokens, pad_id)
    loss, _ = train_step(model, optimizer, inputs, targets, scheduler.get_last_lr()[0],
                         max_norm)
    scheduler.step()
    return float(loss)


def _as_number(value, what: str) -> float:
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        value = value.item()
    expect(isinstance(value, numbers.Real) and not isinstance(value, bool),
           f"{what} should return the batch's loss as a number (loss.item()), got "
           f"{type(value).__name__}")
    return float(value)


def _first_difference(losses, weights, ref_losses, ref_weights, loss_tol, weight_tol):
    """(step, 'loss' or 'weights') where a trajectory leaves the reference, or None."""
    for step in range(_STEPS):
        if not math.isclose(losses[step], ref_losses[step], rel_tol=loss_tol["rtol"]):
            return step, "loss"
        if not torch.allclose(weights[step], ref_weights[step], rtol=0,
                              atol=weight_tol[step]):
            return step, "weights"
    return None


def _check_case(fn, what: str, tokens: torch.Tensor, pad_id: int, max_norm: float,
                seed: int) -> None:
    """_STEPS calls of the learner's step against as many of llama_edu.train's, same seed."""
    from ..model import LlamaConfig

    shape = model_shape(LlamaConfig.from_preset("micro"))
    ref_losses, ref_weights = _trajectory(
        lambda m, o, s, _: _reference_step(m, o, s, tokens, pad_id, max_norm), seed)

    def learner(model, optimizer, scheduler, step):
        out = call(fn, model, optimizer, scheduler, tokens.clone(), pad_id, max_norm,
                   what=f"{what} (call {step + 1})")
        return _as_number(out, what)

    losses, weights = _trajectory(learner, seed)
    # rounding: the loss is a mean over the targets of logits from `depth` chained
    # reductions; each step moves the weights by lr * (momentum buffer), a sum of gradients
    # that carry the same relative rounding, so the weights may differ by that share of
    # the distance they moved in all
    loss_tol = tolerance(torch.float32, reduction=max(shape["reduction"], 256, tokens.numel()),
                         depth=shape["depth"])
    start = torch.cat([p.detach().flatten() for p in _setup(seed)[0].parameters()])
    moves = [float((b - a).abs().max())
             for a, b in zip([start, *ref_weights[:-1]], ref_weights, strict=True)]
    weight_tol = [loss_tol["rtol"] * max(sum(moves[:i + 1]), 1e-12) for i in range(_STEPS)]
    where = _first_difference(losses, weights, ref_losses, ref_weights, loss_tol, weight_tol)
    if where is None:
        return
    step, part = where
    got = (f"{what}: call {step + 1} " + (
        f"returned the loss {losses[step]:.5f}, expected {ref_losses[step]:.5f}"
        if part == "loss" else "left the weights off by up to "
        f"{float((weights[step] - ref_weights[step]).abs().max()):.3g} (rounding allows "
        f"{weight_tol[step]:.2g})"))
    for flags, message in _STEP_MISTAKES.values():
        wrong = _trajectory(
            lambda m, o, s, _, f=flags: _step(m, o, s, tokens, pad_id, max_norm, **f), seed)
        if _first_difference(losses, weights, *wrong, loss_tol, weight_tol) is None:
            raise AssertionError(f"{got}: {message}")
    raise AssertionError(f"{got}. The order is: shift, forward, loss over the real targets, "
                         "backward, clip_grad_norm_, optimizer.step(), scheduler.step(), "
                         "optimizer.zero_grad()")


def check_training_step(fn) -> None:
    """fn(model, optimizer, scheduler, tokens, pad_id, max_norm) -> the batch's loss: one
    training step on token windows (batch, seq_len + 1) whose short rows end in pad_id. It
    is compared, call by call and weight by weight, with llama_edu.train's train_step on the
    same model, seed and batch."""
    for k, (what, tokens, pad_id, max_norm) in enumerate(_step_cases()):
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=rng(31 + k)))
        _check_case(fn, f"training_step on {what}", tokens, pad_id, max_norm, seed)
    passed("training_step is right: shifted loss over the real tokens, clipped global norm, "
           "optimizer then schedule, fresh gradients every step")


# ---------------------------------------------------------------------------------------
# The parameter groups


class _Toy(nn.Module):
    """Two linear layers, an embedding tied to the head, and norm gains: a small Llama."""

    def __init__(self, tied: bool):
        super().__init__()
        from ..norms import RMSNorm

        self.embed_tokens = nn.Embedding(11, 6)
        self.proj = nn.Linear(6, 6, bias=True)
        self.norm = RMSNorm(6)
        self.lm_head = nn.Linear(6, 11, bias=False)
        if tied:
            self.lm_head.weight = self.embed_tokens.weight


def check_param_groups(fn) -> None:
    """fn(model, weight_decay) -> [{"params": [...], "weight_decay": weight_decay},
    {"params": [...], "weight_decay": 0.0}]: every matrix (dim >= 2, embeddings included)
    decays; vectors (norm gains, biases) do not; each parameter appears exactly once."""
    for tied in (False, True):
        model = _Toy(tied)
        what = f"param_groups(model{' with a tied embedding' if tied else ''}, 0.1)"
        groups = call(fn, model, 0.1, what=what)
        expect(isinstance(groups, (list, tuple)) and len(groups) == 2
               and all(isinstance(g, dict) for g in groups),
               f"{what} should return a list of two dicts (one with decay, one without), "
               f"got {type(groups).__name__}"
               + (f" of length {len(groups)}" if isinstance(groups, (list, tuple)) else ""))
        for group in groups:
            expect("params" in group and "weight_decay" in group,
                   f"{what}: each group needs the keys 'params' and 'weight_decay', got "
                   f"{sorted(group)}")
        decay_values = sorted(float(g["weight_decay"]) for g in groups)
        expect(decay_values == [0.0, 0.1],
               f"{what}: the two groups should have weight_decay 0.1 and 0.0, got "
               f"{decay_values}")
        decayed = next(g for g in groups if g["weight_decay"] > 0)
        plain = next(g for g in groups if g["weight_decay"] == 0)
        names = {id(p): n for n, p in model.named_parameters()}
        listed = [p for g in groups for p in g["params"]]
        expect(all(isinstance(p, torch.Tensor) for p in listed),
               f"{what}: 'params' should hold the parameter tensors themselves (use "
               "model.parameters() or named_parameters()), not their names")
        ids = [id(p) for p in listed]
        if len(ids) != len(set(ids)):
            raise AssertionError(f"{what}: a parameter appears twice. The embedding and the head "
                                 "share one matrix here; collect parameters once "
                                 "(model.parameters() already skips repeats)")
        missing = [n for i, n in names.items() if i not in ids]
        expect(not missing, f"{what}: {missing} are in neither group; every parameter must "
                            "be trained")
        wrongly_decayed = [names[id(p)] for p in decayed["params"] if p.dim() < 2]
        if wrongly_decayed:
            raise AssertionError(f"{what}: {wrongly_decayed} decay, but they are vectors (norm "
                                 "gains, biases). Pulling a norm gain to 0 fights the "
                                 "normalisation; decide by p.dim() >= 2, not by the name "
                                 "'weight'")
        not_decayed = [names[id(p)] for p in plain["params"] if p.dim() >= 2]
        if not_decayed:
            raise AssertionError(f"{what}: the matrices {not_decayed} do not decay; in this "
                                 "course every parameter with two or more dimensions decays, "
                                 "the embedding table included")
        try:
            torch.optim.AdamW(groups, lr=1e-3)
        except Exception as error:
            raise AssertionError(f"{what}: torch.optim.AdamW does not accept these groups "
                                 f"({error})") from None
    passed("param_groups is right: matrices decay, norm gains and biases do not, shared "
           "weights appear once")
