"""Choosing the compute precision, training and generating in it, and the FLOP counts that
MFU is measured with."""

import math

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


# ---------------------------------------------------------------------------------------
# training and generation in each precision, on the CPU

@pytest.fixture(scope="module")
def stories_data():
    from llama_edu.checkpoint import load_course_model
    from llama_edu.data import TokenDataset, held_out_stories

    _, tokenizer = load_course_model()
    text = held_out_stories("en", 120) + "\n\n" + held_out_stories("zh", 120)
    return TokenDataset.from_text(text, tokenizer)


def _run(precision, data, steps, preset="tiny", seed=0):
    from llama_edu.model import Llama
    from llama_edu.train import TrainConfig, train

    torch.manual_seed(seed)
    model = Llama(LlamaConfig.from_preset(preset))
    config = TrainConfig(steps=steps, batch_size=4, seq_len=32, lr=3e-3, warmup=10,
                         eval_every=0, eval_batches=2, precision=precision, seed=seed)
    return model, train(model, data, config, progress=False)


@pytest.mark.parametrize("name", ["fp32", "bf16", "fp16"])
def test_every_precision_trains_on_cpu_with_fp32_master_weights(name, stories_data, one_thread):
    model, history = _run(name, stories_data, steps=8)
    assert all(math.isfinite(x) for x in history.loss) and history.loss[-1] < history.loss[0]
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_bf16_loss_tracks_fp32_over_100_steps(stories_data, one_thread):
    """bf16 rounds every matmul input to 8 significant bits (u = 2^-8). A logit is a dot
    product of `dim` such terms, so it moves by about sqrt(dim) * u relative (errors add
    like a random walk): 2.2% for the tiny model. The loss is a difference of logits, so
    it moves by up to that share of itself; twice that is the bound for the mean of the
    last 20 steps, after 100 steps of training on the same batches."""
    from llama_edu.numerics import unit_roundoff

    _, fp32 = _run("fp32", stories_data, steps=100)
    _, bf16 = _run("bf16", stories_data, steps=100)
    last = {name: sum(h.loss[-20:]) / 20 for name, h in (("fp32", fp32), ("bf16", bf16))}
    dim = LlamaConfig.from_preset("tiny").dim
    bound = 2 * math.sqrt(dim) * unit_roundoff(torch.bfloat16) * last["fp32"]
    assert abs(last["bf16"] - last["fp32"]) <= bound, (last, bound)
    assert last["fp32"] < fp32.loss[0] - 2.0          # both actually trained


def test_fp16_without_loss_scaling_loses_small_gradients():
    tiny = torch.tensor(2.0 ** -26)                 # below fp16's smallest subnormal, 2^-24
    assert tiny.half() == 0 and (tiny * 2 ** 16).half() != 0   # the scaler's 65536 saves it
    assert torch.amp.GradScaler("cpu").get_scale() == 2.0 ** 16


def test_bf16_greedy_equals_fp32_wherever_the_gap_exceeds_bf16_rounding():
    from llama_edu.checkpoint import load_course_model
    from llama_edu.generate import generate
    from llama_edu.numerics import autocast_tolerance, compare_greedy, llama_depth

    model, tokenizer = load_course_model()
    depth = llama_depth(model.config.n_layers)
    for prompt in ("Once upon a time", "从前，在一座山里，", "The for statement"):
        ids = tokenizer.encode(prompt, bos=True)
        fp32 = generate(model, ids, 24, precision="fp32")
        bf16 = generate(model, ids, 24, precision="bf16")
        tokens = torch.tensor([ids + fp32])
        with torch.no_grad():
            logits = model(tokens)[0, len(ids) - 1:-1]               # (24, vocab)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                rounded = model(tokens)[0, len(ids) - 1:-1].float()
        tol = autocast_tolerance(torch.bfloat16, depth=depth, scale=float(logits.abs().max()))
        assert float((rounded - logits).abs().max()) <= tol["atol"]  # bf16 only rounds
        print(prompt, compare_greedy(fp32, bf16, logits, tol["atol"]))
