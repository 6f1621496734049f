"""Lesson 04's checks beyond their contract (tests/exercise_contracts/ffn.py)."""

import pytest


def test_the_gqa_count_and_the_width_check_agree_on_llama2_70b():
    from llama_edu.exercises import check_ffn_width
    from llama_edu.model import LlamaConfig, count_parameters

    config = LlamaConfig.from_preset("llama2-70b")
    assert count_parameters(config) == 68_976_648_192 and config.ffn_hidden_dim == 28672

    def width_of_7b_everywhere(total, dim, n_layers, n_heads, n_kv_heads, vocab_size):
        return 11008
    with pytest.raises(AssertionError, match="expected 28672"):
        check_ffn_width(width_of_7b_everywhere)
