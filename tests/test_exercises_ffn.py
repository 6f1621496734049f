"""The lesson 04 checks: references pass, stubs say 'not written yet', and each classic
mistake gets its own explanation."""

import pytest
import torch
import torch.nn.functional as F

from llama_edu.exercises import check_ffn_hidden_dim, check_swiglu

# ---- references, written the way a learner would -------------------------------------


def swiglu_ok(x, gate_weight, up_weight, down_weight):
    return F.linear(F.silu(F.linear(x, gate_weight)) * F.linear(x, up_weight), down_weight)


def hidden_ok(dim, multiple_of, ffn_dim_multiplier=None):
    hidden = int(2 * 4 * dim / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def stub(*args):
    raise NotImplementedError()


def test_reference_answers_pass(capsys):
    check_swiglu(swiglu_ok)
    check_ffn_hidden_dim(hidden_ok)
    out = capsys.readouterr()
    assert out.out.count("\n") == 2 and out.err == ""


@pytest.mark.parametrize("check", [check_swiglu, check_ffn_hidden_dim])
def test_unwritten_answers_say_so(check):
    with pytest.raises(AssertionError, match="not written yet"):
        check(stub)


@pytest.mark.parametrize("wrong, message", [
    (lambda x, g, u, d: (F.silu(x @ u.T) * (x @ g.T)) @ d.T, "gate and up are swapped"),
    (lambda x, g, u, d: (F.relu(x @ g.T) * (x @ u.T)) @ d.T, "that is ReGLU"),
    (lambda x, g, u, d: (torch.sigmoid(x @ g.T) * (x @ u.T)) @ d.T, "original GLU"),
    (lambda x, g, u, d: F.silu((x @ g.T) * (x @ u.T)) @ d.T, "SiLU after multiplying"),
    (lambda x, g, u, d: F.silu(x @ g.T) @ d.T, "up projection is missing"),
    (lambda x, g, u, d: F.silu(x @ g.T) * (x @ u.T), "project back to dim with down_weight"),
    (lambda x, g, u, d: (F.silu(x @ g) * (x @ u)) @ d, r"use x @ W\.T"),
])
def test_classic_swiglu_mistakes_are_named(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_swiglu(wrong)


def _round_down(dim, multiple_of, ffn_dim_multiplier=None):
    hidden = int(2 * 4 * dim / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * (hidden // multiple_of)


def _no_two_thirds(dim, multiple_of, ffn_dim_multiplier=None):
    return multiple_of * ((4 * dim + multiple_of - 1) // multiple_of)


def _always_one_more(dim, multiple_of, ffn_dim_multiplier=None):
    hidden = int(2 * 4 * dim / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * (hidden // multiple_of + 1)


def _multiplier_ignored(dim, multiple_of, ffn_dim_multiplier=None):
    return hidden_ok(dim, multiple_of)


def _float_result(dim, multiple_of, ffn_dim_multiplier=None):
    return float(hidden_ok(dim, multiple_of, ffn_dim_multiplier))


def _int_two_thirds(dim, multiple_of, ffn_dim_multiplier=None):
    return hidden_ok(0 * dim + 1, multiple_of) * int(2 / 3)


@pytest.mark.parametrize("wrong, message", [
    (_no_two_thirds, "you kept 4 \\* dim"),
    (_round_down, "you rounded down"),
    (_always_one_more, "you always add one more multiple"),
    (_multiplier_ignored, "you ignored ffn_dim_multiplier"),
    (_float_result, "a float"),
    (_int_two_thirds, "int\\(2 / 3\\) is 0"),
])
def test_classic_hidden_size_mistakes_are_named(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_ffn_hidden_dim(wrong)


def test_an_unknown_wrong_number_still_says_what_was_expected():
    with pytest.raises(AssertionError, match="expected 11008, got 11000.*not a multiple of 256"):
        check_ffn_hidden_dim(lambda dim, multiple_of, m=None: 11000)
