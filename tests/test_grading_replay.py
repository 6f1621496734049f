"""Record in another process, replay here: the verdict and its words are the in-process ones.

For every answer of every check's contract (references, the stub, each classic mistake), a
subprocess plays the learner's kernel: it runs the check on the answer through the
recorder with a fresh grading seed. This process then replays each record with its own
check and compares the outcome with running the check on the answer directly, seed for
seed. Then the ways a record can lie: each is a RecordMismatch, never a pass.
"""

import contextlib
import io
import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from exercise_contracts import CONTRACTS
from nbformat.v4 import new_output

from llama_edu import exercises
from llama_edu.exercises._common import ForbiddenCall, call, forbids, grading_seed, rng
from llama_edu.grading import flags, harness, record, replay
from llama_edu.grading.codec import RecordError
from llama_edu.grading.harness import CheckCall

ROOT = Path(__file__).resolve().parent.parent

KERNEL = """
import contextlib, io, os, sys
sys.path.insert(0, {tests!r})
from exercise_contracts import CONTRACTS
from llama_edu import exercises
from llama_edu.grading import record
os.chdir({work!r})
for name, contract in CONTRACTS.items():
    answers = [*contract.references, contract.stub, *(w for w, _ in contract.mistakes)]
    for k, answer in enumerate(answers):
        recorder = record.Recorder()
        recorder.begin(f"{{name}}-{{k}}", {seed})
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                recorder.check(0, name, lambda: getattr(exercises, name), lambda: (answer,),
                               lambda: {{}})
            except AssertionError:
                pass
        recorder.end()
"""


def _answers():
    for name, contract in CONTRACTS.items():
        answers = [*contract.references, contract.stub, *(w for w, _ in contract.mistakes)]
        for k, answer in enumerate(answers):
            yield name, k, answer


def _direct(name, answer, seed):
    out, err = io.StringIO(), io.StringIO()
    with grading_seed(seed), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            getattr(exercises, name)(answer)
        except AssertionError as error:
            return "AssertionError", str(error), err.getvalue()
    return "passed", out.getvalue(), err.getvalue()


def _replayed(result):
    errors = [o for o in result.outputs if o.output_type == "error"]
    err = "".join(o.text for o in result.outputs if o.output_type == "stream"
                  and o.name == "stderr")
    if errors:
        return errors[0].ename, errors[0].evalue, err
    out = "".join(o.text for o in result.outputs if o.output_type == "stream"
                  and o.name == "stdout")
    return "passed", out, err


def test_every_contract_answer_gets_the_same_verdict_replayed(tmp_path):
    seed = random.getrandbits(62)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    script = KERNEL.format(tests=str(ROOT / "tests"), work=str(tmp_path), seed=seed)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    differ = []
    count = 0
    for name, k, answer in _answers():
        loaded = replay.load_record(str(tmp_path), f"{name}-{k}")
        replayed = replay.replay_cell([CheckCall(name, 1, ())], loaded, seed)
        direct = _direct(name, answer, seed)
        count += 1
        if _replayed(replayed) != direct or replayed.problems:
            differ.append((name, k, direct, _replayed(replayed), replayed.problems))
    assert count > 200 and not differ, differ[:3]


def _record_of(fn, check, tmp_path, seed=7, grade_id="toy"):
    recorder = record.Recorder()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        recorder.begin(grade_id, seed)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(AssertionError):
            recorder.check(0, "check_toy", lambda: check, lambda: (fn,), lambda: {})
        recorder.end()
    finally:
        os.chdir(cwd)
    return tmp_path / record.FOLDER / f"{grade_id}.json"


def check_toy(fn):
    """fn(x) -> 2 * x on a random x, and the cache-like in-place write of y."""
    x = torch.randn(3, generator=rng(1))
    y = torch.zeros(3)
    out = call(fn, x, y, what="double(x)")
    assert isinstance(out, torch.Tensor) and torch.equal(out, 2 * x), "double(x) is wrong"
    assert torch.equal(y, x), "y should hold x"
    print("✔ double is right")


def _double(x, y):
    y.copy_(x)
    return 2 * x


@pytest.fixture
def toy(monkeypatch):
    monkeypatch.setattr(exercises, "check_toy", check_toy, raising=False)


def _verdict(path, seed=7, grade_id="toy"):
    try:
        loaded = replay.load_record(str(path.parent.parent), grade_id)
    except RecordError:            # the grader turns this into the same RecordMismatch
        return replay.Replay(outputs=[new_output("error", ename="RecordMismatch",
                                                 evalue=replay.TAMPERED, traceback=[])],
                             problems=["unreadable"])
    return replay.replay_cell([CheckCall("check_toy", 1, ())], loaded, seed)


