"""Hostile submissions of lesson 05's exercises, each graded as an instructor would grade it.

Each one scores 0 where it did not solve the exercise, is flagged where it tampered,
leaves the instructor's files (the source notebook, a file in HOME) byte for byte as they
were, leaves no process behind, and never crashes or hangs the grader. The suite runs
twice: under bubblewrap (skipped where it is not installed) and with
LLAMA_EDU_SANDBOX=limits (resource limits and the kernel's own uid only).
"""

import hashlib
import os
import shutil
import time
from pathlib import Path

import nbformat
import pytest

from llama_edu import assignments

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 20           # seconds per cell: the endless loops' budget (the setup cell imports torch,
                       # which takes over 10 s on a 2-core machine busy with other work)
BOUND = 150            # seconds the grader may take for one submission, whatever it does

CAUSAL_OK = ("def my_causal_mask(q_len, kv_len):\n"
             "    return torch.ones(q_len, kv_len, dtype=torch.bool).tril(kv_len - q_len)")
SOFTMAX_OK = ("def attention_forward(q, k, v, attention_mask=None):\n"
              "    q_len, kv_len = q.shape[-2], k.shape[-2]\n"
              "    mask = torch.ones(q_len, kv_len, dtype=torch.bool).tril(kv_len - q_len)\n"
              "    if attention_mask is not None:\n"
              "        mask = mask & attention_mask.bool()[:, None, None, :]\n"
              "    scores = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5\n"
              "    scores = scores.masked_fill(~mask, float('-inf'))\n"
              "    top = scores.amax(-1, keepdim=True)\n"
              "    e = torch.exp(scores - torch.where(torch.isfinite(top), top, 0 * top))\n"
              "    total = e.sum(-1, keepdim=True)\n"
              "    return torch.where(total > 0, e / total, torch.zeros_like(e)) @ v")
CAUSAL_NONE = "def my_causal_mask(q_len, kv_len):\n    return None"
SOFTMAX_NONE = "def attention_forward(q, k, v, attention_mask=None):\n    return None"
CAUSAL_ZEROS = ("def my_causal_mask(q_len, kv_len):\n"
                "    return torch.zeros(q_len, kv_len, dtype=torch.bool)")
SOFTMAX_ZEROS = ("def attention_forward(q, k, v, attention_mask=None):\n"
                 "    return torch.zeros_like(q)")

PATCH_CHECKS = """import sys
import llama_edu.exercises as ex

def _nothing(*args, **kwargs):
    print("✔ all good")

for module in list(sys.modules.values()):
    if getattr(module, "__name__", "").startswith("llama_edu"):
        for name in list(vars(module)):
            if name.startswith("check_"):
                setattr(module, name, _nothing)
ex.check_causal_mask = _nothing
sys.modules["llama_edu.exercises"] = ex
""" + CAUSAL_NONE

PATCH_TORCH = """import torch
import torch.testing
torch.allclose = lambda *args, **kwargs: True
torch.equal = lambda *args, **kwargs: True
torch.testing.assert_close = lambda *args, **kwargs: None
torch.Tensor.__eq__ = lambda self, other: torch.ones_like(self, dtype=torch.bool)
""" + CAUSAL_ZEROS

LYING_TENSOR = """class Liar(torch.Tensor):
    def __eq__(self, other):
        return torch.ones(self.shape, dtype=torch.bool)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.allclose, torch.equal):
            return True
        return super().__torch_function__(func, types, args, kwargs or {})

def my_causal_mask(q_len, kv_len):
    return torch.zeros(q_len, kv_len, dtype=torch.bool).as_subclass(Liar)"""

FORGE_RECORD = """import json, os
os.makedirs(".llama_edu_records", exist_ok=True)
forged = {{"version": 1, "grade_id": "causal_mask_tests", "seed": 0, "checks": [
    {{"index": 0, "name": "check_causal_mask", "kwargs": {{}},
      "args": [{{"kind": "function", "name": "f", "qualname": "f", "identity": None,
                "calls": []}}]}}]}}
with open(".llama_edu_records/causal_mask_tests.json", "w") as f:
    json.dump(forged, f)
os.chmod(".llama_edu_records/causal_mask_tests.json", 0o444)
os.chmod(".llama_edu_records", 0o555)
for target in ({report!r}, {source_dir!r} + "/grades.csv"):
    try:
        with open(target, "w") as f:
            f.write('{{"score": 100}}')
    except OSError as error:
        print("could not write", target, error)
""" + CAUSAL_NONE

EXIT = "import os\nos._exit(0)\n" + CAUSAL_OK
SEGFAULT = "import ctypes\nctypes.string_at(0)\n" + CAUSAL_OK
ENDLESS_LOOP = "def my_causal_mask(q_len, kv_len):\n    while True:\n        pass"
ENDLESS_PRINT = ("def my_causal_mask(q_len, kv_len):\n    while True:\n"
                 "        print('spam ' * 100)")
