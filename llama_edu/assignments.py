"""Release student notebooks and grade submissions, on nbgrader's own machinery.

    python -m llama_edu.assignments release notebooks/ --out student/
    python -m llama_edu.assignments grade SUBMISSION.ipynb [--source notebooks/NN_x.ipynb]
                                          [--json report.json] [--timeout 120]
    python -m llama_edu.assignments grade submissions/ --csv grades.csv

Release runs nbgrader's preprocessors in the order `nbgrader generate_assignment` does,
minus the database: solutions become `raise NotImplementedError()`, hidden tests vanish,
outputs are cleared, cells are locked and checksummed. Grading puts the instructor's test
cells back into the submission (edited or deleted ones included), runs it in a fresh
kernel with a per-cell timeout, and scores every test cell as nbgrader does: full points
unless it raised or wrote to stderr.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode

GRADE_KEY = "nbgrader"


def _nbgrader(cell: NotebookNode) -> dict:
    return cell.get("metadata", {}).get(GRADE_KEY, {})


def is_test_cell(cell: NotebookNode) -> bool:
    """An autograder test cell: graded, not an answer."""
    meta = _nbgrader(cell)
    return bool(meta.get("grade")) and not meta.get("solution") and cell.cell_type == "code"


def read_notebook(path: str | Path) -> NotebookNode:
    """A notebook file, or an error in one line that names the file and what is wrong."""
    from .files import DamagedFileError, read_json

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no notebook at {path}")
    values = read_json(path, "a Jupyter notebook")     # empty, not UTF-8, not JSON
    if not isinstance(values.get("cells"), list) or not isinstance(values.get("nbformat"), int):
        raise DamagedFileError(path, "is JSON but not a Jupyter notebook (it needs a 'cells' "
                                     "list and an 'nbformat' number)")
    try:
        return nbformat.reads(path.read_text(encoding="utf-8"), as_version=4)
    except Exception as error:  # nbformat raises several kinds for a malformed notebook
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise DamagedFileError(path, f"is not a readable notebook: {reason}") from None


# ---------------------------------------------------------------------------------------
# release

def release_notebook(notebook: NotebookNode) -> NotebookNode:
    """The student version of an instructor notebook (nbgrader's generate_assignment steps)."""
    from nbgrader.preprocessors import (
        CheckCellMetadata,
        ClearHiddenTests,
        ClearMarkScheme,
        ClearOutput,
        ClearSolutions,
        ComputeChecksums,
        LockCells,
    )

    notebook = copy.deepcopy(notebook)
    resources: dict = {}
    steps = [LockCells(), ClearSolutions(), ClearOutput(), CheckCellMetadata(),
             ComputeChecksums(), ClearHiddenTests(), ClearMarkScheme(), ComputeChecksums(),
             CheckCellMetadata()]
    for step in steps:
        notebook, resources = step.preprocess(notebook, resources)
    return notebook


def release(source: str | Path, out: str | Path) -> list[Path]:
    """Write the student version of every notebook in `source` (a folder or one file)."""
    source, out = Path(source), Path(out)
    paths = sorted(source.glob("*.ipynb")) if source.is_dir() else [source]
    if not paths:
        raise FileNotFoundError(f"no notebooks in {source}")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in paths:
        student = release_notebook(read_notebook(path))
        target = out / path.name
        nbformat.write(student, target)
        written.append(target)
    return written


# ---------------------------------------------------------------------------------------
# grade

@dataclass
class ExerciseResult:
    name: str
    score: float
    max_score: float
    feedback: str


@dataclass
class GradeReport:
    notebook: str
    score: float = 0.0
    max_score: float = 0.0
    exercises: list[ExerciseResult] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def restore_tests(submission: NotebookNode, source: NotebookNode) -> NotebookNode:
    """The submission with every test cell exactly as in the source notebook.

    Edited test cells are replaced; deleted ones are put back after the cell they followed
    in the source (or at the end). Test cells the source does not have are dropped, so a
    learner cannot add points.
    """
    restored = copy.deepcopy(submission)
    source_tests = {_nbgrader(c)["grade_id"]: c for c in source.cells if is_test_cell(c)}
    restored.cells = [c for c in restored.cells
                      if not is_test_cell(c) or _nbgrader(c).get("grade_id") in source_tests]
    for i, cell in enumerate(restored.cells):
        if is_test_cell(cell):
            restored.cells[i] = copy.deepcopy(source_tests[_nbgrader(cell)["grade_id"]])
    present = {_nbgrader(c).get("grade_id") for c in restored.cells}
    previous_id = None
    for cell in source.cells:
        grade_id = _nbgrader(cell).get("grade_id")
        if is_test_cell(cell) and grade_id not in present:
            ids = [_nbgrader(c).get("grade_id") for c in restored.cells]
            at = ids.index(previous_id) + 1 if previous_id in ids else len(restored.cells)
            restored.cells.insert(at, copy.deepcopy(cell))
            present.add(grade_id)
        if grade_id:
            previous_id = grade_id
    return restored


def _current_env_kernel_manager():
    """A kernel manager class whose kernels run this very Python (as nbval's
    --nbval-current-env does), whatever kernels the machine has registered."""
    from jupyter_client.kernelspec import KernelSpec, KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager

    class CurrentEnvSpecs(KernelSpecManager):
        def get_kernel_spec(self, kernel_name):
            return KernelSpec(argv=[sys.executable, "-m", "ipykernel_launcher", "-f",
                                    "{connection_file}"], display_name="llama-edu grader",
                              language="python", resource_dir=".")

    class CurrentEnvKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs):
            super().__init__(kernel_spec_manager=CurrentEnvSpecs(), **kwargs)

    return CurrentEnvKernelManager


