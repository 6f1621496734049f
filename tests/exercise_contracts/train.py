"""Lesson 10's checks: the learning-rate schedule and the weight-decay parameter groups."""

import math

from ._contract import Contract

# ---- the schedule -----------------------------------------------------------------------


def schedule_ok(step, peak_lr, warmup, total_steps):
    if step < warmup:
        return peak_lr * (step + 1) / warmup
    min_lr = 0.1 * peak_lr
    progress = min(1.0, (step - warmup) / (total_steps - warmup))
    return min_lr + (peak_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def schedule_from_zero(step, peak_lr, warmup, total_steps):
    if step < warmup:
        return peak_lr * step / warmup
    return schedule_ok(step, peak_lr, warmup, total_steps)


def schedule_to_zero(step, peak_lr, warmup, total_steps):
    if step < warmup:
        return peak_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / (total_steps - warmup))
    return peak_lr * 0.5 * (1 + math.cos(math.pi * progress))


def schedule_linear(step, peak_lr, warmup, total_steps):
    if step < warmup:
        return peak_lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / (total_steps - warmup))
    return 0.1 * peak_lr + 0.9 * peak_lr * (1 - progress)


def schedule_progress_from_start(step, peak_lr, warmup, total_steps):
    if step < warmup:
        return peak_lr * (step + 1) / warmup
    progress = min(1.0, step / total_steps)
    return 0.1 * peak_lr + 0.9 * peak_lr * 0.5 * (1 + math.cos(math.pi * progress))


def schedule_no_clamp(step, peak_lr, warmup, total_steps):
    if step < warmup:
        return peak_lr * (step + 1) / warmup
    progress = (step - warmup) / (total_steps - warmup)
    return 0.1 * peak_lr + 0.9 * peak_lr * 0.5 * (1 + math.cos(math.pi * progress))


# ---- the parameter groups ---------------------------------------------------------------


def groups_ok(model, weight_decay):
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": other, "weight_decay": 0.0}]


def groups_by_name(model, weight_decay):
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    other = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": other, "weight_decay": 0.0}]


def groups_twice(model, weight_decay):
    named = [p for _, p in model.named_parameters(remove_duplicate=False)]
    return [{"params": [p for p in named if p.dim() >= 2], "weight_decay": weight_decay},
            {"params": [p for p in named if p.dim() < 2], "weight_decay": 0.0}]


def groups_no_embeddings(model, weight_decay):
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2 and "embed" not in n]
    other = [p for n, p in model.named_parameters() if p.dim() < 2 or "embed" in n]
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": other, "weight_decay": 0.0}]


def groups_forgot_biases(model, weight_decay):
    return [{"params": [p for p in model.parameters() if p.dim() >= 2],
             "weight_decay": weight_decay},
            {"params": [p for n, p in model.named_parameters() if "norm" in n],
             "weight_decay": 0.0}]


def groups_same_decay(model, weight_decay):
    groups = groups_ok(model, weight_decay)
    groups[1]["weight_decay"] = weight_decay
    return groups


def groups_names(model, weight_decay):
    return [{"params": [n for n, p in model.named_parameters() if p.dim() >= 2],
             "weight_decay": weight_decay},
            {"params": [n for n, p in model.named_parameters() if p.dim() < 2],
             "weight_decay": 0.0}]


CONTRACTS = {
    "check_lr_schedule": Contract(
        references=[schedule_ok], passed="lr_schedule is right",
        mistakes=[
            (schedule_from_zero, "step 0 would not learn"),
            (schedule_to_zero, "decays to 10% of the peak"),
            (schedule_linear, "straight line"),
            (schedule_progress_from_start, "start at the end of warmup"),
            (schedule_no_clamp, "clamp progress at 1"),
            (lambda *a: "fast", "should return a number"),
        ]),
    "check_param_groups": Contract(
        references=[groups_ok], passed="param_groups is right",
        mistakes=[
            (groups_by_name, "not by the name"),
            (groups_twice, "appears twice"),
            (groups_no_embeddings, "embedding table included"),
            (groups_forgot_biases, "in neither group"),
            (groups_same_decay, "weight_decay 0.1 and 0.0"),
            (groups_names, "parameter tensors themselves"),
            (lambda model, wd: model.parameters(), "list of two dicts"),
        ]),
}
