"""Checkpoint conversion: parity with transformers and with Meta's layout, and clear errors."""

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from llama_edu.interop import (
    config_from_hf,
    from_hf_model,
    load_hf,
    load_meta,
    save_hf,
    save_meta,
    to_hf_model,
)
from llama_edu.model import Llama, LlamaConfig

transformers = pytest.importorskip("transformers")
transformers.logging.set_verbosity_error()


def tiny(**fields) -> LlamaConfig:
    base = dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=101, multiple_of=16,
                max_seq_len=64)
    return LlamaConfig(**{**base, **fields})


def random_model(config: LlamaConfig, seed: int = 0) -> Llama:
    """Random weights large enough that attention is far from uniform (so RoPE and masks
    matter), norms included (all-ones gains would hide a swapped norm)."""
    torch.manual_seed(seed)
    model = Llama(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.uniform_(0.5, 1.5)
            elif name.startswith("embed_tokens"):
                param.normal_(0.0, 1.0)
            else:                                      # (out, in): unit-scale outputs
                param.normal_(0.0, param.shape[1] ** -0.5)
    return model


def hf_logits(hf_model, tokens, **kwargs):
    with torch.no_grad():
        return hf_model(tokens, **kwargs).logits


def greedy(model: Llama, prompt: torch.Tensor, steps: int) -> torch.Tensor:
    """Greedy decoding (argmax) with our KV cache.   (b, p) -> (b, steps) new ids"""
    cache = model.make_cache(prompt.shape[0], prompt.shape[1] + steps)
    with torch.no_grad():
        logits = model(prompt, 0, cache)
        new = [logits[:, -1].argmax(-1, keepdim=True)]
        for pos in range(prompt.shape[1], prompt.shape[1] + steps - 1):
            new.append(model(new[-1], pos, cache)[:, -1].argmax(-1, keepdim=True))
    return torch.cat(new, dim=1)


def hf_greedy(hf_model, prompt: torch.Tensor, steps: int) -> torch.Tensor:
    out = hf_model.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                            max_new_tokens=steps, min_new_tokens=steps, eos_token_id=None,
                            pad_token_id=0)
    return out[:, prompt.shape[1]:]


CONFIGS = {
    "mha": tiny(n_kv_heads=4),
    "gqa": tiny(),
    "mqa": tiny(n_kv_heads=1),
    "rope_theta_500000": tiny(rope_theta=500_000.0),
    "odd_vocab_257": tiny(vocab_size=257, n_heads=2, n_kv_heads=1),
    "odd_vocab_3_tied": tiny(vocab_size=3, tie_word_embeddings=True),
    "head_dim_4_eps": tiny(dim=24, n_heads=6, n_kv_heads=3, norm_eps=1e-6),
}


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_logits_equal_transformers_on_the_same_random_weights(name, attn):
    model = random_model(CONFIGS[name])
    hf_model = to_hf_model(model, attn_implementation=attn)
    assert isinstance(hf_model, transformers.LlamaForCausalLM)
    assert hf_model.config.num_key_value_heads == model.config.n_kv_heads
    tokens = torch.randint(0, model.config.vocab_size, (2, 13))
    with torch.no_grad():
        ours = model(tokens)
    torch.testing.assert_close(ours, hf_logits(hf_model, tokens), rtol=1e-5, atol=1e-5)


def test_left_padded_batch_equals_transformers_on_the_real_positions():
    model = random_model(tiny())
    hf_model = to_hf_model(model)
    tokens = torch.randint(1, 101, (3, 10))
    mask = torch.ones_like(tokens)
    mask[0, :4] = 0                                    # left padding, as generate expects
    mask[1, :1] = 0
    tokens[mask == 0] = 0
    position_ids = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)   # what HF computes
    with torch.no_grad():
        ours = model(tokens, attention_mask=mask, position_ids=position_ids)
    theirs = hf_logits(hf_model, tokens, attention_mask=mask, position_ids=position_ids)
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], rtol=1e-5, atol=1e-5)
    # and each padded row equals the same sentence run alone without padding
    with torch.no_grad():
        alone = model(tokens[:1, 4:])
    torch.testing.assert_close(ours[0, 4:], alone[0], rtol=1e-5, atol=1e-5)


