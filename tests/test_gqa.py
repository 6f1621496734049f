"""Lesson 07's explorer and its parameter formula, and the grouped-read check's guard."""

import pytest
import torch

from llama_edu.exercises import check_gqa_attention
from llama_edu.model import LlamaConfig, count_parameters
from llama_edu.widgets.gqa import draw_gqa, gqa_explorer, head_reads, kv_head_choices, weight_count


@pytest.mark.parametrize("preset", ["micro", "tiny", "small", "llama2-7b", "llama3.2-1b"])
@pytest.mark.parametrize("n_kv_heads", [1, None])
def test_weight_count_equals_count_parameters(preset, n_kv_heads):
    config = LlamaConfig.from_preset(preset)
    if n_kv_heads is not None:
        config = LlamaConfig.from_preset(preset, n_kv_heads=n_kv_heads)
    assert weight_count(config) == count_parameters(config)


def test_head_reads_groups_neighbouring_query_heads():
    reads = head_reads(8, 2)
    assert reads.sum(0).tolist() == [1] * 8                    # each query head reads one
    assert reads[0, :4].tolist() == [1] * 4 and reads[1, 4:].tolist() == [1] * 4
    assert kv_head_choices(40) == [1, 2, 4, 5, 8, 10, 20, 40]
    with pytest.raises(ValueError, match="must divide"):
        head_reads(8, 3)


def test_explorer_redraws_and_offers_only_divisors():
    explorer = gqa_explorer()
    first = next(iter(explorer.controls.values()))
    before, redraws = explorer._png, explorer.redraws
    first.value = 64
    assert explorer.redraws > redraws and explorer._png != before
    explorer.controls["preset"].value = "llama2-13b"
    assert list(explorer.controls["n_kv_heads"].options) == kv_head_choices(40)
    assert explorer.controls["n_kv_heads"].value == 40
    draw_gqa(n_kv_heads=3, preset="llama2-7b", context=512)   # clamped to a divisor (2)


def test_gqa_check_refuses_a_broadcasting_matmul_only_inside_the_learners_call():
    def broadcast(q, k, v):
        b, h, t, d = q.shape
        q5 = q.view(b, k.shape[1], h // k.shape[1], t, d)
        return (q5 @ k[:, :, None].transpose(-2, -1)).sum()

    with pytest.raises(AssertionError, match="broadcasts one operand"):
        check_gqa_attention(broadcast)
    q = torch.randn(1, 1, 4, 3, 2)
    assert (q @ torch.randn(1, 2, 1, 2, 3)).shape == (1, 2, 4, 3, 3)  # no guard left behind