def test_a_true_record_replays_with_in_place_changes(toy, tmp_path):
    result = _verdict(_record_of(_double, check_toy, tmp_path))
    assert _replayed(result)[0] == "passed" and not result.problems


def test_a_record_for_another_seed_is_a_mismatch(toy, tmp_path):
    path = _record_of(_double, check_toy, tmp_path, seed=7)
    result = _verdict(path, seed=8)
    assert _replayed(result)[:2] == ("RecordMismatch", replay.TAMPERED) and result.problems


@pytest.mark.parametrize("edit", ["drop the calls", "wrong value", "unknown entry",
                                  "not json", "symlink", "another check"])
def test_lying_records_never_pass(toy, tmp_path, edit):
    path = _record_of(_double, check_toy, tmp_path)
    data = json.loads(path.read_text(encoding="utf-8"))
    calls = data["checks"][0]["args"][0]["calls"]
    if edit == "drop the calls":
        calls.clear()
    elif edit == "wrong value":
        calls[0]["value"] = {"list": [1, 2, 3]}
    elif edit == "unknown entry":
        calls[0]["value"] = {"pickle": "cos\nsystem\n"}
    elif edit == "another check":
        data["checks"][0]["name"] = "check_causal_mask"
    path.write_text(json.dumps(data), encoding="utf-8")
    if edit == "not json":
        path.write_text("{not json", encoding="utf-8")
    if edit == "symlink":
        path.unlink()
        path.symlink_to("/etc/passwd")
    result = _verdict(path)
    kind, message, _ = _replayed(result)
    assert kind in ("RecordMismatch", "AssertionError"), (kind, message)
    assert "passed" not in kind


def test_harness_cells_keep_the_imports_and_wrap_each_check(tmp_path):
    source = ("from llama_edu.exercises import check_causal_mask as cm\n\n"
              "cm(my_causal_mask)")
    assert harness.plan(source) == [CheckCall("check_causal_mask", 1, ())]
    text = harness.harness_source(source, "causal_mask_tests", 5)
    assert "begin('causal_mask_tests', 5)" in text and "lambda: (my_causal_mask,)" in text
    assert harness.plan("assert add(1, 2) == 3") is None          # scored in the kernel
    assert harness.plan("from llama_edu.exercises import check_x\ncheck_x(f)") is None


@forbids("repeat_interleave")
def check_no_interleave(fn):
    """fn(x) -> each entry twice, without repeat_interleave."""
    x = torch.arange(3)
    out = call(fn, x, what="twice(x)", forbidden=check_no_interleave.forbidden_calls)
    assert torch.equal(out, torch.tensor([0, 0, 1, 1, 2, 2])), "twice(x) is wrong"
    print("✔ twice is right")


def test_a_declared_forbidden_call_is_refused_in_process_replayed_and_read(monkeypatch,
                                                                          tmp_path):
    monkeypatch.setattr(exercises, "check_no_interleave", check_no_interleave, raising=False)
    cheat = lambda x: x.repeat_interleave(2)                            # noqa: E731
    honest = lambda x: torch.stack([x, x], -1).reshape(-1)             # noqa: E731
    expected = "twice(x) calls repeat_interleave, which this exercise asks you to write without"
    with pytest.raises(AssertionError, match=re.escape(expected)) as refused:
        check_no_interleave(cheat)
    assert not isinstance(refused.value, ForbiddenCall)     # the learner sees a failed check
    with contextlib.redirect_stdout(io.StringIO()):
        check_no_interleave(honest)
    recorder = record.Recorder()
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        recorder.begin("twice", 3)
        with contextlib.suppress(AssertionError):
            recorder.check(0, "check_no_interleave", lambda: check_no_interleave,
                           lambda: (cheat,), lambda: {})
        recorder.end()
    finally:
        os.chdir(cwd)
    result = replay.replay_cell([CheckCall("check_no_interleave", 1, ())],
                                replay.load_record(str(tmp_path), "twice"), 3)
    assert _replayed(result)[:2] == ("AssertionError", expected)   # as in process
    found = flags.read_cell("def twice(x):\n    return x.repeat_interleave(2)", "twice_answer",
                            {}, {"repeat_interleave"})
    assert [f.kind for f in found] == ["forbidden-call"]
