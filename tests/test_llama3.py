"""Llama 3: the released shapes and parameter counts, and RoPE scaling equal to transformers'."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llama_edu.model import Llama, LlamaConfig, count_parameters
from llama_edu.positions import RotaryEmbedding, rope_inv_freq

transformers = pytest.importorskip("transformers")
rope_utils = pytest.importorskip("transformers.modeling_rope_utils")

SCALING_31 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
              "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
SCALING_32 = dict(SCALING_31, factor=32.0)
# The fields of Meta's released config.json files that fix the shape.
RELEASED = {
    "llama3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                      num_attention_heads=32, max_position_embeddings=8192),
    "llama3-70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                       num_attention_heads=64, max_position_embeddings=8192),
    "llama3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                        num_attention_heads=32, max_position_embeddings=131072,
                        rope_scaling=SCALING_31),
    "llama3.1-70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80,
                         num_attention_heads=64, max_position_embeddings=131072,
                         rope_scaling=SCALING_31),
    "llama3.1-405b": dict(hidden_size=16384, intermediate_size=53248, num_hidden_layers=126,
                          num_attention_heads=128, max_position_embeddings=131072,
                          rope_scaling=SCALING_31),
    "llama3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16,
                        num_attention_heads=32, max_position_embeddings=131072,
                        rope_scaling=SCALING_32, tie_word_embeddings=True),
    "llama3.2-3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
                        num_attention_heads=24, max_position_embeddings=131072,
                        rope_scaling=SCALING_32, tie_word_embeddings=True),
}


def hf_config(fields: dict):
    fields = dict(fields)
    scaling = fields.pop("rope_scaling", None)
    rope = {"rope_type": "default", "rope_theta": 500_000.0} if scaling is None else {
        **scaling, "rope_theta": 500_000.0}
    return transformers.LlamaConfig(vocab_size=128_256, num_key_value_heads=8,
                                    rms_norm_eps=1e-5, rope_parameters=rope, **fields)


@pytest.mark.parametrize("name", list(RELEASED))
def test_presets_have_the_released_shapes_and_transformers_parameter_count(name):
    ours = LlamaConfig.from_preset(name)
    config = hf_config(RELEASED[name])
    with torch.device("meta"):
        theirs = transformers.LlamaForCausalLM(config)
    count = sum(p.numel() for p in theirs.parameters())  # tied weights appear once
    assert count_parameters(ours) == count
    assert (ours.vocab_size, ours.n_kv_heads, ours.rope_theta) == (128_256, 8, 500_000.0)
    assert ours.ffn_hidden_dim == config.intermediate_size
    assert ours.tie_word_embeddings == config.tie_word_embeddings
    assert ours.rope_scaling == RELEASED[name].get("rope_scaling")


def test_llama3_8b_has_its_published_size():
    assert count_parameters(LlamaConfig.from_preset("llama3-8b")) == 8_030_261_248


def _hf_inv_freq(head_dim: int, theta: float, scaling: dict | None) -> torch.Tensor:
    rope = {"rope_type": "default"} if scaling is None else dict(scaling)
    rope["rope_theta"] = theta
    config = transformers.LlamaConfig(hidden_size=head_dim * 4, num_attention_heads=4,
                                      rope_parameters=rope, max_position_embeddings=4096)
    function = rope_utils.ROPE_INIT_FUNCTIONS[rope["rope_type"]]
    inv_freq, _ = function(config, torch.device("cpu"))
    return inv_freq


@settings(max_examples=40, deadline=None)
@given(head_dim=st.sampled_from([16, 64, 128]), theta=st.sampled_from([1e4, 5e5]),
       factor=st.floats(1.0, 64.0), low=st.floats(0.5, 2.0), gap=st.floats(0.5, 8.0),
       context=st.sampled_from([128, 2048, 8192]))
def test_llama3_scaling_equals_transformers(head_dim, theta, factor, low, gap, context):
    scaling = {"rope_type": "llama3", "factor": factor, "low_freq_factor": low,
               "high_freq_factor": low + gap, "original_max_position_embeddings": context}
    ours, theirs = rope_inv_freq(head_dim, theta, scaling), _hf_inv_freq(head_dim, theta, scaling)
    # the same fp32 formula, written differently: a few roundings apart
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("factor", [1.0, 2.0, 8.0])
def test_linear_scaling_is_position_interpolation_and_equals_transformers(factor):
    scaling = {"rope_type": "linear", "factor": factor}
    ours = rope_inv_freq(64, 1e4, scaling)
    torch.testing.assert_close(ours, _hf_inv_freq(64, 1e4, scaling))
    torch.testing.assert_close(ours, rope_inv_freq(64, 1e4) / factor)


def test_llama31_keeps_high_frequencies_and_divides_low_ones():
    plain, scaled = rope_inv_freq(128, 5e5), rope_inv_freq(128, 5e5, SCALING_31)
    wavelength = 2 * math.pi / plain
    high = wavelength < 8192 / 4
    low = wavelength > 8192 / 1
    assert high.any() and low.any() and (~(high | low)).any()
    assert torch.equal(scaled[high], plain[high])
    torch.testing.assert_close(scaled[low], plain[low] / 8)
    between = ~(high | low)                       # a smooth ramp, monotone in the wavelength
    assert ((scaled[between] < plain[between]) & (scaled[between] > plain[between] / 8)).all()


def test_the_model_uses_the_scaled_tables():
    config = LlamaConfig.from_preset("micro", rope_scaling={"rope_type": "linear", "factor": 4.0})
    model = Llama(config)
    assert model.rotary.scaling == config.rope_scaling
    cos, sin = model.rotary(torch.tensor([4]))             # position 4, interpolated by 4 ...
    plain_cos, plain_sin = RotaryEmbedding(config.head_dim, 128)(torch.tensor([1]))  # ... is 1
    torch.testing.assert_close(cos, plain_cos)
    torch.testing.assert_close(sin, plain_sin)


@pytest.mark.parametrize("bad, message", [
    ({"rope_type": "yarn", "factor": 2.0}, "rope_type in"),
    ({"rope_type": "llama3", "factor": 8.0}, "needs"),
    ({"rope_type": "linear", "factor": 0.5}, "at least 1"),
    ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0,
      "original_max_position_embeddings": 8192}, "low_freq_factor < high_freq_factor"),
])
def test_bad_rope_scaling_says_what_to_fix(bad, message):
    with pytest.raises(ValueError, match=message):
        LlamaConfig.from_preset("micro", rope_scaling=bad)


@pytest.mark.parametrize("scaling", [
    {"rope_type": "linear", "factor": 4.0},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 32},
])
def test_rope_scaling_survives_save_hf_and_load_hf_with_transformers_logits(scaling, tmp_path):
    from llama_edu.interop import load_hf, save_hf, to_hf_model
    from llama_edu.numerics import assert_close, model_shape

    torch.manual_seed(0)
    model = Llama(LlamaConfig.from_preset("micro", rope_scaling=scaling)).eval()
    tokens = torch.randint(0, 256, (2, 100))          # far past the 32 "trained" positions
    with torch.no_grad():
        ours, theirs = model(tokens), to_hf_model(model)(tokens).logits
    assert_close(ours, theirs, **model_shape(model.config))
    save_hf(model, tmp_path / "scaled")
    back = load_hf(tmp_path / "scaled")
    assert back.config.rope_scaling == scaling
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "scaled").eval()
    with torch.no_grad():
        assert_close(hf(tokens).logits, ours, **model_shape(model.config))
        assert torch.equal(back(tokens), ours)


def test_rope_scaling_explorer_redraws_for_each_control():
    """The lesson's explorer: moving any slider (factor first, as the browser test does)
    draws a new figure; crossed low and high bounds still draw."""
    from llama_edu.widgets.llama3 import rope_scaling_explorer

    explorer = rope_scaling_explorer()
    first = explorer._png
    assert first and explorer.redraws == 1 and list(explorer.controls)[0] == "factor"
    for name, value in [("factor", 16.0), ("low_freq_factor", 2.0), ("high_freq_factor", 8.0),
                        ("low_freq_factor", 4.0), ("high_freq_factor", 1.0)]:
        before = explorer._png
        explorer.controls[name].value = value
        assert explorer.errors.outputs == () and explorer._png != before, name
    assert explorer.redraws == 6 and explorer._png != first
