"""Checks for lesson 04: count a Llama's parameters with grouped-query attention and the FFN
multiplier; solve a released total for the FFN width."""

from __future__ import annotations

import numbers

import torch

from ..ffn import ffn_hidden_dim
from ..model import PRESETS, LlamaConfig, count_parameters
from ._common import call, expect, passed, rng

__all__ = ["check_gqa_parameter_count", "check_ffn_width"]

_FIELDS = ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size", "multiple_of",
           "ffn_dim_multiplier")


def _count(dim, n_layers, n_heads, n_kv_heads, vocab_size, hidden, *, attention=None,
           ffn_mats=3, norms=True, final_norm=True, tied=False) -> int:
    """The parameter count, with switches for the classic slips."""
    kv_dim = n_kv_heads * (dim // n_heads)
    attention = 2 * dim * dim + 2 * dim * kv_dim if attention is None else attention
    per_layer = attention + ffn_mats * dim * hidden + (2 * dim if norms else 0)
    embeddings = (1 if tied else 2) * vocab_size * dim
    return embeddings + n_layers * per_layer + (dim if final_norm else 0)


def _count_cases():
    """(label, field values) on released shapes and random GQA shapes."""
    for name in ("llama2-7b", "llama2-70b", "llama3-8b"):
        config = PRESETS[name]
        yield name, {field: getattr(config, field) for field in _FIELDS}
    generator = rng(21)
    for _ in range(3):
        head_dim = int(torch.randint(2, 9, (1,), generator=generator)) * 8
        n_kv = int(torch.randint(1, 5, (1,), generator=generator))
        group = int(torch.randint(2, 5, (1,), generator=generator))
        multiplier = (None, 1.3, 1.5)[int(torch.randint(0, 3, (1,), generator=generator))]
        yield "a random GQA shape", {
            "dim": head_dim * n_kv * group, "n_layers": int(torch.randint(1, 7, (1,),
                                                                          generator=generator)),
            "n_heads": n_kv * group, "n_kv_heads": n_kv,
            "vocab_size": int(torch.randint(100, 5000, (1,), generator=generator)),
            "multiple_of": (16, 64, 256)[int(torch.randint(0, 3, (1,), generator=generator))],
            "ffn_dim_multiplier": multiplier}


def _count_mistakes(f: dict):
    args = (f["dim"], f["n_layers"], f["n_heads"], f["n_kv_heads"], f["vocab_size"])
    dim, head_dim = f["dim"], f["dim"] // f["n_heads"]
    hidden = ffn_hidden_dim(dim, f["multiple_of"], f["ffn_dim_multiplier"])
    plain = ffn_hidden_dim(dim, f["multiple_of"])
    unrounded = int(2 * 4 * dim / 3)
    if f["ffn_dim_multiplier"] is not None:
        unrounded = int(f["ffn_dim_multiplier"] * unrounded)
    yield (_count(*args, hidden, attention=4 * dim * dim),
           "you counted k_proj and v_proj at full width (multi-head attention). With GQA they "
           "map dim to n_kv_heads * head_dim: 2 * dim * dim + 2 * dim * n_kv_heads * head_dim")
    yield (_count(*args, hidden, attention=2 * dim * dim + 2 * dim * f["n_kv_heads"] * dim),
           "k_proj and v_proj map dim to n_kv_heads * head_dim, not n_kv_heads * dim "
           "(head_dim = dim // n_heads)")
    yield (_count(*args, hidden, attention=3 * dim * dim + dim * f["n_kv_heads"] * head_dim),
           "both k_proj and v_proj shrink with GQA, not only one of them")
    yield (_count(*args, plain),
           "you ignored ffn_dim_multiplier: multiply the 2/3 * 4 * dim width by it (integer "
           "part) before rounding up to multiple_of")
    yield (_count(*args, f["multiple_of"] * (unrounded // f["multiple_of"])),
           "you rounded the FFN width down; Llama rounds UP to a multiple of multiple_of")
    yield (_count(*args, hidden, ffn_mats=2),
           "SwiGLU has three matrices (gate, up, down), not two")
    yield (_count(*args, hidden, norms=False, final_norm=False),
           "you left out the RMSNorm gains: two of dim per layer and one final norm")
    yield (_count(*args, hidden, final_norm=False),
           "you left out the final norm's dim gains (Llama's model.norm)")
    yield (_count(*args, hidden, tied=True),
           "Llama 2's output layer is its own vocab_size x dim matrix, not tied to the "
           "embedding: count both")


def check_gqa_parameter_count(fn) -> None:
    """fn(dim, n_layers, n_heads, n_kv_heads, vocab_size, multiple_of, ffn_dim_multiplier)
    -> int, equal to count_parameters(LlamaConfig(...)) with untied embeddings."""
    for label, fields in _count_cases():
        expected = count_parameters(LlamaConfig(**fields))
        shown = ", ".join(f"{k}={v}" for k, v in fields.items())
        what = f"your count for {label} ({shown})"
        out = call(fn, *(fields[k] for k in _FIELDS), what=what)
        expect(isinstance(out, numbers.Integral) and not isinstance(out, bool),
               f"{what} should return an int, got {type(out).__name__} {out!r}; a count is "
               "exact: use integer arithmetic and int() where the rule truncates")
        if out == expected:
            continue
        for mistake, hint in _count_mistakes(fields):
            if out == mistake:
                raise AssertionError(f"{what}: {hint}")
        raise AssertionError(f"{what} is {out:,}, expected {expected:,} (off by "
                             f"{out - expected:+,}). Count embeddings, the output layer, per "
                             "layer attention (GQA), the three FFN matrices and two norms, "
                             "and the final norm")
    passed("your count equals llama_edu's for Llama 2 7B and 70B, Llama 3 8B and random GQA "
           "shapes, with the FFN multiplier")


# ---- solving a released total for the FFN width ------------------------------------------


def _width_cases():
    for name in ("llama2-70b", "llama2-7b", "llama3-8b"):
        yield name, PRESETS[name]
    generator = rng(22)
    n_kv = int(torch.randint(1, 4, (1,), generator=generator))
    yield "a random GQA shape", LlamaConfig(
        dim=32 * 2 * n_kv, n_layers=int(torch.randint(2, 6, (1,), generator=generator)),
        n_heads=2 * n_kv, n_kv_heads=n_kv, vocab_size=int(torch.randint(300, 3000, (1,),
                                                                        generator=generator)),
        multiple_of=32, ffn_dim_multiplier=1.3)


def _width_mistakes(total: int, c: LlamaConfig):
    dim, layers = c.dim, c.n_layers
    kv_dim = c.n_kv_heads * (dim // c.n_heads)
    rest = 2 * c.vocab_size * dim + dim

    def solve(attention, norms=2 * dim, mats=3, rest=rest):
        return (total - rest - layers * (attention + norms)) / (mats * dim * layers)

    yield (solve(4 * dim * dim),
           "you took the attention to be multi-head (4 * dim * dim per layer); with GQA k_proj "
           "and v_proj are dim x n_kv_heads * head_dim, so more of the total is left for the FFN")
    yield (solve(2 * dim * dim + 2 * dim * kv_dim, mats=2),
           "the FFN has three matrices of dim x hidden: divide by 3 * dim * n_layers")
    yield (solve(2 * dim * dim + 2 * dim * kv_dim, norms=0, rest=2 * c.vocab_size * dim),
           "you left out the norms' gains (2 * dim per layer and dim at the end) before "
           "dividing")
    yield (solve(2 * dim * dim + 2 * dim * kv_dim, rest=c.vocab_size * dim + dim),
           "you subtracted the embedding once; the output layer is a second vocab_size x dim "
           "matrix")
    yield ((total - rest - (2 * dim * dim + 2 * dim * kv_dim + 2 * dim)) / (3 * dim),
           "every one of the n_layers layers has its attention, norms and FFN: multiply the "
           "per-layer terms by n_layers")


def check_ffn_width(fn) -> None:
    """fn(total, dim, n_layers, n_heads, n_kv_heads, vocab_size) -> the FFN width (an int)
    that makes a Llama with untied embeddings hold `total` parameters."""
    for label, config in _width_cases():
        total = count_parameters(config)
        args = (total, config.dim, config.n_layers, config.n_heads, config.n_kv_heads,
                config.vocab_size)
        what = (f"your width for {label} (total {total:,}, dim {config.dim}, "
                f"{config.n_layers} layers, {config.n_heads} heads, {config.n_kv_heads} KV heads)")
        out = call(fn, *args, what=what)
        expected = config.ffn_hidden_dim
        if isinstance(out, numbers.Real) and not isinstance(out, bool) and out != expected:
            for mistake, hint in _width_mistakes(total, config):
                if abs(out - mistake) < 1e-6 * max(1.0, abs(mistake)):
                    raise AssertionError(f"{what} is {out:g}: {hint}")
            raise AssertionError(f"{what} is {out!r}, expected {expected}. Subtract "
                                 "everything that is not FFN, then divide by 3 * dim * n_layers")
        expect(isinstance(out, numbers.Integral) and not isinstance(out, bool),
               f"{what} should return an int, got {type(out).__name__} {out!r}; the width "
               "divides exactly, so use // (or int()) for the last division")
    passed("your width solves each total exactly: 28672 for Llama 2 70B, 11008 for 7B, "
           "14336 for Llama 3 8B")
