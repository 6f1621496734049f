"""Plot helpers with one look for the whole course, and the Llama 2 block diagram.

Every lesson shows `block_diagram(highlight=...)` with its own piece lit up.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable
from functools import cache
from html import escape
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib import font_manager

WIDTH = 9.0                  # inches: fills a notebook column at 100 dpi without scrolling
HEATMAP_CMAP = "viridis"     # perceptually uniform, for magnitudes
DIVERGING_CMAP = "RdBu_r"    # for signed values centred on zero
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]


# Fonts with Chinese glyphs. Those installed are added after the Latin font, and matplotlib
# (3.6 and later) falls back to them glyph by glyph, so Chinese labels draw as characters.
# The course ships one (assets/fonts: a subset of Noto Sans CJK SC under the SIL Open Font
# License, see its PROVENANCE.md), registered here, so a fresh machine needs none installed.
SHIPPED_CJK_FONT = Path(__file__).resolve().parent.parent / "assets" / "fonts" / \
    "LlamaEduCJK-Regular.otf"
SHIPPED_CJK_FAMILY = "Llama Edu CJK"
if SHIPPED_CJK_FONT.is_file():
    font_manager.fontManager.addfont(str(SHIPPED_CJK_FONT))
CJK_FONTS = (SHIPPED_CJK_FAMILY, "Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC",
             "WenQuanYi Zen Hei", "Microsoft YaHei", "PingFang SC", "Hiragino Sans GB", "Heiti SC",
             "SimHei", "Arial Unicode MS")


@cache
def font_family(primary: str = "DejaVu Sans") -> tuple[str, ...]:
    """The primary font followed by every installed CJK font, for `fontfamily=`."""
    installed = {entry.name for entry in font_manager.fontManager.ttflist}
    return (primary, *(name for name in CJK_FONTS if name in installed and name != primary))


@cache
def _glyph_tables(family: tuple[str, ...]):
    from matplotlib.ft2font import FT2Font

    return [FT2Font(font_manager.findfont(font_manager.FontProperties(family=name)))
            for name in family]


def drawable(text: str, primary: str = "DejaVu Sans") -> str:
    """`text` with every character that no available font can draw written as U+XXXX
    (line breaks stay line breaks).

    Matplotlib warns on stderr for a missing glyph (which also costs an nbgrader test cell
    its points); this keeps figures quiet and still says which character was there.
    """
    fonts = _glyph_tables(font_family(primary))
    return "".join(ch if ch == "\n" or (ch.isprintable()
                                        and any(f.get_char_index(ord(ch)) for f in fonts))
                   else f"U+{ord(ch):04X}" for ch in text)


class _NearestWeightIsFine(logging.Filter):
    """Many CJK fonts ship one weight (WenQuanYi Zen Hei: 500). Matplotlib then draws with
    the nearest weight, which is right, but logs on stderr that 'normal' was missing."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("findfont: Failed to find font weight")


logging.getLogger("matplotlib.font_manager").addFilter(_NearestWeightIsFine())
plt.rcParams["font.family"] = list(font_family())


def figure(ncols: int = 1, nrows: int = 1, height: float = 3.6, **kwargs):
    """A figure sized for a notebook column: `fig, axes = viz.figure(2)`."""
    fig, axes = plt.subplots(nrows, ncols, figsize=(WIDTH, height * nrows),
                             layout="constrained", **kwargs)
    return fig, axes


def smooth(values, k: int = 10, stat: str = "mean", trailing: bool = True) -> list[float]:
    """A noisy curve, smoothed over windows of k values (lessons 03, 04, 06).

    stat "mean" suits training losses; "min" suits timings (the best of k neighbours is the
    run least disturbed by the machine). trailing=True: point i summarises values[i-k+1 : i+1]
    (shorter windows at the start, same length as `values`); trailing=False: only full windows,
    len(values) - k + 1 points, the i-th centred on values[i + k // 2].
    """
    if k < 1:
        raise ValueError(f"smooth needs a window k >= 1, got {k}")
    reduce = {"mean": lambda w: sum(w) / len(w), "min": min}.get(stat)
    if reduce is None:
        raise ValueError(f"smooth's stat must be 'mean' or 'min', got {stat!r}")
    values = [float(v) for v in values]
    if trailing:
        return [reduce(values[max(0, i - k + 1):i + 1]) for i in range(len(values))]
    return [reduce(values[i:i + k]) for i in range(len(values) - k + 1)]


