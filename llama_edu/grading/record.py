"""The recorder: runs in the learner's kernel during a graded run.

The grader turns each test cell into a harness cell (see `harness`):

    import llama_edu.grading.record as __llama_edu_record__
    __llama_edu_record__.begin("causal_mask_tests", 8172635)
    try:
        from llama_edu.exercises import check_causal_mask
        __llama_edu_record__.check(0, "check_causal_mask", lambda: check_causal_mask,
                                   lambda: (my_causal_mask,), lambda: {})
    finally:
        __llama_edu_record__.end()

`check` runs the check on the learner's function wrapped in `Recorded`, which notes every
call: the arguments' fingerprint, what the function printed, the calls it made to callables
it was given (an `all_reduce`, a layer's pieces), what it changed in place, and what it
returned or raised. `end` writes `.llama_edu_records/<grade_id>.json` and a safetensors
file beside it. Nothing here is trusted: the learner can patch all of it, and the grader
believes a record only as far as replaying it with its own check and seed confirms it.
"""

from __future__ import annotations

import builtins
import contextlib
import io
import json
import os
import sys
import types

import torch
from torch import nn

from ..exercises._common import grading_seed
from .codec import Encoder, fingerprint, states, to_json_path, walk

FOLDER = ".llama_edu_records"
MAX_STREAM = 20_000          # characters of a call's stdout or stderr kept in the record


class _Capped(io.TextIOBase):
    """A text stream that keeps the first MAX_STREAM characters written to it."""

    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self.size = 0
        self.cut = False

    def writable(self) -> bool:
        return True

    def write(self, text) -> int:
        text = str(text)
        room = MAX_STREAM - self.size
        if room > 0:
            self.parts.append(text[:room])
            self.size += min(room, len(text))
        if len(text) > max(room, 0):
            self.cut = True
        return len(text)

    def text(self) -> str:
        return "".join(self.parts) + ("\n[output cut]\n" if self.cut else "")


def describe_error(error: BaseException) -> dict:
    """The type, builtin bases and message of an exception, as plain data."""
    bases = [c.__name__ for c in type(error).__mro__ if c.__module__ == "builtins"]
    try:
        message = str(error)
    except Exception:
        message = "(the exception's message could not be read)"
    return {"type": type(error).__name__, "bases": bases, "message": message[:MAX_STREAM]}


def identity(obj) -> str | None:
    """'module.qualname' of a class or function importable from a package, else None."""
    module, qualname = getattr(obj, "__module__", None), getattr(obj, "__qualname__", None)
    if not isinstance(module, str) or not isinstance(qualname, str) or module == "__main__":
        return None
    return f"{module}.{qualname}"


def code_names(fn, limit: int = 4000) -> list[str]:
    """The global and attribute names a function's code (inner functions included) uses,
    so that a check that refuses some by name (exercises.llama3) decides alike in replay."""
    try:
        code = getattr(fn, "__code__", None)
    except Exception:
        return []
    found: set[str] = set()
    todo = [code] if isinstance(code, types.CodeType) else []
    while todo and len(found) < limit:
        code = todo.pop()
        found |= {str(n) for n in code.co_names}
        todo += [c for c in code.co_consts if isinstance(c, types.CodeType)]
    return sorted(found)


def _is_callback(value) -> bool:
    """A callable argument whose calls the grader must repeat (not a module or a class)."""
    return callable(value) and not isinstance(value, (nn.Module, type, torch.Tensor))


class _Callback:
    """A callable the check handed to the learner's function; logs each call."""

    def __init__(self, fn, path: list, log: list, encoder: Encoder):
        self._fn, self._path, self._log, self._encoder = fn, path, log, encoder
        self.__name__ = getattr(fn, "__name__", "callback")

    def __call__(self, *args, **kwargs):
        self._log.append({"arg": self._path, "args": self._encoder.encode(list(args)),
                          "kwargs": self._encoder.encode(dict(kwargs))})
        return self._fn(*args, **kwargs)


