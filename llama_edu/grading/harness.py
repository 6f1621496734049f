"""Test cells as the grader replays them, and as the learner's kernel runs them.

A replayable test cell holds only imports from `llama_edu.exercises` and calls of its
`check_*` functions, which is how every lesson writes them:

    from llama_edu.exercises import check_causal_mask
    check_causal_mask(my_causal_mask)

`plan` reads such a cell into the list of checks it calls. `harness_source` writes the
cell the kernel runs instead: the same imports, and each call handed to the recorder with
its arguments wrapped in lambdas, so that a missing answer (a NameError) is recorded as
the cell's failure instead of a missing record. A cell with any other code is not
replayable; it runs as written and is scored from the kernel's own outputs.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

EXERCISES = "llama_edu.exercises"
RECORDER = "__llama_edu_record__"


@dataclass(frozen=True)
class CheckCall:
    """One `check_*(...)` call of a test cell."""

    name: str                   # the check's name in llama_edu.exercises
    n_args: int | None          # positional arguments (None when one is starred)
    keywords: tuple[str, ...]   # keyword arguments (empty names for **kwargs)


def _exported_checks() -> set[str]:
    from .. import exercises

    return set(exercises.__all__)


def _parse(source: str) -> ast.Module | None:
    try:
        return ast.parse(source)
    except SyntaxError:
        return None


def plan(source: str) -> list[CheckCall] | None:
    """The checks a test cell calls, in order; None when the cell is not replayable."""
    tree = _parse(source)
    if tree is None:
        return None
    checks = _exported_checks()
    aliases: dict[str, str] = {}
    calls: list[CheckCall] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                node.module == EXERCISES or node.module.startswith(EXERCISES + ".")):
            for alias in node.names:
                if alias.name not in checks:
                    return None
                aliases[alias.asname or alias.name] = alias.name
        elif isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and isinstance(
                node.value.func, ast.Name) and node.value.func.id in aliases:
            call = node.value
            starred = any(isinstance(a, ast.Starred) for a in call.args)
            calls.append(CheckCall(aliases[call.func.id], None if starred else len(call.args),
                                   tuple(k.arg or "" for k in call.keywords)))
        elif isinstance(node, ast.Pass):
            continue
        else:
            return None
    return calls or None


def harness_source(source: str, grade_id: str, seed: int) -> str:
    """The kernel's version of a replayable test cell (see the module docstring)."""
    tree = _parse(source)
    assert tree is not None and plan(source) is not None, "only replayable cells"
    body: list[ast.stmt] = []
    index = 0
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Call) and isinstance(
                node.value.func, ast.Name):
            call = node.value
            node = ast.Expr(ast.Call(
                func=ast.Attribute(ast.Name(RECORDER, ast.Load()), "check", ast.Load()),
                args=[ast.Constant(index), ast.Constant(_name(source, call)),
                      _thunk(ast.Name(call.func.id, ast.Load())),
                      _thunk(ast.Tuple(list(call.args), ast.Load())),
                      _thunk(ast.Dict([k.arg and ast.Constant(k.arg) for k in call.keywords],
                                      [k.value for k in call.keywords]))],
                keywords=[]))
            index += 1
        body.append(node)
    inner = ast.unparse(ast.fix_missing_locations(ast.Module(body, [])))
    indented = "\n".join("    " + line if line else line for line in inner.splitlines())
    return (f"import llama_edu.grading.record as {RECORDER}\n"
            f"{RECORDER}.begin({grade_id!r}, {int(seed)})\n"
            f"try:\n{indented}\nfinally:\n    {RECORDER}.end()\n")


def _name(source: str, call: ast.Call) -> str:
    tree = _parse(source)
    aliases = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            aliases.update({a.asname or a.name: a.name for a in node.names})
    return aliases.get(call.func.id, call.func.id)


def _thunk(expression: ast.expr) -> ast.Lambda:
    return ast.Lambda(ast.arguments(posonlyargs=[], args=[], vararg=None, kwonlyargs=[],
                                    kw_defaults=[], kwarg=None, defaults=[]), expression)
