"""Lesson 01 visuals: readable pieces, coloured token boundaries, the merge stepper."""

import warnings

import matplotlib.pyplot as plt
import pytest

from llama_edu import viz
from llama_edu.tokenizer import ByteLevelBPE
from llama_edu.widgets.tokenizer import (
    _steps,
    merge_stepper,
    readable_piece,
    token_figure,
    tokens_html,
)

BPE = ByteLevelBPE().train("the cat sat on the mat; the hat is that hat. " * 20, vocab_size=300,
                           progress=False)


def test_readable_piece_shows_whitespace_and_broken_utf8():
    assert readable_piece(" a\t\n") == "␣a⇥↵"
    assert readable_piece("▁the") == "▁the"
    assert readable_piece("使".encode()) == "使"
    assert readable_piece("使".encode()[:2]) == "<E4><BD>"


def test_tokens_html_has_one_span_per_piece_and_escapes():
    html = tokens_html(["<s>", "▁a", "&"], ids=[1, 2, 3]).data
    assert html.count("<span") == 3 and "&lt;s&gt;" in html and 'title="id 3"' in html


def test_token_figure_draws_every_token_quietly_even_for_cjk():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing glyph would warn
        fig = token_figure(["<s>", "▁使用", "😀", "4", "5"], title="使用")
    ax = fig.axes[0]
    assert len(ax.patches) == 5
    assert ax.get_title() == viz.drawable("使用")  # the characters, or U+4F7F... without a CJK font
    assert fig.number not in plt.get_fignums()  # closed: shown once, as the cell's value


def test_merge_stepper_redraws_and_counts_tokens():
    sentence = "the cat sat on that mat"
    steps = _steps(BPE, sentence)
    assert sum(map(len, steps[0])) == len(sentence.encode())
    assert [i for w in steps[-1] for i in w] == BPE.encode(sentence)
    explorer = merge_stepper(BPE, sentence, start=0)
    first = bytes(explorer.image.value)
    explorer.controls["merges"].value = len(BPE.merges)
    assert explorer.redraws == 2 and bytes(explorer.image.value) != first
    assert explorer.controls["merges"].max == len(BPE.merges)


def test_merge_stepper_rejects_untrained_tokenizers_and_empty_text():
    with pytest.raises(ValueError, match="no merges yet"):
        merge_stepper(ByteLevelBPE(), "text")
    with pytest.raises(ValueError, match="non-empty string"):
        merge_stepper(BPE, "")
