"""Lesson 02's checks: the RoPE rotation of one pair, and the ALiBi slopes."""

import math

import torch

from ._contract import Contract

# ---- RoPE pair --------------------------------------------------------------------------


def rope_pair_ok(pair, position, i, head_dim, rope_theta=10_000.0):
    angle = torch.tensor(position * rope_theta ** (-2 * i / head_dim))
    a, b = pair[..., 0], pair[..., 1]
    return torch.stack([a * angle.cos() - b * angle.sin(),
                        a * angle.sin() + b * angle.cos()], dim=-1)


def rotate(pair, angle, sign=1.0):
    angle = torch.tensor(angle)
    a, b = pair[..., 0], pair[..., 1]
    c, s = angle.cos(), sign * angle.sin()
    return torch.stack([a * c - b * s, a * s + b * c], dim=-1)


# ---- ALiBi slopes -----------------------------------------------------------------------


def geometric(n):
    return [2 ** (-8 * (k + 1) / n) for k in range(n)]


def lower_power(n):
    return 2 ** int(math.log2(n))


def alibi_ok(n_heads):
    closest = lower_power(n_heads)
    slopes = geometric(closest)
    slopes += geometric(2 * closest)[0::2][: n_heads - closest]
    return torch.tensor(slopes)


# ---- the whole ALiBi mask ----------------------------------------------------------------


def alibi_mask_ok(slopes, seq_len, start_pos):
    q = torch.arange(start_pos, start_pos + seq_len)[:, None]        # (seq, 1)
    k = torch.arange(start_pos + seq_len)[None, :]                    # (1, kv_len)
    bias = -slopes[:, None, None] * (q - k)                           # (h, seq, kv_len)
    return bias.masked_fill(k > q, float("-inf"))


def alibi_mask_loops(slopes, seq_len, start_pos):
    out = torch.empty(len(slopes), seq_len, start_pos + seq_len)
    for h, slope in enumerate(slopes.tolist()):
        for row in range(seq_len):
            i = start_pos + row
            for j in range(start_pos + seq_len):
                out[h, row, j] = -slope * (i - j) if j <= i else float("-inf")
    return out


def _mask_variant(sign=-1.0, fill=float("-inf"), absolute=False, diagonal=False, offset=True,
                  mask=True):
    def alibi_mask(slopes, seq_len, start_pos):
        q = torch.arange(start_pos if offset else 0, (start_pos if offset else 0) + seq_len)
        q = q[:, None]
        k = torch.arange(start_pos + seq_len)[None, :]
        d = (q - k).float().abs() if absolute else (q - k).float()
        bias = sign * slopes[:, None, None] * d
        if not mask:
            return bias
        return bias.masked_fill(k >= q if diagonal else k > q, fill)
    return alibi_mask


CONTRACTS = {
    "check_rope_pair": Contract(references=[rope_pair_ok], mistakes=[
        (lambda p, m, i, d, t=1e4: rotate(p, m * t ** (-2 * i / d), sign=-1.0), "clockwise"),
        (lambda p, m, i, d, t=1e4: rotate(p, t ** (-2 * i / d)), "grow with the position"),
        (lambda p, m, i, d, t=1e4: rotate(p, m * t ** (-i / d)), "misses a factor 2"),
        (lambda p, m, i, d, t=1e4: rotate(p, m * t ** (2 * i / d)), "sign is flipped"),
        (lambda p, m, i, d, t=1e4: rotate(p, m * 1e4 ** (-2 * i / d)), "ignored the rope_theta"),
        (lambda p, m, i, d, t=1e4: p.clone(), "came back unchanged"),
        (lambda p, m, i, d, t=1e4: rope_pair_ok(p, m, i, d, t)[None],
         r"returned shape \(1, 2\), expected \(2,\)"),
        (lambda p, m, i, d, t=1e4: tuple(rope_pair_ok(p, m, i, d, t).unbind(-1)),
         "should return a torch.Tensor, got tuple"),
        (lambda p, m, i, d, t=1e4: 2 * rope_pair_ok(p, m, i, d, t),   # no known slip
         r"first pair: expected \(0\.5403, 0\.8415\), got"),
    ]),
    "check_alibi_slopes": Contract(references=[alibi_ok], mistakes=[
        (lambda n: torch.tensor([2 ** (-8 * k / n) for k in range(n)]), "count the heads from 1"),
        (lambda n: torch.tensor(geometric(n)[::-1]), "order is reversed"),
        (lambda n: torch.tensor([0.5 ** (k + 1) for k in range(n)]), "rule for 8 heads only"),
        (lambda n: torch.tensor(geometric(n)), "the paper does not use 2\\^\\(-8/n\\) then"),
        (lambda n: torch.tensor(geometric(2 ** math.ceil(math.log2(n)))[:n]),
         "these are the first"),
        (lambda n: torch.tensor(geometric(lower_power(n))
                                + geometric(2 * lower_power(n))[1::2][: n - lower_power(n)]),
         "repeat earlier ones"),
        (lambda n: torch.tensor(geometric(2 * lower_power(n))[0::2][: n - lower_power(n)]
                                + geometric(lower_power(n))), "not before"),
        (lambda n: alibi_ok(n).tolist(), r"returned a list; return a 1-D tensor"),
        (lambda n: alibi_ok(n)[None], r"returned shape \(1, 8\), expected \(8,\)"),
        (lambda n: alibi_ok(n) * 3,                                        # no known slip
         r"expected \[0\.5, 0\.25, .*got \[1\.5, 0\.75"),
    ]),
    "check_alibi_mask": Contract(references=[alibi_mask_ok, alibi_mask_loops], mistakes=[
        (_mask_variant(sign=1.0), "the sign is flipped"),
        (_mask_variant(mask=False), "get a positive bonus"),
        (_mask_variant(fill=0.0), "a 0 leaves future keys visible"),
        (_mask_variant(absolute=True, mask=False), r"you used \|i - j\|"),
        (_mask_variant(diagonal=True), "mask only j > i"),
        (_mask_variant(offset=False), "the queries sit at positions start_pos"),
        (lambda s, n, p: alibi_mask_ok(s, n, p)[:, :, p:], "returned shape"),
        (lambda s, n, p: alibi_mask_ok(s, n, p).tolist(), "should return a torch.Tensor"),
    ]),
}
