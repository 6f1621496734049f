"""Explorer for lesson 04: the FFN activations and their derivatives.

    activation_explorer()     # a beta slider for Swish_beta(x) = x * sigmoid(beta * x)

Left: ReLU, GELU, SiLU (= Swish_1) and Swish_beta. Right: their derivatives, taken with
autograd. beta = 0 gives the line x / 2; a large beta approaches ReLU.
"""

from __future__ import annotations

import ipywidgets as widgets
import torch
import torch.nn.functional as F

from .. import viz
from ..ffn import swish
from . import Explorer


def activation_curves(beta: float = 1.0, x_min: float = -5.0, x_max: float = 5.0,
                      n_points: int = 401) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{name: (value, derivative)} on torch.linspace(x_min, x_max, n_points)."""
    x = torch.linspace(x_min, x_max, n_points, dtype=torch.float64)
    functions = {"ReLU": F.relu, "GELU": F.gelu, "SiLU = Swish_1": F.silu,
                 f"Swish_{beta:g}": lambda t: swish(t, beta)}
    curves = {}
    for name, fn in functions.items():
        xs = x.clone().requires_grad_()
        y = fn(xs)
        (grad,) = torch.autograd.grad(y.sum(), xs)
        curves[name] = (y.detach(), grad)
    return curves


def draw_activations(beta: float = 1.0):
    """Two panels: the activations, and their derivatives."""
    x = torch.linspace(-5.0, 5.0, 401, dtype=torch.float64)
    curves = activation_curves(beta)
    fig, (left, right) = viz.figure(2, height=3.6)
    for (name, (value, grad)), color in zip(curves.items(), viz.COLORS, strict=False):
        style = {"linestyle": "--", "linewidth": 2.2} if name.startswith("Swish_") else {}
        left.plot(x, value, color=color, label=name, **style)
        right.plot(x, grad, color=color, label=name, **style)
    for ax in (left, right):
        ax.axhline(0, color="grey", linewidth=0.6)
        ax.axvline(0, color="grey", linewidth=0.6)
    left.set_ylim(-1.5, 5.0)
    right.set_ylim(-0.3, 1.3)
    viz.label(left, "Activations f(x)", "pre-activation x", "f(x)")
    viz.label(right, "Derivatives f'(x)", "pre-activation x", "f'(x)")
    left.legend(loc="upper left")
    return fig


def activation_explorer(beta: float = 1.0) -> Explorer:
    """A beta slider for Swish_beta beside fixed ReLU, GELU and SiLU."""
    controls = {"beta": widgets.FloatSlider(value=beta, min=0.0, max=10.0, step=0.1,
                                            description="beta")}
    return Explorer(draw_activations, controls,
                    title="Swish_beta(x) = x * sigmoid(beta * x) between a line and ReLU")
