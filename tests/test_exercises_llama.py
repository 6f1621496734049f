"""Lesson 09's build exercise beyond its contract: other spellings, graded seeds, and the
model's own forward refused at run time and in the answer's source."""

import pytest
import torch
from exercise_contracts.llama import forward_ok, forwarding

from llama_edu.exercises import check_llama_forward
from llama_edu.exercises._common import grading_seed
from llama_edu.grading.flags import read_cell


@pytest.mark.parametrize("seed", [None, 123_456_789])
def test_the_reference_passes_on_the_learners_and_a_graders_inputs(seed, capsys):
    with grading_seed(seed):
        check_llama_forward(forward_ok)
    assert capsys.readouterr().out.startswith("✔ llama_forward equals")


def test_a_final_norm_computed_but_unused_is_named_as_a_missing_one():
    with pytest.raises(AssertionError, match="un-normalised residual stream"):
        check_llama_forward(forwarding(unused_norm=True))


def test_the_forward_methods_are_refused():
    def via_forward(model, tokens):
        return model.forward(tokens)

    def via_layer_forward(model, tokens):
        cos, sin = model.rotary(torch.arange(tokens.shape[1]))
        h = model.embed_tokens(tokens)
        for layer in model.layers:
            h = layer.forward(h, cos, sin, is_causal=True)
        return model.lm_head(model.norm(h))

    with pytest.raises(AssertionError, match=r"called the model \(model\(tokens\)\) itself"):
        check_llama_forward(via_forward)
    with pytest.raises(AssertionError, match="called a layer"):
        check_llama_forward(via_layer_forward)


def test_a_graded_run_reads_a_forward_call_in_the_answers_source():
    source = "def llama_forward(model, tokens):\n    return model.forward(tokens)\n"
    flags = read_cell(source, "llama_forward_answer", {}, check_llama_forward.forbidden_calls)
    assert [f.kind for f in flags] == ["forbidden-call"]


def test_a_crash_is_reported_in_words():
    def typo(model, tokens):
        return model.embed(tokens)

    with pytest.raises(AssertionError, match="raised AttributeError"):
        check_llama_forward(typo)
