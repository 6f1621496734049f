"""Tensor, data and sharded parallelism: 2-process gloo groups against the single-process
modules; the communication and memory arithmetic against the papers' formulas.

Spawning costs seconds, so one launch runs every 2-process comparison (module fixture) and
the tests below read its results.
"""

import pytest
import torch
from torch import nn

from llama_edu import numerics, parallel
from llama_edu.attention import Attention
from llama_edu.ffn import SwiGLU
from llama_edu.generate import generate
from llama_edu.model import Llama, LlamaConfig, count_parameters
from llama_edu.numerics import adam_drift
from llama_edu.parallel import (
    ColumnParallelLinear,
    ParallelEmbedding,
    RowParallelLinear,
    TensorParallelAttention,
    TensorParallelSwiGLU,
    attention_layout,
    cost,
    forward_backward,
    gather_state_dict,
    launch,
    parallelize_llama,
    tensor_parallel_traffic,
)
from llama_edu.parallel.demos import count_all_reduces, mlp_on_ranks, parallel_generate
from llama_edu.parallel.sharded import fsdp_run, zero_memory
from llama_edu.positions import rope_cos_sin

WORLD = 2
STEPS, LR = 3, 1e-2               # the data-parallel runs: AdamW steps and learning rate
GREEDY_PROMPTS, GREEDY_STEPS = [[1, 2, 3], [200, 17, 5, 99, 64], [7]], 12

# Tensor and data parallelism add the same products in another order: a row-parallel layer
# all-reduces p partial dot products, DDP averages the ranks' gradients. Reordering a
# float32 sum of n terms moves it by about sqrt(n) * u * sum|terms| (u = 2**-24; rounding
# errors add up like a random walk), and the micro model carries such errors through two
# layers, forward and backward: some ten reductions of n <= 256 terms, ~10 * 16 u = 1e-5 of
# the tensor's scale. That is torch.testing.assert_close's float32 atol (rtol 1.3e-6, atol
# 1e-5), which is made for values of order one; we scale atol by the tensor's largest
# magnitude, so small gradients are held as tightly as large ones.
RTOL32, ATOL32 = 1.3e-6, 1e-5


def _tolerance(expected: torch.Tensor) -> tuple[float, float]:
    """(rtol, atol) for a float32 result computed again with its sums reordered."""
    assert expected.dtype == torch.float32, expected.dtype
    return RTOL32, ATOL32 * float(expected.abs().max())


def _jobs():
    """(name, module, inputs, kwargs, style) for every 2-process comparison."""
    torch.manual_seed(0)
    x8, x16 = torch.randn(2, 3, 8), torch.randn(2, 5, 16)
    cos, sin = rope_cos_sin(5, 4)
    micro = Llama(LlamaConfig.from_preset("micro"))
    alibi = Llama(LlamaConfig.from_preset("micro", pos_encoding="alibi", attn_impl="plain"))
    tokens = torch.randint(0, 256, (2, 9))
    return [
        ("column", nn.Linear(8, 6, bias=True), (x8,), {}, "column"),
        ("row", nn.Linear(8, 6, bias=True), (x8,), {}, "row"),
        ("swiglu", SwiGLU(8, 12), (x8,), {}, None),
        ("swiglu_torch", SwiGLU(8, 12), (x8,), {}, "torch"),
        ("gqa_split", Attention(16, 4, 2), (x16, cos, sin), {"is_causal": True}, None),
        ("mqa_replicated", Attention(16, 4, 1, use_sdpa=False), (x16, cos, sin),
         {"is_causal": True}, None),
        ("mha_plain", Attention(16, 4, 4, use_sdpa=False), (x16, cos, sin),
         {"is_causal": True}, None),
        ("micro", micro, (tokens,), {}, None),
        ("micro_alibi", alibi, (tokens,), {}, None),
    ]


MLP_SOURCE = """
def tp_mlp(x, gate_weight, up_weight, down_weight, down_bias, rank, world_size, all_reduce):
    h = gate_weight.shape[0] // world_size
    rows = slice(rank * h, (rank + 1) * h)
    partial = (F.silu(x @ gate_weight[rows].T) * (x @ up_weight[rows].T)) @ down_weight[:, rows].T
    return all_reduce(partial) + down_bias
"""


