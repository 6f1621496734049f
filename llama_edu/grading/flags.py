"""Tampering worth an instructor's look, found by reading the answer cells (no running).

The grader holds the submission, so it reads every code cell the learner wrote or changed
(answer cells, and cells that differ from the instructor's notebook) and flags:

- `patches-module`: assigning or deleting attributes of llama_edu, torch or builtins
  (`torch.allclose = ...`, `exercises.check_x = ...`, `Tensor.__eq__ = ...`, setattr);
- `sys-modules`: touching `sys.modules` (or the import machinery: meta_path, reload);
- `file-access`: `open` of a computed path, or a path outside the work directory (absolute,
  `..`, `~`): `/proc/<ppid>/cmdline`, the instructor's home;
- `system-module`: os, subprocess, ctypes, shutil, signal, socket and their kin;
- `dynamic-code`: eval, exec, compile, __import__, sys._getframe and tracing hooks;
- `forbidden-call`: a call an exercise's check declares off limits (`_common.forbids`).

These are heuristics for review, not verdicts: an exercise scores as its replay decides.
"""

from __future__ import annotations

import ast
from dataclasses import asdict, dataclass

WATCHED = ("llama_edu", "torch", "builtins")
SYSTEM_MODULES = {"os", "subprocess", "ctypes", "shutil", "signal", "socket", "multiprocessing",
                  "importlib", "resource", "pty", "gc", "inspect", "threading", "_thread",
                  "posix", "fcntl", "mmap"}
SYS_HOOKS = {"modules", "meta_path", "path_hooks", "path_importer_cache"}
DYNAMIC = {"eval", "exec", "compile", "__import__", "globals", "vars", "breakpoint"}
SYS_DYNAMIC = {"_getframe", "settrace", "setprofile", "addaudithook", "exit", "_exit"}
FILE_CALLS = {"open", "builtins.open", "io.open", "os.open", "pathlib.Path", "os.remove",
              "os.unlink", "os.rmdir", "shutil.rmtree", "os.rename", "os.replace"}


@dataclass
class Flag:
    """One finding: the cell it is in (an answer's grade_id, or `cell N`), what, and where."""

    cell: str
    kind: str
    detail: str

    def to_dict(self) -> dict:
        return asdict(self)


