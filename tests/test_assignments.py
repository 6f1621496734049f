"""Release and grading, on a small synthetic assignment (fast) and on the real lessons."""

import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from llama_edu import assignments


def _meta(grade_id, grade, solution, locked, points=None):
    meta = {"schema_version": 3, "grade": grade, "solution": solution, "locked": locked,
            "grade_id": grade_id}
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


def _answer(grade_id, body):
    return new_code_cell(body, metadata=_meta(grade_id, False, True, False))


def _test(grade_id, body, points):
    return new_code_cell(body, metadata=_meta(grade_id, True, False, True, points))


@pytest.fixture
def course(tmp_path):
    """An instructor notebook with three exercises, one of them with a hidden test."""
    cells = [
        new_markdown_cell("# A tiny assignment\nWrite the functions below. 中文也可以。"),
        new_code_cell("import sys"),
        _answer("add_answer", "def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n"
                              "    ### END SOLUTION"),
        _test("add_tests", "assert add(1, 2) == 3, 'add(1, 2) should be 3'\n"
                           "### BEGIN HIDDEN TESTS\nassert add(-1, 1) == 0, 'hidden: add(-1, 1)'\n"
                           "### END HIDDEN TESTS\nprint('add is right')", 2),
        _answer("double_answer", "def double(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n"
                                 "    ### END SOLUTION"),
        _test("double_tests", "assert double(4) == 8, f'double(4) gave {double(4)}, expected 8'",
              1),
        _answer("words_answer", "def words(text):\n    ### BEGIN SOLUTION\n"
                                "    return text.split()\n    ### END SOLUTION"),
        _test("words_tests", "assert words('使用 字节') == ['使用', '字节'], 'split on spaces'", 1),
    ]
    notebook = new_notebook(cells=cells, metadata={"kernelspec": {
        "name": "python3", "display_name": "Python 3", "language": "python"}})
    source = tmp_path / "source" / "hw.ipynb"
    source.parent.mkdir()
    nbformat.write(notebook, source)
    return source


def _student(course, tmp_path):
    out = tmp_path / "student"
    (path,) = assignments.release(course.parent, out)
    return path


def test_release_removes_solutions_and_hidden_tests_and_locks_tests(course, tmp_path):
    student = nbformat.read(_student(course, tmp_path), as_version=4)
    text = "\n".join(cell.source for cell in student.cells)
    assert "return a + b" not in text and "BEGIN SOLUTION" not in text
    assert "raise NotImplementedError()" in text and "# YOUR CODE HERE" in text
    assert "hidden: add(-1, 1)" not in text and "assert add(1, 2) == 3" in text
    tests = [c for c in student.cells if assignments.is_test_cell(c)]
    assert len(tests) == 3
    assert all(c.metadata["deletable"] is False and c.metadata["editable"] is False
               for c in tests)
    assert all("checksum" in c.metadata["nbgrader"] for c in tests)


def test_solved_notebook_gets_full_marks_with_hidden_tests_run(course):
    report = assignments.grade_notebook(course, course, timeout=60)
    assert (report.score, report.max_score) == (4, 4)
    assert report.exercises[0].feedback == "add is right"


def test_untouched_student_notebook_gets_zero_with_feedback_per_exercise(course, tmp_path):
    report = assignments.grade_notebook(_student(course, tmp_path), course, timeout=60)
    assert (report.score, report.max_score) == (0, 4)
    assert [e.name for e in report.exercises] == ["add_tests", "double_tests", "words_tests"]
    assert all(e.feedback.startswith("NotImplementedError") for e in report.exercises)


def test_deleted_or_edited_tests_are_restored(course, tmp_path):
    submission = nbformat.read(_student(course, tmp_path), as_version=4)
    for cell in submission.cells:  # a wrong answer, with its test "fixed" by the learner
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "double_answer":
            cell.source = "def double(x):\n    return x + 1"
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "double_tests":
            cell.source = "pass"
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "add_answer":
            cell.source = "def add(a, b):\n    return a + b"
    submission.cells = [c for c in submission.cells  # ... and the other tests deleted
                        if c.metadata.get("nbgrader", {}).get("grade_id")
                        not in ("add_tests", "words_tests")]
    submission.cells.append(_test("bonus_tests", "print('free points')", 10))
    path = tmp_path / "cheat.ipynb"
    nbformat.write(submission, path)
    report = assignments.grade_notebook(path, course, timeout=60)
    by_name = {e.name: e for e in report.exercises}
    assert set(by_name) == {"add_tests", "double_tests", "words_tests"}
    assert by_name["add_tests"].score == 2  # restored, hidden test included, and passing
    assert by_name["double_tests"].score == 0
    assert by_name["double_tests"].feedback == "double(4) gave 5, expected 8"
    assert by_name["words_tests"].score == 0  # restored; the answer is still the stub
    assert report.max_score == 4


