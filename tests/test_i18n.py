"""The Chinese edition: generated from the English notebooks and the catalogs, code equal,
stale translations listed, glossary terms introduced with their English."""

from __future__ import annotations

import nbformat
import pytest

from llama_edu import i18n

CATALOGS = sorted((i18n.LOCALES / i18n.LANGUAGE / "LC_MESSAGES").glob("[0-9][0-9]_*.po"))
TRANSLATED = [p.stem for p in CATALOGS if p.stem != i18n.FEEDBACK_DOMAIN]


# ---------------------------------------------------------------------------------------
# the machinery, on small cases

def test_markdown_blocks_keep_code_fences_and_display_math_whole():
    text = ("# Title\n\nA paragraph\non two lines.\n\n```python\nx = 1\n\ny = 2\n```\n\n"
            "$$\na\n\nb\n$$\n\n- one\n- two")
    assert i18n.markdown_blocks(text) == [
        "# Title", "A paragraph\non two lines.", "```python\nx = 1\n\ny = 2\n```",
        "$$\na\n\nb\n$$", "- one\n- two"]
    assert i18n.translate_markdown(text, {}) == text


CODE = '''x = torch.ones(3)  # three ones for the demo
print(f"the sum is {x.sum():.1f} over {len(x)} items")
ax.set_title("Loss by step")
table = {"q_proj": 1}
rate = rates["system message only", "after GAtt"]
spec = "bmhd,bnhd->bhmn"
### BEGIN SOLUTION
y = x * 2
### END SOLUTION
'''


def test_only_prose_strings_and_comments_are_messages():
    found = [(kind, text) for _, _, kind, text in i18n._spans(CODE)]
    assert found == [("comment", "# three ones for the demo"),
                     ("string", 'f"the sum is {x.sum():.1f} over {len(x)} items"'),
                     ("string", '"Loss by step"')]


def test_a_translation_changes_text_and_keeps_the_code_skeleton():
    table = {"# three ones for the demo": "# 演示用的三个 1",
             'f"the sum is {x.sum():.1f} over {len(x)} items"':
                 'f"{len(x)} 个元素之和为 {x.sum():.1f}"',
             '"Loss by step"': '"各步的损失"'}
    translated = i18n.translate_code(CODE, table)
    assert "各步的损失" in translated and "BEGIN SOLUTION" in translated
    assert i18n.code_skeleton(translated) == i18n.code_skeleton(CODE)


@pytest.mark.parametrize("wrong", [
    'f"{len(x)} 个元素之和为 {x.mean():.1f}"',      # an expression changed
    'f"元素之和为 {x.sum():.1f}"',                     # an expression dropped
])
def test_the_skeleton_shows_a_translation_that_changes_an_expression(wrong):
    table = {'f"the sum is {x.sum():.1f} over {len(x)} items"': wrong}
    assert i18n.code_skeleton(i18n.translate_code(CODE, table)) != i18n.code_skeleton(CODE)


def test_the_skeleton_shows_changed_code():
    assert i18n.code_skeleton(CODE.replace("x * 2", "x * 3")) != i18n.code_skeleton(CODE)


def test_an_english_change_marks_its_translation_fuzzy(tmp_path, monkeypatch):
    monkeypatch.setattr(i18n, "NOTEBOOKS", tmp_path / "notebooks")
    monkeypatch.setattr(i18n, "LOCALES", tmp_path / "locales")
    monkeypatch.setitem(i18n.OUTPUT, i18n.LANGUAGE, tmp_path / "notebooks" / "zh")
    (tmp_path / "notebooks").mkdir()
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell("The cache grows with the context.\n\n"
                                                    "A second paragraph stays."),
                      nbformat.v4.new_code_cell('print("tokens per second")')]
    path = tmp_path / "notebooks" / "99_demo.ipynb"
    nbformat.write(notebook, path)
    catalog = i18n.update_catalog("99_demo")
    assert set(i18n.stale_messages(catalog)) == {
        "The cache grows with the context.", "A second paragraph stays.",
        '"tokens per second"'}
    for message in catalog:
        if message.id:
            message.string = {"The cache grows with the context.": "缓存随上下文增长。",
                              "A second paragraph stays.": "第二段不变。",
                              '"tokens per second"': '"每秒词元数"'}[message.id]
    i18n.write_catalog(catalog, i18n.catalog_path("99_demo"))
    i18n.build(only=["99_demo"])
    built = nbformat.read(tmp_path / "notebooks" / "zh" / "99_demo.ipynb", as_version=4)
    assert built.cells[0].source == "缓存随上下文增长。\n\n第二段不变。"
    assert built.cells[1].source == 'print("每秒词元数")'

    notebook.cells[0].source = ("The cache grows with the context length.\n\n"
                                "A second paragraph stays.")
    nbformat.write(notebook, path)
    catalog = i18n.update_catalog("99_demo")
    assert i18n.stale_messages(catalog) == ["The cache grows with the context length."]
    assert catalog["The cache grows with the context length."].fuzzy
    i18n.build(only=["99_demo"])
    built = nbformat.read(tmp_path / "notebooks" / "zh" / "99_demo.ipynb", as_version=4)
    assert built.cells[0].source == ("The cache grows with the context length.\n\n第二段不变。"), \
        "a stale translation must not be shown"


