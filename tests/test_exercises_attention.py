"""Lesson 05-06 checks beyond their contracts: near ties in the greedy check."""

import pytest
import torch
from exercise_contracts.attention import greedy_ok

from llama_edu.exercises import attention as checks

_MODEL = checks._greedy_model


def _tied_model(generator):
    """The check's model with every token tied to another: lm_head rows 48.. copy rows ..47,
    so each step's best logit is shared by two tokens, exactly."""
    model = _MODEL(generator)
    with torch.no_grad():
        model.lm_head.weight[48:] = model.lm_head.weight[:48]
    return model


def _last_of_the_best(model, prompts, n_new):
    """A right loop that breaks ties the other way (the highest id among the best)."""
    real_argmax = torch.Tensor.argmax

    def flipped(self, dim=None, keepdim=False):
        top = self.amax(dim, keepdim=True)
        index = torch.arange(self.shape[dim]).expand_as(self)
        return torch.where(self == top, index, -1).amax(dim, keepdim=keepdim)

    torch.Tensor.argmax = flipped
    try:
        return greedy_ok(model, prompts, n_new)
    finally:
        torch.Tensor.argmax = real_argmax


def test_a_tie_is_reported_as_a_tie_not_a_mismatch(monkeypatch, capsys):
    monkeypatch.setattr(checks, "_greedy_model", _tied_model)
    checks.check_greedy_cached(_last_of_the_best)
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "near ties, accepted" in out and "tie at step 0" in out


def test_a_real_mismatch_is_not_excused_as_a_tie():
    def second_best(model, prompts, n_new):
        real_argmax = torch.Tensor.argmax
        def runner_up(self, dim=None, keepdim=False):
            second = self.topk(2, dim=dim).indices.narrow(dim, 1, 1)
            return second if keepdim else second.squeeze(dim)

        torch.Tensor.argmax = runner_up
        try:
            return greedy_ok(model, prompts, n_new)
        finally:
            torch.Tensor.argmax = real_argmax

    with pytest.raises(AssertionError, match="greedy tokens differ at step 0"):
        checks.check_greedy_cached(second_best)
