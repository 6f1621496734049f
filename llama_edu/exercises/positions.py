"""Checks for lesson 02: the RoPE rotation of one pair, the ALiBi slopes, and ALiBi's whole
attention bias for any head count."""

from __future__ import annotations

import math

import torch

from ..numerics import rope_tolerance
from ..positions import alibi_bias, alibi_slopes
from ._common import call, close, close_tolerance, expect, expect_tensor, passed, rng

__all__ = ["check_rope_pair", "check_alibi_slopes", "check_alibi_mask"]


def _close(actual, expected: torch.Tensor, tol: dict | None = None) -> bool:
    """Within rounding: `tol` (rtol/atol) where the check knows the computation, else one
    elementwise step in the less precise dtype (`_common.close`)."""
    if tol is None:
        return close(actual, expected)
    return (isinstance(actual, torch.Tensor) and actual.shape == expected.shape
            and torch.allclose(actual.detach().double(), expected.double(), **tol))


# ---------------------------------------------------------------------------------------
# RoPE: one pair


def _rotate(pair: torch.Tensor, angle: float, sign: float = 1.0) -> torch.Tensor:
    a, b = pair[..., 0].double(), pair[..., 1].double()
    c, s = math.cos(angle), sign * math.sin(angle)
    return torch.stack([a * c - b * s, a * s + b * c], dim=-1)


def _rope_pair_reference(pair, position, i, head_dim, rope_theta):
    return _rotate(pair, position * rope_theta ** (-2 * i / head_dim))


def _rope_pair_mistakes(pair, position, i, head_dim, rope_theta):
    """What the classic mistakes return, each with the sentence that explains it."""
    theta = rope_theta ** (-2 * i / head_dim)
    return [
        (_rotate(pair, position * theta, sign=-1.0),
         "you rotated clockwise (the sin terms have the wrong signs); RoPE turns the pair "
         "counter-clockwise: a' = a cos - b sin, b' = a sin + b cos"),
        (_rotate(pair, theta),
         "the angle does not grow with the position: it is position * theta_i, not theta_i"),
        (_rotate(pair, position * rope_theta ** (-i / head_dim)),
         "the frequency exponent misses a factor 2: theta_i = rope_theta ** (-2 * i / head_dim)"),
        (_rotate(pair, position * rope_theta ** (2 * i / head_dim)),
         "the exponent's sign is flipped: theta_i = rope_theta ** (-2 * i / head_dim) shrinks "
         "with i, so later pairs turn slower"),
        (_rotate(pair, position * 10_000.0 ** (-2 * i / head_dim)),
         "you ignored the rope_theta argument and used 10,000 (Llama 3 uses 500,000)"),
        (pair.double(), "the pair came back unchanged: rotate it by the angle"),
    ]


def check_rope_pair(fn) -> None:
    """fn(pair, position, i, head_dim, rope_theta=10_000.0) -> the pair rotated by
    position * rope_theta ** (-2i / head_dim); pair (..., 2) holds (x_2i, x_2i+1)."""
    generator = rng(0)
    cases = [  # pair, position, i, head_dim, rope_theta
        (torch.tensor([1.0, 0.0]), 1, 0, 2, 10_000.0),
        (torch.tensor([0.3, -0.7]), 0, 0, 8, 10_000.0),
        (torch.tensor([0.0, 1.0]), 3, 0, 64, 10_000.0),
        (torch.randn(5, 2, generator=generator), 7, 2, 8, 10_000.0),
        (torch.randn(3, 4, 2, generator=generator), 100, 3, 16, 10_000.0),
        (torch.randn(4, 2, generator=generator), 4095, 1, 4, 10_000.0),
        (torch.randn(6, 2, generator=generator), 50, 5, 16, 500_000.0),
    ]
    for pair, position, i, head_dim, rope_theta in cases:
        what = (f"rope_pair(pair of shape {tuple(pair.shape)}, position={position}, i={i}, "
                f"head_dim={head_dim}, rope_theta={rope_theta:g})")
        out = call(fn, pair.clone(), position, i, head_dim, rope_theta, what=what)
        expected = _rope_pair_reference(pair, position, i, head_dim, rope_theta)
        # the angle position * theta^(-2i/d) may be computed in float32: its rounding grows
        # with the position and ln(theta) (numerics.rope_tolerance)
        tol = rope_tolerance(position, rope_theta, scale=float(pair.abs().max()),
                             dtype=torch.float32)
        if _close(out, expected, tol):
            continue
        hint = next((h for wrong, h in _rope_pair_mistakes(pair, position, i, head_dim,
                                                           rope_theta)
                     if _close(out, wrong, tol)), "")
        if isinstance(out, torch.Tensor) and out.shape == expected.shape:
            got = out.detach().reshape(-1, 2)[0].tolist()
            want = expected.reshape(-1, 2)[0].tolist()
            hint = (f"first pair: expected ({want[0]:.4f}, {want[1]:.4f}), got "
                    f"({got[0]:.4f}, {got[1]:.4f})" + (f": {hint}" if hint else ""))
        expect_tensor(out, expected, what, atol=tol["atol"], rtol=tol["rtol"],
                      hint=hint or "return the pair with the same shape, "
                      "the last dimension holding the two rotated values")
    passed("rope_pair rotates each pair by position * theta_i, counter-clockwise, for every "
           "position, frequency and rope_theta tried")


