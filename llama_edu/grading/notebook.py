"""nbgrader's cells and nbgrader's scoring rule, and the grade report.

A test cell scores full points unless its outputs hold an error or anything on stderr
(`nbgrader.utils.determine_grade`). `score` applies that rule to a notebook's test cells
as they are: in a graded run the grader puts its own replayed outputs there first; called
on a notebook that simply ran (nbval's run of a lesson, say), it is an unsandboxed
self-check of that run, and the report says so.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field

from nbformat import NotebookNode

GRADE_KEY = "nbgrader"
SELF_CHECK = "none: scored from the notebook's own outputs (an unsandboxed self-check)"


def nbgrader_meta(cell: NotebookNode) -> dict:
    return cell.get("metadata", {}).get(GRADE_KEY, {})


def is_test_cell(cell: NotebookNode) -> bool:
    """An autograder test cell: graded, not an answer."""
    meta = nbgrader_meta(cell)
    return bool(meta.get("grade")) and not meta.get("solution") and cell.cell_type == "code"


def is_answer_cell(cell: NotebookNode) -> bool:
    return bool(nbgrader_meta(cell).get("solution")) and cell.cell_type == "code"


@dataclass
class ExerciseResult:
    name: str
    score: float
    max_score: float
    feedback: str
    replayed: bool = False      # the verdict came from the grader's replay of the record


@dataclass
class GradeReport:
    notebook: str
    score: float = 0.0
    max_score: float = 0.0
    exercises: list[ExerciseResult] = field(default_factory=list)
    sandbox: str = SELF_CHECK
    flags: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def restore_tests(submission: NotebookNode, source: NotebookNode) -> NotebookNode:
    """The submission with every test cell exactly as in the source notebook.

    Edited test cells are replaced; deleted ones are put back after the cell they followed
    in the source (or at the end). Test cells the source does not have are dropped, so a
    learner cannot add points.
    """
    restored = copy.deepcopy(submission)
    source_tests = {nbgrader_meta(c)["grade_id"]: c for c in source.cells if is_test_cell(c)}
    restored.cells = [c for c in restored.cells
                      if not is_test_cell(c) or nbgrader_meta(c).get("grade_id") in source_tests]
    for i, cell in enumerate(restored.cells):
        if is_test_cell(cell):
            restored.cells[i] = copy.deepcopy(source_tests[nbgrader_meta(cell)["grade_id"]])
    present = {nbgrader_meta(c).get("grade_id") for c in restored.cells}
    previous_id = None
    for cell in source.cells:
        grade_id = nbgrader_meta(cell).get("grade_id")
        if is_test_cell(cell) and grade_id not in present:
            ids = [nbgrader_meta(c).get("grade_id") for c in restored.cells]
            at = ids.index(previous_id) + 1 if previous_id in ids else len(restored.cells)
            restored.cells.insert(at, copy.deepcopy(cell))
            present.add(grade_id)
        if grade_id:
            previous_id = grade_id
    return restored


def feedback(cell: NotebookNode, score: float, max_score: float) -> str:
    for output in cell.get("outputs", []):
        if output.output_type == "error":
            if output.ename == "AssertionError" and output.evalue:
                return output.evalue
            if output.ename in ("KeyboardInterrupt", "CellTimeoutError"):  # the timeout
                return "the cell ran out of time: is there an endless loop?"
            if output.ename in ("RecordMismatch", "KernelDied", "NotRun"):
                return output.evalue
            return f"{output.ename}: {output.evalue}".strip()
        if output.output_type == "stream" and output.name == "stderr":
            lines = output.text.strip().splitlines() or [""]
            return "the check wrote to stderr: " + lines[-1][:200]
    if score >= max_score:
        texts = [o.text for o in cell.get("outputs", []) if o.output_type == "stream"]
        lines = "".join(texts).strip().splitlines()
        return lines[-1] if lines else "passed"
    return "partial credit"


def score(executed: NotebookNode, name: str, replayed: set[int] = frozenset()) -> GradeReport:
    """Score the test cells of an executed notebook with nbgrader's rule; `replayed` holds
    the indices of cells whose outputs the grader computed itself."""
    from nbgrader.utils import determine_grade

    report = GradeReport(notebook=name)
    for index, cell in enumerate(executed.cells):
        if not is_test_cell(cell):
            continue
        points, max_points = determine_grade(cell)
        points = float(points or 0.0)
        report.exercises.append(ExerciseResult(nbgrader_meta(cell)["grade_id"], points,
                                               max_points, feedback(cell, points, max_points),
                                               index in replayed))
        report.score += points
        report.max_score += max_points
    return report
