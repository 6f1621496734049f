"""Explorer for lesson 03: activations before and after LayerNorm and RMSNorm.

    norm_explorer()      # sliders: the input's shift (its mean) and scale (its spread)

The input is a batch of token vectors x = scale * z + shift (z standard normal, with a few
large outlier features, as real activations have). The three panels show the histogram of
x, of LayerNorm(x) and of RMSNorm(x): moving the scale changes only the first panel;
moving the shift also changes RMSNorm's, because only LayerNorm removes the mean.
"""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import torch

from .. import viz
from ..norms import layer_norm, rms_norm
from . import Explorer


def sample_activations(shift: float = 0.0, scale: float = 1.0, n_tokens: int = 256,
                       dim: int = 64, seed: int = 0) -> torch.Tensor:
    """(n_tokens, dim) vectors scale * z + shift; two of the dim features are outliers
    (z multiplied by 6), the kind of feature that dominates a vector's norm."""
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn(n_tokens, dim, generator=generator)
    z[:, :2] *= 6.0
    return scale * z + shift


def draw_norm_distributions(shift: float = 0.0, scale: float = 1.0, dim: int = 64):
    """Histograms of x, LayerNorm(x) and RMSNorm(x), each with its mean and RMS."""
    x = sample_activations(shift, scale, dim=dim)
    panels = [("input x", x), ("LayerNorm(x)", layer_norm(x)), ("RMSNorm(x)", rms_norm(x))]
    fig, axes = viz.figure(3, height=3.2)
    for ax, color, (name, values) in zip(axes, viz.COLORS, panels, strict=False):
        flat = values.flatten().numpy()
        mean, rms = float(flat.mean()), float(np.sqrt((flat ** 2).mean()))
        ax.hist(flat, bins=60, color=color, alpha=0.8)
        ax.axvline(mean, color="black", linestyle="--", linewidth=1)
        mean = mean if abs(mean) >= 0.005 else 0.0     # rounding's -1e-9 shows as +0.00
        viz.label(ax, f"{name}\nmean {mean:+.2f}, RMS {rms:.2f}", "activation value",
                  "count (entries)")
    axes[1].set_xlim(-8, 8)
    axes[2].set_xlim(-8, 8)
    fig.suptitle(f"{x.shape[0]} token vectors of size {dim}: x = {scale:g} * z + {shift:g}")
    return fig


def norm_explorer(shift: float = 3.0, scale: float = 1.0) -> Explorer:
    """Sliders for the input's shift and scale; the figure redraws on every change."""
    controls = {
        "shift": widgets.FloatSlider(value=shift, min=-10.0, max=10.0, step=0.5,
                                     description="shift"),
        "scale": widgets.FloatLogSlider(value=scale, base=10, min=-2, max=2, step=0.1,
                                        description="scale"),
    }
    return Explorer(draw_norm_distributions, controls,
                    title="Activations before and after each norm")
