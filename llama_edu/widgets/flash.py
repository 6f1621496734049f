"""Lesson 08's explorer: step through flash attention one key/value tile at a time."""

from __future__ import annotations

from functools import lru_cache

import ipywidgets as widgets
import matplotlib.patches as patches
import torch

from .. import viz
from ..attention import attention
from ..flash import tiled_attention_steps
from . import Explorer


def tile_explorer(seq_len: int = 40, block: int = 8, head_dim: int = 16,
                  seed: int = 0) -> Explorer:
    """Sliders pick a query block and how many key tiles it has loaded; the figure shows the
    tile grid, the running max m and sum l of each row, and the partial output's distance
    from the exact attention output."""
    if seq_len < 1 or block < 1 or head_dim < 1:
        raise ValueError(f"seq_len, block and head_dim must be positive, got {seq_len}, "
                         f"{block}, {head_dim}")
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(1, 1, seq_len, head_dim, generator=g) for _ in range(3))
    n_blocks = -(-seq_len // block)

    @lru_cache(maxsize=64)
    def walk(q_block: int, causal: bool):
        qs, qe = q_block * block, min((q_block + 1) * block, seq_len)
        states = list(tiled_attention_steps(q, k, v, qs, qe, causal, block))
        exact = attention(q, k, v, is_causal=causal)[0, 0, qs:qe]      # (rows, d)
        scores = (q[0, 0] @ k[0, 0].T) / head_dim ** 0.5               # (seq, seq)
        if causal:
            scores = scores.masked_fill(torch.ones(seq_len, seq_len, dtype=torch.bool)
                                        .triu(1), float("nan"))
        return qs, qe, states, exact, scores

    def draw(q_block: int, step: int, causal: bool):
        q_block = min(q_block, n_blocks - 1)
        qs, qe, states, exact, scores = walk(q_block, causal)
        step = min(step, len(states) - 1)
        state = states[step]
        fig, axes = viz.figure(2, nrows=2, height=3.3)
        _draw_tiles(axes[0, 0], scores, block, seq_len, qs, qe, states, step)
        rows = torch.arange(qs, qe)
        final = states[-1]
        for ax, name, now, end in ((axes[0, 1], "running max m", state.m, final.m),
                                   (axes[1, 0], "running sum l", state.l, final.l)):
            ax.plot(rows, end[0, 0], "k--", label="after the last tile")
            ax.plot(rows, now[0, 0], "o-", color=viz.COLORS[0],
                    label=f"after tile {step} (keys {state.k_start}..{state.k_end - 1})")
            viz.label(ax, name, "query position", name.split()[-1] + " (no unit)")
            ax.legend(fontsize=8)
        errors = [float((s.out[0, 0] - exact).abs().max().clamp_min(1e-12)) for s in states]
        ax = axes[1, 1]
        ax.semilogy(range(len(errors)), errors, "o-", color=viz.COLORS[1])
        ax.semilogy([step], [errors[step]], "o", ms=12, mfc="none", color="k")
        ax.set_xticks(range(len(errors)))
        viz.label(ax, "partial output vs exact", "key tiles loaded (index of the last)",
                  "max |acc / l - output|")
        fig.suptitle(f"queries {qs}..{qe - 1}: tile {step} is {state.kind}"
                     + (" (skipped: above the diagonal)" if state.kind == "skip" else ""))
        return fig

    controls = {
        "q_block": widgets.IntSlider(value=min(2, n_blocks - 1), min=0, max=n_blocks - 1,
                                     description="query block"),
        "step": widgets.IntSlider(value=1, min=0, max=n_blocks - 1, description="key tile"),
        "causal": widgets.Checkbox(value=True, description="causal"),
    }
    return Explorer(draw, controls, title="Flash attention, one tile at a time")


def _draw_tiles(ax, scores, block, seq_len, qs, qe, states, step) -> None:
    """The score matrix with the tile grid: the loaded tile outlined, later ones greyed."""
    viz.heatmap(ax, scores, "scores q k^T / sqrt(d), tile by tile", "key position",
                "query position", colorbar=False)
    for edge in range(block, seq_len, block):
        ax.axhline(edge - 0.5, color="w", lw=0.6)
        ax.axvline(edge - 0.5, color="w", lw=0.6)
    for i, state in enumerate(states):
        width = state.k_end - state.k_start
        corner = (state.k_start - 0.5, qs - 0.5)
        if state.kind == "skip":
            ax.add_patch(patches.Rectangle(corner, width, qe - qs, facecolor="0.6",
                                           hatch="//", edgecolor="0.3", lw=0))
        elif i > step:
            ax.add_patch(patches.Rectangle(corner, width, qe - qs, facecolor="w", alpha=0.6,
                                           lw=0))
    state = states[step]
    ax.add_patch(patches.Rectangle((state.k_start - 0.5, qs - 0.5), state.k_end - state.k_start,
                                   qe - qs, fill=False, edgecolor="r", lw=2.5))
