"""Lesson 03's checks beyond their contract (tests/exercise_contracts/norms.py): a crash is
reported in words, and every spelling of an answer gets that answer's feedback."""

import pytest

from llama_edu.exercises import check_rmsnorm, check_shift_invariant
from llama_edu.norms import RMSNorm, rms_norm


def test_a_crashing_rmsnorm_is_reported_in_words():
    def crashes(x, weight, eps):
        return x / undefined_name  # noqa: F821
    with pytest.raises(AssertionError, match="raised NameError"):
        check_rmsnorm(crashes)


@pytest.mark.parametrize("spelling", ["RMS norm", lambda: "rmsnorm", RMSNorm, rms_norm],
                         ids=["words", "a function", "the class", "the function"])
def test_every_spelling_of_rmsnorm_gets_its_feedback_with_the_measured_gap(spelling):
    with pytest.raises(AssertionError) as canonical:
        check_shift_invariant("rmsnorm")
    with pytest.raises(AssertionError, match=r"not RMSNorm: adding 5 to every entry moves "
                                             r"RMSNorm's output by up to \d\.\d\d") as other:
        check_shift_invariant(spelling)
    assert str(other.value) == str(canonical.value)
