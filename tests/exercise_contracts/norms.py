"""Lesson 03's checks: RMSNorm, and which norm is shift-invariant."""

import torch

from llama_edu.norms import LayerNorm

from ._contract import Contract

# ---- RMSNorm ----------------------------------------------------------------------------


def rmsnorm_ok(x, weight, eps=1e-5):
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * weight


def rmsnorm_plain(x, weight, eps=1e-5):  # the CONTRIBUTING example: stays in x's dtype
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


# ---- shift invariance -------------------------------------------------------------------


def shift_invariant():  # the answer cell, as nbgrader releases it
    raise NotImplementedError()


CONTRACTS = {
    "check_rmsnorm": Contract(references=[rmsnorm_ok, rmsnorm_plain], mistakes=[
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
        (lambda x, w, eps: x.float() / torch.sqrt(x.float().pow(2).mean(-1, keepdim=True)
                                                  + eps) * w,
         "should return bfloat16"),
    ]),
    # Other spellings of one answer ("RMS norm", a function returning it) get the same
    # sentence; tests/test_exercises_norms.py holds them.
    "check_shift_invariant": Contract(
        references=["layernorm", "LayerNorm", LayerNorm, lambda: "layer norm"],
        stub=shift_invariant,
        mistakes=[
            ("rmsnorm", r"not RMSNorm: adding 5 to every entry moves RMSNorm's output by up "
                        r"to \d\.\d\d.*invariant to SCALING only"),
            ("both", "only one of them is"),
            ("neither", "one of them is"),
            ("batchnorm", "answer with one of"),
            (None, "answer with one of"),
        ]),
}
