"""Lesson 15's checks beyond their contracts: the references they compare with are
transformers' and regex's, and a forbidden helper or a crash is reported in words."""

import pytest
import regex
import torch

from llama_edu.exercises import check_llama3_scaling, check_llama3_split
from llama_edu.exercises._common import rng
from llama_edu.exercises.llama3 import SPLIT_TEXTS, _random_texts, _scaling_cases
from llama_edu.positions import rope_inv_freq, scale_inv_freq
from llama_edu.tokenizer import LLAMA3_SPLIT, load_llama3_tokenizer

transformers = pytest.importorskip("transformers")
rope_utils = pytest.importorskip("transformers.modeling_rope_utils")


@pytest.mark.parametrize("case", range(7))
def test_the_scaling_checks_reference_is_transformers(case):
    head_dim, theta, scaling, _ = _scaling_cases(rng(0))[case]
    config = transformers.LlamaConfig(hidden_size=head_dim * 4, num_attention_heads=4,
                                      rope_parameters={**scaling, "rope_theta": theta})
    theirs, _ = rope_utils.ROPE_INIT_FUNCTIONS["llama3"](config, torch.device("cpu"))
    ours = scale_inv_freq(rope_inv_freq(head_dim, theta), scaling)
    torch.testing.assert_close(ours, theirs)
    torch.testing.assert_close(rope_inv_freq(head_dim, theta, scaling), theirs)


def test_the_split_checks_texts_cut_as_llama3s_real_tokenizer_cuts_them():
    words = load_llama3_tokenizer().words
    for text in SPLIT_TEXTS + _random_texts(rng(0)):
        assert regex.findall(LLAMA3_SPLIT, text) == words(text), text


def test_a_forbidden_helper_is_refused_in_words():
    def answer(inv_freq, scaling):
        return rope_inv_freq(2 * len(inv_freq), 1.0, scaling)

    with pytest.raises(AssertionError, match="uses rope_inv_freq, which this exercise asks"):
        check_llama3_scaling(answer)


def test_a_crash_is_reported_in_words():
    with pytest.raises(AssertionError, match="raised KeyError"):
        check_llama3_scaling(lambda inv_freq, scaling: scaling["low"])
    with pytest.raises(AssertionError, match="raised error: unknown property"):
        check_llama3_split(lambda text: regex.findall(r"\p{Foo}+", text))
