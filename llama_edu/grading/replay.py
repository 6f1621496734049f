"""The verdict, in the grader's own process, from the kernel's record.

`load_record` reads `<grade_id>.json` and its safetensors file from the kernel's work
directory without following links and within size limits. `replay_cell` runs the grader's
own, unmodified checks with the grading seed; a `Replayer` stands in for the learner's
function: each call must have the recorded fingerprint, repeats the recorded calls to the
callables it was given, applies the recorded in-place changes, prints what was printed,
and returns the recorded value or raises the recorded exception (which the check's `call`
turns into the same feedback as in a learner's session). No learner code runs here.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import os
import stat
import sys
import warnings
from dataclasses import dataclass, field

import torch
from nbformat.v4 import new_output

from ..exercises._common import ForbiddenCall, grading_seed
from .codec import Decoder, RecordError, fingerprint, resolve
from .harness import CheckCall
from .record import FOLDER

MAX_JSON = 64 * 2**20
MAX_TENSORS = 256 * 2**20
MAX_CALLBACKS = 1000        # calls to a check's callables (all_reduce, a layer's pieces)
TAMPERED = ("the record of your function's calls is missing or does not match the check "
            "(tampering?)")
TIMED_OUT = "the cell ran out of time: is there an endless loop?"


class RecordMismatch(BaseException):
    """The check asked for a call the record does not have (not caught by `call`)."""


class ReplayAbort(BaseException):
    """The recorded call never returned: the kernel interrupted it (the cell's timeout)."""


def _read(folder_fd: int, name: str, limit: int) -> bytes | None:
    """A regular file's bytes from the work directory: no symlinks, at most `limit`."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=folder_fd)
    except OSError:
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
            raise RecordError(f"{name} is not a regular file under {limit} bytes")
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read(limit + 1)
    finally:
        os.close(fd)


def load_record(work: str, grade_id: str) -> tuple[dict, dict] | None:
    """(record, tensors) for one test cell, or None when the kernel wrote none."""
    try:
        folder_fd = os.open(os.path.join(work, FOLDER),
                            os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        raw = _read(folder_fd, grade_id + ".json", MAX_JSON)
        if raw is None:
            return None
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            raise RecordError("the record is not JSON") from None
        if not isinstance(record, dict) or not isinstance(record.get("checks"), list):
            raise RecordError("the record has no list of checks")
        blob = _read(folder_fd, grade_id + ".safetensors", MAX_TENSORS)
        tensors = {}
        if blob is not None:
            from safetensors.torch import load

            try:
                tensors = load(blob)
            except Exception:
                raise RecordError("the record's safetensors file is unreadable") from None
        return record, tensors
    finally:
        os.close(folder_fd)


def rebuild_error(info) -> Exception:
    """An exception with the recorded type name, message and nearest builtin base."""
    if not isinstance(info, dict):
        raise RecordError("a recorded exception is not described")
    name, message = str(info.get("type", "Exception")), str(info.get("message", ""))
    if name == "ForbiddenCall":         # the checks' own kind, which `call` reports as a failure
        return ForbiddenCall(message)
    base = Exception
    for candidate in info.get("bases", []) if isinstance(info.get("bases"), list) else []:
        cls = getattr(builtins, str(candidate), None)
        if isinstance(cls, type) and issubclass(cls, Exception):
            base = cls
            break
    cls = type(name if name.isidentifier() else "Exception", (base,),
               {"__str__": lambda self: message, "__module__": "learner"})
    try:
        error = cls.__new__(cls)
        Exception.__init__(error, message)
    except Exception:
        error = type(cls.__name__, (Exception,), {"__str__": lambda self: message})()
    return error


def _entries(data, kind=list):
    if not isinstance(data, kind):
        raise RecordError("the record has the wrong shape")
    return data


class Replayer:
    """Stands in for the learner's function in the grader's check."""

    def __init__(self, described: dict, tensors: dict):
        self._calls = _entries(described.get("calls"))
        self._tensors = tensors
        self._identity = described.get("identity")
        names = described.get("names")
        self.code_names = tuple(n for n in names if isinstance(n, str)) \
            if isinstance(names, list) else ()     # the names its code used, as recorded
        self.position = 0
        self.__name__ = str(described.get("name", "answer"))
        self.__qualname__ = str(described.get("qualname", self.__name__))

    @property
    def leftover(self) -> int:
        return len(self._calls) - self.position

    def __eq__(self, other):
        if isinstance(other, Replayer):
            return other is self
        module, name = getattr(other, "__module__", None), getattr(other, "__qualname__", None)
        return (isinstance(self._identity, str) and isinstance(module, str)
                and isinstance(name, str) and self._identity == f"{module}.{name}")

    def __hash__(self):
        return id(self)

    def __call__(self, *args, **kwargs):
        try:
            return self._replay(args, kwargs)
        except RecordError as error:        # not an Exception the check's `call` may catch
            raise RecordMismatch(str(error)) from None

    def _replay(self, args: tuple, kwargs: dict):
        if self.position >= len(self._calls):
            raise RecordMismatch("the check made a call the record does not have")
        entry = _entries(self._calls[self.position], dict)
        self.position += 1
        if entry.get("args") != fingerprint(args, kwargs):
            raise RecordMismatch("the check called the function with other arguments")
        root = [list(args), dict(kwargs)]
        decoder = Decoder(self._tensors, root)
        callbacks = _entries(entry.get("callbacks", []))
        if len(callbacks) > MAX_CALLBACKS:
            raise RecordError("a recorded call made more calls to its callables than the "
                              "grader repeats")
        for callback in callbacks:
            target = resolve(root, _entries(callback, dict).get("arg", []))
            call_args = decoder.decode(callback.get("args", {"list": []}))
            call_kwargs = decoder.decode(callback.get("kwargs", {"dict": []}))
            if callable(target) and isinstance(call_args, list) and isinstance(call_kwargs, dict) \
                    and all(isinstance(k, str) for k in call_kwargs):
                with contextlib.suppress(Exception):   # the learner's function saw it already
                    target(*call_args, **call_kwargs)
        print(str(entry.get("stdout", "")), end="")
        print(str(entry.get("stderr", "")), end="", file=sys.stderr)
        for change in _entries(entry.get("mutations", [])):
            _apply(_entries(change, dict), root, decoder)
        if "aborted" in entry:
            raise ReplayAbort(str(entry["aborted"]))
        if "raised" in entry:
            raise rebuild_error(entry["raised"])
        if "value" not in entry:
            raise RecordMismatch("a recorded call has no outcome")
        return decoder.decode(entry["value"])


def _apply(change: dict, root, decoder: Decoder) -> None:
    target = resolve(root, _entries(change.get("path")))
    if "tensor" in change or "generator" in change:
        new = decoder.decode({"tensor": change.get("tensor", change.get("generator"))})
        if "generator" in change:
            if not isinstance(target, torch.Generator):
                raise RecordError("a recorded generator state has no generator to go to")
            try:
                target.set_state(new)
            except RuntimeError:
                raise RecordError("a recorded generator state is not valid") from None
            return
        if not isinstance(target, torch.Tensor) or target.shape != new.shape \
                or target.dtype != new.dtype:
            raise RecordError("a recorded in-place change does not fit its tensor")
        with torch.no_grad():
            target.copy_(new)
    elif "value" in change:
        value = decoder.decode(change["value"])
        if isinstance(target, list) and isinstance(value, list):
            target[:] = value
        elif isinstance(target, dict) and isinstance(value, dict):
            target.clear()
            target.update(value)
        else:
            raise RecordError("a recorded change does not fit its list or dict")
    else:
        raise RecordError("a recorded change names nothing")


@dataclass
class Replay:
    """A test cell's outputs as the grader computed them, and what it noticed."""

    outputs: list = field(default_factory=list)
    problems: list[str] = field(default_factory=list)    # runtime evidence for the flags


def replay_cell(plan: list[CheckCall], loaded: tuple[dict, dict] | None,
                seed: int) -> Replay:
    """Run the grader's checks of one test cell against the kernel's record."""
    from .. import exercises

    result = Replay()
    stdout, stderr = io.StringIO(), io.StringIO()
    error = None
    try:
        if loaded is None:
            raise RecordMismatch("no record")
        record, tensors = loaded
        checks = _entries(record.get("checks"))
        for number, expected in enumerate(plan):
            if number >= len(checks):
                raise RecordMismatch("the record has fewer checks than the cell")
            entry = _entries(checks[number], dict)
            if entry.get("name") != expected.name or entry.get("index") != number:
                raise RecordMismatch("the record's checks are not the cell's")
            if "setup_error" in entry:
                raise rebuild_error(entry["setup_error"])
            args = [_argument(a, tensors) for a in _entries(entry.get("args"))]
            kwargs = {str(k): _argument(v, tensors)
                      for k, v in _entries(entry.get("kwargs"), dict).items()}
            if expected.n_args is not None and len(args) != expected.n_args:
                raise RecordMismatch("the record has another number of arguments")
            with grading_seed(seed), contextlib.redirect_stdout(stdout), \
                    contextlib.redirect_stderr(stderr), warnings.catch_warnings():
                warnings.simplefilter("default")    # as in a fresh kernel: each shows once
                try:
                    getattr(exercises, expected.name)(*args, **kwargs)
                finally:
                    extra = sum(a.leftover for a in [*args, *kwargs.values()]
                                if isinstance(a, Replayer))
                    if extra:
                        result.problems.append(f"the kernel's check made {extra} call(s) "
                                               "more than the grader's")
    except RecordMismatch as mismatch:
        result.problems.append(f"record: {mismatch}")
        error = ("RecordMismatch", TAMPERED)
    except RecordError as bad:
        result.problems.append(f"record: {bad}")
        error = ("RecordMismatch", TAMPERED)
    except ReplayAbort:
        error = ("KeyboardInterrupt", TIMED_OUT)
    except Exception as failure:      # the check's verdict: an AssertionError with feedback
        error = (type(failure).__name__, str(failure))
    for name, stream in (("stdout", stdout), ("stderr", stderr)):
        if stream.getvalue():
            result.outputs.append(new_output("stream", name=name, text=stream.getvalue()))
    if error is not None:
        result.outputs.append(new_output("error", ename=error[0], evalue=error[1],
                                         traceback=[f"{error[0]}: {error[1]}"]))
    return result


def _argument(described, tensors: dict):
    described = _entries(described, dict)
    if described.get("kind") == "function":
        return Replayer(described, tensors)
    if described.get("kind") == "value":
        return Decoder(tensors).decode(described.get("value"))
    raise RecordError("an argument of the check is not described")
