"""Lesson 03's checks beyond their contract (tests/exercise_contracts/norms.py): a crash is
reported in words, and the block check leaves the global seed alone."""

import pytest

from llama_edu.exercises import check_decoder_block, check_rmsnorm


def test_a_crashing_rmsnorm_is_reported_in_words():
    def crashes(x, weight, eps):
        return x / undefined_name  # noqa: F821
    with pytest.raises(AssertionError, match="raised NameError"):
        check_rmsnorm(crashes)


def test_a_crashing_block_is_reported_in_words():
    def crashes(x, attn, ffn, attn_norm, ffn_norm, placement):
        return attn(x) @ x                       # (b, s, d) @ (b, s, d): shapes do not fit
    with pytest.raises(AssertionError, match="raised RuntimeError"):
        check_decoder_block(crashes)


def test_the_block_check_leaves_the_global_seed_alone():
    import torch

    def ok(x, attn, ffn, attn_norm, ffn_norm, placement):
        h = x + attn(attn_norm(x)) if placement == "pre" else attn_norm(x + attn(x))
        return h + ffn(ffn_norm(h)) if placement == "pre" else ffn_norm(h + ffn(h))

    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    check_decoder_block(ok)
    assert torch.equal(torch.random.get_rng_state(), before)
