"""Checks for lesson 10: the learning-rate schedule and the weight-decay parameter groups."""

from __future__ import annotations

import math
import numbers

import torch
from torch import nn

from ..train import lr_at
from ._common import call, expect, passed

__all__ = ["check_lr_schedule", "check_param_groups"]


# ---------------------------------------------------------------------------------------
# The schedule


def _variants(step: int, peak: float, warmup: int, total: int) -> dict[str, float]:
    """What the classic mistakes return, to name the one a learner made."""
    min_lr = 0.1 * peak
    progress = min(1.0, max(0.0, (step - warmup) / max(1, total - warmup)))
    return {
        "no_floor": lr_at(step, peak, warmup, total, min_ratio=0.0),
        "linear": peak * (step + 1) / warmup if step < warmup
        else min_lr + (peak - min_lr) * (1 - progress),
        "from_zero": peak * step / warmup if step < warmup else lr_at(step, peak, warmup, total),
        "progress_from_start": lr_at(step, peak, warmup, total) if step < warmup
        else min_lr + (peak - min_lr) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total))),
    }


def check_lr_schedule(fn) -> None:
    """fn(step, peak_lr, warmup, total_steps) -> the learning rate of step `step` (0-based):
    peak * (step + 1) / warmup during warmup, then cosine from the peak to 10% of it at
    total_steps, and 10% of the peak after that."""
    settings = [(3e-3, 10, 100), (1.0, 4, 20), (6e-4, 1, 7)]
    for peak, warmup, total in settings:
        for step in list(range(total + 3)):
            what = f"lr_schedule({step}, peak_lr={peak}, warmup={warmup}, total_steps={total})"
            out = call(fn, step, peak, warmup, total, what=what)
            if isinstance(out, torch.Tensor) and out.numel() == 1:
                out = out.item()
            expect(isinstance(out, numbers.Real),
                   f"{what} should return a number, got {type(out).__name__}")
            ref = lr_at(step, peak, warmup, total)
            if math.isclose(out, ref, rel_tol=1e-6, abs_tol=1e-12):
                continue
            got = f"{what} returned {out:.6g}, expected {ref:.6g}"
            close = {name: math.isclose(out, value, rel_tol=1e-6, abs_tol=1e-12)
                     for name, value in _variants(step, peak, warmup, total).items()}
            if step < warmup and close["from_zero"]:
                raise AssertionError(f"{got}: the warmup starts at 0, so step 0 would not "
                                     "learn at all; use peak * (step + 1) / warmup")
            if step < warmup:
                raise AssertionError(f"{got}: during warmup the rate rises linearly, "
                                     "peak * (step + 1) / warmup, reaching the peak at "
                                     "step warmup - 1")
            if close["no_floor"]:
                raise AssertionError(f"{got}: the decay goes to 0; Llama 2 decays to 10% of "
                                     "the peak: min_lr + (peak - min_lr) * ...")
            if close["linear"]:
                raise AssertionError(f"{got}: the decay is a straight line; use the cosine "
                                     "0.5 * (1 + cos(pi * progress))")
            if close["progress_from_start"]:
                raise AssertionError(f"{got}: progress should start at the end of warmup: "
                                     "(step - warmup) / (total_steps - warmup)")
            if step >= total:
                raise AssertionError(f"{got}: after total_steps the rate should stay at the "
                                     "minimum, 10% of the peak; clamp progress at 1")
            if out > peak * (1 + 1e-9) or out < 0:
                raise AssertionError(f"{got}: the rate left the range [0, peak]; check the "
                                     "0.5 * (1 + cos(...)) factor")
            raise AssertionError(f"{got}; check the cosine part against the formula above")
    passed("lr_schedule is right: linear warmup, cosine decay to 10% of the peak, then flat")


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
