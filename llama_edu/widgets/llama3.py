"""Explorer for lesson 15: Llama 3.1's RoPE scaling, one wavelength per feature pair.

    rope_scaling_explorer()      # sliders: factor, low_freq_factor, high_freq_factor
"""

from __future__ import annotations

import math

import ipywidgets as widgets
import numpy as np

from .. import viz
from ..positions import rope_inv_freq, scale_inv_freq
from . import Explorer


def draw_wavelengths(factor: float, low_freq_factor: float, high_freq_factor: float,
                     head_dim: int = 128, rope_theta: float = 500_000.0,
                     context: int = 8192):
    """Left: each pair's wavelength 2 pi / theta_i before and after the llama3 scaling, with
    the two bounds context / high_freq_factor and context / low_freq_factor.
    Right: how much each pair's frequency was divided by (1: kept, factor: interpolated)."""
    scaling = {"rope_type": "llama3", "factor": float(factor),
               "low_freq_factor": float(low_freq_factor),
               "high_freq_factor": float(high_freq_factor),
               "original_max_position_embeddings": context}
    plain = rope_inv_freq(head_dim, rope_theta)                       # (head_dim / 2,)
    scaled = scale_inv_freq(plain, scaling)
    pairs = np.arange(head_dim // 2)
    before, after = (2 * math.pi / plain).numpy(), (2 * math.pi / scaled).numpy()
    fig, (left, right) = viz.figure(2, height=4.2)
    left.plot(pairs, before, "o", ms=3, color=viz.COLORS[0], label="RoPE (no scaling)")
    left.plot(pairs, after, ".-", ms=3, lw=1, color=viz.COLORS[1],
              label=f"llama3 scaling, factor {factor:g}")
    for bound, name, style in ((context / high_freq_factor, "context / high_freq_factor", ":"),
                               (context / low_freq_factor, "context / low_freq_factor", "--")):
        left.axhline(bound, color="#777", ls=style, lw=1, label=f"{name} = {bound:,.0f}")
    left.axhline(context, color=viz.COLORS[2], lw=1, alpha=0.6,
                 label=f"training context {context:,}")
    left.set_yscale("log")
    left.legend(loc="upper left", fontsize=7)
    viz.label(left, f"Wavelength of each pair (head_dim {head_dim}, theta {rope_theta:,.0f})",
              "pair i", "wavelength 2 pi / theta_i (positions)")
    right.plot(pairs, (plain / scaled).numpy(), ".-", color=viz.COLORS[1])
    right.axhline(1, color="#777", lw=1, ls=":")
    right.axhline(factor, color="#777", lw=1, ls="--")
    right.set_ylim(0, max(factor, 1) * 1.1 + 0.1)
    kept = int((scaled == plain).sum())
    divided = int(np.isclose(plain / scaled, factor, rtol=1e-6).sum()) if factor != 1 else 0
    viz.label(right, f"Frequency divided by ... ({kept} pairs kept, {divided} divided by "
              f"{factor:g},\n{head_dim // 2 - kept - divided} on the ramp)", "pair i",
              "theta_i / theta_i' (1 = kept)")
    return fig


def rope_scaling_explorer(head_dim: int = 128, rope_theta: float = 500_000.0,
                          context: int = 8192) -> Explorer:
    """Llama 3.1's scaling of RoPE (Llama-3.1-8B: head_dim 128, theta 500,000, trained at
    8,192 positions) with the three numbers of its rope_scaling as sliders."""

    def draw(factor, low_freq_factor, high_freq_factor):
        if high_freq_factor <= low_freq_factor:       # the sliders may cross; keep them apart
            high_freq_factor = low_freq_factor + 0.25
        return draw_wavelengths(factor, low_freq_factor, high_freq_factor, head_dim,
                                rope_theta, context)

    controls = {
        "factor": widgets.FloatSlider(value=8.0, min=1.0, max=32.0, step=1.0,
                                      description="factor"),
        "low_freq_factor": widgets.FloatSlider(value=1.0, min=0.25, max=4.0, step=0.25,
                                               description="low_freq"),
        "high_freq_factor": widgets.FloatSlider(value=4.0, min=1.0, max=16.0, step=0.5,
                                                description="high_freq"),
    }
    return Explorer(draw, controls, title="Llama 3.1's RoPE scaling: which wavelengths stretch")
