"""Checks for lesson 08: the rescaling step of online softmax and the causal block skip."""

from __future__ import annotations

import torch

from ..flash import block_kind, online_step, tiled
from ._common import call, expect, passed, rng

__all__ = ["check_rescale_step", "check_causal_skip"]

_KINDS = ("skip", "partial", "full")


def _step_cases() -> list[tuple[str, tuple[torch.Tensor, ...]]]:
    """(description, (m, l, acc, scores, v)) cases, from the first tile to overflow bait."""
    g = rng(8)
    rows, width, d = 3, 4, 5
    cases = []
    scores = torch.randn(rows, width, generator=g)
    scores[0] += 3.0                                 # row 0's max grows, row 2's does not
    scores[2] -= 3.0
    cases.append(("a later tile where some rows find a larger max",
                  (torch.tensor([0.5, -0.2, 1.0]), torch.tensor([2.0, 1.5, 3.0]),
                   torch.randn(rows, d, generator=g), scores,
                   torch.randn(width, d, generator=g))))
    m0 = torch.full((rows,), float("-inf"))
    cases.append(("the first tile (m = -inf, l = 0, acc = 0)",
                  (m0, torch.zeros(rows), torch.zeros(rows, d),
                   torch.randn(rows, width, generator=g), torch.randn(width, d, generator=g))))
    scores = torch.randn(2, rows, width, generator=g)
    scores[..., -1] = float("-inf")                  # a masked key on the diagonal tile
    cases.append(("a batch of two heads with a masked key (-inf score)",
                  (torch.randn(2, rows, generator=g), torch.rand(2, rows, generator=g) + 1,
                   torch.randn(2, rows, d, generator=g), scores,
                   torch.randn(2, width, d, generator=g))))
    cases.append(("a tile one key wide",
                  (torch.tensor([0.1, 0.2, 0.3]), torch.ones(rows), torch.randn(rows, d,
                                                                                 generator=g),
                   torch.randn(rows, 1, generator=g), torch.randn(1, d, generator=g))))
    cases.append(("large scores (around 1000)",
                  (torch.tensor([990.0, 1001.0, 995.0]), torch.tensor([1.0, 2.0, 1.5]),
                   torch.randn(rows, d, generator=g),
                   1000.0 + torch.randn(rows, width, generator=g),
                   torch.randn(width, d, generator=g))))
    return cases


def _mistakes(m, l, acc, scores, v) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """(l, acc) that each classic slip produces, with the message that explains it."""
    m_new = torch.maximum(m, scores.amax(-1))
    alpha = torch.exp(m - m_new)
    p = torch.exp(scores - m_new[..., None])
    l_right, acc_right = alpha * l + p.sum(-1), alpha[..., None] * acc + p @ v
    flipped = torch.exp(m_new - m)
    return {
        "the old l and acc were not rescaled: they were summed under the old max, so "
        "multiply both by exp(m_old - m_new) before adding the new tile":
            (l + p.sum(-1), acc + p @ v),
        "the rescaling factor is upside down: use exp(m_old - m_new), which is at most 1, "
        "not exp(m_new - m_old)":
            (flipped * l + p.sum(-1), flipped[..., None] * acc + p @ v),
        "l is right but acc was not rescaled: the old acc needs the same factor "
        "exp(m_old - m_new) as l":
            (l_right, acc + p @ v),
        "acc is right but l was not rescaled: the old l needs the same factor "
        "exp(m_old - m_new) as acc":
            (l + p.sum(-1), acc_right),
        "the raw scores were exponentiated: exp(scores) overflows once a score passes about "
        "88 in float32; subtract the new running max first, p = exp(scores - m_new)":
            (l + torch.exp(scores).sum(-1), acc + torch.exp(scores) @ v),
        "acc was divided by l: keep acc unnormalised (a sum of exp(s - m) v) and divide by l "
        "once, after the last tile":
            (l_right, acc_right / l_right[..., None]),
    }


def check_rescale_step(fn) -> None:
    """fn(m, l, acc, scores, v) -> (m_new, l_new, acc_new): one tile of flash attention."""
    what = f"your {_name(fn, 'rescale_step')}(m, l, acc, scores, v)"
    for description, inputs in _step_cases():
        args = tuple(t.clone() for t in inputs)
        result = call(fn, *args, what=what)
        expect(isinstance(result, (tuple, list)) and len(result) == 3,
               f"{what} should return a tuple (m_new, l_new, acc_new), got "
               f"{type(result).__name__}")
        expect(all(isinstance(t, torch.Tensor) for t in result),
               f"{what} should return three tensors, got "
               f"{[type(t).__name__ for t in result]}")
        m_new, l_new, acc_new = (t.detach().double() for t in result)
        m_ref, l_ref, acc_ref = (t.double() for t in online_step(*inputs))
        for name, got, ref in (("m_new", m_new, m_ref), ("l_new", l_new, l_ref),
                               ("acc_new", acc_new, acc_ref)):
            expect(got.shape == ref.shape, f"for {description}, {name} has shape "
                   f"{tuple(got.shape)}, expected {tuple(ref.shape)}")
        expect(torch.allclose(m_new, m_ref), f"for {description}, m_new is {_show(m_new)}, "
               f"expected {_show(m_ref)}: the new running max is max(m_old, the largest score "
               "of each row in this tile)")
        if not (torch.isfinite(l_new).all() and torch.isfinite(acc_new).all()):
            raise AssertionError(f"for {description}, l_new or acc_new holds inf or NaN: "
                                 "exponentiate scores - m_new (never the raw scores), so no "
                                 "exponent is above 0")
        if _close(l_new, l_ref) and _close(acc_new, acc_ref):
            continue
        for message, (l_bad, acc_bad) in _mistakes(*inputs).items():
            if _close(l_new, l_bad.double()) and _close(acc_new, acc_bad.double()):
                raise AssertionError(f"for {description}: {message}")
        name, got, ref = (("l_new", l_new, l_ref) if not _close(l_new, l_ref)
                          else ("acc_new", acc_new, acc_ref))
        raise AssertionError(f"for {description}, {name} is off by up to "
                             f"{float((got - ref).abs().max()):.3g}: l_new = alpha * l + "
                             "sum(p) and acc_new = alpha * acc + p @ v, with "
                             "p = exp(scores - m_new) and alpha = exp(m - m_new)")
    passed("the rescaling step is right: first tile, growing max, masked keys, large scores")