def test_endless_loop_and_stderr_cost_only_their_exercise(course, tmp_path):
    submission = nbformat.read(course, as_version=4)
    for cell in submission.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id == "double_answer":
            cell.source = "def double(x):\n    while True:\n        pass"
        if grade_id == "words_answer":
            cell.source = ("import sys\ndef words(text):\n"
                           "    print('debug', file=sys.stderr)\n    return text.split()")
    path = tmp_path / "loop.ipynb"
    nbformat.write(submission, path)
    report = assignments.grade_notebook(path, course, timeout=3)
    scores = {e.name: e.score for e in report.exercises}
    assert scores == {"add_tests": 2, "double_tests": 0, "words_tests": 0}
    feedback = {e.name: e.feedback for e in report.exercises}
    assert "out of time" in feedback["double_tests"]
    assert "stderr" in feedback["words_tests"]


def test_command_line_writes_json_and_a_folder_csv(course, tmp_path, capsys):
    student = _student(course, tmp_path)
    report_path = tmp_path / "report.json"
    code = assignments.main(["grade", str(student), "--source", str(course),
                             "--json", str(report_path), "--timeout", "60"])
    assert code == 0
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert set(report) == {"notebook", "score", "max_score", "exercises", "sandbox", "flags"}
    assert set(report["exercises"][0]) == {"name", "score", "max_score", "feedback", "replayed"}
    assert report["sandbox"] in ("bwrap", "limits") and report["flags"] == []
    assert "0 / 4" in capsys.readouterr().out

    submissions = tmp_path / "submitted"
    for name, path in (("ada", course), ("lin", student)):
        (submissions / name).mkdir(parents=True)
        (submissions / name / "hw.ipynb").write_bytes(path.read_bytes())
    assert assignments.main(["grade", str(submissions), "--source", str(course.parent)]) == 0
    rows = (submissions / "grades.csv").read_text(encoding="utf-8").splitlines()
    assert rows == ["student,notebook,score,max_score,flags", "ada,hw.ipynb,4.0,4.0,",
                    "lin,hw.ipynb,0.0,4.0,"]


def test_bad_paths_are_one_line_errors(tmp_path, capsys):
    assert assignments.main(["grade", str(tmp_path / "missing.ipynb")]) == 2
    assert "no notebook or folder at" in capsys.readouterr().err
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{not json", encoding="utf-8")
    assert assignments.main(["release", str(broken), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "broken.ipynb' is not valid JSON" in err and err.count("\n") == 1


@pytest.mark.parametrize("how, words", [
    ("truncated", "is not valid JSON"), ("garbage", "is not UTF-8"), ("empty", "is empty"),
    ("wrong json", "is JSON but not a Jupyter notebook"), ("a list", "holds a JSON list"),
    ("bad cells", "is not a readable notebook")])
def test_a_damaged_notebook_is_named_in_one_line(course, tmp_path, capsys, how, words):
    import random

    data = course.read_bytes()
    damaged = {"truncated": data[:len(data) // 2], "garbage": random.Random(0).randbytes(900),
               "empty": b"", "wrong json": b'{"hello": "world"}', "a list": b"[1, 2]",
               "bad cells": b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, '
                            b'"cells": [{"cell_type": "code"}]}'}[how]
    bad = tmp_path / "alice" / "hw.ipynb"
    bad.parent.mkdir()
    bad.write_bytes(damaged)
    for argv in (["grade", str(bad), "--source", str(course)],      # the submission
                 ["grade", str(course), "--source", str(bad)]):     # the instructor's copy
        assert assignments.main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
        assert f"'{bad}' " in err and words in err, err
