"""What one exercise check promises, as data the contract test runs."""

from __future__ import annotations

from dataclasses import dataclass, field


def not_written(*args, **kwargs):
    """An answer cell as nbgrader releases it: the solution region became this line."""
    raise NotImplementedError()


@dataclass
class Contract:
    """references: answers that pass (functions written the way a learner would, or values
    for a check that takes a value), each printing one line.
    mistakes: (wrong answer, regex) pairs, one per classic mistake; the check must reject
    each with an AssertionError whose message matches its regex, and no two share a message.
    stub: what the untouched answer cell leaves behind; the check must say "not written yet".
    passed: a regex the one success line must match, where the line's content matters.
    """

    references: list = field(default_factory=list)
    mistakes: list[tuple[object, str]] = field(default_factory=list)
    stub: object = not_written
    passed: str = ""