def test_save_hf_loads_in_transformers_and_generates_the_same_tokens(tmp_path):
    model = random_model(tiny(vocab_size=211))
    save_hf(model, tmp_path)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert type(hf_model).__name__ == "LlamaForCausalLM"
    prompt = torch.randint(0, 211, (2, 6))
    torch.testing.assert_close(model(prompt), hf_logits(hf_model, prompt), rtol=1e-5, atol=1e-5)
    ours = greedy(model, prompt, 12)
    assert torch.equal(ours, hf_greedy(hf_model, prompt, 12))
    assert len(set(ours[0].tolist())) > 1, "a degenerate test: the model repeats one token"


def test_save_pretrained_loads_with_load_hf_and_generates_the_same_tokens(tmp_path):
    torch.manual_seed(3)
    hf_config = transformers.LlamaConfig(
        vocab_size=150, hidden_size=48, intermediate_size=100, num_hidden_layers=2,
        num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=80,
        rms_norm_eps=1e-5, rope_theta=1234.0, initializer_range=0.2)
    hf_model = transformers.LlamaForCausalLM(hf_config).eval()
    hf_model.save_pretrained(tmp_path)
    model = load_hf(tmp_path)
    assert model.config.hidden_dim == 100 and model.config.rope_theta == 1234.0
    assert model.config.max_seq_len == 80 and model.config.n_kv_heads == 2
    prompt = torch.randint(0, 150, (2, 7))
    torch.testing.assert_close(model(prompt), hf_logits(hf_model, prompt), rtol=1e-5, atol=1e-5)
    assert torch.equal(greedy(model, prompt, 10), hf_greedy(hf_model, prompt, 10))


def test_from_hf_model_and_to_hf_model_are_inverse():
    model = random_model(tiny(tie_word_embeddings=True))
    back = from_hf_model(to_hf_model(model))
    assert back.config == model.config
    assert back.lm_head.weight is back.embed_tokens.weight
    for (name, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items(),
                                 strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("tied", [False, True])
def test_save_hf_round_trip_keeps_config_weights_and_tying(tmp_path, tied):
    model = random_model(tiny(tie_word_embeddings=tied, ffn_dim_multiplier=1.3))
    save_hf(model, tmp_path)
    values = json.loads((tmp_path / "config.json").read_text(encoding="utf-8"))
    assert values["intermediate_size"] == model.config.ffn_hidden_dim
    assert values["rope_parameters"] == {"rope_type": "default", "rope_theta": 10000.0}
    back = load_hf(tmp_path)
    assert back.config == model.config
    assert (back.lm_head.weight is back.embed_tokens.weight) == tied
    tokens = torch.randint(0, 101, (1, 9))
    assert torch.equal(back(tokens), model(tokens))


def test_large_models_are_sharded_with_an_index(tmp_path):
    model = random_model(tiny(n_layers=3))
    save_hf(model, tmp_path, max_shard_size="20KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text(encoding="utf-8"))
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) > 2 and not (tmp_path / "model.safetensors").exists()
    assert index["metadata"]["total_size"] == 4 * sum(p.numel() for p in model.parameters())
    assert shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    tokens = torch.randint(0, 101, (1, 9))
    assert torch.equal(load_hf(tmp_path)(tokens), model(tokens))
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path)
    torch.testing.assert_close(hf_logits(hf_model, tokens), model(tokens), rtol=1e-5, atol=1e-5)
    save_hf(model, tmp_path)                         # saving again unsharded leaves no shards
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "llama_edu.json",
                                                          "model.safetensors"]


@pytest.mark.parametrize("dtype, expected", [
    (None, torch.float32), ("fp16", torch.float16), ("bf16", torch.bfloat16),
    (torch.bfloat16, torch.bfloat16), ("float32", torch.float32)])
