"""The reward model (lesson 14): a Llama that scores a (prompt, answer) with one number.

Touvron et al. (2023), §3.2.2: the reward model starts from a chat model checkpoint, with
the classification head for next-token prediction replaced by a regression head that
outputs a scalar. Here the scalar is read at the last token of the exchange (its </s>), the
one position that has attended to the whole prompt and answer:

    r(x, y) = w . h_last + b,     h_last = the final RMSNorm's output at the last token

It learns from ranked pairs with the binary ranking loss `llama_edu.align.ranking_loss`.
On disk: the backbone as an ordinary model directory (llama_edu.checkpoint) plus
reward_head.safetensors (w and b).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import Tensor, nn

from .checkpoint import load_model, save_model
from .files import read_safetensors, save_safetensors

HEAD_FILE = "reward_head.safetensors"


class RewardModel(nn.Module):
    """`backbone` (a llama_edu Llama; its LM head is unused) plus a scalar head."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(backbone.config.dim, 1)
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.config = backbone.config

    @property
    def device(self) -> torch.device:
        return self.head.weight.device

    def hidden(self, ids: Tensor) -> Tensor:
        """The final norm's output, (batch, seq, dim), caught on its way to the LM head."""
        caught = {}
        hook = self.backbone.norm.register_forward_hook(
            lambda module, args, output: caught.setdefault("h", output))
        try:
            self.backbone(ids)
        finally:
            hook.remove()
        return caught["h"]

    def forward(self, ids: Tensor, lengths: Tensor) -> Tensor:
        """ids (batch, seq), right-padded; lengths (batch,) of the real tokens -> (batch,)"""
        h = self.hidden(ids)                                          # (b, s, dim)
        last = h[torch.arange(len(ids), device=ids.device), lengths - 1]   # (b, dim)
        return self.head(last.float())[:, 0]


@torch.no_grad()
def score(reward_model: RewardModel, tokenizer, examples, answers: list[str],
          batch_size: int = 32) -> Tensor:
    """The reward of each (example's prompt, answer): (n,)."""
    from .align import pad_examples
    from .finetune import encode_example

    reward_model.eval()
    device = reward_model.device
    scores = []
    for start in range(0, len(examples), batch_size):
        rows = [encode_example(tokenizer, e, a) for e, a in
                zip(examples[start:start + batch_size], answers[start:start + batch_size],
                    strict=True)]
        ids, _ = pad_examples(rows)
        lengths = torch.tensor([len(x) for x, _ in rows], device=device)
        scores.append(reward_model(ids.to(device), lengths).cpu())
    return torch.cat(scores)


def reward_accuracy(reward_model: RewardModel, tokenizer, examples) -> float:
    """Share of held-out pairs where the chosen answer gets the higher reward."""
    chosen = score(reward_model, tokenizer, examples, [e.chosen for e in examples])
    rejected = score(reward_model, tokenizer, examples, [e.rejected for e in examples])
    return float((chosen > rejected).float().mean())


def save_reward_model(reward_model: RewardModel, path: str | os.PathLike, *, step: int = 0,
                      tokenizer_model=None) -> Path:
    """The backbone (LoRA merged) as a model directory, and the head beside it."""
    import copy

    from .lora import LoRALinear, merge_lora

    backbone = reward_model.backbone
    if any(isinstance(m, LoRALinear) for m in backbone.modules()):
        backbone = merge_lora(copy.deepcopy(backbone))
    path = Path(path)
    save_safetensors(path / HEAD_FILE, {"weight": reward_model.head.weight,
                                        "bias": reward_model.head.bias},
                     {"format": "pt", "step": str(step)})
    return save_model(backbone, path, step=step, tokenizer_model=tokenizer_model)


def load_reward_model(path: str | os.PathLike, device=None) -> RewardModel:
    """A RewardModel from `save_reward_model`'s directory (safetensors only, no pickles)."""
    path = Path(path)
    if not (path / HEAD_FILE).is_file():
        raise FileNotFoundError(f"{str(path)!r} holds no reward model: it lacks {HEAD_FILE}; "
                                "train one with python -m llama_edu reward")
    model = RewardModel(load_model(path, device))
    head = read_safetensors(path / HEAD_FILE)
    with torch.no_grad():
        model.head.weight.copy_(head["weight"])
        model.head.bias.copy_(head["bias"])
    return model.to(device or "cpu").eval()