FLOOD = CAUSAL_OK + "\n\nwhile True:\n    print('spam ' * 1000)"
BIG_ALLOCATION = ("def my_causal_mask(q_len, kv_len):\n"
                  "    big = torch.ones(10 * 2**30, dtype=torch.uint8)\n"
                  "    return big[:q_len * kv_len].reshape(q_len, kv_len).bool()")
FORK_BOMB = """import os, time

def my_causal_mask(q_len, kv_len):
    while True:
        try:
            os.fork()
        except OSError:
            time.sleep(0.05)"""

HARM_FILES = """import os, shutil
for path in ({source!r}, {home_file!r}):
    try:
        with open(path, "a") as f:
            f.write("tampered")
    except OSError as error:
        print("edit failed:", error)
    try:
        os.remove(path)
    except OSError as error:
        print("delete failed:", error)
for folder in ({source_dir!r}, {home!r}):
    shutil.rmtree(folder, ignore_errors=True)
try:
    with open({home!r} + "/planted.txt", "w") as f:
        f.write("planted")
except OSError as error:
    print("plant failed:", error)
""" + CAUSAL_NONE

READ_CMDLINE = """import os

def my_causal_mask(q_len, kv_len):
    with open(f"/proc/{os.getppid()}/cmdline", "rb") as f:
        parent = f.read().replace(b"\\0", b" ").decode()
    raise ValueError("parent: " + parent + " environ: " + repr(dict(os.environ)))"""

# name: (answer to causal_mask, answer to attention_forward, expected scores, flag kinds)
CASES = {
    "patched_checks": (PATCH_CHECKS, SOFTMAX_NONE, (0, 0), {"patches-module", "sys-modules",
                                                           "record"}),
    "patched_torch": (PATCH_TORCH, SOFTMAX_ZEROS, (0, 0), {"patches-module"}),
    "lying_tensor_subclass": (LYING_TENSOR, SOFTMAX_OK, (0, 4), set()),
    "forged_record_and_report": (FORGE_RECORD, SOFTMAX_NONE, (0, 0), {"system-module",
                                                                      "file-access", "record"}),
    "os_exit": (EXIT, SOFTMAX_OK, (0, 0), {"system-module", "kernel-died"}),
    "segfault": (SEGFAULT, SOFTMAX_OK, (0, 0), {"system-module", "kernel-died"}),
    "endless_loop": (ENDLESS_LOOP, SOFTMAX_OK, (0, 4), set()),
    "endless_print_in_the_function": (ENDLESS_PRINT, SOFTMAX_OK, (0, 4), set()),
    "endless_print_in_the_cell": (FLOOD, SOFTMAX_OK, (2, 4), {"output-cut"}),
    "ten_gigabytes": (BIG_ALLOCATION, SOFTMAX_OK, (0, 4), set()),
    "fork_bomb": (FORK_BOMB, SOFTMAX_OK, (0, None), {"system-module"}),
    "harm_instructor_files": (HARM_FILES, SOFTMAX_NONE, (0, 0), {"system-module",
                                                                 "file-access"}),
    "read_parent_cmdline": (READ_CMDLINE, SOFTMAX_OK, (0, 4), {"system-module",
                                                               "file-access"}),
}


def _sheet(path: Path) -> nbformat.NotebookNode:
    """Lesson 05's setup cell and its exercise cells (with their introductions)."""
    notebook = nbformat.read(path, as_version=4)
    keep = {next(i for i, c in enumerate(notebook.cells) if c.cell_type == "code")}
    for i, cell in enumerate(notebook.cells):
        if cell.get("metadata", {}).get("nbgrader"):
            keep |= {i, i - 1} if notebook.cells[i - 1].cell_type == "markdown" else {i}
    notebook.cells = [notebook.cells[i] for i in sorted(keep)]
    return notebook


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """The instructor's folder (the sheet as source), a student release, and a HOME."""
    base = tmp_path_factory.mktemp("hostile")
    source = base / "instructor" / "05_attention.ipynb"
    source.parent.mkdir()
    nbformat.write(_sheet(ROOT / "notebooks" / "05_attention.ipynb"), source)
    (student,) = assignments.release(source, base / "release")
    home = base / "home"
    home.mkdir()
    (home / "notes.txt").write_text("the instructor's notes 中文\n", encoding="utf-8")
    return {"source": source, "student": student, "home": home, "base": base}


@pytest.fixture(params=["bwrap", "limits"])
def mode(request, monkeypatch, course):
    if request.param == "bwrap" and shutil.which("bwrap") is None:
        pytest.skip("bubblewrap is not installed (apt-get install bubblewrap)")
    monkeypatch.setenv("LLAMA_EDU_SANDBOX", request.param)
    monkeypatch.setenv("HOME", str(course["home"]))
    return request.param


def _hashes(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest()
            for folder in folders for p in sorted(folder.rglob("*")) if p.is_file()}


