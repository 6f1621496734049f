"""Lesson 02's checks beyond their contract (tests/exercise_contracts/positions.py): a crash
is reported in words."""

import pytest
import torch

from llama_edu.exercises import check_rope_pair


def test_rope_pair_crash_is_reported_in_words():
    with pytest.raises(AssertionError, match="raised TypeError"):
        check_rope_pair(lambda p, m, i, d, t=1e4: torch.cos(m))
