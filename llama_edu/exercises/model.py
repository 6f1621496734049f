"""Checks for lesson 00: one layer's attention weights, then a Llama's parameters counted by
hand, GQA and the FFN multiplier included.

parameters = V*d (embedding) + n_layers * (2*d*d + 2*d*n_kv*head_dim (attention)
             + 3*d*hidden (SwiGLU) + 2*d (two RMSNorms)) + d (final norm) + V*d (LM head)
"""

from __future__ import annotations

import torch

from ..model import LlamaConfig, count_parameters
from ._common import call, forbids, passed, rng

__all__ = ["check_attention_parameters", "check_count_parameters"]

PRESETS = ["llama2-70b", "llama2-7b", "llama2-13b", "llama1-65b", "llama1-33b", "tiny"]


def _hidden(dim, multiple_of, multiplier, use_multiplier=True, round_up=True):
    hidden = int(2 * 4 * dim / 3)
    if multiplier is not None and use_multiplier:
        hidden = int(multiplier * hidden)
    if round_up:
        hidden = multiple_of * ((hidden + multiple_of - 1) // multiple_of)
    return hidden


def _count(c: dict, kv_heads=None, hidden=None, ffn_mats=3, norms=2, final_norm=1, heads=2):
    d, head_dim = c["dim"], c["dim"] // c["n_heads"]
    n_kv = c["n_kv_heads"] if kv_heads is None else kv_heads
    h = _hidden(c["dim"], c["multiple_of"], c["ffn_dim_multiplier"]) if hidden is None else hidden
    layer = 2 * d * d + 2 * d * n_kv * head_dim + ffn_mats * d * h + norms * d
    return heads * c["vocab_size"] * d + c["n_layers"] * layer + final_norm * d


def _mistakes(c: dict):
    d, m, mult = c["dim"], c["multiple_of"], c["ffn_dim_multiplier"]
    yield (_count(c, kv_heads=c["n_heads"]),
           "you gave k_proj and v_proj dim x dim weights; with grouped-query attention they "
           "map dim to n_kv_heads * head_dim (head_dim = dim // n_heads)")
    if mult is not None:
        yield (_count(c, hidden=_hidden(d, m, mult, use_multiplier=False)),
               f"you left out ffn_dim_multiplier ({mult}): hidden = int(multiplier * "
               "int(2 * 4 * dim / 3)), then rounded up to a multiple of multiple_of")
    yield (_count(c, hidden=_hidden(d, m, mult, round_up=False)),
           "the hidden size is rounded UP to a multiple of multiple_of "
           f"({m}): multiple_of * ceil(hidden / multiple_of)")
    yield (_count(c, hidden=4 * d),
           "you used a hidden size of 4 * dim; SwiGLU's is 2/3 of that, int(2 * 4 * dim / 3), "
           "(times the multiplier) rounded up to multiple_of")
    yield (_count(c, ffn_mats=2),
           "the SwiGLU MLP has three matrices (gate_proj, up_proj, down_proj), not two")
    yield (_count(c, norms=0, final_norm=0),
           "you left out the RMSNorm weights: two vectors of dim per layer and one final norm")
    yield (_count(c, final_norm=0),
           "you left out the final norm before the LM head (one more vector of dim)")
    yield (_count(c, heads=1),
           "you counted the vocabulary table once; Llama 2 does not tie the embedding and "
           "the LM head, so there are two vocab_size x dim matrices")


def _cases():
    for name in PRESETS:
        c = LlamaConfig.from_preset(name)
        yield name, dict(dim=c.dim, n_layers=c.n_layers, n_heads=c.n_heads,
                         n_kv_heads=c.n_kv_heads, vocab_size=c.vocab_size,
                         multiple_of=c.multiple_of, ffn_dim_multiplier=c.ffn_dim_multiplier)
    generator = rng(21)
    for k in range(4):
        draw = lambda n: int(torch.randint(0, n, (1,), generator=generator))  # noqa: E731
        n_heads = [4, 8, 12, 16][draw(4)]
        n_kv = [d for d in range(1, n_heads + 1) if n_heads % d == 0][draw(3)]
        yield f"a random config ({k + 1} of 4)", dict(
            dim=n_heads * [16, 32, 64][draw(3)], n_layers=1 + draw(6), n_heads=n_heads,
            n_kv_heads=n_kv, vocab_size=100 + draw(5000), multiple_of=[16, 32, 256][draw(3)],
            ffn_dim_multiplier=[None, 1.3, 1.5, 0.8][draw(4)])


def check_attention_parameters(fn) -> None:
    """fn(dim, n_heads, n_kv_heads) -> the weights of one layer's q, k, v and o projections."""
    cases = [(8192, 64, 8), (128, 4, 2), (64, 8, 1), (4096, 32, 32), (5120, 40, 40)]
    generator = rng(22)
    for _ in range(4):
        draw = lambda n: int(torch.randint(0, n, (1,), generator=generator))  # noqa: E731
        n_heads = [4, 8, 16, 32][draw(4)]
        n_kv = [d for d in range(1, n_heads + 1) if n_heads % d == 0][draw(3)]
        cases.append((n_heads * [16, 64, 128][draw(3)], n_heads, n_kv))
    for dim, n_heads, n_kv in cases:
        what = f"attention_parameters(dim={dim}, n_heads={n_heads}, n_kv_heads={n_kv})"
        out = call(fn, dim, n_heads, n_kv, what=what)
        head_dim = dim // n_heads
        expected = 2 * dim * dim + 2 * dim * n_kv * head_dim
        if isinstance(out, bool) or not isinstance(out, int):
            raise AssertionError(f"{what} should return an int, got {type(out).__name__}")
        if out == expected:
            continue
        mistakes = [
            (4 * dim * dim, "you gave k_proj and v_proj dim x dim weights, as in multi-head "
             "attention; with n_kv_heads key/value heads each is dim x (n_kv_heads * head_dim)"),
            (2 * dim * dim + 2 * dim * n_kv, "k_proj and v_proj have n_kv_heads * head_dim "
             "outputs (head_dim = dim // n_heads), not n_kv_heads"),
            (dim * dim + 2 * dim * n_kv * head_dim, "you left out o_proj, the dim x dim output "
             "projection after the heads are joined"),
            (2 * dim * dim + dim * n_kv * head_dim, "count both k_proj and v_proj: two "
             "dim x (n_kv_heads * head_dim) matrices"),
        ]
        for wrong, message in mistakes:
            if out == wrong and wrong != expected:
                raise AssertionError(f"{what}: expected {expected:,}, got {out:,}: {message}")
        raise AssertionError(f"{what}: expected {expected:,}, got {out:,}")
    passed("attention_parameters counts q, k, v and o for multi-head and grouped-query "
           "attention")


@forbids("numel")
def check_count_parameters(fn) -> None:
    """fn(dim, n_layers, n_heads, n_kv_heads, vocab_size, multiple_of, ffn_dim_multiplier)
    -> the number of parameters of that Llama, by arithmetic alone."""
    for label, c in _cases():
        shown = ", ".join(f"{k}={v}" for k, v in c.items())
        what = f"count_parameters_by_hand on {label} ({shown})"
        out = call(fn, what=what, forbidden=check_count_parameters.forbidden_calls, **c)
        expected = count_parameters(LlamaConfig(**c))
        if isinstance(out, bool) or not isinstance(out, int):
            raise AssertionError(f"{what} should return an int, got {type(out).__name__} "
                                 "(use // and int(), not /, so the count stays exact)")
        if out == expected:
            continue
        for wrong, message in _mistakes(c):
            if out == wrong:
                raise AssertionError(f"{what}: expected {expected:,}, got {out:,}: {message}")
        raise AssertionError(f"{what}: expected {expected:,}, got {out:,} "
                             f"({out - expected:+,})")
    passed("your hand count equals the model's on the Llama 1 and 2 sizes (70B: "
           "68,976,648,192) and on random configs")
