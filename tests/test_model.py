"""The assembled model: sizes, causality, cache, the two attention paths, clear errors."""

import dataclasses

import pytest
import torch

from llama_edu.model import (
    PRESETS,
    Llama,
    LlamaConfig,
    count_parameters,
    kv_cache_bytes_per_token,
    parameter_breakdown,
)
from llama_edu.numerics import assert_close, model_shape, model_tolerance


@pytest.mark.parametrize("name, expected", [
    ("llama2-7b", 6_738_415_616),
    ("llama2-13b", 13_015_864_320),
    ("llama2-70b", 68_976_648_192),
])
def test_llama2_parameter_counts_match_the_released_models(name, expected):
    assert count_parameters(LlamaConfig.from_preset(name)) == expected


def test_llama1_sizes_are_the_papers_rounded_sizes():
    sizes = {name: count_parameters(LlamaConfig.from_preset(name)) / 1e9
             for name in ("llama1-7b", "llama1-13b", "llama1-33b", "llama1-65b")}
    assert [round(s, 1) for s in sizes.values()] == [6.7, 13.0, 32.5, 65.3]


def test_breakdown_adds_up_and_the_70b_ffn_is_28672():
    config = LlamaConfig.from_preset("llama2-70b")
    assert config.ffn_hidden_dim == 28672
    assert sum(parameter_breakdown(config).values()) == count_parameters(config)
    assert LlamaConfig.from_preset("llama2-7b").ffn_hidden_dim == 11008


def test_every_preset_builds_on_meta_and_has_hf_style_names():
    for name, config in PRESETS.items():
        with torch.device("meta"):
            model = Llama(config)
        names = dict(model.named_parameters())
        assert "layers.0.self_attn.q_proj.weight" in names, name
        assert "layers.0.mlp.gate_proj.weight" in names
        assert "layers.0.input_layernorm.weight" in names
        assert "layers.0.post_attention_layernorm.weight" in names
        assert {"embed_tokens.weight", "norm.weight"} <= set(names)
        # a tied head is the embedding table itself (Llama 3.2), listed once
        assert ("lm_head.weight" in names) != config.tie_word_embeddings, name
        assert model.lm_head.weight is not None


def test_kv_bytes_per_token_fp16():
    assert kv_cache_bytes_per_token(LlamaConfig.from_preset("llama2-7b")) == 524_288
    assert kv_cache_bytes_per_token(LlamaConfig.from_preset("llama2-70b")) == 327_680


@pytest.fixture
def micro():
    torch.manual_seed(0)
    return Llama(LlamaConfig.from_preset("micro")).eval()


def test_forward_shape(micro):
    tokens = torch.randint(0, 256, (3, 11))
    assert micro(tokens).shape == (3, 11, 256)


def test_changing_a_token_never_changes_earlier_logits(micro):
    tokens = torch.randint(0, 256, (2, 16))
    base = micro(tokens)
    # Earlier positions see the same inputs, but another sequence may reduce in another
    # order: equal to rounding, while the changed position moves by far more than that.
    atol = model_tolerance(micro.config, scale=float(base.detach().abs().max()))["atol"]
    for t in (0, 5, 15):
        changed = tokens.clone()
        changed[:, t] = (changed[:, t] + 1) % 256
        out = micro(changed)
        assert_close(out[:, :t], base[:, :t], **model_shape(micro.config))
        assert (out[:, t] - base[:, t]).abs().max() > 10 * atol


def test_plain_attention_path_equals_sdpa_path(micro):
    plain = Llama(dataclasses.replace(micro.config, attn_impl="plain")).eval()
    plain.load_state_dict(micro.state_dict())
    tokens = torch.randint(0, 256, (2, 20))
    assert_close(plain(tokens), micro(tokens), **model_shape(micro.config))


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_cached_decoding_equals_full_forward(n_kv_heads):
    torch.manual_seed(1)
    model = Llama(LlamaConfig.from_preset("micro", n_kv_heads=n_kv_heads)).eval()
    tokens = torch.randint(0, 256, (2, 12))
    full = model(tokens)
    cache = model.make_cache(batch_size=2, max_seq_len=12)
    steps = [model(tokens[:, :5], 0, cache)]                    # prefill 5
    steps.append(model(tokens[:, 5:8], 5, cache))               # a 3-token decode step
    steps += [model(tokens[:, t:t + 1], t, cache) for t in range(8, 12)]
    assert_close(torch.cat(steps, dim=1), full, **model_shape(model.config))