def test_the_glossary_reads_and_first_use_is_checked():
    terms = i18n.glossary()
    assert terms["token"] == "词元" and terms["KV cache"] == "键值缓存"
    assert terms["RoPE"] == "旋转位置编码"
    assert i18n.first_use_problems("词元（token）是……词元", terms) == []
    assert i18n.first_use_problems("词元是……词元（token）", terms) == [
        "词元 at its first use should read 词元（token）"]
    assert i18n.first_use_problems("多头注意力（multi-head attention）与注意力（attention）",
                                   terms) == []


# ---------------------------------------------------------------------------------------
# the shipped edition

@pytest.mark.parametrize("lesson", TRANSLATED)
def test_the_catalog_is_current_and_complete(lesson):
    english = nbformat.read(i18n.NOTEBOOKS / f"{lesson}.ipynb", as_version=4)
    catalog = i18n.read_catalog(i18n.catalog_path(lesson))
    wanted = {m.text for m in i18n.messages(english)}
    have = {m.id for m in catalog if m.id}
    assert wanted <= have, (f"{lesson}: {len(wanted - have)} English messages are not in the "
                            "catalog: run `python -m llama_edu.i18n` and translate them")
    stale = i18n.stale_messages(catalog)
    assert not stale, (f"{lesson}: {len(stale)} messages are untranslated or stale (fuzzy):\n"
                       + "\n".join(f"  - {s[:100]!r}" for s in stale[:20]))


@pytest.mark.parametrize("lesson", TRANSLATED)
def test_the_chinese_notebook_is_generated_from_the_english_one(lesson):
    english = nbformat.read(i18n.NOTEBOOKS / f"{lesson}.ipynb", as_version=4)
    catalog = i18n.read_catalog(i18n.catalog_path(lesson))
    path = i18n.OUTPUT[i18n.LANGUAGE] / f"{lesson}.ipynb"
    expected = nbformat.writes(i18n.translate_notebook(english, i18n.translations(catalog))) + "\n"
    assert path.read_text(encoding="utf-8") == expected, (
        f"{path} is out of date with notebooks/{lesson}.ipynb and its catalog: run "
        "`python -m llama_edu.i18n`")


def _assert_same_code(english, chinese, where: str, *, metadata: bool = True) -> None:
    """The same cells (ids, types and, with `metadata`, metadata) and, cell by cell, the same
    code once comments and text are set aside."""
    def cells(notebook):
        return [(c.id, c.cell_type) + ((c.metadata,) if metadata else ()) for c in notebook.cells]

    assert cells(chinese) == cells(english)
    for en, zh in zip(english.cells, chinese.cells, strict=True):
        if en.cell_type == "code":
            assert i18n.code_skeleton(zh.source) == i18n.code_skeleton(en.source), \
                f"{where} cell {en.id}: the Chinese cell's code differs from the English"


@pytest.mark.parametrize("lesson", TRANSLATED)
def test_the_chinese_code_equals_the_english_code(lesson):
    english = nbformat.read(i18n.NOTEBOOKS / f"{lesson}.ipynb", as_version=4)
    chinese = nbformat.read(i18n.OUTPUT[i18n.LANGUAGE] / f"{lesson}.ipynb", as_version=4)
    _assert_same_code(english, chinese, lesson)


