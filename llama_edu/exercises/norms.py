"""Checks for lesson 03: write RMSNorm; say which norm is shift-invariant."""

from __future__ import annotations

import torch

from ..norms import LayerNorm, RMSNorm, layer_norm, rms_norm
from ._common import call, expect, passed, rng

__all__ = ["check_rmsnorm", "check_shift_invariant"]


def _close(actual, expected: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-4) -> bool:
    if not isinstance(actual, torch.Tensor) or actual.shape != expected.shape:
        return False
    return torch.allclose(actual.detach().double(), expected.detach().double(), atol=atol,
                          rtol=rtol, equal_nan=True)


def _rmsnorm_mistakes(x: torch.Tensor, weight: torch.Tensor, eps: float):
    """What the classic slips return, each with the sentence that explains it."""
    x = x.double()
    w = weight.double()
    ms = x.pow(2).mean(-1, keepdim=True)
    mean = x.mean(-1, keepdim=True)
    var = (x - mean).pow(2).mean(-1, keepdim=True)
    yield ((x - mean) / torch.sqrt(var + eps) * w,
           "you subtracted the mean: that is LayerNorm. RMSNorm only rescales: "
           "x / sqrt(mean(x^2) + eps) * weight")
    yield ((x - mean) / torch.sqrt(ms + eps) * w,
           "you subtracted the mean before dividing: RMSNorm does not re-centre, leave x as it is")
    yield (x / (torch.sqrt(ms) + eps) * w,
           "eps belongs under the square root: sqrt(mean(x^2) + eps), not sqrt(mean(x^2)) + eps "
           "(it only shows for small inputs, where eps matters)")
    yield (x / torch.sqrt(ms - eps) * w,
           "eps is added, not subtracted: sqrt(mean(x^2) + eps). (One of the course's source "
           "notes has this slip; with small inputs mean(x^2) - eps goes negative.)")
    yield (x / torch.sqrt(ms + eps), "you forgot to multiply by the learned gain `weight`")
    yield (x / (ms + eps) * w, "you divided by mean(x^2) + eps; take its square root first")
    yield (x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps) * w,
           "you used the sum of squares (the L2 norm); RMSNorm uses the mean of squares, "
           "so the result has unit root-mean-square rather than unit length")
    yield (x / torch.sqrt(x.pow(2).mean(0, keepdim=True) + eps) * w,
           "you averaged over the first axis; normalise each vector over the LAST axis: "
           ".mean(-1, keepdim=True)")
    yield (x / torch.sqrt(x.pow(2).mean() + eps) * w,
           "you averaged over the whole tensor; each vector (the last axis) gets its own "
           "root-mean-square: .mean(-1, keepdim=True)")
    yield (x / torch.sqrt(x.var(-1, keepdim=True) + eps) * w,
           "you divided by the variance, which subtracts the mean inside; RMSNorm uses the "
           "plain mean of squares, mean(x^2)")


def _rmsnorm_cases():
    generator = rng(3)
    yield "a (4, 16) batch", torch.randn(4, 16, generator=generator) * 2, 1e-5
    yield ("vectors with a large mean (about 3)",
           torch.randn(3, 12, generator=generator) + 3.0, 1e-5)
    yield ("small inputs (about 1e-3), where eps matters",
           torch.randn(5, 8, generator=generator) * 1e-3, 1e-5)
    yield "a (2, 3, 10) input", torch.randn(2, 3, 10, generator=generator), 1e-6