def test_dtype_is_chosen_on_load(tmp_path, dtype, expected):
    model = random_model(tiny())
    save_hf(model, tmp_path)
    loaded = load_hf(tmp_path, dtype=dtype)
    assert {p.dtype for p in loaded.parameters()} == {expected}
    tokens = torch.randint(0, 101, (1, 5))
    tolerance = 1e-5 if expected == torch.float32 else 0.1
    torch.testing.assert_close(loaded(tokens).float(), model(tokens), rtol=0, atol=tolerance)


def test_pytorch_model_bin_checkpoints_load_weights_only(tmp_path):
    model = random_model(tiny())
    save_hf(model, tmp_path)
    (tmp_path / "model.safetensors").unlink()
    state = {("" if k.startswith("lm_head") else "model.") + k: v
             for k, v in model.state_dict().items()}
    torch.save(state, tmp_path / "pytorch_model.bin")
    tokens = torch.randint(0, 101, (1, 7))
    assert torch.equal(load_hf(tmp_path)(tokens), model(tokens))
    torch.save({**state, "model.norm.weight": NotATensor()}, tmp_path / "pytorch_model.bin")
    with pytest.raises(Exception, match="[Ww]eights.only"):
        load_hf(tmp_path)


def test_none_keeps_the_dtype_stored_in_the_file(tmp_path):
    save_hf(random_model(tiny()).to(torch.bfloat16), tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["torch_dtype"] == "bfloat16"
    assert load_hf(tmp_path).embed_tokens.weight.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype must be float32, float16 or bfloat16"):
        load_hf(tmp_path, dtype="int8")


# ---------------------------------------------------------------------------------------
# errors name the file, the tensor and the expected shape

@pytest.fixture
def saved(tmp_path):
    save_hf(random_model(tiny()), tmp_path)
    return tmp_path


def _rewrite_tensors(path, change):
    from safetensors.torch import load_file, save_file
    tensors = load_file(path / "model.safetensors")
    change(tensors)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})


def test_a_missing_tensor_is_named_with_its_expected_shape(saved):
    _rewrite_tensors(saved, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match=r"missing tensor 'model\.layers\.1\.mlp\.up_proj\."
                                         r"weight' \(expected shape \(96, 32\)\)"):
        load_hf(saved)


def test_a_wrong_shape_is_named_with_both_shapes(saved):
    def shrink(t):
        t["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(32, 32)
    _rewrite_tensors(saved, shrink)
    with pytest.raises(ValueError, match=r"'model\.layers\.0\.self_attn\.k_proj\.weight' has "
                                         r"shape \(32, 32\), expected shape \(16, 32\)"):
        load_hf(saved)


def test_an_unknown_tensor_is_named(saved):
    def add(t):
        t["model.layers.0.self_attn.q_proj.bias"] = torch.zeros(32)
    _rewrite_tensors(saved, add)
    with pytest.raises(ValueError, match=r"unknown tensor 'model\.layers\.0\.self_attn\.q_proj"
                                         r"\.bias'"):
        load_hf(saved)


def test_missing_files_say_what_a_checkpoint_needs(tmp_path, saved):
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_hf(tmp_path / "nowhere")
    (saved / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="expected model.safetensors"):
        load_hf(saved)
    (saved / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match="needs config.json"):
        load_hf(saved)


def test_a_missing_shard_is_named(tmp_path):
    save_hf(random_model(tiny()), tmp_path, max_shard_size="20KB")
    (tmp_path / sorted(tmp_path.glob("model-*"))[-1].name).unlink()
    with pytest.raises(FileNotFoundError, match=r"shard .*model-000\d\d-of-000\d\d.safetensors "
                                                r"listed in model.safetensors.index.json"):
        load_hf(tmp_path)


@pytest.mark.parametrize("change, match", [
    ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 5e5, "factor": 8.0}},
     "RoPE scaling 'yarn' is not supported"),
    ({"rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}},
     "rope_scaling of type 'llama3' needs"),
    ({"hidden_act": "gelu"}, "hidden_act='gelu'"),
    ({"attention_bias": True}, "attention_bias=True"),
    ({"model_type": "mistral"}, "model_type is 'mistral'"),
    ({"head_dim": 16}, "head_dim=16 differs"),
    ({"hidden_size": None}, "hidden_size"),
])
def test_configs_we_cannot_run_are_refused(change, match):
    values = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
              "num_attention_heads": 4, "vocab_size": 10, **change}
    if values["hidden_size"] is None:
        del values["hidden_size"]
        match = "lacks the field 'hidden_size'"
    with pytest.raises(ValueError, match=match):
        config_from_hf(values)


