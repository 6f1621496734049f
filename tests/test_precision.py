"""Choosing the compute precision, and the FLOP counts that MFU is measured with."""

import pytest
import torch

from llama_edu import precision
from llama_edu.model import LlamaConfig, count_parameters
from llama_edu.precision import choose_precision
from llama_edu.profiling import matmul_flops, mfu, train_flops_per_token


@pytest.mark.parametrize("name, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16),
                                         ("fp16", torch.float16)])
def test_an_explicit_precision_is_taken_as_asked(name, dtype):
    chosen = choose_precision(name, "cpu")
    assert chosen.dtype == dtype and chosen.reason == "asked for"
    assert (chosen.grad_scaler() is not None) == (name == "fp16")  # only fp16 scales the loss


def test_auto_follows_the_cpus_bf16_instructions(monkeypatch):
    monkeypatch.setattr(precision, "cpu_bf16_flags", lambda: {"amx_bf16"})
    chosen = choose_precision("auto", "cpu")
    assert chosen.name == "bf16" and "AMX-BF16" in chosen.reason
    monkeypatch.setattr(precision, "cpu_bf16_flags", set)
    chosen = choose_precision("auto", "cpu")
    assert chosen.name == "fp32" and "no bf16 instructions" in chosen.reason


def test_autocast_runs_matmuls_in_the_chosen_dtype_and_fp32_is_untouched():
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with choose_precision("bf16", "cpu").autocast():
        assert (a @ b).dtype == torch.bfloat16
    with choose_precision("fp32", "cpu").autocast():
        assert (a @ b).dtype == torch.float32


def test_unknown_precision_says_what_to_use():
    with pytest.raises(ValueError, match="one of auto, fp32, bf16, fp16"):
        choose_precision("int8")


def test_flops_per_token_is_six_n_plus_the_attention_term():
    config = LlamaConfig.from_preset("llama2-7b")
    n = count_parameters(config) - config.vocab_size * config.dim  # all but the input table
    assert train_flops_per_token(config, 0) == 6 * n
    attention = train_flops_per_token(config, 4096) - 6 * n
    assert attention == 12 * 32 * 4096 * 4096
    # Llama 2 7B, 2T tokens: about 9e22 FLOPs with the attention term, 8e22 without
    assert 8e22 < train_flops_per_token(config, 4096) * 2e12 < 1e23


def test_mfu_is_achieved_over_peak_flops():
    assert mfu(1000.0, 6e6, 1.2e10) == pytest.approx(0.5)
    assert matmul_flops(torch.float32, size=256, repeats=1) > 0
