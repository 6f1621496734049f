"""Plain-data form of what a learner's function received and returned.

`Encoder` turns a value into JSON-able data, with tensors set aside for one safetensors
file; `Decoder` builds the value back from that data and nothing else: no pickle, no
imports, no code named by the data. `fingerprint` hashes a call's arguments so that the
grader can tell whether its check called the function with exactly the recorded inputs.

A tensor that *is* one of the call's arguments (or a parameter of a module argument) is
stored as a reference to it, so that identity survives the trip: `param_groups` must
return the model's own parameters, not copies.
"""

from __future__ import annotations

import hashlib
import json
import math

import torch
from torch import nn

MAX_DEPTH = 24
MAX_TEXT = 4000      # characters of a repr or str kept for an object the codec cannot carry


class RecordError(Exception):
    """A record that is malformed or does not fit the check: treated as tampering."""


def _short(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "..."


def _safe_text(fn, obj) -> str:
    try:
        return _short(str(fn(obj)))
    except Exception as error:  # a learner's object whose repr raises
        return f"<{type(obj).__name__} ({type(error).__name__} in its repr)>"


# ---------------------------------------------------------------------------------------
# where the tensors of an argument live, for references and in-place changes

def walk(obj, path: tuple = (), depth: int = 0):
    """Yield (path, leaf) for each tensor, generator, list and dict inside `obj`.

    Paths are tuples of steps: an int (a list or tuple position), ("key", k) for a dict
    entry with a str or int key, ("param", name) and ("buffer", name) inside a module.
    """
    if depth > MAX_DEPTH:
        return
    if isinstance(obj, (torch.Tensor, torch.Generator)):
        yield path, obj
    elif isinstance(obj, nn.Module):
        yield path, obj
        for name, param in obj.named_parameters(remove_duplicate=False):
            yield (*path, ("param", name)), param
        for name, buffer in obj.named_buffers(remove_duplicate=False):
            yield (*path, ("buffer", name)), buffer
    elif isinstance(obj, (list, tuple)):
        if isinstance(obj, list):
            yield path, obj
        for i, item in enumerate(obj):
            yield from walk(item, (*path, i), depth + 1)
    elif isinstance(obj, dict):
        yield path, obj
        for key, item in obj.items():
            if isinstance(key, (str, int)) and not isinstance(key, bool):
                yield from walk(item, (*path, ("key", key)), depth + 1)


def resolve(root, path) -> object:
    """The object at `path` inside `root` (the grader's own arguments); RecordError if none."""
    obj = root
    try:
        for step in path:
            if isinstance(step, int) and isinstance(obj, (list, tuple)):
                obj = obj[step]
            elif isinstance(step, list) and len(step) == 2 and step[0] == "key" \
                    and isinstance(obj, dict):
                obj = obj[step[1]]
            elif isinstance(step, list) and len(step) == 2 and step[0] in ("param", "buffer") \
                    and isinstance(obj, nn.Module):
                named = dict(obj.named_parameters(remove_duplicate=False) if step[0] == "param"
                             else obj.named_buffers(remove_duplicate=False))
                obj = named[step[1]]
            else:
                raise RecordError(f"a recorded path step {step!r} does not fit the arguments")
    except (KeyError, IndexError, TypeError):
        raise RecordError("a recorded path does not exist in the check's arguments") from None
    return obj


def to_json_path(path: tuple) -> list:
    return [list(step) if isinstance(step, tuple) else step for step in path]


# ---------------------------------------------------------------------------------------
# fingerprints

def tensor_digest(t: torch.Tensor) -> str:
    data = t.detach().cpu().contiguous().reshape(-1)
    raw = data.view(torch.uint8).numpy().tobytes() if data.numel() else b""
    return hashlib.sha256(raw).hexdigest()


def _shape_of(obj, depth: int = 0):
    """A JSON-able structure that is equal for equal inputs (values of tensors by hash)."""
    if depth > MAX_DEPTH:
        return ["deep"]
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, torch.Tensor):
        return ["T", str(obj.dtype), list(obj.shape), bool(obj.requires_grad),
                isinstance(obj, nn.Parameter), tensor_digest(obj)]
    if isinstance(obj, int):
        return ["i", str(int(obj))]
    if isinstance(obj, float):
        return ["f", repr(float(obj))]
    if isinstance(obj, torch.Generator):
        return ["G", tensor_digest(obj.get_state())]
    if isinstance(obj, nn.Module):     # structure only: a module's values are its own business
        return ["M", type(obj).__qualname__,
                [[n, str(p.dtype), list(p.shape)] for n, p in
                 obj.named_parameters(remove_duplicate=False)],
                [[n, str(b.dtype), list(b.shape)] for n, b in
                 obj.named_buffers(remove_duplicate=False)]]
    if isinstance(obj, (list, tuple)):
        return ["L" if isinstance(obj, list) else "U", [_shape_of(x, depth + 1) for x in obj]]
    if isinstance(obj, dict):
        return ["D", [[_shape_of(k, depth + 1), _shape_of(v, depth + 1)]
                      for k, v in obj.items()]]
    if isinstance(obj, torch.dtype):
        return ["dtype", str(obj)]
    if callable(obj):
        return ["F", getattr(obj, "__qualname__", type(obj).__qualname__)]
    return ["O", type(obj).__qualname__]


