"""One submission, graded: restore the tests, run sandboxed, replay, score, flag.

1. The instructor's test cells go back into the submission (`restore_tests`), all read by
   this process: the kernel never gets a path to the instructor's notebooks.
2. Every replayable test cell becomes a harness cell with a fresh grading seed.
3. The notebook runs in a sandboxed kernel (`kernel.execute`), in its own work directory.
4. Each test cell's outputs are the grader's: the replay of the record for a check cell;
   the kernel's own outputs only for a cell with other code (marked not replayed).
5. nbgrader's rule scores the cells; the flags are the static reading of the answer cells
   plus what the run showed (a missing record, a dead kernel, a timeout, cut output).
"""

from __future__ import annotations

import contextlib
import copy
import os
import secrets
from pathlib import Path

import nbformat
from nbformat import NotebookNode
from nbformat.v4 import new_output

from . import flags as static
from .codec import RecordError
from .harness import harness_source, plan
from .kernel import CUT, DIED, SKIPPED, TIMEOUT, WALL, execute
from .notebook import (
    GradeReport,
    is_answer_cell,
    is_test_cell,
    nbgrader_meta,
    restore_tests,
    score,
)
from .replay import TAMPERED, TIMED_OUT, load_record, replay_cell
from .sandbox import Limits, Sandbox

EVENT_TEXT = {
    DIED: "the kernel died while this cell ran (os._exit, a crash, or a memory or CPU "
          "limit?): this exercise and the ones after it score 0",
    SKIPPED: "not run: the kernel had died or run out of time in an earlier cell",
    WALL: "not run: the notebook went over the grader's time limit for a whole submission",
    TIMEOUT: TIMED_OUT,
}


def _label(cell: NotebookNode, index: int) -> str:
    return nbgrader_meta(cell).get("grade_id") or f"cell {index}"


def static_flags(restored: NotebookNode, source: NotebookNode) -> list[static.Flag]:
    """Flags of the cells the learner wrote: answer cells and cells unlike the source's."""
    code = [c for c in restored.cells if c.cell_type == "code"]
    names = static.aliases([c.source for c in code])
    instructor = {c.source for c in source.cells if c.cell_type == "code"}
    forbidden = static.forbidden_calls()
    found: list[static.Flag] = []
    for index, cell in enumerate(restored.cells):
        if cell.cell_type != "code" or is_test_cell(cell) or cell.source in instructor:
            continue
        banned: set[str] = set()
        if is_answer_cell(cell):      # what the checks of the next test cell forbid
            following = next((c for c in restored.cells[index + 1:] if is_test_cell(c)), None)
            for call in (plan(following.source) or []) if following is not None else []:
                banned |= forbidden.get(call.name, set())
        found += static.read_cell(cell.source, _label(cell, index), names, banned)
    return found


def _error(ename: str, evalue: str) -> NotebookNode:
    return new_output("error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


@contextlib.contextmanager
def _feedback_language(source: NotebookNode):
    """A translated lesson (notebooks/zh/, metadata llama_edu.language) is graded with its
    checks' feedback in that language, in the kernel and in the replay alike."""
    language = source.metadata.get("llama_edu", {}).get("language")
    if not language:
        yield
        return
    previous = os.environ.get("LLAMA_EDU_LANG")
    os.environ["LLAMA_EDU_LANG"] = language
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("LLAMA_EDU_LANG", None)
        else:
            os.environ["LLAMA_EDU_LANG"] = previous


def grade_submission(submission: NotebookNode, source: NotebookNode, name: str,
                     timeout: int = 120, wall: float | None = None,
                     limits: Limits | None = None,
                     hide: list[Path] = ()) -> tuple[GradeReport, NotebookNode]:
    """Grade one submission against its source notebook (both already read)."""
    with _feedback_language(source):
        return _grade_submission(submission, source, name, timeout, wall, limits, hide)


def _grade_submission(submission: NotebookNode, source: NotebookNode, name: str,
                     timeout: int = 120, wall: float | None = None,
                     limits: Limits | None = None,
                     hide: list[Path] = ()) -> tuple[GradeReport, NotebookNode]:
    """Grade one submission against its source notebook (both already read)."""
    restored = restore_tests(submission, source)
    seed = secrets.randbits(62)
    plans = {i: plan(c.source) for i, c in enumerate(restored.cells) if is_test_cell(c)}
    harness = copy.deepcopy(restored)
    for index, steps in plans.items():
        if steps:
            cell = harness.cells[index]
            cell.source = harness_source(cell.source, nbgrader_meta(cell)["grade_id"], seed)
    flags = [f.to_dict() for f in static_flags(restored, source)]
    wall = wall if wall is not None else max(600.0, 20.0 * timeout)
    with Sandbox(limits, hide=list(hide)) as sandbox:
        nbformat.write(harness, sandbox.work / "submission.ipynb")
        sandbox.give(sandbox.work / "submission.ipynb")
        executed, events = execute(harness, sandbox, timeout=timeout, wall=wall)
        records = {}
        for index, steps in plans.items():
            if steps:
                try:
                    records[index] = load_record(str(sandbox.work),
                                                 nbgrader_meta(restored.cells[index])["grade_id"])
                except RecordError as error:
                    records[index] = error
        mode = sandbox.mode

    final = copy.deepcopy(executed)
    replayed = set()
    for index, cell in enumerate(final.cells):
        if cell.cell_type == "code" and events.get(index) in (DIED, SKIPPED, WALL):
            kind = {DIED: "kernel-died", WALL: "time-limit"}.get(events[index])
            if kind:
                flags.append({"cell": _label(cell, index), "kind": kind,
                              "detail": EVENT_TEXT[events[index]]})
        if events.get(index) == CUT:
            flags.append({"cell": _label(cell, index), "kind": "output-cut",
                          "detail": "the cell printed more output than the grader keeps"})
        if not is_test_cell(cell):
            continue
        cell.source = restored.cells[index].source
        grade_id = nbgrader_meta(cell)["grade_id"]
        if events.get(index) in (DIED, SKIPPED, WALL):
            cell.outputs = [_error("KernelDied" if events[index] == DIED else "NotRun",
                                   EVENT_TEXT[events[index]])]
            continue
        if not plans[index]:
            continue                    # scored from the kernel's outputs, not replayed
        loaded = records.get(index)
        if loaded is None and events.get(index) == TIMEOUT:
            flags.append({"cell": grade_id, "kind": "timeout",
                          "detail": "the cell was stopped before its record was written"})
            cell.outputs = [_error("KeyboardInterrupt", TIMED_OUT)]
            continue
        if isinstance(loaded, RecordError):
            flags.append({"cell": grade_id, "kind": "record", "detail": str(loaded)})
            cell.outputs = [_error("RecordMismatch", TAMPERED)]
            replayed.add(index)
            continue
        result = replay_cell(plans[index], loaded, seed)
        cell.outputs = result.outputs
        replayed.add(index)
        answer = next((_label(c, i) for i, c in reversed(list(enumerate(restored.cells[:index])))
                       if is_answer_cell(c)), None)
        banned = [f["detail"] for f in flags if f["cell"] == answer
                  and f["kind"] == "forbidden-call"]
        if banned:                      # the kernel's run-time guard may have been patched
            cell.outputs = [_error("AssertionError", f"your answer {banned[0]}, which this "
                                   "exercise asks you to write without")]
        for problem in result.problems:
            flags.append({"cell": grade_id, "kind": "record", "detail": problem})
    report = score(final, name, replayed)
    report.sandbox = mode
    report.flags = flags
    return report, final
