"""Explorer for lesson 10: the learning-rate schedule.

    schedule_explorer()   # sliders: warmup steps, peak rate, floor (share of the peak), steps

Draws lr(t) of `llama_edu.train.lr_at`: a linear warmup to the peak, then a cosine down to
floor * peak at the last step, with the area under the curve (the sum of all step sizes).
"""

from __future__ import annotations

import ipywidgets as widgets

from .. import viz
from ..train import lr_at
from . import Explorer


def draw_schedule(warmup: int = 100, peak: float = 3e-3, floor: float = 0.1,
                  steps: int = 1000):
    """lr of every step, with the warmup's end and the floor marked."""
    warmup = min(warmup, steps)
    rates = [lr_at(t, peak, warmup, steps, min_ratio=floor) for t in range(steps)]
    fig, ax = viz.figure(height=3.2)
    ax.plot(range(steps), rates, color=viz.COLORS[0])
    ax.axvline(warmup, color="k", ls=":", lw=1, label=f"end of warmup (step {warmup})")
    ax.axhline(floor * peak, color=viz.COLORS[1], ls="--", lw=1,
               label=f"floor {floor:.0%} of the peak")
    ax.set_ylim(0, peak * 1.08)
    viz.label(ax, f"warmup {warmup}, peak {peak:.1e}, {steps} steps: the steps add up to "
              f"{sum(rates):.3g}", "step", "learning rate")
    ax.legend(fontsize=8, loc="upper right")
    return fig


def schedule_explorer(warmup: int = 100, peak: float = 3e-3, floor: float = 0.1,
                      steps: int = 1000) -> Explorer:
    """Sliders for the schedule's four numbers; the curve redraws on every change."""
    controls = {
        "warmup": widgets.IntSlider(value=warmup, min=0, max=500, step=10,
                                    description="warmup"),
        "peak": widgets.FloatLogSlider(value=peak, base=10, min=-5, max=-1, step=0.1,
                                       description="peak lr"),
        "floor": widgets.FloatSlider(value=floor, min=0.0, max=1.0, step=0.05,
                                     description="floor"),
        "steps": widgets.IntSlider(value=steps, min=100, max=5000, step=100,
                                   description="steps"),
    }
    return Explorer(draw_schedule, controls, title="Warmup, then cosine decay to a floor")