# ---------------------------------------------------------------------------------------
# ALiBi slopes


def _geometric(n: int) -> list[float]:
    return [2.0 ** (-8.0 * (k + 1) / n) for k in range(n)]


def _alibi_mistakes(n_heads: int) -> list[tuple[list[float], str]]:
    closest = 2 ** (n_heads.bit_length() - 1)
    mistakes = [
        ([2.0 ** (-8.0 * k / n_heads) for k in range(n_heads)],
         "the first slope should be 2^(-8/n), not 1: count the heads from 1, not 0"),
        (_geometric(n_heads)[::-1],
         "the order is reversed: head 0 gets the largest slope 2^(-8/n), the last head 2^-8"),
        ([1.0 / 2 ** (k + 1) for k in range(n_heads)],
         "halving per head is the rule for 8 heads only: the ratio is 2^(-8/n) for n heads"),
    ]
    if closest != n_heads:
        mistakes += [
            (_geometric(n_heads),
             f"{n_heads} is not a power of two, and the paper does not use 2^(-8/n) then: take "
             f"all {closest} slopes of the lower power of two, then every other slope of "
             f"{2 * closest} heads"),
            (_geometric(2 * closest)[:n_heads],
             f"these are the first {n_heads} slopes of {2 * closest} heads; take all {closest} "
             f"slopes of {closest} heads, then every other slope of {2 * closest} heads "
             f"(positions 0, 2, 4, ...)"),
            (_geometric(closest) + _geometric(2 * closest)[1::2][: n_heads - closest],
             "the extra slopes repeat earlier ones: take the slopes of "
             f"{2 * closest} heads at positions 0, 2, 4, ... ([0::2]), which fall between "
             f"those of {closest} heads"),
            (_geometric(2 * closest)[0::2][: n_heads - closest] + _geometric(closest),
             f"the extra slopes go after the {closest} slopes of the lower power of two, "
             "not before"),
        ]
    return mistakes


def check_alibi_slopes(fn) -> None:
    """fn(n_heads) -> (n_heads,) slopes: 2^(-8k/n) for a power of two n, else the paper's rule."""
    for n_heads in (8, 1, 2, 4, 16, 12, 6, 3, 5, 24):
        what = f"alibi_slopes({n_heads})"
        out = call(fn, n_heads, what=what)
        expected = alibi_slopes(n_heads)
        if isinstance(out, (list, tuple)):
            raise AssertionError(f"{what} returned a {type(out).__name__}; return a 1-D tensor, "
                                 "e.g. torch.tensor(slopes)")
        if _close(out, expected):
            continue
        hint = next((h for wrong, h in _alibi_mistakes(n_heads)
                     if _close(out, torch.tensor(wrong))), "")
        if isinstance(out, torch.Tensor) and out.shape == expected.shape:
            shown = ", ".join(f"{v:.4g}" for v in out.detach().double().tolist()[:6])
            want = ", ".join(f"{v:.4g}" for v in expected.tolist()[:6])
            more = ", ..." if n_heads > 6 else ""
            hint = f"expected [{want}{more}], got [{shown}{more}]" + (f": {hint}" if hint else "")
        expect_tensor(out, expected, what, hint=hint or "one slope per head, a 1-D tensor")
    passed("alibi_slopes matches the paper for powers of two (8 heads: 1/2 ... 1/256) and "
           "for 3, 5, 6, 12 and 24 heads")


# ---------------------------------------------------------------------------------------
# ALiBi: the whole additive mask, any head count, queries after a cache


def _alibi_reference(slopes: torch.Tensor, seq_len: int, start_pos: int) -> torch.Tensor:
    """The model's own mask (Llama._alibi_mask): the paper's -slope * (i - j) for keys at or
    before the query, -inf after it."""
    from ..model import Llama, LlamaConfig

    n_heads = slopes.numel()
    config = LlamaConfig.from_preset("micro", dim=4 * n_heads, n_heads=n_heads,
                                     n_kv_heads=n_heads, pos_encoding="alibi")
    with torch.device("meta"):
        model = Llama(config)
    h = torch.zeros(1, seq_len, config.dim)
    return model._alibi_mask(seq_len, start_pos, None, h)


