"""Checks for lesson 04: write SwiGLU; compute Llama's FFN hidden size."""

from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F

from ..ffn import ffn_hidden_dim, swiglu
from ._common import call, expect, passed, rng

__all__ = ["check_swiglu", "check_ffn_hidden_dim"]


def _close(actual, expected: torch.Tensor) -> bool:
    if not isinstance(actual, torch.Tensor) or actual.shape != expected.shape:
        return False
    return torch.allclose(actual.detach().double(), expected.double(), atol=1e-5, rtol=1e-4)


def _swiglu_mistakes(x, gate, up, down):
    """What the classic slips return, each with the sentence that explains it."""
    g, u = x @ gate.T, x @ up.T                                       # (..., hidden)
    yield (F.silu(u) * g) @ down.T, (
        "gate and up are swapped: SiLU goes on the GATE projection, silu(x @ gate_weight.T), "
        "and multiplies the plain up projection")
    yield (F.relu(g) * u) @ down.T, "that is ReGLU (ReLU gate); SwiGLU gates with SiLU, F.silu"
    yield (F.gelu(g) * u) @ down.T, "that is GEGLU (GELU gate); SwiGLU gates with SiLU, F.silu"
    yield (torch.sigmoid(g) * u) @ down.T, (
        "that is the original GLU (sigmoid gate); SwiGLU uses silu(g) = g * sigmoid(g)")
    yield (g * u) @ down.T, "that is the Bilinear variant: no activation. Apply F.silu to the gate"
    yield F.silu(g * u) @ down.T, (
        "you applied SiLU after multiplying; apply it to the gate projection only, then "
        "multiply: silu(gate) * up")
    yield F.silu(g) @ down.T, "the up projection is missing: multiply silu(gate) by x @ up_weight.T"
    yield F.silu(u) @ down.T, "the gate is missing: multiply silu(x @ gate_weight.T) by the up one"
    yield (F.silu(x @ gate) * (x @ up)) @ down, (
        "the weights are stored like nn.Linear's, (out_features, in_features): use x @ W.T "
        "(or F.linear(x, W)), not x @ W")


def _swiglu_cases():
    generator = rng(6)
    for label, shape, hidden in (("x of shape (4, 8), hidden 20", (4, 8), 20),
                                 ("x of shape (2, 3, 6), hidden 16", (2, 3, 6), 16),
                                 ("a square case, dim = hidden = 8", (5, 8), 8)):
        dim = shape[-1]
        x = torch.randn(*shape, generator=generator)
        gate = torch.randn(hidden, dim, generator=generator) / math.sqrt(dim)
        up = torch.randn(hidden, dim, generator=generator) / math.sqrt(dim)
        down = torch.randn(dim, hidden, generator=generator) / math.sqrt(hidden)
        yield label, x, gate, up, down


def check_swiglu(fn) -> None:
    """fn(x, gate_weight, up_weight, down_weight) -> down(silu(gate(x)) * up(x)), where each
    weight is shaped like nn.Linear's: gate/up (hidden, dim), down (dim, hidden)."""
    for label, x, gate, up, down in _swiglu_cases():
        what = f"swiglu with {label}"
        try:
            out = call(fn, x.clone(), gate.clone(), up.clone(), down.clone(), what=what)
        except AssertionError as error:
            if "mat1 and mat2" in str(error) or "size of tensor" in str(error):
                raise AssertionError(f"{error}. nn.Linear weights are (out_features, "
                                     "in_features): use x @ W.T or F.linear(x, W)") from None
            raise
        expected = swiglu(x, gate, up, down)
        if not isinstance(out, torch.Tensor):
            raise AssertionError(f"{what} should return a torch.Tensor, got "
                                 f"{type(out).__name__}")
        if tuple(out.shape) != tuple(x.shape):
            hidden = gate.shape[0]
            hint = (" That is the hidden size: project back to dim with down_weight"
                    if out.shape[-1:] == (hidden,) and hidden != x.shape[-1] else "")
            raise AssertionError(f"{what} returned shape {tuple(out.shape)}, expected "
                                 f"{tuple(x.shape)}, the shape of x.{hint}")
        if _close(out, expected):
            continue
        for mistake, hint in _swiglu_mistakes(x, gate, up, down):
            if _close(out, mistake):
                raise AssertionError(f"{what}: {hint}")
        worst = float((out.detach().double() - expected.double()).abs().max())
        raise AssertionError(f"{what} is off by up to {worst:.3g}. Expected "
                             "(silu(x @ gate_weight.T) * (x @ up_weight.T)) @ down_weight.T")
    passed("swiglu is right: down(silu(gate(x)) * up(x)), the gate through SiLU, nn.Linear "
           "weight layout")


