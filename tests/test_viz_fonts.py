"""Chinese in figures draws with the course's shipped font, on any machine."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from fontTools.ttLib import TTFont  # noqa: E402
from matplotlib import font_manager  # noqa: E402

from llama_edu import viz  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = "词元 嵌入 旋转位置编码 键值缓存 分组查询注意力：从前，在一座山里，“你好”。"


def _cjk(text: str) -> set[str]:
    return {ch for ch in text if 0x2E80 <= ord(ch) <= 0x9FFF or 0xFF00 <= ord(ch) <= 0xFFEF
            or 0x3000 <= ord(ch) <= 0x303F}


@pytest.fixture(scope="module")
def shipped_cmap() -> set[str]:
    assert viz.SHIPPED_CJK_FONT.is_file(), f"{viz.SHIPPED_CJK_FONT} is missing"
    return {chr(code) for code in TTFont(str(viz.SHIPPED_CJK_FONT)).getBestCmap()}


def test_the_shipped_font_is_registered_first_among_cjk_fonts():
    names = {entry.name: entry.fname for entry in font_manager.fontManager.ttflist}
    assert Path(names[viz.SHIPPED_CJK_FAMILY]) == viz.SHIPPED_CJK_FONT
    family = viz.font_family()
    assert family[:2] == ("DejaVu Sans", viz.SHIPPED_CJK_FAMILY)
    assert list(plt.rcParams["font.family"])[:2] == list(family[:2])


def test_every_chinese_character_of_the_course_has_a_glyph(shipped_cmap):
    files = [p for pattern in ("notebooks/**/*.ipynb", "llama_edu/**/*.py", "locales/**/*.po")
             for p in ROOT.glob(pattern)]
    used = set().union(*(_cjk(p.read_text(encoding="utf-8")) for p in files))
    assert len(used) > 100, "the course should hold Chinese text"
    missing = "".join(sorted(used - shipped_cmap))
    assert not missing, (f"assets/fonts lacks {missing!r}: rebuild it with "
                         "`python scripts/build_cjk_font.py` (see assets/fonts/PROVENANCE.md)")


def test_the_stories_and_the_tokenizer_vocabulary_are_covered(shipped_cmap):
    from llama_edu.data import course_text

    used = _cjk(course_text())
    missing = "".join(sorted(used - shipped_cmap))
    assert not missing, f"the corpus writes characters the figures cannot draw: {missing!r}"


def _draw(text: str, family: list[str]) -> np.ndarray:
    fig = plt.figure(figsize=(6, 0.6), dpi=80)
    fig.text(0.01, 0.3, text, fontfamily=family, fontsize=14)
    fig.canvas.draw()
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return pixels


def test_a_chinese_label_renders_with_real_glyphs_and_no_warning(shipped_cmap):
    assert _cjk(SAMPLE) <= shipped_cmap
    assert viz.drawable(SAMPLE) == SAMPLE, "drawable() should keep every character"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = _draw("旋", ["DejaVu Sans", viz.SHIPPED_CJK_FAMILY])
        second = _draw("转", ["DejaVu Sans", viz.SHIPPED_CJK_FAMILY])
        _draw(SAMPLE, ["DejaVu Sans", viz.SHIPPED_CJK_FAMILY])
    assert not [w for w in caught if "missing from" in str(w.message)], \
        [str(w.message) for w in caught]
    ink_first = (first < 128).any(-1).sum()
    assert ink_first > 20, "the character drew no ink"
    # two different characters draw two different shapes (a missing glyph draws the same box)
    assert not np.array_equal(first, second)