def _mlp_inputs():
    generator = torch.Generator().manual_seed(3)
    return (torch.randn(2, 3, 8, generator=generator), torch.randn(12, 8, generator=generator),
            torch.randn(12, 8, generator=generator), torch.randn(8, 12, generator=generator),
            torch.randn(8, generator=generator))


def _count_jobs():
    """Attention of the micro model with its KV heads split (2 on 2 ranks) and copied
    (1, MQA, on 2 ranks)."""
    torch.manual_seed(0)
    config = LlamaConfig.from_preset("micro")
    x = torch.randn(2, 5, config.dim)
    cos, sin = rope_cos_sin(5, config.head_dim)
    return [(Attention(config.dim, config.n_heads, n_kv), (x, cos, sin), {"is_causal": True})
            for n_kv in (2, 1)]


@pytest.fixture(scope="module")
def runs():
    jobs = _jobs()
    torch.manual_seed(1)
    model = Llama(LlamaConfig.from_preset("micro"))
    tokens = torch.randint(0, 256, (4, 13))
    references = {name: forward_backward(module, *inputs, **kwargs)
                  for name, module, inputs, kwargs, _ in jobs}
    torch.manual_seed(2)
    greedy_model = Llama(LlamaConfig.from_preset("micro"))
    calls = [(parallel.parallel_forward_backward, ([job[1:] for job in jobs],)),
             (parallel.data_parallel_run, (model, tokens, STEPS, LR)),
             (parallel_generate, (greedy_model, GREEDY_PROMPTS, GREEDY_STEPS)),
             (fsdp_run, (model, tokens, STEPS, LR)),
             (count_all_reduces, (_count_jobs(),)),
             (mlp_on_ranks, (MLP_SOURCE, "tp_mlp", *_mlp_inputs())),
             (mlp_on_ranks, (None, "tp_mlp", *_mlp_inputs()))]
    both, data_parallel, greedy, sharded, counted, mlp_learner, mlp_package = zip(
        *launch(parallel.run_in_sequence, WORLD, calls), strict=True)
    return {"references": references, "names": [job[0] for job in jobs],
            "sharded": sharded, "counted": counted, "mlp": (mlp_learner, mlp_package),
            "ranks": [dict(zip([job[0] for job in jobs], results, strict=True))
                      for results in both],
            "data_parallel": data_parallel,
            "single": parallel.single_process_run(model, tokens, STEPS, LR),
            "greedy_model": greedy_model, "greedy": greedy}


def _assert_close(actual, expected, what):
    rtol, atol = _tolerance(expected)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=atol,
                               msg=lambda message: f"{what}: {message}")


@pytest.mark.parametrize("name", [job[0] for job in _jobs()])
def test_two_ranks_match_the_single_process_module_forward_and_backward(runs, name):
    expected = runs["references"][name]
    for rank, results in enumerate(runs["ranks"]):
        got = results[name]
        _assert_close(got["output"], expected["output"], f"{name} rank {rank} output")
        assert len(got["input_grads"]) == len(expected["input_grads"])
        for a, b in zip(got["input_grads"], expected["input_grads"], strict=True):
            _assert_close(a, b, f"{name} rank {rank} input gradient")
        assert set(got["grads"]) == set(expected["grads"])
        for key in expected["grads"]:
            _assert_close(got["grads"][key], expected["grads"][key], f"{name} {key} grad")


def test_the_whole_model_gives_the_same_logits_and_every_weight_gradient(runs):
    expected, got = runs["references"]["micro"], runs["ranks"][1]["micro"]
    assert got["output"].shape == (2, 9, 256)
    assert len(got["grads"]) == len(dict(Llama(LlamaConfig.from_preset("micro"))
                                         .named_parameters()))
    _assert_close(got["output"], expected["output"], "micro logits")


def test_data_parallel_gradients_equal_the_big_batch_gradient(runs):
    single = runs["single"]
    assert len(single["step_grads"]) == STEPS
    for result in runs["data_parallel"]:
        for key, grad in single["grads"].items():
            _assert_close(result["manual_grads"][key], grad, f"all-reduced {key}")
            _assert_close(result["ddp_grads"][key], grad, f"DDP {key}")
        for key, weight in single["weights"].items():
            rtol, atol = _tolerance(weight)      # each step's gradients agree to _tolerance
            drift = adam_drift([g[key] for g in single["step_grads"]], LR,
                               lambda g: dict(zip(("rtol", "atol"), _tolerance(g), strict=True)))
            bound = drift + atol + rtol * weight.abs()
            excess = (result["weights"][key] - weight).abs() / bound
            assert float(excess.max()) <= 1, (
                f"{key} after {STEPS} AdamW steps: off by "
                f"{float((result['weights'][key] - weight).abs().max()):.3g}, "
                f"{float(excess.max()):.2f} times what rounding in the gradients explains")