def execute(notebook: NotebookNode, cwd: str | Path, timeout: int = 120) -> NotebookNode:
    """Run every cell in a fresh kernel. Errors and timeouts are recorded, never raised."""
    from nbclient import NotebookClient

    notebook = copy.deepcopy(notebook)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = NotebookClient(notebook, kernel_manager_class=_current_env_kernel_manager(),
                            kernel_name="python3", timeout=timeout, allow_errors=True,
                            interrupt_on_timeout=True,
                            resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return notebook


def _feedback(cell: NotebookNode, score: float, max_score: float) -> str:
    for output in cell.get("outputs", []):
        if output.output_type == "error":
            if output.ename == "AssertionError" and output.evalue:
                return output.evalue
            if output.ename in ("KeyboardInterrupt", "CellTimeoutError"):  # the timeout
                return "the cell ran out of time: is there an endless loop?"
            return f"{output.ename}: {output.evalue}".strip()
        if output.output_type == "stream" and output.name == "stderr":
            return "the check wrote to stderr: " + output.text.strip().splitlines()[-1][:200]
    if score >= max_score:
        texts = [o.text for o in cell.get("outputs", []) if o.output_type == "stream"]
        lines = "".join(texts).strip().splitlines()
        return lines[-1] if lines else "passed"
    return "partial credit"


def score(executed: NotebookNode, name: str) -> GradeReport:
    """Score the test cells of an executed notebook with nbgrader's rule."""
    from nbgrader.utils import determine_grade

    report = GradeReport(notebook=name)
    for cell in executed.cells:
        if not is_test_cell(cell):
            continue
        points, max_points = determine_grade(cell)
        points = float(points or 0.0)
        report.exercises.append(ExerciseResult(_nbgrader(cell)["grade_id"], points, max_points,
                                               _feedback(cell, points, max_points)))
        report.score += points
        report.max_score += max_points
    return report


def run_and_grade(submission: str | Path, source: str | Path,
                  timeout: int = 120) -> tuple[GradeReport, NotebookNode]:
    """Restore the tests, execute, score. Returns the report and the executed notebook."""
    submission, source = Path(submission), Path(source)
    restored = restore_tests(read_notebook(submission), read_notebook(source))
    executed = execute(restored, cwd=source.parent.resolve(), timeout=timeout)
    return score(executed, submission.name), executed


def grade_notebook(submission: str | Path, source: str | Path, timeout: int = 120) -> GradeReport:
    """Grade one submission against its instructor (source) notebook."""
    return run_and_grade(submission, source, timeout)[0]


def format_report(report: GradeReport) -> str:
    width = max([len(e.name) for e in report.exercises] + [8])
    lines = [f"{report.notebook}: {report.score:g} / {report.max_score:g}",
             f"  {'exercise':<{width}}  {'points':>9}  feedback"]
    for e in report.exercises:
        feedback = e.feedback.replace("\n", " ")
        lines.append(f"  {e.name:<{width}}  {f'{e.score:g}/{e.max_score:g}':>9}  {feedback}")
    return "\n".join(lines)


def _source_for(submission: Path, source: Path | None) -> Path:
    if source is not None and source.is_file():
        return source
    folder = source if source is not None else Path(__file__).resolve().parent.parent / "notebooks"
    candidate = folder / submission.name
    if not candidate.is_file():
        raise FileNotFoundError(f"no source notebook {candidate} for {submission}; pass "
                                "--source with the instructor's notebook or its folder")
    return candidate


def grade_folder(folder: Path, source: Path | None, csv_path: Path | None,
                 timeout: int) -> list[tuple[str, GradeReport]]:
    """Grade every notebook under `folder`; the first sub-folder names the student."""
    rows = []
    for path in sorted(folder.rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        relative = path.relative_to(folder)
        student = relative.parts[0] if len(relative.parts) > 1 else path.stem
        report = grade_notebook(path, _source_for(path, source), timeout)
        print(f"{student}: {format_report(report)}")
        rows.append((student, report))
    if csv_path is not None:
        with open(csv_path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["student", "notebook", "score", "max_score"])
            for student, report in rows:
                writer.writerow([student, report.notebook, report.score, report.max_score])
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llama_edu.assignments",
                                     description="Release student notebooks and grade them.")
    commands = parser.add_subparsers(dest="command", required=True)
    rel = commands.add_parser("release", help="write student versions of the notebooks")
    rel.add_argument("source", type=Path, help="folder of instructor notebooks, or one notebook")
    rel.add_argument("--out", type=Path, required=True, help="folder for the student versions")
    grade = commands.add_parser("grade", help="grade a submission or a folder of them")
    grade.add_argument("submission", type=Path, help="a submitted notebook, or a folder of them")
    grade.add_argument("--source", type=Path, default=None,
                       help="the instructor notebook (or its folder); default: notebooks/")
    grade.add_argument("--json", type=Path, default=None, help="write the report as JSON here")
    grade.add_argument("--csv", type=Path, default=None,
                       help="for a folder: write student, notebook, score, max_score here")
    grade.add_argument("--timeout", type=int, default=120, help="seconds allowed per cell")
    args = parser.parse_args(argv)

    try:
        if args.command == "release":
            for path in release(args.source, args.out):
                print(f"released {path}")
            return 0
        if not args.submission.exists():
            raise FileNotFoundError(f"no notebook or folder at {args.submission}")
        if args.submission.is_dir():
            csv_path = args.csv or args.submission / "grades.csv"
            grade_folder(args.submission, args.source, csv_path, args.timeout)
            print(f"grades written to {csv_path}")
            return 0
        report = grade_notebook(args.submission, _source_for(args.submission, args.source),
                                args.timeout)
    except (FileNotFoundError, ValueError) as error:
        message = (str(error).splitlines() or [type(error).__name__])[0]
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(format_report(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report.to_dict(), indent=2, ensure_ascii=False),
                             encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
