"""Lesson 04's checks: SwiGLU, and Llama's FFN hidden size."""

import torch
import torch.nn.functional as F

from ._contract import Contract

# ---- SwiGLU -----------------------------------------------------------------------------


def swiglu_ok(x, gate_weight, up_weight, down_weight):
    return F.linear(F.silu(F.linear(x, gate_weight)) * F.linear(x, up_weight), down_weight)


# ---- the hidden size --------------------------------------------------------------------


def hidden_ok(dim, multiple_of, ffn_dim_multiplier=None):
    hidden = int(2 * 4 * dim / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * ((hidden + multiple_of - 1) // multiple_of)


def round_down(dim, multiple_of, ffn_dim_multiplier=None):
    hidden = int(2 * 4 * dim / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * (hidden // multiple_of)


def no_two_thirds(dim, multiple_of, ffn_dim_multiplier=None):
    return multiple_of * ((4 * dim + multiple_of - 1) // multiple_of)


def always_one_more(dim, multiple_of, ffn_dim_multiplier=None):
    hidden = int(2 * 4 * dim / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * (hidden // multiple_of + 1)


def multiplier_ignored(dim, multiple_of, ffn_dim_multiplier=None):
    return hidden_ok(dim, multiple_of)


def float_result(dim, multiple_of, ffn_dim_multiplier=None):
    return float(hidden_ok(dim, multiple_of, ffn_dim_multiplier))


def int_two_thirds(dim, multiple_of, ffn_dim_multiplier=None):
    return hidden_ok(0 * dim + 1, multiple_of) * int(2 / 3)


CONTRACTS = {
    "check_swiglu": Contract(references=[swiglu_ok], mistakes=[
        (lambda x, g, u, d: (F.silu(x @ u.T) * (x @ g.T)) @ d.T, "gate and up are swapped"),
        (lambda x, g, u, d: (F.relu(x @ g.T) * (x @ u.T)) @ d.T, "that is ReGLU"),
        (lambda x, g, u, d: (torch.sigmoid(x @ g.T) * (x @ u.T)) @ d.T, "original GLU"),
        (lambda x, g, u, d: F.silu((x @ g.T) * (x @ u.T)) @ d.T, "SiLU after multiplying"),
        (lambda x, g, u, d: F.silu(x @ g.T) @ d.T, "up projection is missing"),
        (lambda x, g, u, d: F.silu(x @ g.T) * (x @ u.T), "project back to dim with down_weight"),
        (lambda x, g, u, d: (F.silu(x @ g) * (x @ u)) @ d, r"use x @ W\.T"),
    ]),
    "check_ffn_hidden_dim": Contract(references=[hidden_ok], mistakes=[
        (no_two_thirds, "you kept 4 \\* dim"),
        (round_down, "you rounded down"),
        (always_one_more, "you always add one more multiple"),
        (multiplier_ignored, "you ignored ffn_dim_multiplier"),
        (float_result, "a float"),
        (int_two_thirds, "int\\(2 / 3\\) is 0"),
        (lambda dim, multiple_of, m=None: 11000,                       # no known slip
         "expected 11008, got 11000.*not a multiple of 256"),
    ]),
}