def check_rmsnorm(fn) -> None:
    """fn(x, weight, eps) -> x / sqrt(mean(x^2, last axis) + eps) * weight, shape of x."""
    generator = rng(4)
    for label, x, eps in _rmsnorm_cases():
        weight = torch.rand(x.shape[-1], generator=generator) + 0.5
        what = f"rmsnorm on {label} (eps={eps:g})"
        try:
            out = call(fn, x.clone(), weight.clone(), eps, what=what)
        except AssertionError as error:
            if "size of tensor" in str(error):
                raise AssertionError(f"{error}. Keep the averaged axis with .mean(-1, "
                                     "keepdim=True) so that it broadcasts against x") from None
            raise
        expected = rms_norm(x, weight, eps)
        if not isinstance(out, torch.Tensor):
            raise AssertionError(f"{what} should return a torch.Tensor, got "
                                 f"{type(out).__name__}")
        if tuple(out.shape) != tuple(x.shape):
            raise AssertionError(
                f"{what} returned shape {tuple(out.shape)}, expected {tuple(x.shape)} (the shape "
                "of x). Keep the averaged axis with .mean(-1, keepdim=True) so it broadcasts")
        if _close(out, expected):
            continue
        for mistake, hint in _rmsnorm_mistakes(x, weight, eps):
            if _close(out, mistake.to(expected.dtype)):
                raise AssertionError(f"{what}: {hint}")
        worst = float((out.detach().double() - expected.double()).abs().nan_to_num(1e30).max())
        raise AssertionError(f"{what} is off by up to {worst:.3g}. Expected x / sqrt(mean(x^2) "
                             "+ eps) * weight, averaging over the last axis")
    # bf16 in, bf16 out: compute the statistics in float32 and cast back, as Llama does
    x = torch.randn(3, 64, generator=generator).mul(4).bfloat16()
    weight = (torch.rand(64, generator=generator) + 0.5).bfloat16()
    what = "rmsnorm on a bfloat16 input with a bfloat16 weight"
    out = call(fn, x, weight, 1e-5, what=what)
    expect(isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16,
           f"{what} should return bfloat16 (the input's dtype), got "
           f"{getattr(out, 'dtype', type(out).__name__)}. Compute in float32 with x.float(), "
           "then cast back with .to(x.dtype) or .type_as(x) before multiplying by weight")
    expect(_close(out.float(), rms_norm(x, weight, 1e-5).float(), atol=1e-2, rtol=2e-2),
           f"{what} is off by more than bfloat16 rounding; compute the mean of squares in "
           "float32 (x.float()) and cast back at the end")
    passed("rmsnorm is right: it rescales each vector by its root-mean-square, eps under the "
           "root, in float32, and keeps the input's dtype")


_NORM_NAMES = {"layernorm": "layernorm", "ln": "layernorm", "rmsnorm": "rmsnorm",
               "rms": "rmsnorm", "both": "both", "neither": "neither", "none": "neither"}


def _normalise_answer(answer) -> str | None:
    if answer in (LayerNorm, torch.nn.LayerNorm, layer_norm):
        return "layernorm"
    if answer in (RMSNorm, getattr(torch.nn, "RMSNorm", None), rms_norm):
        return "rmsnorm"
    if not isinstance(answer, str):
        return None
    key = "".join(ch for ch in answer.lower() if ch.isalnum())
    return _NORM_NAMES.get(key)


def check_shift_invariant(answer) -> None:
    """answer: which norm gives the same output when a constant is added to every entry of
    the input vector: "layernorm", "rmsnorm", "both" or "neither" (or a function that
    returns one of them)."""
    choice = _normalise_answer(answer)
    if choice is None and callable(answer):           # a function that returns the answer
        answer = call(answer, what="your answer function")
        choice = _normalise_answer(answer)
    expect(choice is not None,
           f"answer with one of 'layernorm', 'rmsnorm', 'both' or 'neither', got {answer!r}")
    x = torch.randn(4, 32, generator=rng(5), dtype=torch.float64)
    gap_rms = float((rms_norm(x + 5.0) - rms_norm(x)).abs().max())
    gap_ln = float((layer_norm(x + 5.0) - layer_norm(x)).abs().max())
    evidence = (f"adding 5 to every entry moves RMSNorm's output by up to {gap_rms:.2f} and "
                f"LayerNorm's by {gap_ln:.1e}")
    if choice == "rmsnorm":
        raise AssertionError(
            f"not RMSNorm: {evidence}. RMSNorm divides by sqrt(mean(x^2)), and a shift changes "
            "both x and that root-mean-square, so it does not cancel. It is invariant to "
            "SCALING only (rms_norm(a * x) = rms_norm(x) for a > 0)")
    if choice == "both":
        raise AssertionError(
            f"only one of them is: {evidence}. Both are scale-invariant, but only the one that "
            "subtracts the mean first removes a shift")
    if choice == "neither":
        raise AssertionError(
            f"one of them is: {evidence}. Which one subtracts mean(x) before dividing? "
            "(x + c) - mean(x + c) = x - mean(x)")
    passed(f"right: LayerNorm subtracts the mean, so a shift cancels ({evidence}); "
           "RMSNorm keeps only the scale invariance")