def _top2_gaps(model: Llama, prompt: list[int], new_ids: list[int]) -> list[tuple[float, float]]:
    """At each greedy step: (top-1 minus top-2 logit, the logits' tolerance there)."""
    ids = torch.tensor([prompt + new_ids])
    with torch.no_grad():
        logits = model(ids)[0, len(prompt) - 1:-1]           # (steps, vocab): each step's
    rtol, atol = _tolerance(logits)
    top2 = logits.topk(2, dim=-1).values                     # (steps, 2)
    return [(float(a - b), atol + rtol * abs(float(a))) for a, b in top2]


def test_tensor_parallel_greedy_decoding_picks_the_single_process_tokens(runs):
    """The same ids token by token, KV cache and left padding included. Where the top two
    logits are closer than the two runs may differ (each by the tolerance, so twice it),
    either token is right: that step is a tie, and the rows part there legitimately."""
    model = runs["greedy_model"]
    expected = generate(model, GREEDY_PROMPTS, GREEDY_STEPS)
    checked, ties = 0, []
    for row, (prompt, want) in enumerate(zip(GREEDY_PROMPTS, expected, strict=True)):
        assert len(want) == GREEDY_STEPS
        for step, (gap, tol) in enumerate(_top2_gaps(model, prompt, want)):
            if gap <= 2 * tol:
                ties.append(f"row {row} step {step}: top-2 gap {gap:.2g} <= 2 x {tol:.2g}")
                break
            for rank, got in enumerate(runs["greedy"]):
                assert got[row][step] == want[step], (
                    f"rank {rank}, prompt {prompt}, step {step}: token {got[row][step]}, "
                    f"expected {want[step]} (top-2 logit gap {gap:.3g}, no tie)")
            checked += 1
    assert checked >= GREEDY_STEPS * len(GREEDY_PROMPTS) // 2, (
        f"near ties left only {checked} steps to compare ({'; '.join(ties)}); pick prompts "
        "whose greedy steps are decided by more than rounding")


def test_a_failing_rank_raises_its_own_error_in_the_parent():
    with pytest.raises(ValueError, match="style='column' or 'row'"):
        launch(parallel.parallel_forward_backward, 1,
               [(nn.Linear(2, 2), (torch.randn(1, 2),), {}, "diagonal")])


# --- single process: sharding arithmetic, layouts, errors (no spawn) ---------------------


def test_shards_are_the_right_slices_and_world_size_one_is_the_plain_layer():
    torch.manual_seed(0)
    linear = nn.Linear(8, 6, bias=True)
    col = ColumnParallelLinear.from_linear(linear, rank=1, world_size=2)
    row = RowParallelLinear.from_linear(linear, rank=1, world_size=2)
    assert torch.equal(col.weight, linear.weight[3:]) and torch.equal(col.bias, linear.bias[3:])
    assert torch.equal(row.weight, linear.weight[:, 4:]) and torch.equal(row.bias, linear.bias)
    x = torch.randn(3, 8)
    for layer in (ColumnParallelLinear.from_linear(linear, rank=0, world_size=1),
                  RowParallelLinear.from_linear(linear, rank=0, world_size=1)):
        torch.testing.assert_close(layer(x), linear(x))


def test_column_then_row_on_paper_equals_the_full_product():
    torch.manual_seed(0)
    x, a, b = torch.randn(4, 8), torch.randn(12, 8), torch.randn(8, 12)
    pieces = [(x @ a_r.T) @ b_r.T for a_r, b_r in zip(a.chunk(3, 0), b.chunk(3, 1),
                                                        strict=True)]
    torch.testing.assert_close(sum(pieces), (x @ a.T) @ b.T)


