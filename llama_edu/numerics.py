"""How close is close enough: tolerances that follow from the arithmetic (all lessons).

Two correct implementations of the same computation round differently: another summation
order, another CPU kernel (AVX2 vs AVX-512), another thread count. The difference is not a
bug, and a test must not fail on it. A bug, though, is usually off by far more than rounding.

The bound used here is the standard probabilistic model of rounding error (Higham,
"Accuracy and Stability of Numerical Algorithms", 2nd ed., §2.8 and §3.1): each rounding
contributes a relative error of at most u, the unit roundoff (half the dtype's machine
epsilon), and a sum of n terms accumulates about sqrt(n) * u of them when the errors are
independent. A chain of `depth` such reductions (the layers of a model) adds up their
errors. So two implementations of a computation with reductions of length n, chained
`depth` times, agree to about

    bound = SAFETY * u * sqrt(n) * depth           (relative to the values' magnitude)

SAFETY = 16 covers the difference of two independent rounding paths (x2) with an
eightfold margin for the random-walk model (a normal deviate rarely exceeds 4 sigma, and
a comparison over many elements looks at their maximum). For fp32, n = 4096 and depth 1
that is 6e-5; a real mistake (a missing scale, a wrong mask, a transposed weight) is off
by 1e-2 or more.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

SAFETY = 16.0


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = eps / 2: the largest relative error of one rounding in `dtype`."""
    return torch.finfo(dtype).eps / 2


def tolerance(dtype: torch.dtype = torch.float32, *, reduction: int = 1, depth: int = 1,
              scale: float = 1.0) -> dict[str, float]:
    """`rtol` and `atol` for `torch.testing.assert_close` between two implementations.

    dtype:     the dtype the computation ran in (fp32, bf16, fp16).
    reduction: the longest sum inside one step (a matmul's inner size, a softmax's length).
    depth:     how many such steps are chained (e.g. the matmuls between input and output).
    scale:     the magnitude of the values compared (e.g. `reference.abs().max()`), so that
               `atol` is relative to it and entries near zero do not fail on rounding.
    """
    if reduction < 1 or depth < 1:
        raise ValueError(f"reduction ({reduction}) and depth ({depth}) must be at least 1")
    bound = SAFETY * unit_roundoff(dtype) * math.sqrt(reduction) * depth
    return {"rtol": bound, "atol": bound * max(float(scale), 1e-30)}


def rope_tolerance(max_position: int, rope_theta: float = 10_000.0, *, reduction: int = 1,
                   depth: int = 1, scale: float = 1.0,
                   dtype: torch.dtype = torch.float32) -> dict[str, float]:
    """`tolerance` for values rotated by angles p * theta^(-2i/d) computed in `dtype`.

    The frequency theta ** -x = exp(-x ln theta) carries the rounding of x amplified by
    ln theta, and the angle p * frequency multiplies it by the position p, so an angle is
    off by about u * p * (ln theta + 1) radians; values of size `scale` rotated by it move
    by as much times `scale`. The surrounding reductions add their usual share.
    """
    u = unit_roundoff(dtype)
    angles = max(max_position, 1) * (math.log(rope_theta) + 1)
    bound = SAFETY * u * (math.sqrt(reduction) * depth + angles)
    return {"rtol": bound, "atol": bound * max(float(scale), 1e-30)}


def autocast_tolerance(dtype: torch.dtype, *, depth: int = 1,
                       scale: float = 1.0) -> dict[str, float]:
    """`tolerance` for an autocast run against its fp32 twin.

    Under autocast the matmuls read their inputs rounded to `dtype` (bf16, fp16) and sum in
    fp32, so each of the `depth` chained operations adds one rounding of relative size u of
    `dtype`, not sqrt(n) of them; independent roundings add like a random walk, sqrt(depth)
    u, and 4 of those standard deviations bound the largest of many entries.
    """
    bound = 4.0 * unit_roundoff(dtype) * math.sqrt(depth)
    return {"rtol": bound, "atol": bound * max(float(scale), 1e-30)}


def assert_close(actual: Tensor, expected: Tensor, *, reduction: int = 1, depth: int = 1,
                 dtype: torch.dtype | None = None, msg: str | None = None) -> None:
    """`torch.testing.assert_close` with `tolerance(...)` scaled by the expected values."""
    dtype = dtype or expected.dtype
    scale = float(expected.detach().abs().max()) if expected.numel() else 1.0
    tol = tolerance(dtype, reduction=reduction, depth=depth, scale=scale)
    kwargs = {"msg": msg} if msg else {}
    torch.testing.assert_close(actual.to(expected.dtype), expected, **tol, **kwargs)


def llama_depth(n_layers: int) -> int:
    """Chained reductions from the embedding to the logits of a Llama with `n_layers`
    layers: per layer two RMSNorms, q/k/v, scores, softmax, weighted sum, o_proj, gate/up
    and down (10), plus the final norm and the head."""
    return 10 * n_layers + 2


def model_shape(config) -> dict[str, int]:
    """`reduction` and `depth` of a Llama-shaped model's forward pass, for `tolerance` and
    `assert_close` (anything with dim, n_layers and optionally ffn_hidden_dim or
    hidden_size-like fields and max_seq_len)."""
    hidden = getattr(config, "ffn_hidden_dim", None) or config.dim
    return {"reduction": max(config.dim, hidden), "depth": llama_depth(config.n_layers)}


