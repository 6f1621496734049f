"""The shared plotting look and the Explorer pattern (redraw on change, static fallback)."""

import base64

import ipywidgets as widgets
import matplotlib.pyplot as plt
import pytest

from llama_edu import viz
from llama_edu.widgets import Explorer


def _draw(scale):
    fig, ax = viz.figure()
    ax.plot([0, 1], [0, scale])
    viz.label(ax, f"scale {scale}", "x", "y")
    return fig


def test_explorer_redraws_when_a_control_moves_and_carries_a_static_png():
    open_before = set(plt.get_fignums())
    slider = widgets.IntSlider(value=1, min=0, max=5)
    explorer = Explorer(_draw, {"scale": slider}, title="test")
    first = bytes(explorer.image.value)
    assert first.startswith(b"\x89PNG") and explorer.redraws == 1
    slider.value = 4
    assert explorer.redraws == 2 and bytes(explorer.image.value) != first
    bundle = explorer._repr_mimebundle_()
    assert base64.b64decode(bundle["image/png"]) == bytes(explorer.image.value)
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert set(plt.get_fignums()) <= open_before  # its figures are closed after rendering


def test_explorer_shows_a_failing_draw_inside_the_widget():
    def broken(scale):
        raise RuntimeError("boom")
    explorer = Explorer(broken, {"scale": widgets.IntSlider()})
    assert explorer.redraws == 0 and bytes(explorer.image.value) == b""


def test_explorer_rejects_bad_controls():
    with pytest.raises(ValueError, match="at least one control"):
        Explorer(_draw, {})
    with pytest.raises(TypeError, match="must be an ipywidgets control"):
        Explorer(_draw, {"scale": widgets.HTML})  # the class, not an instance


def test_block_diagram_highlights_and_rejects_unknown_parts():
    svg = viz.block_diagram_svg("rope")
    assert svg.startswith("<svg") and svg.count("#ffd24d") == 1
    assert viz.block_diagram_svg("norm").count("#ffd24d") == 3
    with pytest.raises(ValueError, match="unknown diagram part"):
        viz.block_diagram_svg("moe")


def test_heatmap_is_labelled():
    fig, ax = viz.figure()
    viz.heatmap(ax, [[0, 1], [2, 3]], "t", "key position", "query position")
    assert ax.get_xlabel() == "key position" and ax.get_title() == "t"
    plt.close(fig)


def test_shipped_block_diagram_is_the_generated_one():
    from pathlib import Path

    shipped = Path(__file__).parent.parent / "assets" / "llama2_block.svg"
    assert shipped.read_text(encoding="utf-8") == viz.block_diagram_svg(), (
        "assets/llama2_block.svg is stale: regenerate it with "
        "viz.block_diagram_svg() and save it as UTF-8")


def test_traffic_explorer_redraws_for_another_bandwidth():
    from llama_edu.widgets.parallel import traffic_explorer

    explorer = traffic_explorer()
    first = bytes(explorer.image.value)
    explorer.controls["bandwidth_gb_s"].value = 50
    assert explorer.redraws == 2 and bytes(explorer.image.value) != first


@pytest.mark.parametrize("primary", ["DejaVu Sans", "DejaVu Sans Mono"])
def test_chinese_text_draws_without_glyph_warnings(primary):
    import warnings

    text = viz.drawable("使用字节 ▁Who 45", primary)
    assert "▁Who 45" in text
    has_cjk_font = len(viz.font_family(primary)) > 1
    assert ("使用字节" in text) == has_cjk_font
    assert ("U+4F7F" in text) == (not has_cjk_font)
    fig, ax = viz.figure()
    ax.set_title(text, fontfamily=list(viz.font_family(primary)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        viz.to_png(fig)
    plt.close(fig)


def test_pipeline_diagram_draws_one_box_per_stage_and_rejects_no_stages():
    fig = viz.pipeline_diagram([("SFT", "demos"), ("RM", "pairs"), ("PPO", "")], "a pipeline",
                               loop=(1, 2))
    ax = fig.axes[0]
    assert ax.get_title() == "a pipeline"
    assert len(ax.patches) == 3
    assert {t.get_text() for t in ax.texts} >= {"SFT", "RM", "PPO"}
    with pytest.raises(ValueError, match="at least one"):
        viz.pipeline_diagram([], "empty")


def test_smooth_trailing_mean_and_full_window_min():
    assert viz.smooth([1, 3, 5, 7], k=2) == [1.0, 2.0, 4.0, 6.0]
    assert viz.smooth([4, 1, 3, 2, 5], k=3, stat="min", trailing=False) == [1.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="'mean' or 'min'"):
        viz.smooth([1.0], stat="median")
    with pytest.raises(ValueError, match="k >= 1"):
        viz.smooth([1.0], k=0)