def _name(fn, default: str) -> str:
    name = getattr(fn, "__name__", "")
    return name if name.isidentifier() else default


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, atol=1e-5, rtol=1e-5)


def _show(t: torch.Tensor) -> str:
    return "[" + ", ".join(f"{x:.3g}" for x in t.flatten()[:4].tolist()) + \
        (", ...]" if t.numel() > 4 else "]")


_GRIDS = [(8, 8, 4, 4), (10, 10, 4, 3), (7, 7, 1, 1), (6, 6, 6, 6), (5, 12, 2, 4),
          (3, 9, 3, 2)]  # (q_len, kv_len, block_q, block_k); kv_len > q_len: a cached prefix


def _tiles():
    """(q_start, q_end, k_start, k_end, offset) of every tile of every grid."""
    for q_len, kv_len, block_q, block_k in _GRIDS:
        for tile in tiled.tiles(q_len, kv_len, block_q, block_k, causal=False):
            yield tile.q_start, tile.q_end, tile.k_start, tile.k_end, tile.offset


def _skip_first_row(qs, qe, ks, ke, offset):
    return "skip" if ks > qs + offset else block_kind(qs, qe, ks, ke, offset)


def _full_last_row(qs, qe, ks, ke, offset):
    return "full" if ke - 1 <= qe - 1 + offset else block_kind(qs, qe, ks, ke, offset)


def _diagonal_skipped(qs, qe, ks, ke, offset):
    return "skip" if ks >= qe - 1 + offset else block_kind(qs, qe, ks, ke, offset)


_TILE_MISTAKES = [
    (lambda qs, qe, ks, ke, offset: block_kind(qs, qe, ks, ke, 0),
     "the offset is ignored: with a cached prefix (kv_len > q_len) query i is position "
     "i + offset and sees keys up to i + offset"),
    (_skip_first_row, "a tile is skipped when its first query row sees none of its keys, "
     "but the later rows may: skip only if the last row (q_end - 1) sees nothing, i.e. "
     "k_start > q_end - 1 + offset"),
    (_full_last_row, "a tile is called full when its last row sees all of it, but earlier "
     "rows see less: it is full only if the first row does, i.e. k_end - 1 <= q_start + offset"),
    (_diagonal_skipped, "the tile whose first key is the last row's own position is skipped; "
     "a query sees itself, so skip only if k_start > q_end - 1 + offset (strictly greater)"),
]


def check_causal_skip(fn) -> None:
    """fn(q_start, q_end, k_start, k_end, offset) -> "skip" | "partial" | "full"."""
    what = f"your {_name(fn, 'tile_kind')}(q_start, q_end, k_start, k_end, offset)"
    tiles = list(_tiles())
    answers = []
    for tile in tiles:
        kind = call(fn, *tile, what=what)
        expect(kind in _KINDS, f"{what} returned {kind!r} for tile {_describe(tile)}; return "
               "one of 'skip', 'partial', 'full'")
        answers.append(kind)
    wrong = [(tile, kind) for tile, kind in zip(tiles, answers, strict=True)
             if kind != block_kind(*tile)]
    if not wrong:
        passed(f"the causal block skip is right on all {len(tiles)} tiles of "
               f"{len(_GRIDS)} grids, with and without a cached prefix")
        return
    for mistake, message in _TILE_MISTAKES:
        if all(kind == mistake(*tile) for tile, kind in zip(tiles, answers, strict=True)):
            raise AssertionError(message)
    tile, kind = wrong[0]
    raise AssertionError(f"{len(wrong)} of {len(tiles)} tiles are wrong; e.g. tile "
                         f"{_describe(tile)} is {block_kind(*tile)!r}, you said {kind!r}. "
                         "Look at its corners: nothing is visible if even the last row "
                         "(q_end - 1) sees no key; everything is if even the first row "
                         "(q_start) sees the last key (k_end - 1)")


def _describe(tile) -> str:
    qs, qe, ks, ke, offset = tile
    return f"(queries {qs}..{qe - 1}, keys {ks}..{ke - 1}, offset {offset})"
