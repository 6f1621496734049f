"""Shared helpers for exercise checks: draw inputs, call the learner's code, compare, explain.

A check draws its random inputs from `rng(k)`. In a learner's own session that is seed k,
so the feedback is the same every time. In a graded run the grader sets a fresh base seed
(`grading_seed`), so a record of answers for the fixed inputs is worth nothing there.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator

import torch

from ..numerics import tolerance

_GRADING_SEED: int | None = None   # None: a learner's session; else the grader's fresh seed


def rng(k: int) -> torch.Generator:
    """The generator a check draws its inputs from: seed k, or k mixed with the grading seed."""
    if _GRADING_SEED is None:
        return torch.Generator().manual_seed(k)
    return torch.Generator().manual_seed((_GRADING_SEED * 1_000_003 + k) % 2**63)


@contextlib.contextmanager
def grading_seed(seed: int | None) -> Iterator[None]:
    """Draw every check's inputs from `seed` inside the block (None: the fixed seeds)."""
    global _GRADING_SEED
    previous, _GRADING_SEED = _GRADING_SEED, seed
    try:
        yield
    finally:
        _GRADING_SEED = previous


def passed(message: str) -> None:
    """The one line a check prints when everything is right."""
    from ._language import localize

    print(f"✔ {localize(message)}")


def expect(condition: bool, message: str) -> None:
    """Fail with `message` (what was expected, what came back, the likely mistake)."""
    if not condition:
        raise AssertionError(message)


class ForbiddenCall(AssertionError):
    """The learner's function called what its exercise asks them to write without."""


def forbids(*names: str):
    """Declare the torch functions a check's learner may not call, e.g.
    `@forbids("repeat_interleave")`. The check passes `forbidden=` to `call`, which refuses
    them at run time in a learner's session; a graded run also reads the answer cell's
    source for them, since the kernel's run-time guard is the learner's to patch."""
    def mark(check):
        check.forbidden_calls = tuple(names)
        return check
    return mark


class _Refuse(torch.overrides.TorchFunctionMode):
    def __init__(self, names: tuple[str, ...], what: str):
        super().__init__()
        self.names, self.what = names, what

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in self.names and not _from_the_grader(sys._getframe(1)):
            raise ForbiddenCall(f"{self.what} calls {name}, which this exercise asks you to "
                                "write without")
        return func(*args, **(kwargs or {}))


def _from_the_grader(frame) -> bool:
    """Whether a torch call comes from the grader's recorder (its own bookkeeping, e.g. a
    tensor's numel while it records a result), which runs inside the learner's call."""
    return frame is not None and frame.f_globals.get("__name__", "").startswith(
        "llama_edu.grading")


def call(fn: Callable, *args, what: str, forbidden: tuple[str, ...] = (), **kwargs):
    """Run the learner's function; turn a crash into feedback instead of a traceback.
    `forbidden`: torch functions it may not call (see `forbids`)."""
    if not callable(fn):
        raise AssertionError(f"{what}: expected a function, got {type(fn).__name__}")
    try:
        if forbidden:
            with _Refuse(tuple(forbidden), what):
                return fn(*args, **kwargs)
        return fn(*args, **kwargs)
    except ForbiddenCall as error:       # the learner sees it as any failed check
        raise AssertionError(str(error)) from None
    except NotImplementedError:
        raise AssertionError(f"{what} is not written yet: replace `raise NotImplementedError()` "
                             "with your code") from None
    except Exception as error:  # the learner's bug, reported in words
        raise AssertionError(f"{what} raised {type(error).__name__}: {error}") from None


def _rounding_dtype(*tensors) -> torch.dtype:
    """The least precise floating dtype among `tensors`: the one whose rounding shows."""
    floats = [t.dtype for t in tensors if isinstance(t, torch.Tensor) and t.is_floating_point()]
    return max(floats or [torch.float32], key=lambda d: torch.finfo(d).eps)


def close_tolerance(actual, expected: torch.Tensor, *, reduction: int = 1,
                    depth: int = 1) -> dict[str, float]:
    """`rtol`/`atol` for a learner's result against the reference: `numerics.tolerance` for
    the less precise of the two dtypes, the longest sum inside one step (`reduction`) and
    the number of chained steps (`depth`), scaled by the reference's magnitude."""
    scale = float(expected.detach().abs().nan_to_num(0, 0, 0).max()) if expected.numel() else 1.0
    return tolerance(_rounding_dtype(actual, expected), reduction=reduction, depth=depth,
                     scale=max(scale, 1.0))


def close(actual, expected: torch.Tensor, *, reduction: int = 1, depth: int = 1,
          equal_nan: bool = False) -> bool:
    """Whether `actual` is a tensor of `expected`'s shape within rounding of it (see
    `close_tolerance`)."""
    if not isinstance(actual, torch.Tensor) or tuple(actual.shape) != tuple(expected.shape):
        return False
    tol = close_tolerance(actual, expected, reduction=reduction, depth=depth)
    return torch.allclose(actual.detach().double(), expected.detach().double(), **tol,
                          equal_nan=equal_nan)


def expect_tensor(actual, expected: torch.Tensor, what: str, hint: str = "", *,
                  reduction: int = 1, depth: int = 1, atol: float | None = None,
                  rtol: float | None = None) -> None:
    """Type, shape, dtype kind and values of a tensor, each with its own message.

    The values must agree within rounding: `close_tolerance(reduction=, depth=)` describes
    the computation (the longest sum in one step, the number of chained steps); `atol` and
    `rtol` override it where a check knows better."""
    if not isinstance(actual, torch.Tensor):
        raise AssertionError(f"{what} should return a torch.Tensor, got {type(actual).__name__}")
    if tuple(actual.shape) != tuple(expected.shape):
        raise AssertionError(f"{what} returned shape {tuple(actual.shape)}, expected "
                             f"{tuple(expected.shape)}" + (f". {hint}" if hint else ""))
    if expected.dtype == torch.bool:
        if actual.dtype != torch.bool:
            raise AssertionError(f"{what} should return a bool tensor, got {actual.dtype}")
        wrong = int((actual != expected).sum())
        expect(wrong == 0, f"{what}: {wrong} of {expected.numel()} entries are wrong"
               + (f". {hint}" if hint else ""))
        return
    tol = close_tolerance(actual, expected, reduction=reduction, depth=depth)
    atol = tol["atol"] if atol is None else atol
    rtol = tol["rtol"] if rtol is None else rtol
    actual = actual.detach().to(torch.float64)
    expected = expected.detach().to(torch.float64)
    if not torch.allclose(actual, expected, atol=atol, rtol=rtol, equal_nan=False):
        diff = (actual - expected).abs()
        diff = torch.where(torch.isnan(diff), torch.full_like(diff, float("inf")), diff)
        raise AssertionError(f"{what} is off by up to {float(diff.max()):.3g} "
                             f"(tolerance {atol:.2g})" + (f". {hint}" if hint else ""))
