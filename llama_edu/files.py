"""Files written whole or not at all, and read with errors that name what is wrong.

Every file the course writes (checkpoints, tokenizers, JSON) goes to a temporary name in
the same folder and is renamed into place, so a crash mid-write never leaves half a file
under the real name. Every reader checks what it can before it trusts the bytes, and a
damaged file raises `DamagedFileError` naming the file and the problem ("is empty",
"is truncated: its header promises 7,151,936 bytes, the file has 3,575,968"), instead of
a library's `header too large`.

Loading never runs pickled code: tensors come from safetensors, or from
`torch.load(weights_only=True)`, which only rebuilds tensors and plain Python values.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor


class DamagedFileError(ValueError):
    """A file that exists but cannot be what it should be (truncated, garbage, wrong kind)."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = Path(path)
        super().__init__(f"{str(self.path)!r} {problem}")


# ---------------------------------------------------------------------------------------
# Writing


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call write(tmp) on a temporary file beside `path`, then rename it onto `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(handle)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)                    # mkstemp makes it private
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def write_json(path: str | os.PathLike, values: dict) -> Path:
    """UTF-8 JSON (Chinese stays readable), one field per line, a newline at the end."""
    text = json.dumps(values, indent=1, ensure_ascii=False) + "\n"
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def save_safetensors(path: str | os.PathLike, tensors: dict[str, Tensor],
                     metadata: dict[str, str] | None = None) -> Path:
    from safetensors.torch import save_file

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def save_torch(path: str | os.PathLike, values) -> Path:
    """torch.save of tensors and plain values only, so that `load_torch` can read it."""
    return atomic_write(path, lambda tmp: torch.save(values, tmp))


# ---------------------------------------------------------------------------------------
# Reading


def _existing(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no file at {str(path)!r} (expected {what}); check the path")
    if path.stat().st_size == 0:
        raise DamagedFileError(path, f"is empty; expected {what}")
    return path


def read_json(path: str | os.PathLike, what: str = "a JSON file") -> dict:
    """A JSON object from a UTF-8 file, or an error naming the file and the fault."""
    path = _existing(path, what)
    try:
        text = path.read_text(encoding="utf-8")
        values = json.loads(text)
    except UnicodeDecodeError as error:
        raise DamagedFileError(path, f"is not UTF-8 text (byte {error.start}); expected "
                                     f"{what}") from None
    except json.JSONDecodeError as error:
        end = " (it ends early: truncated?)" if error.pos >= len(text.rstrip()) else ""
        raise DamagedFileError(path, f"is not valid JSON: {error.msg} (line {error.lineno}, "
                                     f"column {error.colno}){end}; expected {what}") from None
    if not isinstance(values, dict):
        raise DamagedFileError(path, f"holds a JSON {type(values).__name__}, not an object; "
                                     f"expected {what}")
    return values


def safetensors_header(path: str | os.PathLike) -> dict:
    """The JSON header of a safetensors file, checked against the file's size.

    Layout: 8 bytes little-endian header length n, n bytes of JSON (name -> dtype, shape,
    data_offsets; "__metadata__" -> str -> str), then the tensor data.
    """
    path = _existing(path, "a safetensors file")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise DamagedFileError(path, f"is {size} bytes, too short for a safetensors file")
        n = int.from_bytes(head, "little")
        if 8 + n > size:
            shown = f"{n:,}" if n < 10**12 else f"{n:.2g}"
            raise DamagedFileError(path, f"is not a safetensors file, or is truncated: its "
                                         f"first 8 bytes give a header of {shown} bytes, the "
                                         f"file has {size:,}")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise DamagedFileError(path, "is not a safetensors file: its header is not JSON") from None
    if not isinstance(header, dict):
        raise DamagedFileError(path, "is not a safetensors file: its header is not an object")
    ends = [entry.get("data_offsets", [0, 0])[1] for key, entry in header.items()
            if key != "__metadata__" and isinstance(entry, dict)]
    data_size = max(ends, default=0)
    if 8 + n + data_size > size:
        raise DamagedFileError(path, f"is truncated: its header promises "
                                     f"{8 + n + data_size:,} bytes, the file has {size:,}")
    return header


def read_safetensors(path: str | os.PathLike) -> dict[str, Tensor]:
    """All tensors of a safetensors file (on the CPU)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    safetensors_header(path)
    try:
        return load_file(str(path))
    except SafetensorError as error:
        raise DamagedFileError(path, f"is not a readable safetensors file ({error})") from None


def safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    metadata = safetensors_header(path).get("__metadata__") or {}
    return metadata if isinstance(metadata, dict) else {}


def load_torch(path: str | os.PathLike, what: str = "a torch.save file"):
    """torch.load(weights_only=True) on the CPU: tensors and plain values, never code."""
    import pickle
    import re

    path = _existing(path, what)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(error))
        if found:
            raise DamagedFileError(path, f"holds a Python object ({found.group(1)}), and "
                                         "llama_edu loads only tensors and plain values, with "
                                         "torch.load(weights_only=True): it never runs pickled "
                                         "code") from None
        raise DamagedFileError(path, f"is not {what}: its bytes do not unpickle") from None
    except (RuntimeError, EOFError, KeyError, ValueError) as error:
        reason = ""
        if isinstance(error, RuntimeError) and str(error):   # torch's zip reader says why
            reason = f" ({str(error).splitlines()[0].split('. ')[0]})"
        raise DamagedFileError(path, f"is not {what}, or is truncated{reason}") from None