def test_tied_embeddings_share_one_tensor():
    config = LlamaConfig.from_preset("micro", tie_word_embeddings=True)
    model = Llama(config)
    assert model.lm_head.weight is model.embed_tokens.weight
    assert count_parameters(model) == count_parameters(LlamaConfig.from_preset("micro")) - 256 * 32


@pytest.mark.parametrize("fields, match", [
    ({"dim": 30, "n_heads": 4}, "divisible by n_heads"),
    ({"n_heads": 4, "n_kv_heads": 3}, r"n_kv_heads in \[1, 2, 4\]"),
    ({"dim": 24, "n_heads": 8}, "must be even for RoPE"),
    ({"vocab_size": 0}, "vocab_size must be a positive integer"),
    ({"attn_impl": "fast"}, "attn_impl"),
])
def test_bad_configs_say_what_to_change(fields, match):
    with pytest.raises(ValueError, match=match):
        LlamaConfig.from_preset("micro", **fields)


def test_unknown_preset_lists_the_names():
    with pytest.raises(ValueError, match="llama2-7b"):
        LlamaConfig.from_preset("llama2-8b")


def test_config_round_trips_through_a_dict():
    config = LlamaConfig.from_preset("llama2-70b")
    assert LlamaConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="unknown LlamaConfig fields"):
        LlamaConfig.from_dict({**config.to_dict(), "hidden_size": 1})


def test_bad_inputs_say_what_is_wrong(micro):
    with pytest.raises(ValueError, match="add a batch dimension"):
        micro(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="vocab_size"):
        micro(torch.tensor([[1, 256]]))
    with pytest.raises(TypeError, match="integer ids"):
        micro(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="max_seq_len=128"):
        micro(torch.zeros(1, 129, dtype=torch.long))
    cache = micro.make_cache(1, max_seq_len=4)
    micro(torch.zeros(1, 4, dtype=torch.long), 0, cache)
    with pytest.raises(ValueError, match="KV cache overflow"):
        micro(torch.zeros(1, 1, dtype=torch.long), 4, cache)
    with pytest.raises(TypeError, match="LlamaConfig"):
        Llama({"dim": 32})


VARIANTS = [
    {"pos_encoding": "alibi"}, {"pos_encoding": "sinusoidal"}, {"pos_encoding": "none"},
    {"norm_type": "layernorm"}, {"norm_placement": "post"}, {"ffn_type": "relu"},
    {"ffn_type": "gelu", "norm_type": "layernorm", "norm_placement": "post"},
]


@pytest.mark.parametrize("switches", VARIANTS, ids=lambda d: "-".join(d.values()))
def test_every_variant_is_causal_cacheable_and_has_equal_attention_paths(switches):
    torch.manual_seed(2)
    config = LlamaConfig.from_preset("micro", **switches)
    assert not config.is_llama
    model = Llama(config).eval()
    tokens = torch.randint(0, 256, (2, 10))
    full = model(tokens)
    changed = tokens.clone()
    changed[:, 6] = (changed[:, 6] + 1) % 256
    shape = model_shape(config)
    assert_close(model(changed)[:, :6], full[:, :6], **shape)
    cache = model.make_cache(2, 10)
    steps = [model(tokens[:, :4], 0, cache)] + [model(tokens[:, t:t + 1], t, cache)
                                                for t in range(4, 10)]
    assert_close(torch.cat(steps, 1), full, **shape)
    plain = Llama(dataclasses.replace(config, attn_impl="plain")).eval()
    plain.load_state_dict(model.state_dict())
    assert_close(plain(tokens), full, **shape)


def test_relu_ffn_defaults_to_4x_and_swiglu_to_two_thirds():
    assert LlamaConfig.from_preset("micro", ffn_type="relu").ffn_hidden_dim == 128
    assert LlamaConfig.from_preset("micro").ffn_hidden_dim == 96
    with pytest.raises(ValueError, match="pos_encoding must be one of"):
        LlamaConfig.from_preset("micro", pos_encoding="learned")
