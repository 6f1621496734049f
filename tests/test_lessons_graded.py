"""Every lesson as an assignment: well-formed exercises, full marks for the instructor
version, zero for the untouched student version, and agreement with real nbgrader."""

import os
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from llama_edu import assignments
from llama_edu.learner import LEARNER

ROOT = Path(__file__).resolve().parent.parent
LESSONS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
NBGRADER_KEYS = {"schema_version", "grade", "solution", "locked", "grade_id", "points",
                 "task", "checksum", "cell_type"}
TIMEOUT = 600  # per cell: generous, a slow machine must not turn into lost points here
COMPAT_LESSONS = ["04_swiglu.ipynb", "07_gqa.ipynb"]  # checked against nbgrader's own commands


def _grade_meta(cell):
    return cell.get("metadata", {}).get("nbgrader")


def test_there_are_the_overview_and_the_lessons():
    # 00-15
    assert [p.name[:2] for p in LESSONS] == [f"{i:02d}" for i in range(0, 16)]


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_exercises_are_well_formed_nbgrader_cells(path):
    notebook = nbformat.read(path, as_version=4)
    cells = [c for c in notebook.cells if _grade_meta(c)]
    answers = [c for c in cells if _grade_meta(c)["solution"] and not _grade_meta(c)["grade"]]
    tests = [c for c in cells if assignments.is_test_cell(c)]
    assert len(answers) >= 2 and len(tests) >= 2, f"{path.name}: needs at least two exercises"
    ids = [_grade_meta(c)["grade_id"] for c in cells]
    assert len(ids) == len(set(ids)), f"{path.name}: grade_ids repeat: {ids}"
    for cell in cells:
        meta = _grade_meta(cell)
        assert set(meta) <= NBGRADER_KEYS, f"{path.name}: extra nbgrader keys {set(meta)}"
        assert re.fullmatch(r"[a-zA-Z0-9_-]+", meta["grade_id"]), meta["grade_id"]
        assert meta["schema_version"] == 3
    for cell in answers:
        lines = cell.source.splitlines()
        begin = [line for line in lines if line.strip() == "### BEGIN SOLUTION"]
        assert len(begin) == 1 and begin[0].startswith((" ", "\t")), (
            f"{path.name}/{_grade_meta(cell)['grade_id']}: put one solution region inside "
            "the function body")
    for cell in tests:
        assert _grade_meta(cell)["locked"] and _grade_meta(cell)["points"] > 0
        assert "llama_edu.exercises import check_" in cell.source, (
            f"{path.name}/{_grade_meta(cell)['grade_id']}: a test cell calls a check "
            "from llama_edu.exercises")
    marker_words = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS")
    for cell in notebook.cells:
        if not _grade_meta(cell):
            assert not any(w in cell.source for w in marker_words), (
                f"{path.name}: solution markers in a cell without nbgrader metadata")


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_instructor_version_gets_full_marks_and_passes_nbgrader_validation(executed_lessons,
                                                                           path, tmp_path):
    from nbgrader.validator import Validator

    # When nbval ran the lesson in this session, its outputs are scored (an instructor
    # version's tests are its own, so restoring them changes nothing); else the grader runs it.
    executed = executed_lessons.notebook(path)
    if executed is None:
        report, executed = assignments.run_and_grade(path, path, timeout=TIMEOUT)
    else:
        report = assignments.score(executed, path.name)
    errors = [f"cell {i}: {o.ename}: {o.evalue}" for i, c in enumerate(executed.cells)
              for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors, errors
    assert report.max_score > 0
    assert report.score == report.max_score, assignments.format_report(report)
    # nbgrader's `validate` is: execute, then judge each grade cell. Here its own judging
    # code reads the notebook our grader just executed, so the lessons run once, not twice.
    executed_path = tmp_path / path.name
    nbformat.write(executed, executed_path)
    validator = Validator(preprocessors=[])
    assert validator.validate(str(executed_path)) == {}


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_untouched_student_version_gets_zero_with_feedback(executed_lessons, path, tmp_path):
    # The learner's edition is the untouched student version (tests/test_learner_edition.py
    # holds it equal to a fresh release): score nbval's run of it when there was one, else
    # grade the release in the sandbox.
    executed = executed_lessons.notebook(LEARNER / path.name)
    if executed is None:
        (student,) = assignments.release(path, tmp_path / "student")
        report = assignments.grade_notebook(student, path, timeout=TIMEOUT)
    else:
        report = assignments.score(executed, path.name)
        errors = [f"cell {i}: {o.ename}: {o.evalue}" for i, c in enumerate(executed.cells)
                  for o in c.get("outputs", []) if o.output_type == "error"
                  and not assignments.is_test_cell(c)]
        assert not errors, f"cells other than checks failed in the learner's edition: {errors}"
    assert report.max_score > 0 and report.score == 0, assignments.format_report(report)
    for exercise in report.exercises:
        assert exercise.feedback.strip(), f"{exercise.name}: no feedback"


# ---------------------------------------------------------------------------------------
# the same results as nbgrader's own commands: release on every lesson; autograde and
# validate on the exercise sheets of two lessons (their setup cell and their exercises), so
# that nbgrader's runs add no third execution of a whole lesson

def _nbgrader(args, course):
    env = dict(os.environ, PATH=os.path.dirname(sys.executable) + os.pathsep
               + os.environ.get("PATH", ""))
    return subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env,
                          capture_output=True, text=True, timeout=1800)