def model_tolerance(config, dtype: torch.dtype = torch.float32, scale: float = 1.0) -> dict:
    """The tolerance for comparing two implementations' outputs of a model with `config`."""
    return tolerance(dtype, scale=scale, **model_shape(config))


# ---------------------------------------------------------------------------------------
# greedy decoding: equal tokens, or a tie that rounding may break either way

def top2_gap(logits: Tensor) -> Tensor:
    """The distance between the best and the second-best logit, per row: (..., vocab) -> (...)."""
    top = logits.float().topk(2, dim=-1).values
    return top[..., 0] - top[..., 1]


def compare_greedy(ours: list[int], theirs: list[int], step_logits: list[Tensor] | Tensor,
                   atol: float) -> str:
    """Compare two greedy continuations of the same prompt.

    `step_logits[i]` is one implementation's (vocab,) logits for choosing token i. Where the
    tokens first differ, the top-2 gap at that step must be within `atol` (the logits'
    tolerance): rounding may then pick either token, and the rest legitimately diverges.
    Returns "equal" or "tie at step i (gap g)"; raises AssertionError for a real mismatch.
    """
    for i, (a, b) in enumerate(zip(ours, theirs, strict=False)):
        if a == b:
            continue
        gap = float(top2_gap(step_logits[i]))
        if gap <= 2 * atol:  # both implementations are within atol of the true logits
            return f"tie at step {i} (top-2 gap {gap:.2g} within the tolerance {atol:.2g})"
        raise AssertionError(f"greedy tokens differ at step {i} ({a} vs {b}) although the "
                             f"top-2 gap {gap:.3g} is larger than the tolerance {atol:.2g}")
    if len(ours) != len(theirs):
        raise AssertionError(f"one continuation has {len(ours)} tokens, the other "
                             f"{len(theirs)}")
    return "equal"


def greedy_agreement(model, prompt: list[int], ours: list[int], theirs: list[int]) -> str:
    """`compare_greedy` with the step logits recomputed by `model` in one forward pass of
    prompt + ours (the logits that chose each of our tokens, up to rounding)."""
    if not ours:
        return compare_greedy(ours, theirs, [], 0.0)
    device = next(model.parameters()).device
    tokens = torch.tensor([list(prompt) + list(ours)], device=device)
    with torch.no_grad():
        logits = model(tokens)[0, len(prompt) - 1:-1].float().cpu()  # (len(ours), vocab)
    atol = model_tolerance(model.config, scale=float(logits.abs().max()))["atol"]
    return compare_greedy(ours, theirs, logits, atol)


# ---------------------------------------------------------------------------------------
# nested results and optimizer steps

def assert_close_nested(actual, expected, *, reduction: int = 1, depth: int = 1,
                        path: str = "result") -> None:
    """`assert_close` on every tensor of equally shaped dicts, lists and tuples."""
    if isinstance(expected, dict):
        assert set(actual) == set(expected), f"{path}: keys {sorted(actual)} != {sorted(expected)}"
        for key in expected:
            assert_close_nested(actual[key], expected[key], reduction=reduction, depth=depth,
                                path=f"{path}[{key!r}]")
    elif isinstance(expected, (list, tuple)):
        assert len(actual) == len(expected), f"{path}: {len(actual)} items, not {len(expected)}"
        for i, (a, e) in enumerate(zip(actual, expected, strict=True)):
            assert_close_nested(a, e, reduction=reduction, depth=depth, path=f"{path}[{i}]")
    elif isinstance(expected, Tensor):
        assert_close(actual, expected, reduction=reduction, depth=depth, msg=path)
    else:
        assert actual == expected, f"{path}: {actual!r} != {expected!r}"


def adam_drift(step_grads: list[Tensor], lr: float, grad_tolerance=None, *,
               eps: float = 1e-8) -> Tensor:
    """How far two Adam(W) runs may drift apart, weight by weight, when their gradients at
    each step agree only up to rounding: `grad_tolerance(grad)` gives {"rtol", "atol"} as
    `tolerance` does, by default `tolerance` of the gradient's dtype scaled by its largest
    entry.

    Adam steps by lr * m_hat / (sqrt(v_hat) + eps): the gradient's direction, normalised,
    at most about lr. A relative error r in the gradients moves m_hat and sqrt(v_hat) by r
    each, so the step by at most 2 r lr; where |g| is within the error of zero the step can
    flip sign, 2 lr. Summed over the steps, with r the worst so far (first order: the steps
    are small, so the gradients they change move by far less).
    """
    def default(grad):
        return tolerance(grad.dtype, scale=float(grad.abs().max()))

    grad_tolerance = grad_tolerance or default
    worst, drift = torch.zeros_like(step_grads[0]), torch.zeros_like(step_grads[0])
    for grad in step_grads:
        tol = grad_tolerance(grad)
        worst = torch.maximum(worst, (tol["atol"] + tol["rtol"] * grad.abs()) / (grad.abs() + eps))
        drift += lr * torch.clamp(2 * worst, max=2.0)
    return drift
