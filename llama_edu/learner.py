"""The learner's edition: every lesson with its exercises blank, the solutions one step away.

`notebooks/NN_topic.ipynb` are the instructor sources, with every solution in place.
`notebooks/learner/NN_topic.ipynb` is what a learner opens: the same lesson released as
nbgrader would release it (each solution region replaced by `raise NotImplementedError()`,
the test cells locked), with two additions. Each test cell is tagged `raises-exception`, so
that the lesson runs top to bottom (nbval included) while an exercise is unanswered; and
after it a short note says how to see the solution on purpose:

    python -m llama_edu solution 05                  # every solution of lesson 05
    python -m llama_edu solution 05 causal_answer    # one exercise's

The edition is generated (`write_learner_edition`) and committed; a test fails when it is
out of date with the sources.
"""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat
from nbformat import NotebookNode

ROOT = Path(__file__).resolve().parent.parent
SOURCES = ROOT / "notebooks"
LEARNER = SOURCES / "learner"
EDITIONS = ((SOURCES, LEARNER), (SOURCES / "zh", SOURCES / "zh" / "learner"))  # en, 中文
TAG = "raises-exception"


def _grade_meta(cell: NotebookNode) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _answers(notebook: NotebookNode) -> list[NotebookNode]:
    return [c for c in notebook.cells if _grade_meta(c).get("solution") and c.cell_type == "code"]


def _hint(lesson: str, answer_ids: list[str], cell_id: str, language: str = "en") -> NotebookNode:
    exercises = ", ".join(f"`{a}`" for a in answer_ids) or "this exercise"
    command = f"`python -m llama_edu solution {lesson} {answer_ids[0]}`" if answer_ids else ""
    if not answer_ids:
        text = ""
    elif language == "zh_CN":
        text = (f"*卡住了？* 在终端里运行 {command}，会打印出 {exercises} 的答案；先多试几次检查。"
                "在它通过之前，上面的检查会停下并给出反馈，下面的单元格照样能运行：它们都不需要"
                "你的函数。")
    else:
        text = (f"*Stuck?* {command} prints the solution of {exercises} in a terminal; try the "
                "check a few times first. Until it passes, the check above stops with its "
                "feedback, and the cells below still run: none of them needs your function.")
    cell = nbformat.v4.new_markdown_cell(text)
    cell.id = cell_id
    return cell


def learner_notebook(source: NotebookNode, lesson: str) -> NotebookNode:
    """The learner's edition of one instructor notebook."""
    from .assignments import is_test_cell, release_notebook

    released = release_notebook(source)
    language = source.metadata.get("llama_edu", {}).get("language", "en")
    cells, pending = [], []
    for cell in released.cells:
        cells.append(cell)
        meta = _grade_meta(cell)
        if meta.get("solution") and cell.cell_type == "code":
            pending.append(meta["grade_id"])
        if is_test_cell(cell):
            cell.metadata = copy.deepcopy(cell.metadata)
            cell.metadata["tags"] = sorted(set(cell.metadata.get("tags", [])) | {TAG})
            if pending:
                cells.append(_hint(lesson, pending, f"{cell.get('id', meta['grade_id'])}-hint",
                                   language))
            pending = []
    released.cells = cells
    return released


def lesson_number(path: Path) -> str:
    return path.name[:2]


def render(path: Path) -> str:
    """The learner's edition of the source at `path`, as the file's text."""
    from .assignments import read_notebook

    return nbformat.writes(learner_notebook(read_notebook(path), lesson_number(path))) + "\n"


def write_learner_edition(sources: Path = SOURCES, out: Path = LEARNER) -> list[Path]:
    """Write the learner's edition of every lesson in `sources` into `out`."""
    from .files import write_bytes

    written = []
    for path in sorted(Path(sources).glob("[0-9][0-9]_*.ipynb")):
        target = Path(out) / path.name
        write_bytes(target, render(path).encode("utf-8"))
        written.append(target)
    return written


def stale_lessons(sources: Path = SOURCES, out: Path = LEARNER) -> list[str]:
    """Lessons whose learner's edition is missing or differs from a fresh render."""
    stale = []
    for path in sorted(Path(sources).glob("[0-9][0-9]_*.ipynb")):
        target = Path(out) / path.name
        if not target.is_file() or target.read_text(encoding="utf-8") != render(path):
            stale.append(path.name)
    return stale


def solution_text(lesson: str, exercise: str | None = None, sources: Path = SOURCES) -> str:
    """The instructor's answer cells of lesson `lesson` ("05"), or of one exercise."""
    from .assignments import read_notebook

    matches = sorted(Path(sources).glob(f"{lesson}_*.ipynb"))
    if len(lesson) != 2 or not lesson.isdigit() or not matches:
        lessons = ", ".join(p.name[:2] for p in sorted(Path(sources).glob("[0-9][0-9]_*.ipynb")))
        raise ValueError(f"no lesson {lesson!r}; give its two-digit number, one of {lessons}")
    answers = _answers(read_notebook(matches[0]))
    names = [_grade_meta(c)["grade_id"] for c in answers]
    if exercise is not None:
        answers = [c for c in answers if _grade_meta(c)["grade_id"] == exercise]
        if not answers:
            raise ValueError(f"lesson {lesson} has no exercise {exercise!r}; its exercises "
                             f"are {', '.join(names) or 'none'}")
    if not answers:
        return f"lesson {lesson} has no exercises"
    return "\n\n".join(f"# --- {matches[0].name}: {_grade_meta(c)['grade_id']}\n{c.source}"
                       for c in answers)


if __name__ == "__main__":  # python -m llama_edu.learner: regenerate the learner's editions
    for sources, out in EDITIONS:
        for written in write_learner_edition(sources, out):
            print(f"wrote {written.relative_to(ROOT)}")
