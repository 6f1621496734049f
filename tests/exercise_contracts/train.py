"""Lesson 10's checks: the training step and the weight-decay parameter groups."""

import torch
import torch.nn.functional as F

from ._contract import Contract

# ---- the training step ------------------------------------------------------------------


def step_ok(model, optimizer, scheduler, tokens, pad_id, max_norm):
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    logits = model(inputs)                                       # (batch, seq_len, vocab)
    real = targets != pad_id
    loss = F.cross_entropy(logits[real].float(), targets[real])  # mean over real targets
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()
    return loss.item()


def step_ok_ignore_index(model, optimizer, scheduler, tokens, pad_id, max_norm):
    optimizer.zero_grad(set_to_none=True)                        # zeroed first: also right
    targets = tokens[:, 1:].masked_fill(tokens[:, 1:] == pad_id, -100)
    logits = model(tokens)[:, :-1]                               # causal: the same logits
    loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1),
                           ignore_index=-100)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    scheduler.step()
    return loss


def _step(**mistake):
    def step(model, optimizer, scheduler, tokens, pad_id, max_norm):
        from llama_edu.exercises.train import _step as written
        return written(model, optimizer, scheduler, tokens, pad_id, max_norm, **mistake)
    return step


def step_off_by_one(model, optimizer, scheduler, tokens, pad_id, max_norm):
    logits = model(tokens[:, :-1])
    targets = tokens[:, 2:]                                      # two ahead at the end
    real = targets != pad_id
    loss = F.cross_entropy(logits[:, :-1][real].float(), targets[real])
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad()
    return loss.item()


def step_clip_after(model, optimizer, scheduler, tokens, pad_id, max_norm):
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    real = targets != pad_id
    loss = F.cross_entropy(model(inputs)[real], targets[real])
    loss.backward()
    optimizer.step()
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
    scheduler.step()
    optimizer.zero_grad()
    return loss.item()


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
    "check_training_step": Contract(
        references=[step_ok, step_ok_ignore_index], passed="training_step is right",
        mistakes=[
            (_step(shift="none"), "learns to copy"),
            (_step(shift="backwards"), "shift goes the wrong way"),
            (step_off_by_one, "The order is"),
            (_step(loss="pad_targets"), "padding is counted as a target"),
            (_step(loss="all_positions"), "divided by every position"),
            (_step(loss="row_mean"), "averages each row first"),
            (step_clip_after, "unclipped gradients"),
            (_step(clip="value"), "clip_grad_value_ caps every entry"),
            (_step(zero_grad=False), "previous step were still there"),
            (_step(schedule="before"), "the next step's learning rate"),
            (_step(schedule="never"), "never changed"),
            (lambda *a: "low", "as a number"),
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