class Recorded:
    """The learner's function (or answer) as the check sees it in a graded run."""

    def __init__(self, fn, tensors: dict):
        self._fn = fn
        self._tensors = tensors
        self.calls: list[dict] = []
        self.__name__ = getattr(fn, "__name__", type(fn).__name__)
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
        self.__doc__ = getattr(fn, "__doc__", None)

    def describe(self) -> dict:
        return {"kind": "function", "name": str(self.__name__), "qualname":
                str(self.__qualname__), "identity": identity(self._fn), "calls": self.calls,
                "names": code_names(self._fn)}

    def __eq__(self, other):
        return self._fn is other or self._fn == other

    def __hash__(self):
        try:
            return hash(self._fn)
        except TypeError:
            return id(self._fn)

    def __getattr__(self, name):
        return getattr(self._fn, name)

    def __call__(self, *args, **kwargs):
        entry: dict = {"args": fingerprint(args, kwargs)}
        self.calls.append(entry)
        root = [list(args), dict(kwargs)]
        refs = {id(leaf): to_json_path(path) for path, leaf in walk(root)
                if isinstance(leaf, (torch.Tensor, nn.Module))}
        encoder = Encoder(self._tensors, refs)
        before = states(args, kwargs)
        callbacks: list = []
        entry["callbacks"] = callbacks
        args = tuple(_Callback(a, [0, i], callbacks, encoder) if _is_callback(a) else a
                     for i, a in enumerate(args))
        kwargs = {k: _Callback(v, [1, ["key", k]], callbacks, encoder) if _is_callback(v) else v
                  for k, v in kwargs.items()}
        out, err = _Capped(), _Capped()
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                value = self._fn(*args, **kwargs)
        except Exception as error:
            entry["raised"] = describe_error(error)
            raise
        except BaseException as error:          # the timeout's KeyboardInterrupt, SystemExit
            entry["aborted"] = type(error).__name__
            raise
        else:
            entry["value"] = encoder.encode(value)
        finally:
            entry["stdout"], entry["stderr"] = out.text(), err.text()
            sys.stdout.write(entry["stdout"])
            sys.stderr.write(entry["stderr"])
            entry["mutations"] = _mutations(root, before, args, kwargs, encoder)
        return value


def _mutations(root, before: dict, args, kwargs, encoder: Encoder) -> list:
    """What the call changed in place: tensors, generator states, lists and dicts."""
    after = states(tuple(root[0]), root[1])
    changed = []
    for path, leaf in walk(root):
        key = json.dumps(to_json_path(path))
        if key not in before or before[key] == after.get(key):
            continue
        if isinstance(leaf, torch.Tensor):
            changed.append({"path": to_json_path(path), "tensor": encoder.tensor(leaf)})
        elif isinstance(leaf, torch.Generator):
            changed.append({"path": to_json_path(path),
                            "generator": encoder.tensor(leaf.get_state())})
        elif isinstance(leaf, (list, dict)) and path:
            changed.append({"path": to_json_path(path), "value": encoder.encode(leaf)})
    return changed


class Recorder:
    """One test cell's record: every check call in it, written out by `end`."""

    def __init__(self):
        self.grade_id: str | None = None

    def begin(self, grade_id: str, seed: int, folder: str | None = None) -> None:
        """Start a test cell's record; it goes to `folder`, else $LLAMA_EDU_RECORDS (the
        sandbox sets it inside the work directory, so a notebook's chdir does not lose it),
        else .llama_edu_records in the current directory."""
        folder = folder or os.environ.get("LLAMA_EDU_RECORDS") or FOLDER
        self.grade_id, self.folder, self.seed = grade_id, folder, int(seed)
        self.checks: list[dict] = []
        self.tensors: dict[str, torch.Tensor] = {}
        self._seed = grading_seed(self.seed)
        self._seed.__enter__()

    def check(self, index: int, name: str, get_check, get_args, get_kwargs) -> None:
        entry: dict = {"index": int(index), "name": str(name)}
        self.checks.append(entry)
        try:
            check, args, kwargs = get_check(), tuple(get_args()), dict(get_kwargs())
        except Exception as error:      # e.g. a NameError: the answer's function is gone
            entry["setup_error"] = describe_error(error)
            raise
        wrapped_args = [self._wrap(a) for a in args]
        wrapped_kwargs = {k: self._wrap(v) for k, v in kwargs.items()}
        entry["args"] = [self._describe(a) for a in wrapped_args]
        entry["kwargs"] = {k: self._describe(v) for k, v in wrapped_kwargs.items()}
        try:
            check(*wrapped_args, **wrapped_kwargs)
        except BaseException as error:
            entry["ended"] = describe_error(error)
            raise

    def _wrap(self, value):
        return Recorded(value, self.tensors) if callable(value) else value

    def _describe(self, value) -> dict:
        if isinstance(value, Recorded):
            return value.describe()
        return {"kind": "value", "value": Encoder(self.tensors).encode(value)}

    def end(self) -> None:
        self._seed.__exit__(None, None, None)
        os.makedirs(self.folder, exist_ok=True)
        base = os.path.join(self.folder, self.grade_id)
        if self.tensors:
            from safetensors.torch import save_file
            save_file(self.tensors, base + ".safetensors")
        record = {"version": 1, "grade_id": self.grade_id, "seed": self.seed,
                  "checks": self.checks}
        with builtins.open(base + ".json", "w", encoding="utf-8") as f:
            json.dump(record, f, ensure_ascii=False)


_RECORDER = Recorder()
begin, check, end = _RECORDER.begin, _RECORDER.check, _RECORDER.end