@pytest.mark.parametrize("lesson", TRANSLATED)
def test_the_chinese_learners_edition_runs_the_english_learners_code(lesson):
    """notebooks/zh/learner/ is not executed under nbval (conftest.py: its code is the
    English learner's edition's, which is): hold that code equal, cell by cell."""
    english = nbformat.read(i18n.NOTEBOOKS / "learner" / f"{lesson}.ipynb", as_version=4)
    chinese = nbformat.read(i18n.OUTPUT[i18n.LANGUAGE] / "learner" / f"{lesson}.ipynb",
                            as_version=4)
    _assert_same_code(english, chinese, f"{lesson} (learner's edition)", metadata=False)


@pytest.mark.parametrize("lesson", TRANSLATED)
def test_glossary_terms_come_with_their_english_at_first_use(lesson):
    chinese = nbformat.read(i18n.OUTPUT[i18n.LANGUAGE] / f"{lesson}.ipynb", as_version=4)
    prose = "\n".join(c.source for c in chinese.cells if c.cell_type == "markdown")
    assert i18n.first_use_problems(prose, i18n.glossary()) == []


def test_every_chinese_notebook_has_a_catalog():
    built = sorted(p.stem for p in i18n.OUTPUT[i18n.LANGUAGE].glob("[0-9][0-9]_*.ipynb"))
    assert built == TRANSLATED


# ---------------------------------------------------------------------------------------
# exercise feedback in Chinese

def _checks_of(lesson: str) -> set[str]:
    import re

    english = nbformat.read(i18n.NOTEBOOKS / f"{lesson}.ipynb", as_version=4)
    return {name for cell in english.cells if cell.cell_type == "code"
            for name in re.findall(r"\b(check_\w+)\(", cell.source)}


def _has_cjk(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


@pytest.mark.parametrize("lesson", TRANSLATED)
def test_the_feedback_of_a_translated_lessons_checks_is_translated(lesson):
    from llama_edu import exercises

    modules = {getattr(exercises, name).__module__.rsplit(".", 1)[-1] for name in
               _checks_of(lesson)} | {"_common"}
    catalog = i18n.read_catalog(i18n.catalog_path(i18n.FEEDBACK_DOMAIN))
    assert {m.id for m in i18n.feedback_template() if m.id} <= {m.id for m in catalog if m.id}, \
        "the feedback catalog is behind the checks: run `python -m llama_edu.i18n`"
    stale = [m.id for m in catalog if m.id and (not m.string or m.fuzzy)
             and any(loc.endswith(f"/{module}.py") for loc, _ in m.locations
                     for module in modules)]
    assert not stale, (f"{lesson}'s checks ({', '.join(sorted(modules))}) have "
                       f"{len(stale)} untranslated or stale feedback pieces:\n"
                       + "\n".join(f"  - {s!r}" for s in stale[:20]))


@pytest.mark.parametrize("lesson", TRANSLATED)
def test_each_classic_mistake_is_explained_in_chinese(lesson, monkeypatch, capsys):
    from exercise_contracts import CONTRACTS

    from llama_edu import exercises

    monkeypatch.setenv("LLAMA_EDU_LANG", "zh_CN")
    for name in sorted(_checks_of(lesson)):
        check, contract = getattr(exercises, name), CONTRACTS[name]
        check(contract.references[0])
        assert _has_cjk(capsys.readouterr().out), f"{name}'s success line is not in Chinese"
        seen = {}
        for k, (wrong, _) in enumerate(contract.mistakes):
            with pytest.raises(AssertionError) as caught:
                check(wrong)
            message = str(caught.value)
            assert _has_cjk(message), f"{name}, mistake {k}: not in Chinese:\n{message}"
            assert message not in seen, f"{name}: mistakes {seen.get(message)} and {k} read alike"
            seen[message] = k


def test_the_language_follows_the_notebook_or_the_variable(monkeypatch):
    from llama_edu.exercises._language import language, localize

    monkeypatch.delenv("LLAMA_EDU_LANG", raising=False)
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/me/llama-edu/notebooks/zh/00_overview.ipynb")
    assert language() == "zh_CN"
    monkeypatch.setenv("JPY_SESSION_NAME", "/home/me/llama-edu/notebooks/00_overview.ipynb")
    assert language() == "en"
    monkeypatch.setenv("LLAMA_EDU_LANG", "zh")
    assert language() == "zh_CN"
    english = "you left out the final norm before the LM head (one more vector of dim)"
    assert localize(english, "en") == english
    assert localize(english, "zh_CN") != english and _has_cjk(localize(english, "zh_CN"))