def aliases(sources: list[str]) -> dict[str, str]:
    """Local name -> dotted module path, from every import in the notebook."""
    names = {"__builtins__": "builtins"}
    for source in sources:
        try:
            tree = ast.parse(source)
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        names[a.asname] = a.name
                    else:
                        names[a.name.split(".")[0]] = a.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for a in node.names:
                    names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _dotted(node, names: dict[str, str]) -> str | None:
    """`torch.Tensor.__eq__` for an attribute chain rooted at an imported name."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        root = names.get(node.id, node.id if node.id in ("open", "eval", "exec", "compile",
                                                         "__import__", "globals", "vars",
                                                         "setattr", "delattr", "breakpoint")
                         else None)
        if root is None:
            return None
        return ".".join([root, *reversed(parts)])
    return None


def _watched(dotted: str | None) -> bool:
    return dotted is not None and dotted.split(".")[0] in WATCHED


def _outside(path: str) -> bool:
    return path.startswith(("/", "~")) or ".." in path.replace("\\", "/").split("/")


class _Reader(ast.NodeVisitor):
    def __init__(self, names: dict[str, str], forbidden: set[str]):
        self.names, self.forbidden = names, forbidden
        self.found: list[tuple[str, str]] = []

    def note(self, kind: str, detail: str) -> None:
        if (kind, detail) not in self.found:
            self.found.append((kind, detail))

    def _target(self, target) -> None:
        base = target.value if isinstance(target, ast.Subscript) else target
        dotted = _dotted(base, self.names)
        if isinstance(target, ast.Attribute) and _watched(dotted):
            self.note("patches-module", f"assigns {dotted}")
        elif isinstance(target, ast.Subscript) and dotted and (
                dotted == "sys.modules" or _watched(dotted)):
            self.note("sys-modules" if dotted == "sys.modules" else "patches-module",
                      f"assigns an item of {dotted}")
        for node in ast.walk(target):
            if isinstance(node, (ast.Tuple, ast.List)) and node is not target:
                for element in node.elts:
                    self._target(element)

    def visit_Assign(self, node):
        for target in node.targets:
            self._target(target)
        self.generic_visit(node)

    def visit_AugAssign(self, node):
        self._target(node.target)
        self.generic_visit(node)

    def visit_AnnAssign(self, node):
        self._target(node.target)
        self.generic_visit(node)

    def visit_Delete(self, node):
        for target in node.targets:
            self._target(target)
        self.generic_visit(node)

    def visit_Import(self, node):
        for a in node.names:
            if a.name.split(".")[0] in SYSTEM_MODULES:
                self.note("system-module", f"imports {a.name}")
        self.generic_visit(node)

    def visit_ImportFrom(self, node):
        if node.module and node.module.split(".")[0] in SYSTEM_MODULES:
            self.note("system-module", f"imports from {node.module}")
        if node.module == "sys" and any(a.name in SYS_HOOKS for a in node.names):
            self.note("sys-modules", "imports sys.modules")
        self.generic_visit(node)

    def visit_Attribute(self, node):
        dotted = _dotted(node, self.names)
        if dotted:
            root, _, rest = dotted.partition(".")
            if root == "sys" and rest.split(".")[0] in SYS_HOOKS:
                self.note("sys-modules", f"uses {dotted}")
            elif root == "sys" and rest.split(".")[0] in SYS_DYNAMIC:
                self.note("dynamic-code", f"uses {dotted}")
            elif root in SYSTEM_MODULES:
                self.note("system-module", f"uses {root}")
            if dotted in ("importlib.reload", "builtins.__dict__") or rest == "__dict__" \
                    and _watched(dotted):
                self.note("patches-module", f"uses {dotted}")
        if node.attr in self.forbidden:
            self.note("forbidden-call", f"uses {node.attr}")
        self.generic_visit(node)

    def visit_Name(self, node):
        if node.id in self.forbidden:
            self.note("forbidden-call", f"uses {node.id}")
        origin = self.names.get(node.id, "")
        if origin.split(".")[0] in SYSTEM_MODULES and origin != node.id:
            self.note("system-module", f"uses {origin}")
        self.generic_visit(node)

    def visit_Call(self, node):
        dotted = _dotted(node.func, self.names)
        name = dotted or (node.func.attr if isinstance(node.func, ast.Attribute) else "")
        if dotted in DYNAMIC or dotted and dotted.split(".")[-1] in ("__import__",):
            self.note("dynamic-code", f"calls {dotted}")
        if dotted in ("setattr", "delattr") and node.args:
            target = _dotted(node.args[0], self.names)
            if _watched(target) or target in (None,) and not isinstance(node.args[0], ast.Name):
                self.note("patches-module", f"{dotted} on {target or 'a computed object'}")
        if name in FILE_CALLS or name.split(".")[-1] in ("write_text", "write_bytes",
                                                         "read_text", "read_bytes", "unlink"):
            first = node.args[0] if node.args else None
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                if _outside(first.value):
                    self.note("file-access", f"{name}({first.value!r})")
            elif first is not None:
                self.note("file-access", f"{name}() of a computed path")
        self.generic_visit(node)

    def visit_Constant(self, node):
        if isinstance(node.value, str) and node.value.startswith(
                ("/proc", "/etc", "/root", "/home", "/tmp", "/work", "/dev", "/sys", "~")):
            self.note("file-access", f"names the path {node.value[:80]!r}")


def read_cell(source: str, label: str, names: dict[str, str],
              forbidden: set[str] = frozenset()) -> list[Flag]:
    """The flags of one cell's source."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    reader = _Reader(names, set(forbidden))
    reader.visit(tree)
    return [Flag(label, kind, detail) for kind, detail in reader.found]


def forbidden_calls() -> dict[str, set[str]]:
    """check name -> the calls it declares off limits (see `exercises._common.forbids`)."""
    from .. import exercises

    return {name: set(getattr(getattr(exercises, name), "forbidden_calls", ()))
            for name in exercises.__all__}