def label(ax, title: str, xlabel: str, ylabel: str) -> None:
    """Every plot gets a title and labelled axes (with units where there are some)."""
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def heatmap(ax, data, title: str, xlabel: str, ylabel: str, cmap: str | None = None,
            colorbar: bool = True, center: bool = False, xticklabels=None, yticklabels=None):
    """A labelled heatmap of a 2-D array; `center=True` uses a diverging map around 0."""
    data = np.asarray(data.detach().cpu() if hasattr(data, "detach") else data, dtype=float)
    if data.ndim != 2:
        raise ValueError(f"heatmap needs a 2-D array, got shape {data.shape}")
    kwargs = {}
    if center:
        bound = np.nanmax(np.abs(data[np.isfinite(data)])) if np.isfinite(data).any() else 1.0
        kwargs = {"vmin": -bound, "vmax": bound}
    image = ax.imshow(data, cmap=cmap or (DIVERGING_CMAP if center else HEATMAP_CMAP),
                      aspect="auto", interpolation="nearest", **kwargs)
    label(ax, title, xlabel, ylabel)
    if xticklabels is not None:
        ax.set_xticks(range(len(xticklabels)), xticklabels, rotation=90)
    if yticklabels is not None:
        ax.set_yticks(range(len(yticklabels)), yticklabels)
    if colorbar:
        ax.figure.colorbar(image, ax=ax, shrink=0.85)
    return image


def pipeline_diagram(stages: list[tuple[str, str]], title: str,
                     loop: tuple[int, int] | None = None, loop_label: str = ""):
    """Boxes left to right joined by arrows: stages are (name, detail) pairs. `loop=(i, j)`
    draws a return arrow from stage j back to stage i (an iterated part of the pipeline),
    captioned `loop_label`."""
    if not stages:
        raise ValueError("pipeline_diagram needs at least one (name, detail) stage")
    fig, ax = plt.subplots(figsize=(WIDTH, 2.6), layout="constrained")
    width, gap = 1.0, 0.35
    for k, (name, detail) in enumerate(stages):
        x = k * (width + gap)
        ax.add_patch(plt.Rectangle((x, 0.0), width, 1.0, facecolor="#e8f0fa",
                                   edgecolor=COLORS[0], linewidth=1.5))
        ax.text(x + width / 2, 0.7, name, ha="center", va="center", fontsize=8.5,
                fontweight="bold")
        ax.text(x + width / 2, 0.3, detail, ha="center", va="center", fontsize=7.5)
        if k:
            ax.annotate("", xy=(x, 0.5), xytext=(x - gap, 0.5),
                        arrowprops=dict(arrowstyle="->", color="0.3"))
    if loop is not None:
        i, j = loop
        xi, xj = i * (width + gap) + width / 2, j * (width + gap) + width / 2
        ax.annotate("", xy=(xi, 1.0), xytext=(xj, 1.0),
                    arrowprops=dict(arrowstyle="->", color=COLORS[1],
                                    connectionstyle="arc3,rad=0.35"))
        ax.text((xi + xj) / 2, 1.38, loop_label, ha="center", va="bottom", fontsize=7.5,
                color=COLORS[1])
    ax.set_xlim(-0.1, len(stages) * (width + gap) - gap + 0.1)
    ax.set_ylim(-0.15, 1.65)
    ax.set_title(title)
    ax.axis("off")
    return fig


