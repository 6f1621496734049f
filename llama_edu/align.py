"""From a base model to a chat model: the losses of SFT, reward modelling, DPO and PPO
(lessons 13 and 14).

Supervised fine-tuning (Touvron et al., 2023, §3.1): the loss counts only the answer's
tokens; the prompt's are masked with IGNORE (-100, cross-entropy's ignore_index).

The reward model (§3.2.2, Eq. 1 and 2) scores a (prompt, answer) pair with one number and
learns from pairs a human ranked, the chosen answer r_c against the rejected one r_r:

    L_ranking = -log sigmoid(r_c - r_r - m(r))       m: a margin, larger for clearer pairs

DPO (Rafailov et al., 2023, Eq. 7) skips the reward model and the sampling: with the
policy's and a frozen reference's summed log-probabilities of each answer,

    L_DPO = -log sigmoid(beta * [(log pi(y_c) - log ref(y_c)) - (log pi(y_r) - log ref(y_r))])

PPO as Llama 2 uses it (§3.2.3): the reward of an answer minus beta times the KL divergence
from the SFT policy, R = R_c - beta * KL(pi || pi_0), maximised with PPO's clipped
surrogate (Schulman et al., 2017, Eq. 7):
    L_clip = -mean(min(rho A, clip(rho, 1 - eps, 1 + eps) A)),   rho = pi / pi_old
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = -100


def answer_labels(prompt_ids: list[int], answer_ids: list[int]) -> tuple[list[int], list[int]]:
    """Token ids of prompt + answer, and the labels: IGNORE under the prompt, the ids under
    the answer (the model learns to write answers, not to repeat questions)."""
    ids = list(prompt_ids) + list(answer_ids)
    return ids, [IGNORE] * len(prompt_ids) + list(answer_ids)


def pad_examples(examples: list[tuple[list[int], list[int]]], pad_id: int = 0
                 ) -> tuple[Tensor, Tensor]:
    """Right-pad (ids, labels) pairs to one length: ids with pad_id, labels with IGNORE.
    -> ids, labels: (batch, longest)"""
    if not examples:
        raise ValueError("pad_examples needs at least one example")
    longest = max(len(ids) for ids, _ in examples)
    ids = torch.full((len(examples), longest), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), longest), IGNORE, dtype=torch.long)
    for row, (x, y) in enumerate(examples):
        if len(x) != len(y):
            raise ValueError(f"example {row}: {len(x)} ids but {len(y)} labels")
        ids[row, :len(x)], labels[row, :len(y)] = torch.tensor(x), torch.tensor(y)
    return ids, labels


def masked_lm_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Next-token cross-entropy over the labelled positions only.
    logits: (batch, seq, vocab) for the ids; labels: (batch, seq) with IGNORE elsewhere."""
    shifted = labels[:, 1:]                                # position t predicts token t + 1
    if not (shifted != IGNORE).any():
        raise ValueError("no answer token to learn from: every label is IGNORE")
    return F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), shifted.flatten(),
                           ignore_index=IGNORE)


def sequence_logprobs(logits: Tensor, labels: Tensor) -> Tensor:
    """The summed log-probability of each row's labelled (answer) tokens.
    logits: (batch, seq, vocab); labels: (batch, seq) with IGNORE outside the answer.
    -> (batch,)"""
    targets = labels[:, 1:]
    mask = targets != IGNORE
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1)          # (batch, seq-1, vocab)
    picked = logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0]  # (batch, seq-1)
    return (picked * mask).sum(-1)


def ranking_loss(chosen: Tensor, rejected: Tensor, margin: Tensor | float | None = None) -> Tensor:
    """Llama 2's binary ranking loss, -log sigmoid(r_c - r_r - m), averaged over pairs."""
    gap = chosen - rejected
    if margin is not None:
        gap = gap - margin
    return -F.logsigmoid(gap).mean()


def dpo_loss(policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor,
             ref_rejected: Tensor, beta: float = 0.1) -> Tensor:
    """DPO's loss from summed answer log-probs of the policy and the frozen reference."""
    margin = (policy_chosen - ref_chosen) - (policy_rejected - ref_rejected)
    return -F.logsigmoid(beta * margin).mean()


def dpo_implicit_reward(policy: Tensor, ref: Tensor, beta: float = 0.1) -> Tensor:
    """The reward DPO's policy implies for an answer: beta * (log pi(y) - log ref(y))."""
    return beta * (policy - ref)


def kl_penalized_reward(reward: Tensor, policy_logprobs: Tensor, ref_logprobs: Tensor,
                        beta: float) -> Tensor:
    """Llama 2's PPO reward: R_c minus beta times the sampled estimate of KL(pi || pi_0),
    the summed log-ratio of the answer's tokens.   (batch,) -> (batch,)"""
    return reward - beta * (policy_logprobs - ref_logprobs)


def ppo_clip_loss(new_logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor,
                  clip: float = 0.2) -> Tensor:
    """PPO's clipped surrogate, negated to be minimised (Schulman et al., 2017, Eq. 7)."""
    ratio = torch.exp(new_logprobs - old_logprobs)
    unclipped = ratio * advantages
    clipped = ratio.clamp(1 - clip, 1 + clip) * advantages
    return -torch.minimum(unclipped, clipped).mean()
