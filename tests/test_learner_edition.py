"""The learner's edition: generated from the sources and up to date, every exercise blank,
every check in place and allowed to fail, the solutions one command away."""

import nbformat
import pytest

from llama_edu import learner
from llama_edu.assignments import is_test_cell
from llama_edu.cli import main

LESSONS = sorted(learner.SOURCES.glob("[0-9][0-9]_*.ipynb"))


@pytest.mark.parametrize("sources, out", learner.EDITIONS, ids=["en", "zh"])
def test_the_committed_edition_is_a_fresh_render_of_every_source(sources, out):
    stale = learner.stale_lessons(sources, out)
    assert not stale, (f"the learner's edition is out of date for {stale}: run "
                       "`python -m llama_edu.learner` and commit notebooks/learner/ and "
                       "notebooks/zh/learner/")
    assert sorted(p.name for p in out.glob("*.ipynb")) == \
        sorted(p.name for p in sources.glob("[0-9][0-9]_*.ipynb"))


def test_the_chinese_learners_edition_says_how_to_see_a_solution_in_chinese():
    zh = sorted((learner.SOURCES / "zh" / "learner").glob("*.ipynb"))
    assert zh, "notebooks/zh/learner/ is empty"
    for path in zh:
        hints = [c.source for c in nbformat.read(path, as_version=4).cells
                 if "python -m llama_edu solution" in c.source]
        assert hints and all("卡住了" in h for h in hints), path.name


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_exercises_are_blank_checks_are_kept_and_tagged(path):
    source = nbformat.read(path, as_version=4)
    edition = nbformat.read(learner.LEARNER / path.name, as_version=4)
    answers = [c for c in edition.cells if c.get("metadata", {}).get("nbgrader", {})
               .get("solution")]
    assert all("raise NotImplementedError()" in c.source and "BEGIN SOLUTION" not in c.source
               for c in answers)
    checks = [c for c in edition.cells if is_test_cell(c)]
    assert [c.source for c in checks] == [c.source for c in source.cells if is_test_cell(c)]
    assert all(learner.TAG in c.metadata.get("tags", []) for c in checks)
    hints = [c for c in edition.cells if "python -m llama_edu solution" in c.source]
    assert len(hints) == len(checks)


def test_a_solution_is_one_command_away(capsys):
    assert main(["solution", "05", "causal_mask_answer"]) == 0
    out = capsys.readouterr().out
    assert "causal_mask_answer" in out and "tril" in out and "NotImplementedError" not in out
    assert main(["solution", "05", "no_such_answer"]) == 2
    assert "its exercises are" in capsys.readouterr().err
    assert main(["solution", "99"]) == 2


def test_grading_a_learners_edition_works_as_grading_a_release(tmp_path):
    """The edition's extra notes and tags change nothing for the grader: untouched it
    scores 0 with feedback, answered with the sources' solutions it scores full marks. On
    lesson 04's exercise sheet (its setup cell and its exercises), to keep it quick."""
    from test_lessons_graded import exercise_sheet

    from llama_edu import assignments

    source = tmp_path / "04_swiglu.ipynb"
    nbformat.write(exercise_sheet(learner.SOURCES / "04_swiglu.ipynb"), source)
    edition = learner.learner_notebook(nbformat.read(source, as_version=4), "04")
    untouched = tmp_path / "untouched" / "04_swiglu.ipynb"
    untouched.parent.mkdir()
    nbformat.write(edition, untouched)
    report = assignments.grade_notebook(untouched, source)
    assert report.max_score > 0 and report.score == 0
    assert all("not written yet" in e.feedback for e in report.exercises), report
    solved = nbformat.read(untouched, as_version=4)
    answers = {c.metadata["nbgrader"]["grade_id"]: c.source
               for c in nbformat.read(source, as_version=4).cells
               if c.get("metadata", {}).get("nbgrader", {}).get("solution")}
    for cell in solved.cells:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell.source = answers[grade_id]
    answered = tmp_path / "answered" / "04_swiglu.ipynb"
    answered.parent.mkdir()
    nbformat.write(solved, answered)
    assert assignments.grade_notebook(answered, source).score == report.max_score
