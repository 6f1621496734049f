"""Lesson 15's checks: Llama 3.1's RoPE frequency scaling and Llama 3's pre-tokenizer split."""

import math

import regex
import torch

from ._contract import Contract

# ---- the llama3 frequency scaling ---------------------------------------------------------


def _parts(scaling):
    return (scaling["factor"], scaling["low_freq_factor"], scaling["high_freq_factor"],
            scaling["original_max_position_embeddings"])


def scale_ok(inv_freq, scaling):
    factor, low, high, context = _parts(scaling)
    wavelength = 2 * math.pi / inv_freq
    s = ((context / wavelength - low) / (high - low)).clamp(0, 1)
    ramp = (1 - s) * inv_freq / factor + s * inv_freq
    out = torch.where(wavelength > context / low, inv_freq / factor, ramp)
    return torch.where(wavelength < context / high, inv_freq, out)


def scale_loop(inv_freq, scaling):
    """Meta's reference code's shape: one frequency at a time, in plain Python floats."""
    factor, low, high, context = _parts(scaling)
    out = []
    for freq in inv_freq.tolist():
        wavelength = 2 * math.pi / freq
        if wavelength < context / high:
            out.append(freq)
        elif wavelength > context / low:
            out.append(freq / factor)
        else:
            s = (context / wavelength - low) / (high - low)
            out.append((1 - s) * freq / factor + s * freq)
    return torch.tensor(out, dtype=inv_freq.dtype)


def _scale_variant(wavelength_of=lambda f: 2 * math.pi / f, weight=None, clamp=True,
                   keep_high=True, divide=lambda f, factor: f / factor, swap=False):
    def llama3_scale(inv_freq, scaling):
        factor, low, high, context = _parts(scaling)
        wavelength = wavelength_of(inv_freq)
        s = (context / wavelength - low) / (high - low) if weight is None else weight(
            wavelength, context, low, high)
        s = s.clamp(0, 1) if clamp else s
        ramp = (1 - s) * divide(inv_freq, factor) + s * inv_freq
        long_end, short_end = divide(inv_freq, factor), inv_freq
        if swap:
            long_end, short_end = short_end, long_end
        out = torch.where(wavelength > context / low, long_end, ramp)
        return torch.where(wavelength < context / high, short_end, out) if keep_high else out
    return llama3_scale


def scale_in_place(inv_freq, scaling):
    factor, low, high, context = _parts(scaling)
    wavelength = 2 * math.pi / inv_freq
    s = ((context / wavelength - low) / (high - low)).clamp(0, 1)
    ramp = (1 - s) * inv_freq / factor + s * inv_freq
    keep = wavelength < context / high
    inv_freq[~keep] = torch.where(wavelength > context / low, inv_freq / factor, ramp)[~keep]
    return inv_freq


def scale_by_calling_the_package(inv_freq, scaling):
    from llama_edu.positions import scale_inv_freq
    return scale_inv_freq(inv_freq, scaling)


# ---- the Llama 3 split ---------------------------------------------------------------------

PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


def split_ok(text):
    return regex.findall(PATTERN, text)


def split_by_hand(text):
    """The same pieces without one big regex: small patterns tried in order at each point."""
    rules = [r"(?i:'s|'t|'re|'ve|'m|'ll|'d)", r"[^\r\n\p{L}\p{N}]?\p{L}+", r"\p{N}{1,3}",
             r" ?[^\s\p{L}\p{N}]+[\r\n]*", r"\s*[\r\n]+", r"\s+(?!\S)", r"\s+"]
    pieces, at = [], 0
    while at < len(text):
        for rule in rules:
            match = regex.compile(rule).match(text, at)
            if match and match.end() > at:
                pieces.append(match.group())
                at = match.end()
                break
    return pieces


def _split_with(pattern):
    return lambda text: regex.findall(pattern, text)


REST = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
LETTERS = r"[^\r\n\p{L}\p{N}]?\p{L}+"


def split_drops_whitespace(text):
    return [piece for piece in regex.findall(PATTERN, text) if piece.strip()]


def split_with_the_constant(text):
    from llama_edu.tokenizer import LLAMA3_SPLIT
    return regex.findall(LLAMA3_SPLIT, text)


CONTRACTS = {
    "check_llama3_scaling": Contract(references=[scale_ok, scale_loop], mistakes=[
        (lambda inv_freq, scaling: inv_freq.clone(), "nothing changed"),
        (lambda inv_freq, scaling: inv_freq / scaling["factor"], "position interpolation"),
        (_scale_variant(divide=lambda f, factor: f * factor), "multiplied the low frequencies"),
        (_scale_variant(weight=lambda w, c, lo, hi: 1 - (c / w - lo) / (hi - lo)),
         "ramp is reversed"),
        (_scale_variant(weight=lambda w, c, lo, hi: (c / lo - w) / (c / lo - c / hi)),
         "not linear in the wavelength"),
        (_scale_variant(clamp=False, keep_high=False), "highest frequencies changed"),
        (_scale_variant(swap=True), "two ends are swapped"),
        (_scale_variant(wavelength_of=lambda f: 1 / f), "2 pi / inv_freq"),
        (scale_in_place, "in place"),
        (scale_by_calling_the_package, "uses scale_inv_freq"),
    ]),
    "check_llama3_split": Contract(references=[split_ok, split_by_hand], mistakes=[
        (_split_with(CONTRACTIONS + "|" + LETTERS + r"|\p{N}+" + REST), "groups of at most"),
        (_split_with(CONTRACTIONS + "|" + LETTERS + r"|\p{N}" + REST), "one by one"),
        (_split_with(r"'s|'t|'re|'ve|'m|'ll|'d|" + LETTERS + r"|\p{N}{1,3}" + REST),
         "case-sensitive"),
        (_split_with(CONTRACTIONS + "|" + LETTERS + r"|\p{N}{1,3}"
                     r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+"), "all but its last space"),
        (_split_with(r"'(?:[sdmt]|ll|ve|re)| ?[^\W\d_]+| ?\d+| ?(?:[^\s\w]|_)+|\s+(?!\S)|\s+"),
         "GPT-2's split"),
        (_split_with(CONTRACTIONS + r"| ?\p{L}+|\p{N}{1,3}" + REST), "only a space may lead"),
        (_split_with(CONTRACTIONS + "|" + LETTERS + r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+"
                     r"|\s*[\r\n]+|\s+(?!\S)|\s+"), "newlines after punctuation"),
        (_split_with(CONTRACTIONS + "|" + LETTERS + r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                     r"|\s+(?!\S)|\s+"), "spaces before a newline"),
        (split_drops_whitespace, "put the text back together"),
        (split_with_the_constant, "uses LLAMA3_SPLIT"),
    ]),
}
