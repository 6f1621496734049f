"""Checks for lesson 15: Llama 3.1's RoPE frequency scaling, and Llama 3's pre-tokenizer split.

The references are the package's `positions.scale_inv_freq` (held equal to transformers'
`ROPE_INIT_FUNCTIONS["llama3"]` by tests/test_llama3.py) and `regex.findall(LLAMA3_SPLIT)`,
the split tiktoken applies (tests/test_tokenizer_llama3.py).
"""

from __future__ import annotations

import math
import types

import regex
import torch

from ..positions import rope_inv_freq, scale_inv_freq
from ..tokenizer.bpe import LLAMA3_SPLIT
from ._common import call, expect, forbids, passed, rng

__all__ = ["check_llama3_scaling", "check_llama3_split"]


def _names(fn) -> set[str]:
    """Every global and attribute name the learner's function (and its inner code) uses
    (in a graded replay: the names the kernel recorded)."""
    recorded = getattr(fn, "code_names", None)
    if isinstance(recorded, tuple):
        return set(recorded)
    try:
        code = getattr(fn, "__code__", None)
    except Exception:                    # a grader's stand-in may refuse attribute access
        return set()
    found, todo = set(), [code] if isinstance(code, types.CodeType) else []
    while todo:
        code = todo.pop()
        found |= set(code.co_names)
        todo += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return found


def _refuse_names(fn, names: tuple[str, ...], what: str) -> None:
    used = sorted(_names(fn) & set(names))
    expect(not used, f"{what} uses {', '.join(used)}, which this exercise asks you to write "
           "without: compute it from the formula")


# ---------------------------------------------------------------------------------------
# Llama 3.1's frequency scaling


def _mixed(inv_freq, context, low, high, factor, smooth):
    return (1 - smooth) * inv_freq / factor + smooth * inv_freq


def _without_two_pi(inv_freq, context, low, high, factor):
    wavelength = 1 / inv_freq
    smooth = ((context / wavelength - low) / (high - low)).clamp(0, 1)
    mixed = _mixed(inv_freq, context, low, high, factor, smooth)
    scaled = torch.where(wavelength > context / low, inv_freq / factor, mixed)
    return torch.where(wavelength < context / high, inv_freq, scaled)


def _scaling_mistakes(inv_freq: torch.Tensor, scaling: dict) -> list[tuple[torch.Tensor, str]]:
    """What the classic mistakes return, each with the sentence that explains it."""
    factor, context = float(scaling["factor"]), float(scaling["original_max_position_embeddings"])
    low, high = float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
    wavelength = 2 * math.pi / inv_freq
    keep, divide = wavelength < context / high, wavelength > context / low

    def bands(middle, kept=None, divided=None):
        kept = inv_freq if kept is None else kept
        divided = inv_freq / factor if divided is None else divided
        return torch.where(keep, kept, torch.where(divide, divided, middle))

    smooth = ((context / wavelength - low) / (high - low)).clamp(0, 1)
    right = _mixed(inv_freq, context, low, high, factor, smooth)
    linear_in_wavelength = ((context / low - wavelength) / (context / low - context / high))
    unclamped = (context / wavelength - low) / (high - low)
    return [
        (inv_freq.clone(), "nothing changed: the low frequencies (wavelength longer than "
         "original_max_position_embeddings / low_freq_factor) must be divided by factor"),
        (inv_freq / factor, "you divided every frequency by factor: that is position "
         "interpolation (rope_type 'linear'); llama3 keeps the high frequencies (wavelength "
         "shorter than original_max_position_embeddings / high_freq_factor) as they are"),
        (bands((1 - smooth) * inv_freq * factor + smooth * inv_freq, divided=inv_freq * factor),
         "you multiplied the low frequencies by factor: stretching the context makes the "
         "wavelength factor times longer, so the frequency (2 pi / wavelength) is divided by "
         "factor"),
        (bands(_mixed(inv_freq, context, low, high, factor, 1 - smooth)),
         "the ramp is reversed: its weight s = (original_max_position_embeddings / wavelength "
         "- low_freq_factor) / (high_freq_factor - low_freq_factor) goes with the kept "
         "frequency, s * inv_freq + (1 - s) * inv_freq / factor"),
        (bands(_mixed(inv_freq, context, low, high, factor, linear_in_wavelength)),
         "the ramp's weight is not linear in the wavelength: it is s = "
         "(original_max_position_embeddings / wavelength - low_freq_factor) / "
         "(high_freq_factor - low_freq_factor)"),
        (bands(_mixed(inv_freq, context, low, high, factor, unclamped),
               kept=_mixed(inv_freq, context, low, high, factor, unclamped)),
         "the highest frequencies changed: a wavelength shorter than "
         "original_max_position_embeddings / high_freq_factor keeps its frequency unchanged "
         "(the ramp's formula only holds between the two bounds)"),
        (bands(right, kept=inv_freq / factor, divided=inv_freq),
         "the two ends are swapped: long wavelengths (low frequencies) are divided by factor, "
         "short ones (high frequencies) are kept"),
        (_without_two_pi(inv_freq, context, low, high, factor),
         "the wavelength of a pair is 2 pi / inv_freq (one full turn), not 1 / inv_freq"),
    ]


