"""SFT's answer-only loss, the reward model's ranking loss, DPO and PPO, against the papers'
formulas on hand-computed cases."""

import math

import pytest
import torch

from llama_edu.align import (
    IGNORE,
    answer_labels,
    dpo_implicit_reward,
    dpo_loss,
    kl_penalized_reward,
    masked_lm_loss,
    pad_examples,
    ppo_clip_loss,
    ranking_loss,
    sequence_logprobs,
)
from llama_edu.model import Llama, LlamaConfig


def sigmoid(x):
    return 1 / (1 + math.exp(-x))


def test_labels_mask_the_prompt_and_padding_keeps_lengths_apart():
    ids, labels = answer_labels([1, 5, 6], [7, 8, 2])
    assert ids == [1, 5, 6, 7, 8, 2] and labels == [IGNORE] * 3 + [7, 8, 2]
    batch, batch_labels = pad_examples([(ids, labels), answer_labels([1, 9], [3])], pad_id=0)
    assert batch.tolist() == [[1, 5, 6, 7, 8, 2], [1, 9, 3, 0, 0, 0]]
    assert batch_labels.tolist()[1] == [IGNORE, IGNORE, 3, IGNORE, IGNORE, IGNORE]
    with pytest.raises(ValueError, match="ids but"):
        pad_examples([([1, 2], [1])])


def test_masked_positions_contribute_no_gradient():
    torch.manual_seed(0)
    model = Llama(LlamaConfig.from_preset("micro"))
    ids, labels = pad_examples([answer_labels([1, 5, 6, 9], [7, 8, 2])])
    embeddings = model.embed_tokens(ids).detach().requires_grad_()
    hidden = embeddings
    cos, sin = model.rotary(torch.arange(ids.shape[1]))
    for layer in model.layers:
        hidden = layer(hidden, cos, sin, is_causal=True)
    logits = model.lm_head(model.norm(hidden))
    loss = masked_lm_loss(logits, labels)
    grad_logits, = torch.autograd.grad(loss, logits)
    # the logits at positions 0..2 predict prompt tokens 1..3: masked, so no gradient
    assert grad_logits[0, :3].abs().max() == 0 and grad_logits[0, 3:-1].abs().max() > 0
    assert grad_logits[0, -1].abs().max() == 0            # nothing after the last token
    expected = torch.nn.functional.cross_entropy(logits[0, 3:-1], ids[0, 4:])
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ValueError, match="every label is IGNORE"):
        masked_lm_loss(logits, torch.full_like(labels, IGNORE))


def test_sequence_logprobs_sum_only_the_answer_tokens():
    logits = torch.log(torch.tensor([[[0.5, 0.25, 0.25], [0.1, 0.6, 0.3], [0.2, 0.2, 0.6]]]))
    labels = torch.tensor([[IGNORE, 1, 2]])               # answer: token 1 then token 2
    expected = math.log(0.25) + math.log(0.3)             # p(1 | pos 0) * p(2 | pos 1)
    torch.testing.assert_close(sequence_logprobs(logits, labels), torch.tensor([expected]))


def test_ranking_loss_is_llama2s_with_and_without_margin():
    chosen, rejected = torch.tensor([2.0, 0.5]), torch.tensor([1.0, 1.5])
    plain = -(math.log(sigmoid(1.0)) + math.log(sigmoid(-1.0))) / 2
    torch.testing.assert_close(ranking_loss(chosen, rejected), torch.tensor(plain))
    margin = torch.tensor([1.0, 0.0])                     # "significantly better": margin 1
    with_margin = -(math.log(sigmoid(0.0)) + math.log(sigmoid(-1.0))) / 2
    torch.testing.assert_close(ranking_loss(chosen, rejected, margin), torch.tensor(with_margin))


def test_dpo_loss_is_rafailovs_equation_7():
    pc, pr, rc, rr = (torch.tensor([v]) for v in (-3.0, -5.0, -4.0, -4.5))
    margin = (-3.0 - -4.0) - (-5.0 - -4.5)                # 1.5
    torch.testing.assert_close(dpo_loss(pc, pr, rc, rr, beta=0.5),
                               torch.tensor(-math.log(sigmoid(0.5 * margin))))
    assert dpo_loss(rc, rr, rc, rr) == pytest.approx(math.log(2))   # the policy is the ref
    torch.testing.assert_close(dpo_implicit_reward(pc, rc, 0.1), torch.tensor([0.1]))


def test_ppo_pieces_on_hand_computed_cases():
    reward = kl_penalized_reward(torch.tensor([1.0]), torch.tensor([-2.0]), torch.tensor([-3.0]),
                                 beta=0.1)
    torch.testing.assert_close(reward, torch.tensor([0.9]))   # 1 - 0.1 * (-2 - -3)
    old = torch.log(torch.tensor([0.5, 0.5]))
    new = torch.log(torch.tensor([0.8, 0.2]))             # ratios 1.6 and 0.4
    advantages = torch.tensor([1.0, -1.0])
    # first: min(1.6, clip 1.2) * 1 = 1.2; second: min(0.4 * -1, clip 0.8 * -1) = -0.8
    torch.testing.assert_close(ppo_clip_loss(new, old, advantages, clip=0.2),
                               torch.tensor(-(1.2 - 0.8) / 2))
