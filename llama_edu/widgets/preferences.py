"""Lesson 14's explorer: best-of-K rejection sampling over precomputed rewards.

`rewards[temperature]` is a (prompts, K_max) tensor: the reward of each of K_max answers
sampled per prompt at that temperature. Best-of-K keeps, per prompt, the highest reward
among the first K samples (nested sets, so the maximum can only rise with K), as in the
Llama 2 paper's Figure 7 (§3.2.3).
"""

from __future__ import annotations

import ipywidgets as widgets
import torch
from torch import Tensor

from .. import viz
from . import Explorer


def best_of_k_curves(rewards: Tensor) -> tuple[Tensor, Tensor]:
    """(prompts, K_max) rewards -> the mean over prompts of the max and of the median of the
    first K samples, for K = 1 .. K_max: two (K_max,) tensors."""
    k_max = rewards.shape[1]
    best = torch.stack([rewards[:, :k].max(1).values.mean() for k in range(1, k_max + 1)])
    median = torch.stack([rewards[:, :k].median(1).values.mean() for k in range(1, k_max + 1)])
    return best, median


def draw_best_of_k(rewards: dict[float, Tensor], k: int, temperature: float):
    """Left: the best-of-K curves with K marked; right: the rewards of the best of K."""
    table = rewards[temperature]
    best, median = best_of_k_curves(table)
    ks = range(1, len(best) + 1)
    fig, (left, right) = viz.figure(ncols=2, height=3.2)
    left.plot(ks, best, marker="o", color=viz.COLORS[0], label="best of K (max)")
    left.plot(ks, median, marker="s", color=viz.COLORS[1], label="median of K")
    left.axvline(k, color="gray", linestyle=":")
    left.legend(loc="lower right")
    viz.label(left, f"Best-of-K at temperature {temperature:g}", "K (samples per prompt)",
              "mean reward over prompts")
    chosen = table[:, :k].max(1).values
    right.hist(chosen.numpy(), bins=torch.linspace(0, 1, 11).numpy(), color=viz.COLORS[2])
    viz.label(right, f"The kept answer's reward, K = {k}", "reward", "prompts")
    return fig


def best_of_k_explorer(rewards: dict[float, Tensor], k: int = 1) -> Explorer:
    """Slider K (first: it moves the mark and the histogram), dropdown temperature."""
    k_max = next(iter(rewards.values())).shape[1]
    controls = {"k": widgets.IntSlider(value=k, min=1, max=k_max, description="K"),
                "temperature": widgets.Dropdown(options=sorted(rewards),
                                                value=sorted(rewards)[len(rewards) // 2],
                                                description="temperature")}
    return Explorer(lambda k, temperature: draw_best_of_k(rewards, k, temperature), controls,
                    title="Rejection sampling: keep the best of K answers")
