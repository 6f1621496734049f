"""The lesson 03 checks: references pass, stubs say 'not written yet', and each classic
mistake gets its own explanation."""

import pytest
import torch

from llama_edu.exercises import check_rmsnorm, check_shift_invariant
from llama_edu.norms import LayerNorm

# ---- RMSNorm, written the way a learner would -----------------------------------------


def rmsnorm_ok(x, weight, eps=1e-5):
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * weight


def rmsnorm_plain(x, weight, eps=1e-5):  # the CONTRIBUTING example: stays in x's dtype
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def stub(*args):
    raise NotImplementedError()


def test_reference_answers_pass(capsys):
    check_rmsnorm(rmsnorm_ok)
    check_rmsnorm(rmsnorm_plain)
    check_shift_invariant("layernorm")
    check_shift_invariant("LayerNorm")
    check_shift_invariant(LayerNorm)
    check_shift_invariant(lambda: "layer norm")
    out = capsys.readouterr()
    assert out.out.count("\n") == 6 and out.err == ""


@pytest.mark.parametrize("check", [check_rmsnorm, check_shift_invariant])
def test_unwritten_answers_say_so(check):
    with pytest.raises(AssertionError, match="not written yet"):
        check(stub)


@pytest.mark.parametrize("wrong, message", [
    (lambda x, w, eps: (x - x.mean(-1, keepdim=True))
     / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps) * w,
     "you subtracted the mean: that is LayerNorm"),
    (lambda x, w, eps: x / (torch.sqrt(x.pow(2).mean(-1, keepdim=True)) + eps) * w,
     "eps belongs under the square root"),
    (lambda x, w, eps: x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) - eps) * w,
     "eps is added, not subtracted"),
    (lambda x, w, eps: x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps),
     "forgot to multiply by the learned gain"),
    (lambda x, w, eps: x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps) * w,
     "sum of squares"),
    (lambda x, w, eps: x / torch.sqrt(x.pow(2).mean() + eps) * w,
     "averaged over the whole tensor"),
    (lambda x, w, eps: x / torch.sqrt(x.pow(2).mean(-1) + eps) * w,
     "keepdim=True"),
    (lambda x, w, eps: x.float() / torch.sqrt(x.float().pow(2).mean(-1, keepdim=True) + eps) * w,
     "should return bfloat16"),
])
def test_classic_rmsnorm_mistakes_are_named(wrong, message):
    with pytest.raises(AssertionError, match=message):
        check_rmsnorm(wrong)


def test_a_crashing_rmsnorm_is_reported_in_words():
    def crashes(x, weight, eps):
        return x / undefined_name  # noqa: F821
    with pytest.raises(AssertionError, match="raised NameError"):
        check_rmsnorm(crashes)


@pytest.mark.parametrize("answer, message", [
    ("rmsnorm", "not RMSNorm.*invariant to SCALING only"),
    ("both", "only one of them is"),
    ("neither", "one of them is"),
    ("batchnorm", "answer with one of"),
    (None, "answer with one of"),
    (lambda: "rmsnorm", "not RMSNorm"),
])
def test_shift_invariance_answers_get_explanations(answer, message):
    with pytest.raises(AssertionError, match=message):
        check_shift_invariant(answer)


def test_shift_invariance_feedback_carries_the_measured_gap():
    with pytest.raises(AssertionError, match=r"moves RMSNorm's output by up to \d\.\d\d"):
        check_shift_invariant("RMS norm")
