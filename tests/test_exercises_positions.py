"""The lesson 02 checks: references pass, stubs say 'not written yet', and each classic
mistake gets its own explanation."""

import math

import pytest
import torch

from llama_edu.exercises import check_alibi_slopes, check_rope_pair

# ---- references, written the way a learner would -------------------------------------


def rope_pair_ok(pair, position, i, head_dim, rope_theta=10_000.0):
    angle = torch.tensor(position * rope_theta ** (-2 * i / head_dim))
    a, b = pair[..., 0], pair[..., 1]
    return torch.stack([a * angle.cos() - b * angle.sin(),
                        a * angle.sin() + b * angle.cos()], dim=-1)


def alibi_ok(n_heads):
    def geometric(n):
        return [2 ** (-8 * (k + 1) / n) for k in range(n)]
    closest = 2 ** int(math.log2(n_heads))
    slopes = geometric(closest)
    slopes += geometric(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes)


def stub(*args):
    raise NotImplementedError()


CHECKS = [(check_rope_pair, rope_pair_ok), (check_alibi_slopes, alibi_ok)]


@pytest.mark.parametrize("check, reference", CHECKS, ids=lambda c: getattr(c, "__name__", ""))
def test_reference_passes_with_one_line(check, reference, capsys):
    check(reference)
    out = capsys.readouterr()
    assert out.out.count("\n") == 1 and out.out.startswith("✔") and out.err == ""


@pytest.mark.parametrize("check", [c for c, _ in CHECKS], ids=lambda c: c.__name__)
def test_stub_is_not_written_yet(check):
    with pytest.raises(AssertionError, match="not written yet"):
        check(stub)


# ---- RoPE pair ---------------------------------------------------------------------------


def rotate(pair, angle, sign=1.0):
    angle = torch.tensor(angle)
    a, b = pair[..., 0], pair[..., 1]
    c, s = angle.cos(), sign * angle.sin()
    return torch.stack([a * c - b * s, a * s + b * c], dim=-1)


@pytest.mark.parametrize("wrong, match", [
    (lambda p, m, i, d, t=1e4: rotate(p, m * t ** (-2 * i / d), sign=-1.0), "clockwise"),
    (lambda p, m, i, d, t=1e4: rotate(p, t ** (-2 * i / d)), "grow with the position"),
    (lambda p, m, i, d, t=1e4: rotate(p, m * t ** (-i / d)), "misses a factor 2"),
    (lambda p, m, i, d, t=1e4: rotate(p, m * t ** (2 * i / d)), "sign is flipped"),
    (lambda p, m, i, d, t=1e4: rotate(p, m * 1e4 ** (-2 * i / d)), "ignored the rope_theta"),
    (lambda p, m, i, d, t=1e4: p.clone(), "came back unchanged"),
])
def test_rope_pair_mistakes_are_named(wrong, match):
    with pytest.raises(AssertionError, match=match):
        check_rope_pair(wrong)


def test_rope_pair_wrong_shape_and_type_are_reported():
    with pytest.raises(AssertionError, match=r"returned shape \(1, 2\), expected \(2,\)"):
        check_rope_pair(lambda p, m, i, d, t=1e4: rope_pair_ok(p, m, i, d, t)[None])
    with pytest.raises(AssertionError, match="should return a torch.Tensor, got tuple"):
        check_rope_pair(lambda p, m, i, d, t=1e4: tuple(rope_pair_ok(p, m, i, d, t).unbind(-1)))


def test_rope_pair_unknown_mistake_still_shows_expected_and_got():
    with pytest.raises(AssertionError, match=r"first pair: expected \(0\.5403, 0\.8415\), got"):
        check_rope_pair(lambda p, m, i, d, t=1e4: 2 * rope_pair_ok(p, m, i, d, t))


def test_rope_pair_crash_is_reported_in_words():
    with pytest.raises(AssertionError, match="raised TypeError"):
        check_rope_pair(lambda p, m, i, d, t=1e4: torch.cos(m))


# ---- ALiBi slopes ------------------------------------------------------------------------


def geometric(n):
    return [2 ** (-8 * (k + 1) / n) for k in range(n)]


def lower_power(n):
    return 2 ** int(math.log2(n))


@pytest.mark.parametrize("wrong, match", [
    (lambda n: torch.tensor([2 ** (-8 * k / n) for k in range(n)]), "count the heads from 1"),
    (lambda n: torch.tensor(geometric(n)[::-1]), "order is reversed"),
    (lambda n: torch.tensor([0.5 ** (k + 1) for k in range(n)]), "rule for 8 heads only"),
    (lambda n: torch.tensor(geometric(n)), "the paper does not use 2\\^\\(-8/n\\) then"),
    (lambda n: torch.tensor(geometric(2 ** math.ceil(math.log2(n)))[:n]), "these are the first"),
    (lambda n: torch.tensor(geometric(lower_power(n))
                            + geometric(2 * lower_power(n))[1::2][: n - lower_power(n)]),
     "repeat earlier ones"),
    (lambda n: torch.tensor(geometric(2 * lower_power(n))[0::2][: n - lower_power(n)]
                            + geometric(lower_power(n))), "not before"),
])
def test_alibi_mistakes_are_named(wrong, match):
    with pytest.raises(AssertionError, match=match):
        check_alibi_slopes(wrong)


def test_alibi_list_and_wrong_shape_are_reported():
    with pytest.raises(AssertionError, match=r"returned a list; return a 1-D tensor"):
        check_alibi_slopes(lambda n: alibi_ok(n).tolist())
    with pytest.raises(AssertionError, match=r"returned shape \(1, 8\), expected \(8,\)"):
        check_alibi_slopes(lambda n: alibi_ok(n)[None])


def test_alibi_unknown_mistake_shows_expected_and_got():
    with pytest.raises(AssertionError, match=r"expected \[0\.5, 0\.25"):
        check_alibi_slopes(lambda n: alibi_ok(n) * 2)