def _scaling_cases(generator: torch.Generator) -> list[tuple[int, float, dict, str]]:
    def llama3(factor, low, high, context):
        return {"rope_type": "llama3", "factor": factor, "low_freq_factor": low,
                "high_freq_factor": high, "original_max_position_embeddings": context}

    draw = torch.rand(4, generator=generator).tolist()
    random = llama3(1.5 + 30 * draw[0], 0.5 + draw[1], 2.0 + 6 * draw[2],
                    int(64 + 8000 * draw[3]))
    return [  # head_dim, rope_theta, scaling, what the case is
        (128, 500_000.0, llama3(8.0, 1.0, 4.0, 8192), "Llama 3.1's own numbers"),
        (64, 500_000.0, llama3(32.0, 1.0, 4.0, 8192), "Llama 3.2's factor 32"),
        (32, 10_000.0, llama3(4.0, 1.0, 4.0, 256), "the course's tiny model"),
        (16, 10_000.0, llama3(2.0, 1.0, 4.0, 4), "a context so short that every wavelength "
         "is longer"),
        (64, 10_000.0, llama3(8.0, 1.0, 4.0, 10 ** 9), "a context so long that every "
         "wavelength is shorter"),
        (128, 500_000.0, llama3(1.0, 1.0, 4.0, 8192), "factor 1"),
        (96, 50_000.0, random, "random factors"),
    ]


@forbids("scale_inv_freq", "rope_inv_freq", "rope_angles", "rope_cos_sin",
         "ROPE_INIT_FUNCTIONS", "_compute_llama3_parameters")
def check_llama3_scaling(fn) -> None:
    """fn(inv_freq, scaling) -> Llama 3.1's scaled inverse frequencies, same shape."""
    _refuse_names(fn, check_llama3_scaling.forbidden_calls, "llama3_scale")
    for head_dim, rope_theta, scaling, case in _scaling_cases(rng(0)):
        inv_freq = rope_inv_freq(head_dim, rope_theta)                 # (head_dim / 2,)
        given = inv_freq.clone()
        what = (f"llama3_scale(inv_freq of rope_inv_freq({head_dim}, {rope_theta:g}), "
                f"factor={scaling['factor']:g}, low_freq_factor={scaling['low_freq_factor']:g},"
                f" high_freq_factor={scaling['high_freq_factor']:g}, "
                f"original_max_position_embeddings={scaling['original_max_position_embeddings']})"
                f" [{case}]")
        out = call(fn, given, dict(scaling), what=what,
                   forbidden=check_llama3_scaling.forbidden_calls)
        expected = scale_inv_freq(inv_freq, scaling)
        expect(torch.equal(given, inv_freq), f"{what} changed its input inv_freq in place; "
               "return a new tensor (torch.where builds one)")
        expect(isinstance(out, torch.Tensor), f"{what} should return a torch.Tensor, got "
               f"{type(out).__name__}")
        expect(tuple(out.shape) == tuple(expected.shape), f"{what} returned shape "
               f"{tuple(out.shape)}, expected {tuple(expected.shape)}: one frequency per pair")
        out = out.detach().double()
        if torch.allclose(out, expected.double(), rtol=1e-5, atol=0.0):
            continue
        hint = next((sentence for wrong, sentence in _scaling_mistakes(inv_freq, scaling)
                     if torch.allclose(out, wrong.double(), rtol=1e-5, atol=0.0)), "")
        worst = int(((out - expected.double()).abs() / expected.double()).argmax())
        wavelength = 2 * math.pi / float(inv_freq[worst])
        raise AssertionError(
            f"{what}: pair {worst} (wavelength {wavelength:,.0f} positions) should have "
            f"frequency {float(expected[worst]):.6g}, got {float(out[worst]):.6g}"
            + (f": {hint}" if hint else ""))
    passed("llama3_scale keeps the high frequencies, divides the low ones by factor and ramps "
           "smoothly between, for Llama 3.1's, 3.2's and other settings")


# ---------------------------------------------------------------------------------------
# Llama 3's pre-tokenizer split

