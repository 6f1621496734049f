"""Interactive explorers: one pattern for every lesson's widget.

An `Explorer` is a row of ipywidgets controls above a matplotlib figure. Moving a control
calls `draw(**values)` again and shows the new figure. The figure is an `Image` widget, so
nothing is printed outside the widget. When no frontend is attached (nbval, a rendered
page) the same display also carries a static PNG of the current state, so the notebook
still shows a picture.

    def draw(position, freq_index):        # returns a matplotlib Figure
        ...
    Explorer(draw, {"position": IntSlider(0, 0, 64), "freq_index": IntSlider(0, 0, 31)},
             title="RoPE: one rotating pair")

The lessons' explorers live in the submodules named after their lesson's module.
"""

from __future__ import annotations

import base64
import traceback
from collections.abc import Callable, Mapping

import ipywidgets as widgets
import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from .. import viz


class Explorer(widgets.VBox):
    """Controls plus a figure that redraws whenever a control's value changes."""

    def __init__(self, draw: Callable[..., Figure], controls: Mapping[str, widgets.Widget],
                 title: str = ""):
        if not controls:
            raise ValueError("an Explorer needs at least one control")
        for name, control in controls.items():
            if not isinstance(control, widgets.ValueWidget):
                raise TypeError(f"control {name!r} must be an ipywidgets control with a value "
                                f"(a slider, dropdown, toggle...), got {control!r}")
        self.draw = draw
        self.controls = dict(controls)
        self.redraws = 0
        self.image = widgets.Image(format="png", layout=widgets.Layout(max_width="100%"))
        self.errors = widgets.Output()  # a failing draw shows its traceback here
        header = [widgets.HTML(f"<b>{title}</b>")] if title else []
        super().__init__(header + [widgets.HBox(list(self.controls.values()),
                                                layout=widgets.Layout(flex_flow="row wrap")),
                                   self.image, self.errors])
        self.add_class("llama-edu-explorer")
        for control in self.controls.values():
            control.observe(self._on_change, names="value")
        self._png = b""
        self.redraw()

    def values(self) -> dict:
        return {name: control.value for name, control in self.controls.items()}

    def figure(self, **overrides) -> Figure:
        """The figure for the current values, with some replaced: handy for static plots."""
        return self.draw(**{**self.values(), **overrides})

    def redraw(self) -> None:
        self.errors.outputs = ()  # (clear_output() would print escape codes outside Jupyter)
        try:
            fig = self.figure()
            self._png = viz.to_png(fig)
            plt.close(fig)
        except Exception:  # show the learner what broke, inside the widget
            with self.errors:
                traceback.print_exc()
            return
        self.image.value = self._png
        self.redraws += 1

    def _on_change(self, _change) -> None:
        self.redraw()

    def _repr_mimebundle_(self, **kwargs):
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        if self._png:
            bundle["image/png"] = base64.b64encode(self._png).decode("ascii")
        return bundle
