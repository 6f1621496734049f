"""Checks for the lessons' exercises, each with feedback in words.

A check calls the learner's function on several inputs, edge cases included, and compares
with the reference. It prints one line on success and raises AssertionError that says what
was expected, what came back and the likely mistake. It never writes to stderr, because
nbgrader scores a test cell with stderr output as failed.

The checks live in one submodule per lesson (`exercises.tokenizer`, `exercises.norms`, ...);
every `check_*` function is also importable from here: `from llama_edu.exercises import
check_rmsnorm`.
"""

import functools
import importlib
import pkgutil

from ._language import language, localize

__all__: list[str] = []


def _in_the_learners_language(check):
    """The check, its failure explained in the learner's language (see `_language`)."""
    @functools.wraps(check)
    def run(*args, **kwargs):
        try:
            return check(*args, **kwargs)
        except AssertionError as error:
            lang = language()
            if lang == "en":
                raise
            raise AssertionError(localize(str(error), lang)) from None
    return run

for _info in pkgutil.iter_modules(__path__):
    if _info.name.startswith("_"):
        continue
    _module = importlib.import_module(f"{__name__}.{_info.name}")
    for _name in getattr(_module, "__all__", dir(_module)):
        if _name.startswith("check_"):
            globals()[_name] = _in_the_learners_language(getattr(_module, _name))
            __all__.append(_name)
