"""Release student notebooks and grade submissions, on nbgrader's own machinery.

    python -m llama_edu.assignments release notebooks/ --out student/
    python -m llama_edu.assignments grade SUBMISSION.ipynb [--source notebooks/NN_x.ipynb]
                                          [--json report.json] [--timeout 120]
    python -m llama_edu.assignments grade submissions/ --csv grades.csv

Release runs nbgrader's preprocessors in the order `nbgrader generate_assignment` does,
minus the database: solutions become `raise NotImplementedError()`, hidden tests vanish,
outputs are cleared, cells are locked and checksummed. Grading puts the instructor's test
cells back into the submission (edited or deleted ones included), runs it in a sandboxed
kernel with a per-cell timeout, decides each check in the grader's own process from a
record of the learner's function's calls (`llama_edu.grading`), and scores every test cell
as nbgrader does: full points unless it raised or wrote to stderr. Tampering found in the
answer cells is flagged in the report for the instructor to review.
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import sys
from pathlib import Path

import nbformat
from nbformat import NotebookNode

from .grading.notebook import (  # noqa: F401  (the public API, as before the split)
    ExerciseResult,
    GradeReport,
    is_test_cell,
    restore_tests,
    score,
)
from .grading.sandbox import SandboxError


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
# grade (the machinery is in llama_edu.grading)

def run_and_grade(submission: str | Path, source: str | Path, timeout: int = 120,
                  wall: float | None = None,
                  hide: list[Path] = ()) -> tuple[GradeReport, NotebookNode]:
    """Restore the tests, run in the sandbox, replay the checks, score. Returns the report
    and the executed notebook (its test cells hold the grader's own outputs).

    `wall` caps the whole run in seconds (default 20 x timeout, at least 10 minutes); the
    folders in `hide`, with the source's, the submission's, HOME and the working directory,
    are hidden from the kernel under bubblewrap."""
    from .grading.grade import grade_submission

    submission, source = Path(submission), Path(source)
    hide = [source.resolve().parent, submission.resolve().parent, Path.home(), Path.cwd(),
            *hide]
    return grade_submission(read_notebook(submission), read_notebook(source), submission.name,
                            timeout=timeout, wall=wall, hide=hide)


def grade_notebook(submission: str | Path, source: str | Path, timeout: int = 120,
                   wall: float | None = None, hide: list[Path] = ()) -> GradeReport:
    """Grade one submission against its instructor (source) notebook."""
    return run_and_grade(submission, source, timeout, wall, hide)[0]


def format_report(report: GradeReport) -> str:
    width = max([len(e.name) for e in report.exercises] + [8])
    lines = [f"{report.notebook}: {report.score:g} / {report.max_score:g}",
             f"  {'exercise':<{width}}  {'points':>9}  feedback"]
    for e in report.exercises:
        feedback = e.feedback.replace("\n", " ")
        lines.append(f"  {e.name:<{width}}  {f'{e.score:g}/{e.max_score:g}':>9}  {feedback}")
    lines.append(f"  sandbox: {report.sandbox}")
    for flag in report.flags:
        lines.append(f"  flag ({flag['kind']}) in {flag['cell']}: {flag['detail']}")
    return "\n".join(lines)


def flag_summary(report: GradeReport) -> str:
    """The flags as one CSV field: `cell: kind` entries, each once."""
    return "; ".join(dict.fromkeys(f"{f['cell']}: {f['kind']}" for f in report.flags))


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
                 timeout: int, wall: float | None = None) -> list[tuple[str, GradeReport]]:
    """Grade every notebook under `folder`; the first sub-folder names the student."""
    rows = []
    for path in sorted(folder.rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        relative = path.relative_to(folder)
        student = relative.parts[0] if len(relative.parts) > 1 else path.stem
        report = grade_notebook(path, _source_for(path, source), timeout, wall,
                                hide=[folder.resolve()])
        print(f"{student}: {format_report(report)}")
        rows.append((student, report))
    if csv_path is not None:
        with open(csv_path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["student", "notebook", "score", "max_score", "flags"])
            for student, report in rows:
                writer.writerow([student, report.notebook, report.score, report.max_score,
                                 flag_summary(report)])
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
                       help="for a folder: write student, notebook, score, max_score, "
                       "flags here")
    grade.add_argument("--timeout", type=int, default=120, help="seconds allowed per cell")
    grade.add_argument("--wall", type=float, default=None,
                       help="seconds allowed per submission (default 20 x timeout, >= 600)")
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
            grade_folder(args.submission, args.source, csv_path, args.timeout, args.wall)
            print(f"grades written to {csv_path}")
            return 0
        report = grade_notebook(args.submission, _source_for(args.submission, args.source),
                                args.timeout, args.wall)
    except (FileNotFoundError, ValueError, SandboxError) as error:
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