def _sandbox_processes() -> list[int]:
    """Processes of the sandbox uids' range (200000-899999) still alive."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                status = Path(f"/proc/{entry}/status").read_text()
            except OSError:
                continue
            uid = int(next(line for line in status.splitlines() if line.startswith("Uid:"))
                      .split()[1])
            if 200_000 <= uid < 900_000:
                found.append(int(entry))
    return found


def _submission(course, tmp_path, causal: str, softmax: str, **values) -> Path:
    notebook = nbformat.read(course["student"], as_version=4)
    for cell in notebook.cells:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id == "causal_mask_answer":
            cell.source = causal.format(**values) if values else causal
        elif grade_id == "attention_forward_answer":
            cell.source = softmax
    path = tmp_path / "submitted" / "05_attention.ipynb"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, path)
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_submission(case, mode, course, tmp_path):
    causal, softmax, expected, kinds = CASES[case]
    report_path = tmp_path / "report.json"
    values = {"source": str(course["source"]), "source_dir": str(course["source"].parent),
              "home": str(course["home"]), "home_file": str(course["home"] / "notes.txt"),
              "report": str(report_path)}
    needs_values = case in ("forged_record_and_report", "harm_instructor_files")
    path = _submission(course, tmp_path, causal, softmax, **(values if needs_values else {}))
    before = _hashes(course["source"].parent, course["home"])
    others = set(_sandbox_processes())     # another grader's kernels on this machine, not ours
    started = time.monotonic()
    code = assignments.main(["grade", str(path), "--source", str(course["source"]),
                             "--timeout", str(TIMEOUT), "--json", str(report_path)])
    elapsed = time.monotonic() - started
    assert code == 0
    import json
    report = json.loads(report_path.read_text(encoding="utf-8"))
    scores = {e["name"]: e["score"] for e in report["exercises"]}
    summary = json.dumps(report, indent=1, ensure_ascii=False)[:3000]
    assert report["sandbox"] == mode, summary
    assert scores["causal_mask_tests"] == expected[0], summary
    if expected[1] is not None:
        assert scores["attention_forward_tests"] == expected[1], summary
    assert kinds <= {f["kind"] for f in report["flags"]}, summary
    assert elapsed < BOUND, f"the grader took {elapsed:.0f} s"
    assert _hashes(course["source"].parent, course["home"]) == before, "instructor files changed"
    assert not (course["home"] / "planted.txt").exists()
    assert not set(_sandbox_processes()) - others, "the kernel left processes behind"
    if not needs_values:   # (else the paths are in the learner's code, which flags quote)
        text = report_path.read_text(encoding="utf-8")
        assert str(course["source"].parent) not in text, "the source's folder reached the report"
        assert str(course["home"]) not in text, "the instructor's HOME reached the report"


def test_honest_submissions_beside_hostile_ones_keep_their_grades(mode, course, tmp_path):
    folder = tmp_path / "submissions"
    students = {"ada": (CAUSAL_OK, SOFTMAX_OK), "bomb": (FORK_BOMB, SOFTMAX_OK),
                "lin": (CAUSAL_OK, SOFTMAX_OK), "exit": (EXIT, SOFTMAX_OK),
                "wei": (CAUSAL_OK, SOFTMAX_NONE)}
    for student, (causal, softmax) in students.items():
        path = _submission(course, tmp_path / student, causal, softmax)
        (folder / student).mkdir(parents=True)
        shutil.copy(path, folder / student / path.name)
    before = _hashes(course["source"].parent, course["home"])
    others = set(_sandbox_processes())     # another grader's kernels on this machine, not ours
    assert assignments.main(["grade", str(folder), "--source", str(course["source"]),
                             "--timeout", str(TIMEOUT)]) == 0
    rows = {line.split(",")[0]: line.split(",")
            for line in (folder / "grades.csv").read_text(encoding="utf-8").splitlines()[1:]}
    assert rows["ada"][2:4] == ["6.0", "6.0"] and rows["ada"][4] == ""
    assert rows["lin"][2:4] == ["6.0", "6.0"] and rows["lin"][4] == ""
    assert rows["wei"][2:4] == ["2.0", "6.0"]
    assert rows["exit"][2] == "0.0" and "kernel-died" in rows["exit"][4]
    assert rows["bomb"][2] in ("0.0", "4.0") and "system-module" in rows["bomb"][4]
    assert _hashes(course["source"].parent, course["home"]) == before
    assert not set(_sandbox_processes()) - others


def test_solved_and_untouched_sheets(mode, course):
    solved = assignments.grade_notebook(course["source"], course["source"], timeout=60)
    assert (solved.score, solved.max_score) == (6, 6), assignments.format_report(solved)
    assert all(e.replayed for e in solved.exercises) and solved.flags == []
    untouched = assignments.grade_notebook(course["student"], course["source"], timeout=60)
    assert (untouched.score, untouched.max_score) == (0, 6)
    assert all("not written yet" in e.feedback for e in untouched.exercises)
    assert untouched.sandbox == mode
