"""Lesson 13's checks: SFT's answer-only labels, and a LoRA layer's forward."""

import torch

from ._contract import Contract

IGNORE = -100

# ---- SFT labels -------------------------------------------------------------------------


def sft_labels_ok(pairs, pad_id):
    longest = max(len(p) + len(a) for p, a in pairs)
    ids = torch.full((len(pairs), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(pairs), longest), IGNORE, dtype=torch.long)
    for row, (prompt, answer) in enumerate(pairs):
        n = len(prompt) + len(answer)
        ids[row, :n] = torch.tensor(prompt + answer)
        labels[row, len(prompt):n] = torch.tensor(answer)
    return ids, labels


def sft_labels_lists(pairs, pad_id):          # padding row by row, then one tensor
    longest = max(len(p) + len(a) for p, a in pairs)
    rows, marks = [], []
    for prompt, answer in pairs:
        rest = longest - len(prompt) - len(answer)
        rows.append(prompt + answer + [pad_id] * rest)
        marks.append([IGNORE] * len(prompt) + answer + [IGNORE] * rest)
    return torch.tensor(rows), torch.tensor(marks)


def _with_prompt(pairs, labels):
    labels = labels.clone()
    for row, (prompt, _) in enumerate(pairs):
        labels[row, :len(prompt)] = torch.tensor(prompt)
    return labels


def sft_labelled_padding(pairs, pad_id):
    ids, labels = sft_labels_ok(pairs, pad_id)
    for row, (prompt, answer) in enumerate(pairs):
        labels[row, len(prompt) + len(answer):] = pad_id
    return ids, labels


def sft_shifted(pairs, pad_id):
    ids, labels = sft_labels_ok(pairs, pad_id)
    shifted = torch.full_like(labels, IGNORE)
    shifted[:, :-1] = labels[:, 1:]
    return ids, shifted


def sft_left_padded_labels(pairs, pad_id):
    ids, labels = sft_labels_ok(pairs, pad_id)
    longest = labels.shape[1]
    left = torch.full_like(labels, IGNORE)
    for row, (prompt, answer) in enumerate(pairs):
        n = len(prompt) + len(answer)
        left[row, longest - n:] = torch.tensor([IGNORE] * len(prompt) + answer)
    return ids, left


def sft_pad_zero(pairs, pad_id):
    return sft_labels_ok(pairs, 0)


# ---- LoRA forward -----------------------------------------------------------------------


def lora_ok(x, weight, lora_A, lora_B, alpha):
    r = lora_A.shape[0]
    return x @ weight.T + (alpha / r) * (x @ lora_A.T) @ lora_B.T


def lora_merged(x, weight, lora_A, lora_B, alpha):          # merge first, then one matmul
    return x @ (weight + alpha / lora_A.shape[0] * lora_B @ lora_A).T


CONTRACTS = {
    "check_sft_labels": Contract(
        references=[sft_labels_ok, sft_labels_lists],
        mistakes=[
            (lambda pairs, pad: (sft_labels_ok(pairs, pad)[0],
                                 _with_prompt(pairs, sft_labels_ok(pairs, pad)[1])),
             "prompt's tokens are labelled"),
            (sft_labelled_padding, "padding is labelled with the pad id"),
            (sft_shifted, "shifted by one"),
            (sft_left_padded_labels, "padded on the left"),
            (sft_pad_zero, "right-padded with pad_id=3"),
        ]),
    "check_lora_forward": Contract(
        references=[lora_ok, lora_merged],
        mistakes=[
            (lambda x, w, a, b, alpha: x @ w.T + alpha * (x @ a.T) @ b.T,
             "scaled the update by alpha;"),
            (lambda x, w, a, b, alpha: x @ w.T + a.shape[0] / alpha * (x @ a.T) @ b.T,
             "by r / alpha"),
            (lambda x, w, a, b, alpha: x @ w.T + (x @ a.T) @ b.T, "update is not scaled"),
            (lambda x, w, a, b, alpha: alpha / a.shape[0] * (x @ a.T) @ b.T,
             "frozen weight's output is missing"),
            (lambda x, w, a, b, alpha: x @ w.T, "low-rank update is missing"),
        ]),
}
