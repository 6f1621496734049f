"""Seeing tokens (lesson 01): coloured token boundaries and a BPE merge stepper.

    tokens_html(pieces)                  # coloured spans, for any text (CJK and emoji too)
    token_figure(pieces, title)          # the same as a matplotlib figure
    merge_stepper(bpe, sentence)         # slider over the merges: the sentence re-segmented

Pieces are strings (SentencePiece pieces such as "▁the" or "<0xE5>") or bytes (byte-level
BPE tokens); `readable_piece` shows spaces, tabs and newlines as ␣ ⇥ ↵ and bytes that are
not a whole UTF-8 character as <E5>.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape

import ipywidgets as widgets
import matplotlib.pyplot as plt
from matplotlib.patches import FancyBboxPatch

from .. import viz
from ..tokenizer.bpe import ByteLevelBPE, merge
from . import Explorer

PASTELS = ["#ffd8a8", "#b2f2bb", "#a5d8ff", "#eebefa", "#ffec99", "#c3fae8", "#ffc9c9"]
_VISIBLE = {" ": "␣", "\t": "⇥", "\n": "↵", "\r": "␍"}
_MONO = "DejaVu Sans Mono"


def readable_piece(piece: str | bytes) -> str:
    """A token as text a reader can see: whitespace made visible, broken UTF-8 as <XX>."""
    if isinstance(piece, bytes):
        try:
            piece = piece.decode("utf-8")
        except UnicodeDecodeError:
            return "".join(f"<{b:02X}>" for b in piece)
    return "".join(_VISIBLE.get(ch, ch) for ch in piece)


def tokens_html(pieces: Sequence[str | bytes], ids: Sequence[int] | None = None):
    """Pieces as coloured spans (hover shows the id): the browser draws every script."""
    from IPython.display import HTML

    spans = []
    for k, piece in enumerate(pieces):
        title = f' title="id {ids[k]}"' if ids is not None else ""
        spans.append(f'<span{title} style="background:{PASTELS[k % len(PASTELS)]};'
                     'padding:1px 2px;margin:1px;border-radius:3px;font-family:monospace;'
                     f'white-space:pre">{escape(readable_piece(piece))}</span>')
    return HTML('<div style="line-height:1.9">' + "".join(spans) + "</div>")


def _draw_boxes(ax, labels: Sequence[str], row_width: float = 64.0) -> None:
    """Coloured boxes, one per token, wrapped into rows; units are character widths."""
    x, y, height = 0.0, 0.0, 1.0
    for k, label in enumerate(labels):
        width = max(len(label), 1) * 0.62 + 0.5
        if x > 0 and x + width > row_width:
            x, y = 0.0, y - 1.5
        ax.add_patch(FancyBboxPatch((x, y), width, height, edgecolor="#555",
                                    boxstyle="round,pad=0.02,rounding_size=0.2",
                                    facecolor=PASTELS[k % len(PASTELS)]))
        ax.text(x + width / 2, y + height / 2, label, ha="center", va="center",
                fontfamily=list(viz.font_family(_MONO)), fontsize=9)
        x += width + 0.25
    ax.set_xlim(-0.3, row_width + 0.3)
    ax.set_ylim(y - 0.4, height + 0.4)
    ax.set_axis_off()


def token_figure(pieces: Sequence[str | bytes], title: str = "", height: float | None = None):
    """A figure of the pieces as coloured boxes (token boundaries at the box edges)."""
    labels = [viz.drawable(readable_piece(p), _MONO) for p in pieces]
    rows = 1 + int(sum(max(len(s), 1) * 0.62 + 0.75 for s in labels) // 60)
    fig, ax = viz.figure(height=height or 0.6 + 0.55 * rows)
    _draw_boxes(ax, labels)
    ax.set_title(viz.drawable(title) if title else f"{len(labels)} tokens")
    plt.close(fig)  # shown once, as the cell's value, not again by the inline backend
    return fig


def _steps(bpe: ByteLevelBPE, sentence: str) -> list[list[list[int]]]:
    """The sentence's words as ids after 0, 1, ..., len(merges) merges."""
    words = [list(w.encode("utf-8")) for w in bpe.words(sentence)]
    steps = [words]
    for k, pair in enumerate(bpe.merges):
        words = [merge(ids, pair, 256 + k) if len(ids) > 1 else ids for ids in words]
        steps.append(words)
    return steps


def merge_stepper(bpe: ByteLevelBPE, sentence: str, start: int | None = None) -> Explorer:
    """Slide over the merge index: the sentence as tokens after the first k merges.

    Below the tokens, the token count against k shows where compression comes from.
    """
    if not bpe.merges:
        raise ValueError("the tokenizer has no merges yet; train it first")
    if not isinstance(sentence, str) or not sentence:
        raise ValueError(f"sentence must be a non-empty string, got {sentence!r}")
    steps = _steps(bpe, sentence)
    counts = [sum(len(ids) for ids in words) for words in steps]

    def draw(merges: int):
        fig, (top, bottom) = viz.figure(nrows=2, height=2.2,
                                        gridspec_kw={"height_ratios": [1.4, 1]})
        ids = [i for word in steps[merges] for i in word]
        labels = [viz.drawable(readable_piece(bpe.vocab[i]), _MONO) for i in ids]
        _draw_boxes(top, labels)
        newest = (f"; merge {merges - 1} made {readable_piece(bpe.vocab[255 + merges])!r}"
                  if merges else "")
        top.set_title(viz.drawable(f"after {merges} merges: {len(ids)} tokens for "
                                f"{len(sentence.encode('utf-8'))} bytes{newest}"))
        bottom.plot(range(len(counts)), counts, color=viz.COLORS[0])
        bottom.scatter([merges], [counts[merges]], color=viz.COLORS[1], zorder=3)
        viz.label(bottom, "tokens in the sentence as merges are added", "merges applied (k)",
                  "tokens")
        return fig

    slider = widgets.IntSlider(value=len(bpe.merges) if start is None else start, min=0,
                               max=len(bpe.merges), description="merges",
                               continuous_update=False)
    return Explorer(draw, {"merges": slider}, title="BPE merge stepper")