def exercise_sheet(path: Path) -> nbformat.NotebookNode:
    """The lesson's first code cell (its imports and seeding) and every exercise cell, each
    with the markdown cell that introduces it."""
    notebook = nbformat.read(path, as_version=4)
    keep = {next(i for i, c in enumerate(notebook.cells) if c.cell_type == "code")}
    for i, cell in enumerate(notebook.cells):
        if _grade_meta(cell):
            keep.add(i)
            if i and notebook.cells[i - 1].cell_type == "markdown":
                keep.add(i - 1)
    notebook.cells = [notebook.cells[i] for i in sorted(keep)]
    return notebook


@pytest.fixture(scope="module")
def nbgrader_course(tmp_path_factory):
    """A course directory: ps1 holds every lesson, ps2 the exercise sheets of COMPAT_LESSONS."""
    course = tmp_path_factory.mktemp("course")
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        "c.CourseDirectory.course_id = 'llama-edu'\n"
        f"c.CourseDirectory.root = {str(course)!r}\n"
        f"c.ExecutePreprocessor.timeout = {TIMEOUT}\n", encoding="utf-8")
    lessons, sheets = course / "source" / "ps1", course / "source" / "ps2"
    lessons.mkdir(parents=True)
    sheets.mkdir(parents=True)
    for path in LESSONS:
        (lessons / path.name).write_bytes(path.read_bytes())
    for name in COMPAT_LESSONS:
        nbformat.write(exercise_sheet(ROOT / "notebooks" / name), sheets / name)
    for assignment in ("ps1", "ps2"):
        result = _nbgrader(["generate_assignment", assignment, "--force"], course)
        assert result.returncode == 0, result.stderr[-3000:]
    return course


def _comparable(notebook):
    return [(c.cell_type, c.source, c.get("metadata", {})) for c in notebook.cells]


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.stem)
def test_release_equals_nbgrader_generate_assignment(nbgrader_course, path):
    theirs = nbformat.read(nbgrader_course / "release" / "ps1" / path.name, as_version=4)
    ours = assignments.release_notebook(nbformat.read(path, as_version=4))
    assert _comparable(ours) == _comparable(theirs)


@pytest.fixture(scope="module")
def autograded(nbgrader_course):
    """nbgrader autograde on two students of ps2: one hands in the instructor sheets, one
    the untouched releases. Returns {(student, name): (score, max_score, per-cell scores)}."""
    from nbgrader.api import Gradebook

    for student in ("solved", "untouched"):
        target = nbgrader_course / "submitted" / student / "ps2"
        target.mkdir(parents=True)
        for name in COMPAT_LESSONS:
            folder = "source" if student == "solved" else "release"
            (target / name).write_bytes((nbgrader_course / folder / "ps2" / name).read_bytes())
        result = _nbgrader(["autograde", "ps2", "--create", "--force", "--student", student],
                           nbgrader_course)
        assert result.returncode == 0, result.stderr[-3000:]
    scores = {}
    with Gradebook(f"sqlite:///{nbgrader_course / 'gradebook.db'}") as gradebook:
        for student in ("solved", "untouched"):
            for name in COMPAT_LESSONS:
                nb = gradebook.find_submission_notebook(Path(name).stem, "ps2", student)
                scores[student, name] = (nb.score, nb.max_score,
                                         {g.name: g.score for g in nb.grades if g.max_score})
    return scores


@pytest.mark.parametrize("name", COMPAT_LESSONS)
def test_scores_equal_nbgrader_autograde(nbgrader_course, autograded, name):
    source = nbgrader_course / "source" / "ps2" / name
    submissions = {"solved": source, "untouched": nbgrader_course / "release" / "ps2" / name}
    for student, path in submissions.items():
        ours = assignments.grade_notebook(path, source, timeout=TIMEOUT)
        score, max_score, per_cell = autograded[student, name]
        assert (ours.score, ours.max_score) == (score, max_score), student
        assert {e.name: e.score for e in ours.exercises} == per_cell, student
        assert ours.score == (ours.max_score if student == "solved" else 0), student


def test_nbgrader_validate_command_passes_on_an_exercise_sheet(nbgrader_course):
    sheet = nbgrader_course / "source" / "ps2" / COMPAT_LESSONS[0]
    result = _nbgrader(["validate", str(sheet)], sheet.parent)
    assert result.returncode == 0 and "Success! Your notebook passes all the tests." in (
        result.stdout + result.stderr), (result.stdout + result.stderr)[-3000:]