def _alibi_mask_mistakes(slopes, seq_len, start_pos):
    kv_len = start_pos + seq_len
    q = torch.arange(start_pos, kv_len)[:, None]
    k = torch.arange(kv_len)[None, :]
    distance = (q - k).float()                                   # (seq, kv_len)
    s = slopes.float()[:, None, None]
    future = (k > q)[None]
    inf = float("-inf")
    yield ((s * distance).masked_fill(future, inf),
           "the sign is flipped: ALiBi SUBTRACTS slope * (i - j), so far keys get a more "
           "negative score")
    yield (-s * distance,
           "keys after the query must be hidden with -inf (the causal mask); yours get a "
           "positive bonus")
    yield ((-s * distance).masked_fill(future, 0.0),
           "a 0 leaves future keys visible to the softmax; fill them with float('-inf')")
    yield (-s * distance.abs(),
           "you used |i - j| and left the future keys visible; ALiBi is causal: -inf after "
           "the query")
    yield ((-s * distance).masked_fill((k >= q)[None], inf),
           "the query's own position is a visible key with bias 0: mask only j > i")
    q0 = torch.arange(seq_len)[:, None]
    yield ((-s * (q0 - k).float()).masked_fill((k > q0)[None], inf),
           "the queries sit at positions start_pos .. start_pos + seq_len - 1 (after the "
           "cached keys), not at 0 .. seq_len - 1")


def check_alibi_mask(fn) -> None:
    """fn(slopes, seq_len, start_pos) -> (n_heads, seq_len, start_pos + seq_len) float mask:
    -slope_h * (i - j) for key j <= query i, -inf for j > i, queries at start_pos + 0.."""
    generator = rng(11)
    cases = [(8, 6, 0), (12, 5, 0), (1, 4, 3), (5, 1, 7)]
    extra = int(torch.randint(2, 7, (1,), generator=generator))
    cases.append((extra, int(torch.randint(2, 6, (1,), generator=generator)),
                  int(torch.randint(0, 5, (1,), generator=generator))))
    for n_heads, seq_len, start_pos in cases:
        slopes = alibi_slopes(n_heads)
        what = (f"alibi_mask with {n_heads} heads, seq_len {seq_len}, start_pos {start_pos}")
        out = call(fn, slopes.clone(), seq_len, start_pos, what=what)
        expected = _alibi_reference(slopes, seq_len, start_pos)
        # the paper's formula, written out: the model and the formula must agree too
        positions = torch.arange(start_pos + seq_len)
        paper = alibi_bias(slopes, positions[start_pos:], positions).masked_fill(
            positions[None, None, :] > positions[start_pos:, None][None], float("-inf"))
        assert torch.equal(expected, paper), "the package's ALiBi mask left the paper's formula"
        expect(isinstance(out, torch.Tensor),
               f"{what} should return a torch.Tensor, got {type(out).__name__}")
        expect(tuple(out.shape) == tuple(expected.shape),
               f"{what} returned shape {tuple(out.shape)}, expected {tuple(expected.shape)}: "
               "(n_heads, seq_len, start_pos + seq_len), one row per new query and one column "
               "per key, cached ones included")
        expect(out.is_floating_point(), f"{what} should be a float tensor (an additive mask), "
               f"got {out.dtype}")
        out = out.detach().float()
        hidden = torch.isinf(expected)
        # one product slope * distance per entry: a single rounding in float32
        tol = close_tolerance(out, expected[~hidden])
        if torch.equal(torch.isinf(out) & (out < 0), hidden) and torch.allclose(
                out[~hidden], expected[~hidden], **tol):
            continue
        for wrong, hint in _alibi_mask_mistakes(slopes, seq_len, start_pos):
            if wrong.shape == out.shape and torch.equal(torch.isinf(wrong), torch.isinf(out)) \
                    and torch.allclose(out[~torch.isinf(out)], wrong[~torch.isinf(wrong)],
                                       **tol):
                raise AssertionError(f"{what}: {hint}")
        raise AssertionError(f"{what} differs from -slope_h * (i - j) with -inf for j > i, "
                             "queries at start_pos .. start_pos + seq_len - 1")
    passed("alibi_mask equals the model's ALiBi mask (and the paper's formula) for 1, 5, 8 and "
           "12 heads, with and without cached keys")