def fingerprint(args: tuple, kwargs: dict) -> str:
    """sha256 of the call's arguments: tensor bytes, dtypes and shapes, numbers, strings,
    generator states, module structure, callables by name."""
    text = json.dumps([_shape_of(list(args)), _shape_of(dict(kwargs))], sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def states(args: tuple, kwargs: dict) -> dict:
    """{path: digest} of every tensor, generator, list and dict in the arguments, to see
    afterwards which of them the function changed in place."""
    found = {}
    for path, leaf in walk([list(args), kwargs]):
        key = json.dumps(to_json_path(path))
        if isinstance(leaf, torch.Tensor):
            found[key] = tensor_digest(leaf)
        elif isinstance(leaf, torch.Generator):
            found[key] = tensor_digest(leaf.get_state())
        elif isinstance(leaf, (list, dict)):
            found[key] = _shallow(leaf)
    return found


def _shallow(container) -> str:
    """A list's or dict's own state: its scalars by value, everything else by identity (an
    item changed in place is found at its own path)."""
    items = container.items() if isinstance(container, dict) else enumerate(container)
    plain = (type(None), bool, int, float, str)
    return json.dumps([[repr(k), _shape_of(v) if isinstance(v, plain) else ["id", id(v)]]
                       for k, v in items])


# ---------------------------------------------------------------------------------------
# encoding (in the learner's kernel) and decoding (in the grader)

class Encoder:
    """Values to JSON-able data; tensors go to `self.tensors` (for one safetensors file)."""

    def __init__(self, tensors: dict[str, torch.Tensor], refs: dict[int, list] | None = None):
        self.tensors = tensors
        self.refs = refs or {}
        self._memo: dict[int, tuple[str, torch.Tensor]] = {}   # holds t, so ids stay unique

    def tensor(self, t: torch.Tensor) -> str:
        """The name of a copy of t in `self.tensors` (one copy per tensor object)."""
        if id(t) not in self._memo:
            name = f"t{len(self.tensors)}"
            self.tensors[name] = t.detach().cpu().contiguous().clone()
            self._memo[id(t)] = (name, t)
        return self._memo[id(t)][0]

    def encode(self, obj, depth: int = 0):
        if depth > MAX_DEPTH:
            return {"opaque": "too deeply nested", "repr": "...", "str": "...",
                    "callable": False}
        if obj is None or type(obj) is bool or type(obj) is str:
            return obj
        if isinstance(obj, torch.Tensor):
            if id(obj) in self.refs:
                return {"ref": self.refs[id(obj)]}
            if obj.layout != torch.strided or obj.is_complex() or obj.is_quantized:
                return self._opaque(obj)
            return {"tensor": self.tensor(obj), "parameter": isinstance(obj, nn.Parameter),
                    "requires_grad": bool(obj.requires_grad)}
        if type(obj) is int:
            return obj
        if type(obj) is float:
            return obj if math.isfinite(obj) else {"float": repr(obj)}
        if type(obj).__module__ == "numpy" and hasattr(obj, "dtype") and hasattr(obj, "item") \
                and getattr(obj, "shape", None) == ():
            return {"numpy": str(obj.dtype), "value": self.encode(obj.item(), depth + 1)}
        if isinstance(obj, (list, tuple, set, frozenset)):
            kind = ("list" if isinstance(obj, list) else "tuple" if isinstance(obj, tuple)
                    else "set" if isinstance(obj, set) else "frozenset")
            return {kind: [self.encode(x, depth + 1) for x in obj]}
        if isinstance(obj, dict):
            return {"dict": [[self.encode(k, depth + 1), self.encode(v, depth + 1)]
                             for k, v in obj.items()]}
        if isinstance(obj, str):
            return str(obj)
        if isinstance(obj, bool):
            return bool(obj)
        if isinstance(obj, int):
            return int(obj)
        if isinstance(obj, torch.dtype):
            return {"dtype": str(obj).removeprefix("torch.")}
        return self._opaque(obj)

    @staticmethod
    def _opaque(obj):
        return {"opaque": type(obj).__name__, "repr": _safe_text(repr, obj),
                "str": _safe_text(str, obj), "callable": callable(obj)}


def _opaque_class(name: str, text: str, rep: str, is_callable: bool):
    """A stand-in for a learner object the codec cannot carry: same type name, str and repr."""
    def call(self, *args, **kwargs):
        raise TypeError(f"the {name} object your function returned cannot be called here")

    namespace = {"__repr__": lambda self: rep, "__str__": lambda self: text,
                 "__module__": "learner"}
    if is_callable:
        namespace["__call__"] = call
    return type(name if name.isidentifier() else "LearnerObject", (), namespace)()


class Decoder:
    """Data from a record back to values. Anything unexpected is a RecordError."""

    def __init__(self, tensors: dict[str, torch.Tensor], root=None):
        self.tensors = tensors
        self.root = root          # the grader's own arguments, for references
        self._memo: dict[str, torch.Tensor] = {}

    def decode(self, data, depth: int = 0):
        if depth > MAX_DEPTH:
            raise RecordError("the record nests too deeply")
        if data is None or isinstance(data, (bool, str)):
            return data
        if isinstance(data, int):
            return data
        if isinstance(data, float):
            return data
        if not isinstance(data, dict) or len(data) == 0:
            raise RecordError(f"unexpected data in the record: {type(data).__name__}")
        if "ref" in data:
            return resolve(self.root, data["ref"])
        if "tensor" in data:
            name = data["tensor"]
            if name not in self.tensors:
                raise RecordError("the record names a tensor its safetensors file lacks")
            if name not in self._memo:
                t = self.tensors[name].clone()
                grad = bool(data.get("requires_grad")) and t.is_floating_point()
                self._memo[name] = nn.Parameter(t, requires_grad=grad) \
                    if data.get("parameter") else t.requires_grad_(grad)
            return self._memo[name]
        if "float" in data:
            if data["float"] not in ("nan", "inf", "-inf"):
                raise RecordError("a non-finite float in the record is not nan or inf")
            return float(data["float"])
        if "numpy" in data:
            import numpy as np
            try:
                return np.dtype(str(data["numpy"])).type(self.decode(data["value"], depth + 1))
            except TypeError:
                raise RecordError("a numpy scalar in the record has an unknown dtype") from None
        if "dtype" in data:
            dtype = getattr(torch, str(data["dtype"]), None)
            if not isinstance(dtype, torch.dtype):
                raise RecordError("the record names an unknown dtype")
            return dtype
        for kind, build in (("list", list), ("tuple", tuple), ("set", set),
                            ("frozenset", frozenset)):
            if kind in data:
                items = [self.decode(x, depth + 1) for x in self._items(data[kind])]
                try:
                    return build(items)
                except TypeError:
                    raise RecordError("an unhashable item in a recorded set") from None
        if "dict" in data:
            out = {}
            for pair in self._items(data["dict"]):
                if not isinstance(pair, list) or len(pair) != 2:
                    raise RecordError("a dict entry in the record is not a pair")
                try:
                    out[self.decode(pair[0], depth + 1)] = self.decode(pair[1], depth + 1)
                except TypeError:
                    raise RecordError("an unhashable dict key in the record") from None
            return out
        if "opaque" in data:
            return _opaque_class(str(data["opaque"]), str(data.get("str", "")),
                                 str(data.get("repr", "")), bool(data.get("callable")))
        raise RecordError(f"unknown entry in the record: {sorted(data)[:3]}")

    @staticmethod
    def _items(items) -> list:
        if not isinstance(items, list):
            raise RecordError("a recorded container is not a list")
        return items