def test_legacy_rope_theta_field_is_read():
    values = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
              "num_attention_heads": 4, "vocab_size": 10, "rope_theta": 1e6,
              "rope_scaling": None}
    assert config_from_hf(values).rope_theta == 1e6


@pytest.mark.parametrize("switch", [{"pos_encoding": "alibi"}, {"norm_type": "layernorm"},
                                    {"norm_placement": "post"}, {"ffn_type": "relu"}])
def test_lesson_variants_cannot_be_saved_in_llama_formats(tmp_path, switch):
    model = Llama(tiny(**switch))
    for save in (save_hf, save_meta):
        with pytest.raises(ValueError, match="holds only Llama 2 itself"):
            save(model, tmp_path)
    with pytest.raises(ValueError, match="pos_encoding='rope'"):
        to_hf_model(model)
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------
# Meta's layout: a reference forward written the way Meta's code does it (complex RoPE on
# interleaved pairs), independent of llama_edu's half-split tables.

def meta_forward(params: dict, weights: dict, tokens: torch.Tensor) -> torch.Tensor:
    dim, n_heads = params["dim"], params["n_heads"]
    n_kv, head_dim = params.get("n_kv_heads", n_heads), dim // n_heads
    theta, eps = params.get("rope_theta", 10_000.0), params["norm_eps"]
    seq = tokens.shape[1]
    freqs = 1.0 / theta ** (torch.arange(0, head_dim, 2)[: head_dim // 2].float() / head_dim)
    freqs_cis = torch.polar(torch.ones(seq, head_dim // 2),
                            torch.outer(torch.arange(seq).float(), freqs))

    def rope(x):                                       # (b, s, h, hd), pairs (2i, 2i+1)
        pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(pairs * freqs_cis[None, :, None]).flatten(3)

    def norm(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

    h = weights["tok_embeddings.weight"][tokens]
    mask = torch.full((seq, seq), float("-inf")).triu(1)
    for i in range(params["n_layers"]):
        w = {k[len(f"layers.{i}."):]: v for k, v in weights.items()
             if k.startswith(f"layers.{i}.")}
        x = norm(h, w["attention_norm.weight"])
        q = rope((x @ w["attention.wq.weight"].T).view(*x.shape[:2], n_heads, head_dim))
        k = rope((x @ w["attention.wk.weight"].T).view(*x.shape[:2], n_kv, head_dim))
        v = (x @ w["attention.wv.weight"].T).view(*x.shape[:2], n_kv, head_dim)
        k, v = (t.repeat_interleave(n_heads // n_kv, dim=2) for t in (k, v))
        q, k, v = (t.transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(head_dim) + mask
        out = (scores.softmax(-1) @ v).transpose(1, 2).flatten(2)
        h = h + out @ w["attention.wo.weight"].T
        x = norm(h, w["ffn_norm.weight"])
        h = h + (F.silu(x @ w["feed_forward.w1.weight"].T) * (x @ w["feed_forward.w3.weight"].T)
                 ) @ w["feed_forward.w2.weight"].T
    return norm(h, weights["norm.weight"]) @ weights["output.weight"].T


def read_meta(path):
    params = json.loads((path / "params.json").read_text(encoding="utf-8"))
    return params, torch.load(path / "consolidated.00.pth", weights_only=True)


@pytest.mark.parametrize("name", ["mha", "gqa", "mqa", "rope_theta_500000"])
def test_save_meta_matches_metas_own_forward_and_round_trips(tmp_path, name):
    model = random_model(CONFIGS[name])
    save_meta(model, tmp_path)
    params, weights = read_meta(tmp_path)
    assert "layers.1.feed_forward.w3.weight" in weights and "output.weight" in weights
    tokens = torch.randint(0, model.config.vocab_size, (2, 11))
    with torch.no_grad():
        ours = model(tokens)
    torch.testing.assert_close(meta_forward(params, weights, tokens), ours, rtol=1e-5, atol=1e-5)
    back = load_meta(tmp_path)
    assert back.config == model.config
    assert torch.equal(back(tokens), ours)


def test_meta_to_hf_to_llama_edu_gives_metas_logits(tmp_path):
    model = random_model(tiny(n_kv_heads=1, rope_theta=300.0, vocab_size=97))
    save_meta(model, tmp_path / "meta")
    params, weights = read_meta(tmp_path / "meta")
    tokens = torch.randint(0, 97, (2, 12))
    reference = meta_forward(params, weights, tokens)
    save_hf(load_meta(tmp_path / "meta"), tmp_path / "hf")
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    torch.testing.assert_close(hf_logits(hf_model, tokens), reference, rtol=1e-5, atol=1e-5)
    assert torch.equal(load_hf(tmp_path / "hf")(tokens), model(tokens))


def test_without_the_permutation_the_logits_would_differ(tmp_path):
    model = random_model(tiny())
    save_meta(model, tmp_path)
    params, weights = read_meta(tmp_path)
    naive = {k: v for k, v in weights.items()}
    for i in range(params["n_layers"]):              # copy HF rows as they are
        naive[f"layers.{i}.attention.wq.weight"] = model.layers[i].self_attn.q_proj.weight
        naive[f"layers.{i}.attention.wk.weight"] = model.layers[i].self_attn.k_proj.weight
    tokens = torch.randint(0, 101, (1, 10))
    with torch.no_grad():
        gap = (meta_forward(params, naive, tokens) - model(tokens)).abs().max()
    assert gap > 1e-2


def test_meta_checkpoints_as_released_load(tmp_path):
    """vocab_size -1, a rope.freqs table, two model-parallel ranks."""
    model = random_model(tiny(n_kv_heads=4))
    save_meta(model, tmp_path)
    params, weights = read_meta(tmp_path)
    params["vocab_size"] = -1
    (tmp_path / "params.json").write_text(json.dumps(params), encoding="utf-8")
    ranks = [{"rope.freqs": torch.zeros(4)}, {"rope.freqs": torch.zeros(4)}]
    for key, tensor in weights.items():
        if key.endswith("norm.weight"):
            parts = [tensor, tensor]
        else:
            by_column = key.endswith(("wo.weight", "w2.weight", "tok_embeddings.weight"))
            parts = tensor.chunk(2, dim=1 if by_column else 0)
        for rank, part in zip(ranks, parts, strict=True):
            rank[key] = part.clone()
    for i, rank in enumerate(ranks):
        torch.save(rank, tmp_path / f"consolidated.{i:02d}.pth")
    back = load_meta(tmp_path, dtype="bf16")
    assert back.config.vocab_size == 101 and back.embed_tokens.weight.dtype == torch.bfloat16
    tokens = torch.randint(0, 101, (1, 8))
    torch.testing.assert_close(back.float()(tokens), model(tokens), rtol=0, atol=0.1)


class NotATensor:
    pass


def test_meta_loading_never_unpickles_code(tmp_path):
    model = random_model(tiny())
    save_meta(model, tmp_path)
    torch.save({"tok_embeddings.weight": NotATensor()}, tmp_path / "consolidated.00.pth")
    with pytest.raises(Exception, match="[Ww]eights.only"):
        load_meta(tmp_path)


def test_meta_errors_name_the_tensor_and_shape(tmp_path):
    save_meta(random_model(tiny()), tmp_path)
    params, weights = read_meta(tmp_path)
    weights.pop("layers.0.feed_forward.w2.weight")
    weights["layers.0.attention.wq.bias"] = torch.zeros(32)
    torch.save(weights, tmp_path / "consolidated.00.pth")
    with pytest.raises(ValueError, match=r"missing tensor 'layers\.0\.feed_forward\.w2\.weight'"
                                         r" \(expected shape \(32, 96\)\).*unknown tensor "
                                         r"'layers\.0\.attention\.wq\.bias'"):
        load_meta(tmp_path)
    (tmp_path / "params.json").write_text(json.dumps({**params, "use_scaled_rope": True}))
    with pytest.raises(ValueError, match="use_scaled_rope"):
        load_meta(tmp_path)
    (tmp_path / "consolidated.00.pth").unlink()
    with pytest.raises(FileNotFoundError, match="no consolidated.00.pth"):
        load_meta(tmp_path)


def test_an_unusual_ffn_size_survives_meta(tmp_path):
    model = random_model(dataclasses.replace(tiny(), hidden_dim=40))
    save_meta(model, tmp_path)
    assert read_meta(tmp_path)[0]["hidden_dim"] == 40
    tokens = torch.randint(0, 101, (1, 6))
    assert torch.equal(load_meta(tmp_path)(tokens), model(tokens))


# ---------------------------------------------------------------------------------------
# a released checkpoint in either layout, and lesson 09's optional Llama 2 cell

def fake_llama2(tmp_path, fmt: str) -> tuple[Llama, "Path"]:  # noqa: F821
    """A model with Llama 2's vocabulary (32,000) and tiny sizes, saved as Meta releases it
    (bf16, vocab_size -1 in params.json) or as transformers' save_pretrained writes it."""
    model = random_model(tiny(vocab_size=32_000, dim=16, n_layers=1, n_heads=2, n_kv_heads=2))
    path = tmp_path / fmt
    if fmt == "meta":
        save_meta(model, path)
        params, weights = read_meta(path)
        (path / "params.json").write_text(json.dumps({**params, "vocab_size": -1}),
                                          encoding="utf-8")
        torch.save({k: v.to(torch.bfloat16) for k, v in weights.items()},
                   path / "consolidated.00.pth")
        model = model.to(torch.bfloat16).float()      # what the file holds
    else:
        to_hf_model(model).save_pretrained(path)
    return model, path


@pytest.mark.parametrize("fmt", ["meta", "hf"])
def test_load_pretrained_reads_either_layout(tmp_path, fmt):
    from llama_edu.interop import checkpoint_format, load_pretrained

    model, path = fake_llama2(tmp_path, fmt)
    assert checkpoint_format(path) == fmt
    back = load_pretrained(path, dtype="fp32")
    assert back.config.vocab_size == 32_000
    tokens = torch.randint(0, 32_000, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(back(tokens), model(tokens), rtol=1e-5, atol=1e-5)
    with pytest.raises(FileNotFoundError, match="neither Meta's layout"):
        checkpoint_format(tmp_path)


def _notebook_cell(marker: str) -> str:
    import nbformat

    from llama_edu.checkpoint import COURSE_MODEL

    notebook = nbformat.read(COURSE_MODEL.parents[1] / "notebooks" / "09_llama.ipynb", 4)
    found = [c.source for c in notebook.cells if c.cell_type == "code" and marker in c.source]
    assert len(found) == 1, f"one cell of lesson 09 should mention {marker}"
    return found[0]


@pytest.mark.parametrize("fmt", ["meta", "hf", None])
def test_lesson_09s_llama2_cell_runs_on_a_fake_checkpoint(tmp_path, monkeypatch, capsys, fmt):
    import os

    from llama_edu.generate import generate
    from llama_edu.model import count_parameters

    if fmt is None:
        monkeypatch.delenv("LLAMA2_PATH", raising=False)
    else:
        monkeypatch.setenv("LLAMA2_PATH", str(fake_llama2(tmp_path, fmt)[1]))
    namespace = {"os": os, "torch": torch, "device": torch.device("cpu"),
                 "generate": generate, "count_parameters": count_parameters}
    exec(_notebook_cell('os.environ.get("LLAMA2_PATH")'), namespace)
    lines = capsys.readouterr().out.splitlines()
    if fmt is None:
        assert lines[0].startswith("Skipped: to run Llama 2 here, set LLAMA2_PATH")
        return
    assert lines[0].startswith(f"{fmt} checkpoint: ") and "1 layers" in lines[0]
    assert lines[1].startswith("'The capital of France is") and lines[2].startswith("'从前，")
    assert namespace["llama2"].embed_tokens.weight.dtype == torch.bfloat16