SPLIT_TEXTS = [
    "Hello world",
    "Who is the 45th President of the United States?",
    "1234567 and 3.14159, or 2024-06-01: 12 345 6789",
    "I'M sure you'RE right; she's here, we'll see, they'd go, it'S fine",
    "def f(x):\n    return x  +  1\n\n\n",
    "a   b\t\tc  \n  d   ",
    "line one\r\nline two\n\n  indented\n",
    "你好，世界！Llama 3 的词表有 128256 个词。",
    "(hello) [world] {x} 'quoted' \"double\" ...!!!",
    "éàü naïve café 😀👍🏽 ſK",
    "",
    "   ",
    "\n",
]
_FRAGMENTS = ["Hello", " world", "'s", "'LL", "'Ve", "I'M", " 45th", "1234567", "42", "3.14",
              "汉字", "你好，世界", "😀", " ", "   ", "\t", "\n", "\r\n", "\n\n  ", "def f(x):",
              "    return", "{}", "->", "'", "x", "ABC", "中文123", "!?", "  \n"]


def _random_texts(generator: torch.Generator, n: int = 12) -> list[str]:
    texts = []
    for _ in range(n):
        picks = torch.randint(0, len(_FRAGMENTS), (int(torch.randint(1, 10, (1,),
                                                                       generator=generator)),),
                              generator=generator)
        texts.append("".join(_FRAGMENTS[i] for i in picks.tolist()))
    return texts


def _split_mistakes() -> list[tuple[str, str]]:
    """(a pattern for a classic mistake, the sentence that explains it)."""
    rest = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
    contractions = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
    letters = r"[^\r\n\p{L}\p{N}]?\p{L}+"
    return [
        (contractions + "|" + letters + r"|\p{N}+" + rest,
         "a run of digits came back whole: Llama 3 cuts numbers into groups of at most three "
         "digits (\\p{N}{1,3}), so 1234567 is 123, 456, 7"),
        (contractions + "|" + letters + r"|\p{N}" + rest,
         "the digits came back one by one, as Llama 2 splits them: Llama 3 groups up to "
         "three digits (\\p{N}{1,3})"),
        (r"'s|'t|'re|'ve|'m|'ll|'d|" + letters + r"|\p{N}{1,3}" + rest,
         "the contractions are case-sensitive: Llama 3 matches 'S, 'M, 'RE... in any case "
         "((?i:...)), so I'M splits as I, 'M"),
        (contractions + "|" + letters + r"|\p{N}{1,3}"
         r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+",
         "a run of spaces before a word came back whole: whitespace followed by a word gives "
         "all but its last space (\\s+(?!\\S)), and that last space starts the next word"),
        (r"'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+",
         "that is GPT-2's split: Llama 3 groups digits by three, matches contractions in any "
         "case, and lets one non-letter (not only a space) lead a word"),
        (contractions + r"| ?\p{L}+|\p{N}{1,3}" + rest,
         "only a space may lead a word here: in Llama 3 any single character that is not a "
         "letter, digit or newline (a space, a bracket, a quote) joins the letters after it"),
        (contractions + "|" + letters + r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+|\s*[\r\n]+"
         r"|\s+(?!\S)|\s+",
         "the newlines after punctuation came back apart: a run of symbols takes the newlines "
         "that follow it ([\\r\\n]*)"),
        (contractions + "|" + letters + r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s+(?!\S)|\s+",
         "the spaces before a newline came back apart from it: whitespace ending in newlines "
         "is one piece (\\s*[\\r\\n]+)"),
    ]


def _first_difference(got: list, want: list) -> str:
    for k, (a, b) in enumerate(zip(got, want, strict=False)):
        if a != b:
            return f"piece {k}: expected {b!r}, got {a!r}"
    return f"expected {len(want)} pieces, got {len(got)}"


@forbids("LLAMA3_SPLIT", "words", "compile_pattern", "load_llama3_tokenizer",
         "ByteLevelBPE", "encode_ordinary", "tiktoken")
def check_llama3_split(fn) -> None:
    """fn(text) -> list of str: Llama 3's pre-tokenizer pieces, as regex.findall(LLAMA3_SPLIT)."""
    _refuse_names(fn, check_llama3_split.forbidden_calls, "llama3_split")
    mistakes = [(regex.compile(p), sentence) for p, sentence in _split_mistakes()]
    for text in SPLIT_TEXTS + _random_texts(rng(0)):
        what = f"llama3_split({text!r})"
        out = call(fn, text, what=what, forbidden=check_llama3_split.forbidden_calls)
        expected = regex.findall(LLAMA3_SPLIT, text)
        expect(isinstance(out, (list, tuple)) and all(isinstance(p, str) for p in out),
               f"{what} should return a list of strings, got {type(out).__name__}")
        out = list(out)
        if out == expected:
            continue
        expect("".join(out) == text, f"{what} returned {out!r}: the pieces must put the text "
               "back together exactly (nothing dropped, nothing added)")
        hint = next((sentence for pattern, sentence in mistakes
                     if pattern.findall(text) == out), "")
        raise AssertionError(f"{what}: {_first_difference(out, expected)}"
                             + (f": {hint}" if hint else f"; expected {expected!r}"))
    passed("llama3_split cuts words, digit groups of three, contractions, symbols and "
           "whitespace exactly as Llama 3's pattern does, Chinese included")
