"""Explorers for lesson 02: a RoPE pair turning with the position, and ALiBi's per-head bias.

    rope_explorer()      # sliders: position, pair index, rope_theta
    alibi_explorer()     # sliders: number of heads, head, sequence length
"""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import torch

from .. import viz
from ..positions import alibi_bias, alibi_slopes, rope_inv_freq, rope_scores_by_distance
from . import Explorer


def _draw_pair(ax, position: int, pair: int, head_dim: int, rope_theta: float) -> None:
    theta = float(rope_inv_freq(head_dim, rope_theta)[pair])
    start = np.array([1.0, 0.35])
    steps = np.arange(position + 1) * theta                  # angles of positions 0..m
    trail = np.stack([start[0] * np.cos(steps) - start[1] * np.sin(steps),
                      start[0] * np.sin(steps) + start[1] * np.cos(steps)], axis=1)
    circle = np.linspace(0, 2 * np.pi, 200)
    radius = float(np.hypot(*start))
    ax.plot(radius * np.cos(circle), radius * np.sin(circle), color="#ccc", lw=1)
    ax.plot(trail[:, 0], trail[:, 1], ".", color=viz.COLORS[0], alpha=0.35, ms=4,
            label="positions 0 .. m")
    ax.annotate("", xy=start, xytext=(0, 0),
                arrowprops={"arrowstyle": "->", "color": "#888", "lw": 1.5})
    ax.annotate("", xy=trail[-1], xytext=(0, 0),
                arrowprops={"arrowstyle": "->", "color": viz.COLORS[1], "lw": 2.5})
    ax.set_aspect("equal")
    ax.set_xlim(-1.25, 1.25)
    ax.set_ylim(-1.25, 1.25)
    angle = position * theta
    viz.label(ax, f"pair {pair}: theta = {theta:.3g} rad/position\n"
              f"position {position}: angle {angle:.3g} rad ({np.degrees(angle) % 360:.0f} deg)",
              f"feature {2 * pair} (first of the pair)", f"feature {2 * pair + 1} (second)")
    ax.legend(loc="lower left", fontsize=8)


def rope_explorer(head_dim: int = 64, max_position: int = 64,
                  max_distance: int = 512) -> Explorer:
    """Left: one feature pair of a query rotated to position m (grey: position 0).
    Right: the RoPE score q . k of q = k = all ones against their distance, the curve that
    decays with distance (RoFormer, section 3.4.3), with the chosen pair's own term."""
    rope_inv_freq(head_dim)                                      # validates head_dim
    ones = torch.ones(head_dim, dtype=torch.float64)
    curves = {}

    def draw(position, pair, rope_theta):
        rope_theta = float(rope_theta)
        if rope_theta not in curves:
            curves[rope_theta] = rope_scores_by_distance(ones, ones, max_distance, rope_theta)
        scores = curves[rope_theta] / head_dim                   # 1 at distance 0
        theta = float(rope_inv_freq(head_dim, rope_theta)[pair])
        distance = np.arange(max_distance + 1)
        fig, (left, right) = viz.figure(2, height=4.2)
        _draw_pair(left, position, pair, head_dim, rope_theta)
        right.plot(distance, scores.numpy(), color=viz.COLORS[0], label="all pairs (sum)")
        right.plot(distance, np.cos(distance * theta), color=viz.COLORS[2], lw=0.8,
                   alpha=0.7, label=f"pair {pair} alone")
        right.axvline(position, color=viz.COLORS[1], ls="--", lw=1,
                      label=f"distance {position}")
        right.set_ylim(-1.05, 1.05)
        viz.label(right, f"q . k vs distance (q = k = ones, head_dim {head_dim})\n"
                  f"rope_theta = {rope_theta:,.0f}", "distance n - m (positions)",
                  "q . k / head_dim")
        right.legend(loc="upper right", fontsize=8)
        return fig

    controls = {
        "position": widgets.IntSlider(value=8, min=0, max=max_position, description="position m"),
        "pair": widgets.IntSlider(value=min(10, head_dim // 2 - 1), min=0,
                                  max=head_dim // 2 - 1, description="pair i"),
        "rope_theta": widgets.Dropdown(options=[("10,000 (Llama 2)", 10_000.0),
                                                ("500,000 (Llama 3)", 500_000.0)],
                                       value=10_000.0, description="rope_theta"),
    }
    return Explorer(draw, controls, title="RoPE: a feature pair turning with the position")


def alibi_explorer(head_counts: tuple[int, ...] = (4, 6, 8, 12, 16),
                   seq_len: int = 16) -> Explorer:
    """Left: one head's bias -slope * (i - j) over the causal part of the score matrix.
    Right: where the last query looks when every content score is equal, i.e.
    softmax(bias) per head: small slopes read far back, large ones only nearby."""

    def draw(n_heads, head, seq_len):
        head = min(head, n_heads - 1)                           # the slider spans every count
        slopes = alibi_slopes(n_heads)
        positions = torch.arange(seq_len)
        bias = alibi_bias(slopes, positions, positions)          # (n_heads, seq, seq)
        causal = positions[None, :] <= positions[:, None]
        bias = bias.masked_fill(~causal, float("-inf"))
        fig, (left, right) = viz.figure(2, height=4.2)
        shown = bias[head].masked_fill(~causal, float("nan"))
        viz.heatmap(left, shown, f"head {head} of {n_heads}: slope {slopes[head]:.4g}\n"
                    "bias = -slope x distance (blank: masked)", "key position j",
                    "query position i")
        weights = torch.softmax(bias[:, -1], dim=-1)             # (n_heads, seq)
        for h in range(n_heads):
            right.plot(positions, weights[h], color=viz.COLORS[1] if h == head else "#bbb",
                       lw=2.5 if h == head else 1, zorder=3 if h == head else 1)
        viz.label(right, f"query {seq_len - 1}, equal content scores:\nsoftmax(bias) per head "
                  "(red: this head)", "key position j", "attention weight")
        return fig

    controls = {
        "n_heads": widgets.Dropdown(options=list(head_counts), description="n_heads",
                                    value=8 if 8 in head_counts else head_counts[0]),
        "head": widgets.IntSlider(value=0, min=0, max=max(head_counts) - 1, description="head"),
        "seq_len": widgets.IntSlider(value=seq_len, min=4, max=64, description="seq_len"),
    }
    return Explorer(draw, controls, title="ALiBi: a linear distance penalty per head")