_HIDDEN_CASES = [  # dim, multiple_of, ffn_dim_multiplier, why the case is here
    (4096, 256, None, "Llama 2 7B"),
    (5120, 256, None, "Llama 2 13B"),
    (8192, 4096, 1.3, "Llama 2 70B"),
    (48, 16, None, "2/3 of 4*48 is 128, already a multiple of 16"),
    (32, 16, None, "int(2 * 128 / 3) = 85, rounded up to 96"),
    (4096, 1, None, "multiple_of=1: no rounding"),
]


def _hidden_mistakes(dim: int, multiple_of: int, multiplier: float | None):
    """What the classic slips return for one case, each with its explanation."""
    up = lambda h: multiple_of * math.ceil(h / multiple_of)  # noqa: E731
    base = int(2 * 4 * dim / 3)
    scaled = int(multiplier * base) if multiplier is not None else base
    if multiplier is not None:
        yield up(base), "you ignored ffn_dim_multiplier; multiply by it before rounding"
        yield int(multiplier * up(base)), (
            "you applied ffn_dim_multiplier after rounding; apply it to int(2 * 4 * dim / 3) "
            "first, then round up")
    yield up(4 * dim if multiplier is None else int(multiplier * 4 * dim)), (
        "you kept 4 * dim: SwiGLU has three matrices, so Llama takes 2/3 of 4 * dim to keep "
        "the parameter count of the two-matrix FFN")
    yield multiple_of * (scaled // multiple_of), (
        "you rounded down; Llama rounds UP to the next multiple: "
        "multiple_of * ((hidden + multiple_of - 1) // multiple_of)")
    yield multiple_of * round(scaled / multiple_of), (
        "you rounded to the nearest multiple; Llama rounds UP (a ceiling)")
    yield multiple_of * (scaled // multiple_of + 1), (
        "you always add one more multiple; when hidden is already a multiple it must stay as "
        "it is: multiple_of * ((hidden + multiple_of - 1) // multiple_of)")
    yield 0, "int(2 / 3) is 0: compute int(2 * 4 * dim / 3), multiplying before dividing"


def check_ffn_hidden_dim(fn) -> None:
    """fn(dim, multiple_of, ffn_dim_multiplier=None) -> Llama's FFN hidden size (an int)."""
    for dim, multiple_of, multiplier, why in _HIDDEN_CASES:
        what = f"hidden size for dim={dim}, multiple_of={multiple_of}" + (
            f", ffn_dim_multiplier={multiplier}" if multiplier is not None else "")
        out = call(fn, dim, multiple_of, multiplier, what=what)
        expected = ffn_hidden_dim(dim, multiple_of, multiplier)
        if isinstance(out, torch.Tensor) and out.numel() == 1:
            out = out.item()
        if isinstance(out, float) and out == expected:
            raise AssertionError(f"{what}: got {out!r}, a float; a layer size is a whole "
                                 "number. Use integer maths (// or int())")
        expect(isinstance(out, numbers.Integral) and not isinstance(out, bool),
               f"{what}: expected an int, got {type(out).__name__} {out!r}")
        if out == expected:
            continue
        for mistake, hint in _hidden_mistakes(dim, multiple_of, multiplier):
            if out == mistake:
                raise AssertionError(f"{what} ({why}): expected {expected}, got {out}. {hint}")
        if out % multiple_of:
            raise AssertionError(f"{what} ({why}): expected {expected}, got {out}, which is not "
                                 f"a multiple of {multiple_of}; round up to one")
        raise AssertionError(f"{what} ({why}): expected {expected}, got {out}. The rule: "
                             "h = int(2 * 4 * dim / 3); h = int(multiplier * h) if given; "
                             "round h up to a multiple of multiple_of")
    passed("the hidden-size rule is right: 4096 -> 11008, 5120 -> 13824, 70B's 8192 -> 28672")