def test_a_whole_model_at_world_size_one_gathers_back_to_the_same_weights():
    torch.manual_seed(0)
    model = Llama(LlamaConfig.from_preset("micro"))
    tp = parallelize_llama(model, rank=0, world_size=1)
    assert isinstance(tp.embed_tokens, ParallelEmbedding)
    assert isinstance(tp.layers[0].self_attn, TensorParallelAttention)
    assert isinstance(tp.layers[0].mlp, TensorParallelSwiGLU)
    full = gather_state_dict(tp)
    assert full.keys() == model.state_dict().keys()
    for key, value in model.state_dict().items():
        assert torch.equal(full[key], value), key
    tokens = torch.randint(0, 256, (1, 7))
    torch.testing.assert_close(tp(tokens), model(tokens))


@pytest.mark.parametrize("n_heads, n_kv_heads, world, expected", [
    (4, 2, 2, (2, 1, 1)),        # micro: KV heads split
    (4, 1, 2, (2, 1, 2)),        # MQA: the KV head copied to both ranks
    (32, 8, 16, (2, 1, 2)),      # Llama-2-70B on 16 GPUs: each KV head on 2 ranks
    (64, 8, 8, (8, 1, 1)),       # Llama-2-70B on 8 GPUs
    (32, 32, 4, (8, 8, 1)),      # Llama-2-7B (MHA)
])
def test_attention_layout_keeps_query_groups_with_their_kv_heads(n_heads, n_kv_heads, world,
                                                                 expected):
    assert attention_layout(n_heads, n_kv_heads, world) == expected


@pytest.mark.parametrize("n_kv_heads, world, local_kv", [(2, 2, 1), (1, 2, 1), (4, 2, 2),
                                                         (2, 1, 2)])
def test_a_shard_caches_only_its_own_kv_heads(n_kv_heads, world, local_kv):
    attn = TensorParallelAttention(16, 4, n_kv_heads, rank=world - 1, world_size=world)
    assert attn.make_cache(3, 8).k.shape == (3, 8, local_kv, 4)


def test_clear_errors_for_sizes_the_world_size_does_not_divide():
    with pytest.raises(ValueError, match=r"out_features \(7\) must be divisible by the world "
                                         r"size \(2\)"):
        ColumnParallelLinear(8, 7, rank=0, world_size=2)
    with pytest.raises(ValueError, match=r"in_features \(9\) must be divisible"):
        RowParallelLinear(9, 4, rank=0, world_size=2)
    with pytest.raises(ValueError, match=r"hidden_dim \(86\) must be divisible"):
        TensorParallelSwiGLU(32, 86, rank=0, world_size=4)
    with pytest.raises(ValueError, match=r"n_heads \(4\) must be divisible by the world size "
                                         r"\(3\).*\[1, 2, 4\]"):
        attention_layout(4, 2, 3)
    with pytest.raises(ValueError, match=r"n_kv_heads \(3\) and the world size \(2\)"):
        attention_layout(6, 3, 2)
    with pytest.raises(ValueError, match="n_heads"):
        parallelize_llama(Llama(LlamaConfig.from_preset("micro")), rank=0, world_size=3)
    with pytest.raises(ValueError, match=r"rank must be an integer in \[0, 2\)"):
        ColumnParallelLinear(8, 6, rank=2, world_size=2)
    with pytest.raises(ValueError, match="ffn_type='swiglu'"):
        parallelize_llama(Llama(LlamaConfig.from_preset("micro", ffn_type="gelu")), 0, 1)
    with pytest.raises(TypeError, match="single-process"):
        TensorParallelAttention.from_attention(TensorParallelAttention(16, 4, 2, rank=0,
                                                                       world_size=2))
    with pytest.raises(ValueError, match=r"n_heads \(4\) must be divisible by n_kv_heads "
                                         r"\(3\)"):
        TensorParallelAttention(16, 4, 3, rank=0, world_size=1)


def test_a_sharded_layer_outside_its_process_group_says_how_to_run_it():
    layer = ColumnParallelLinear(8, 6, rank=0, world_size=2)
    with pytest.raises(ValueError, match="launch or torchrun"):
        layer(torch.randn(2, 8))


def test_loading_a_wrong_state_dict_is_refused():
    ffn = TensorParallelSwiGLU(8, 12, rank=0, world_size=2)
    with pytest.raises(ValueError, match="lacks"):
        parallel.load_full_state_dict(ffn, {"gate_proj.weight": torch.zeros(12, 8)})
    with pytest.raises(ValueError, match="shard"):
        ffn.gate_proj.load_full_("weight", torch.zeros(12, 6))


