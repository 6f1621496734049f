"""Lesson 02's checks beyond their contract (tests/exercise_contracts/positions.py): a crash
is reported in words."""

import pytest
import torch

from llama_edu.exercises import check_rope_pair


def test_rope_pair_crash_is_reported_in_words():
    with pytest.raises(AssertionError, match="raised TypeError"):
        check_rope_pair(lambda p, m, i, d, t=1e4: torch.cos(m))


def test_a_crashing_alibi_mask_is_reported_in_words():
    from llama_edu.exercises import check_alibi_mask

    def crashes(slopes, seq_len, start_pos):
        return slopes[:, None] @ torch.ones(seq_len + 1, start_pos + seq_len)
    with pytest.raises(AssertionError, match="raised RuntimeError"):
        check_alibi_mask(crashes)

