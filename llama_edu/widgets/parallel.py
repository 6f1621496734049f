"""Lesson 12's explorer: what tensor parallelism sends against what it computes."""

from __future__ import annotations

import ipywidgets as widgets

from .. import viz
from ..model import PRESETS
from ..parallel import tensor_parallel_times
from . import Explorer


def draw_traffic(preset: str, world_size: int, bandwidth_gb_s: float):
    """Bars of all-reduce time vs compute time, per token and layer, for a preset."""
    compute, comm = tensor_parallel_times(PRESETS[preset], world_size, bandwidth_gb_s)
    fig, ax = viz.figure(height=2.6)
    ax.barh(["all-reduces", "compute"], [comm * 1e9, compute * 1e9],
            color=[viz.COLORS[1], viz.COLORS[0]])
    viz.label(ax, f"{preset} on {world_size} ranks at {bandwidth_gb_s:.0f} GB/s: "
              f"communication / compute = {comm / compute:.1f}", "ns per token per layer", "")
    return fig


def traffic_explorer() -> Explorer:
    """Preset, world size and link bandwidth (log slider, 10 GB/s to 1 TB/s)."""
    return Explorer(draw_traffic, {
        "bandwidth_gb_s": widgets.FloatLogSlider(value=450, base=10, min=1, max=3,
                                                 description="GB/s"),
        "preset": widgets.Dropdown(options=["llama2-7b", "llama2-13b", "llama2-70b"],
                                   value="llama2-70b", description="preset"),
        "world_size": widgets.Dropdown(options=[2, 4, 8, 16], value=8, description="ranks"),
    }, title="Tensor parallelism: send vs compute")