def test_init_distributed_without_torchrun_is_a_single_process(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    rank, world_size, device = parallel.init_distributed()
    assert (rank, world_size) == (0, 1) and isinstance(device, torch.device)
    assert parallel.is_main_process()
    parallel.cleanup()  # nothing to leave: no error


def test_init_distributed_explains_a_half_set_environment(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("RANK", raising=False)
    with pytest.raises(ValueError, match="RANK is not"):
        parallel.init_distributed()
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(ValueError, match="MASTER_ADDR is not set"):
        parallel.init_distributed()
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ValueError, match=r"RANK=5 must lie in \[0, WORLD_SIZE=2\)"):
        parallel.init_distributed()


def test_launch_refuses_what_spawned_processes_cannot_import():
    def local(rank, world_size):
        return rank

    with pytest.raises(ValueError, match="inside a function"):
        launch(local, 2)
    with pytest.raises(ValueError, match="world_size must be a positive integer"):
        launch(parallel.hello_ranks, 0)


def test_traffic_is_two_all_reduces_of_dim_values_per_layer_and_token():
    traffic = tensor_parallel_traffic(LlamaConfig.from_preset("llama2-7b"), world_size=8)
    assert traffic["values_per_token_per_layer"] == 2 * 4096
    assert traffic["bytes_per_token"] == 2 * 4096 * 2 * 32          # bf16, 32 layers
    assert traffic["sent_per_rank_per_token"] == pytest.approx(2 * 4096 * 2 * 32 * 2 * 7 / 8)
    assert tensor_parallel_traffic(LlamaConfig.from_preset("micro"), 1)[
        "sent_per_rank_per_token"] == 0


# --- sharded data parallelism, hidden costs, a learner's MLP: on 2 processes --------------


def test_fsdp_and_zero_redundancy_train_the_single_process_weights(runs):
    """fully_shard (ZeRO-3) and ZeroRedundancyOptimizer (ZeRO-1), each on 2 gloo ranks with
    half the batch, end with the weights of one process on the whole batch."""
    single = runs["single"]
    n_params = sum(w.numel() for w in single["weights"].values())
    for result in runs["sharded"]:
        for kind in ("fsdp_weights", "zero1_weights"):
            assert set(result[kind]) == set(single["weights"])
            for key, weight in single["weights"].items():
                rtol, atol = _tolerance(weight)
                drift = adam_drift([g[key] for g in single["step_grads"]], LR,
                                   lambda g: dict(zip(("rtol", "atol"), _tolerance(g),
                                                      strict=True)))
                excess = (result[kind][key] - weight).abs() / (drift + atol + rtol * weight.abs())
                assert float(excess.max()) <= 1, f"{kind} {key}"
        assert result["fsdp_params_kept"] == result["fsdp_moments"]
        assert result["fsdp_params_kept"] <= n_params / WORLD + 64   # 1/p, up to padding
    assert sum(r["fsdp_params_kept"] for r in runs["sharded"]) == n_params
    assert sum(r["zero1_moments"] for r in runs["sharded"]) == n_params   # Adam's m, split


def test_copied_kv_heads_cost_two_more_backward_all_reduces_per_layer(runs):
    config = LlamaConfig.from_preset("micro")
    for split, copied in runs["counted"]:
        assert split["forward"]["calls"] == copied["forward"]["calls"] == 1      # after o_proj
        assert split["backward"]["calls"] == 1                                    # f, on entry
        extra = cost.kv_replica_all_reduces(
            LlamaConfig.from_preset("micro", n_kv_heads=1), WORLD)
        assert copied["backward"]["calls"] - split["backward"]["calls"] == \
            extra["extra_all_reduces_per_layer"] == 2
        assert cost.kv_replica_all_reduces(config, WORLD)["extra_all_reduces_per_layer"] == 0
        kv_weight = config.head_dim * config.dim                     # one KV head's k_proj
        assert copied["backward"]["values"] - split["backward"]["values"] == 2 * kv_weight


def test_a_learner_style_mlp_from_source_runs_on_two_ranks(runs):
    x, gate, up, down, bias = _mlp_inputs()
    expected = torch.nn.functional.linear(
        torch.nn.functional.silu(x @ gate.T) * (x @ up.T), down) + bias
    for results in runs["mlp"]:
        for out in results:
            _assert_close(out, expected, "tensor-parallel MLP")


# --- the arithmetic: ring all-reduce, ZeRO, sequence and pipeline parallelism -------------


@pytest.mark.parametrize("world", [1, 2, 3, 4, 8])
def test_a_simulated_ring_all_reduce_sums_and_sends_2_p_minus_1_over_p(world):
    generator = torch.Generator().manual_seed(world)
    tensors = [torch.randn(24, 5, generator=generator) for _ in range(world)]
    results, sent = cost.ring_all_reduce(tensors)
    total = torch.stack(tensors).sum(0)
    for result in results:                          # the same sum, in the ring's order
        numerics.assert_close(result, total, reduction=world)
    n_bytes = 24 * 5 * 4
    assert sent == [2 * (world - 1) * n_bytes // world] * world           # exact counts
    assert sent[0] == cost.ring_fraction(world) * n_bytes
    assert cost.data_parallel_traffic(n_bytes // 4, world, 4) == sent[0]


def test_an_uneven_ring_still_sends_2_p_minus_1_chunks_of_the_whole():
    tensors = [torch.ones(7) * r for r in range(3)]
    results, sent = cost.ring_all_reduce(tensors)
    assert all(torch.equal(r, torch.full((7,), 3.0)) for r in results)
    assert sum(sent) == 2 * (3 - 1) * 7 * 4


def test_zero_memory_matches_the_papers_figure_1():
    """Rajbhandari et al., 2020, Fig. 1: a 7.5B model, K = 12, N = 64 data-parallel GPUs."""
    gb = {stage: b / 1e9 for stage, b in zero_memory(7.5e9, 64).items()}
    assert gb["DDP"] == pytest.approx(120)
    assert gb["ZeRO-1"] == pytest.approx(31.4, abs=0.05)
    assert gb["ZeRO-2"] == pytest.approx(16.6, abs=0.05)
    assert gb["ZeRO-3"] == pytest.approx(1.9, abs=0.05)
    seven_b = zero_memory(count_parameters(LlamaConfig.from_preset("llama2-7b")), 8)
    assert zero_memory(7e9, 1)["DDP"] == 112e9 and seven_b["DDP"] > 80e9    # no 80 GB GPU
    assert seven_b["ZeRO-3"] < seven_b["ZeRO-2"] < seven_b["ZeRO-1"] < 80e9
    assert zero_memory(1e9, 1) == {k: 16e9 for k in ("DDP", "ZeRO-1", "ZeRO-2", "ZeRO-3")}


def test_sequence_parallelism_sends_what_tensor_parallelism_sends():
    config = LlamaConfig.from_preset("llama2-70b")
    for world in (2, 4, 8):
        t = cost.sequence_parallel_traffic(config, world, tokens=4096)
        assert t["sequence_parallel"] == pytest.approx(t["tensor_parallel"])
        assert t["stored_activations_sp"] * world == t["stored_activations_tp"]


@pytest.mark.parametrize("stages, micro_batches", [(1, 1), (2, 1), (4, 4), (4, 16), (8, 3)])
def test_the_bubble_formula_counts_the_idle_slots_of_a_gpipe_schedule(stages, micro_batches):
    grid = cost.gpipe_schedule(stages, micro_batches)
    for stage, row in enumerate(grid):
        assert [j for j in row if j is not None] == list(range(micro_batches))
        assert row.index(0) == stage                            # one slot later per stage
    idle = sum(slot is None for row in grid for slot in row)
    assert idle / (len(grid) * len(grid[0])) == pytest.approx(
        cost.pipeline_bubble(stages, micro_batches))
    assert cost.pipeline_traffic(1, 4096, 8192) == 4096 * 8192 * 2


def test_the_alpha_beta_model_and_attention_scores():
    assert cost.all_reduce_seconds(1e9, 1, 100) == 0
    assert cost.all_reduce_seconds(8e9, 8, 100, latency_s=1e-5) == pytest.approx(
        14 * 1e-5 + 1.75 * 8e9 / 100e9)
    config = LlamaConfig.from_preset("llama2-7b")
    assert cost.attention_score_flops(config, 4096) == 4 * 4096 * 4096 * 32
    compute, comm = parallel.tensor_parallel_times(config, 8, 450)
    same, with_latency = parallel.tensor_parallel_times(config, 8, 450, latency_s=5e-6)
    assert same == compute and with_latency == pytest.approx(comm + 2 * 2 * 7 * 5e-6)