def to_png(fig, dpi: int = 90) -> bytes:
    """Render a figure to PNG bytes (used by the widgets' static fallback)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------
# The Llama 2 block diagram, drawn as SVG. Each part has a key a lesson can highlight.

_PARTS = [  # key, label, (x, y, width, height)
    ("tokenizer", "Tokenizer: BPE, 32,000 pieces", (40, 20, 260, 34)),
    ("embedding", "Token embedding", (40, 74, 260, 34)),
    ("rmsnorm", "RMSNorm", (70, 148, 200, 30)),
    ("attention", "Self-attention (GQA)", (70, 194, 200, 40)),
    ("rope", "RoPE on q, k", (295, 174, 125, 24)),
    ("kv_cache", "KV cache", (295, 202, 125, 24)),
    ("flash", "Tiled softmax", (295, 230, 125, 24)),
    ("rmsnorm2", "RMSNorm", (70, 282, 200, 30)),
    ("swiglu", "SwiGLU FFN", (70, 328, 200, 40)),
    ("final_norm", "RMSNorm", (40, 424, 260, 30)),
    ("lm_head", "Linear: logits over the vocabulary", (40, 470, 260, 34)),
    ("sampling", "Softmax and sampling", (40, 520, 260, 34)),
]
_ALIASES = {"norm": ("rmsnorm", "rmsnorm2", "final_norm"), "rmsnorm": ("rmsnorm", "rmsnorm2",
            "final_norm"), "mask": ("attention",), "gqa": ("attention", "kv_cache"),
            "parallel": ("attention", "swiglu"), "loss": ("lm_head", "sampling")}
DIAGRAM_KEYS = sorted({key for key, _, _ in _PARTS} | set(_ALIASES))
_ADDS = (254, 388)  # y of the two residual additions on the main line (x = 170)


def block_diagram_svg(highlight: str | Iterable[str] | None = None) -> str:
    """SVG text of Llama 2's structure with the named parts highlighted.

    Keys: tokenizer, embedding, rmsnorm (every norm), attention, rope, kv_cache, flash,
    swiglu, final_norm, lm_head, sampling, and the groups mask, gqa, parallel, loss.
    """
    names = [highlight] if isinstance(highlight, str) else list(highlight or [])
    lit: set[str] = set()
    for name in names:
        if name not in DIAGRAM_KEYS:
            raise ValueError(f"unknown diagram part {name!r}; choose from {DIAGRAM_KEYS}")
        lit.update(_ALIASES.get(name, (name,)))
    line = 'stroke="#555" stroke-width="1.5" marker-end="url(#arrow)"'
    out = ['<svg xmlns="http://www.w3.org/2000/svg" width="440" height="575" '
           'viewBox="0 0 440 575" font-family="DejaVu Sans, Arial, sans-serif" font-size="13">',
           '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
           'markerHeight="7" orient="auto"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker>'
           '</defs>',
           '<rect x="28" y="124" width="400" height="282" rx="10" fill="#f6f6f6" '
           'stroke="#999" stroke-dasharray="5,4"/>',
           '<text x="420" y="398" text-anchor="end" fill="#555" font-size="12">'
           'x N layers (32 in Llama-2-7B)</text>']
    for y1, y2 in [(54, 74), (108, 148), (178, 194), (234, _ADDS[0] - 9),
                   (_ADDS[0] + 9, 282), (312, 328), (368, _ADDS[1] - 9),
                   (_ADDS[1] + 9, 424), (454, 470), (504, 520)]:
        out.append(f'<line x1="170" y1="{y1}" x2="170" y2="{y2}" {line}/>')
    for branch, add in ((136, _ADDS[0]), (270, _ADDS[1])):      # residual connections
        out.append(f'<path d="M170,{branch} H45 V{add} H161" fill="none" {line}/>')
        out.append(f'<circle cx="170" cy="{add}" r="9" fill="#fff" stroke="#555"/>'
                   f'<text x="170" y="{add + 4.5}" text-anchor="middle">+</text>')
    for y in (186, 214, 242):                                     # attention's sub-ideas
        out.append(f'<line x1="270" y1="214" x2="295" y2="{y}" stroke="#999" '
                   'stroke-dasharray="3,3"/>')
    for key, text, (x, y, w, h) in _PARTS:
        on = key in lit
        fill, stroke, weight, width = (("#ffd24d", "#b8860b", "bold", 2.5) if on
                                       else ("#ffffff", "#666", "normal", 1.2))
        out.append(f'<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6" fill="{fill}" '
                   f'stroke="{stroke}" stroke-width="{width}"><title>{key}</title></rect>')
        out.append(f'<text x="{x + w / 2}" y="{y + h / 2 + 4.5}" text-anchor="middle" '
                   f'font-weight="{weight}">{escape(text)}</text>')
    out.append('</svg>')
    return "\n".join(out)


def block_diagram(highlight: str | Iterable[str] | None = None):
    """The diagram as an object that Jupyter displays: `viz.block_diagram("rope")`."""
    from IPython.display import SVG

    return SVG(block_diagram_svg(highlight))
