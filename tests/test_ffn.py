"""MLP and SwiGLU: the hidden-size rule, parameter counts, parity with references, errors."""

import pytest
import torch
import torch.nn.functional as F

from llama_edu.ffn import (
    MLP,
    SwiGLU,
    ffn_hidden_dim,
    ffn_parameter_count,
    swiglu,
    swish,
)
from llama_edu.model import Llama, LlamaConfig


@pytest.mark.parametrize("args, expected", [
    ((4096,), 11008),              # Llama 2 7B
    ((5120,), 13824),              # Llama 2 13B
    ((8192, 4096, 1.3), 28672),    # Llama 2 70B
    ((4096, 1), 10922),            # the bare 2/3 rule: int(8 * 4096 / 3)
    ((48, 16), 128),               # already a multiple: no rounding up
    ((32, 16), 96),                # int(85.33) = 85 -> 96
])
def test_hidden_size_rule(args, expected):
    assert ffn_hidden_dim(*args) == expected
    assert isinstance(ffn_hidden_dim(*args), int)


def test_two_thirds_keeps_the_parameters_of_a_4x_two_matrix_ffn():
    for dim in (4096, 5120, 8192):
        relu = ffn_parameter_count(dim, 4 * dim, "relu")
        swi = ffn_parameter_count(dim, ffn_hidden_dim(dim, multiple_of=1), "swiglu")
        assert abs(swi - relu) / relu < 1e-3
    # 7B: rounding 10922 up to 11008 costs 0.8 % more than the 4x ReLU FFN
    assert ffn_parameter_count(4096, 11008) == 135_266_304
    assert ffn_parameter_count(4096, 16384, "relu") == 134_217_728


@pytest.mark.parametrize("cls, args, kind", [(SwiGLU, (24, 40), "swiglu"),
                                             (MLP, (24, 96, "gelu"), "gelu")])
def test_parameter_count_matches_the_modules(cls, args, kind):
    module = cls(*args)
    assert sum(p.numel() for p in module.parameters()) == ffn_parameter_count(
        args[0], args[1], kind)


def test_swiglu_equals_its_formula_and_the_functional_form():
    torch.manual_seed(0)
    ffn = SwiGLU(16, 40)
    x = torch.randn(2, 5, 16)
    g, u, d = ffn.gate_proj.weight, ffn.up_proj.weight, ffn.down_proj.weight
    by_hand = (F.silu(x @ g.T) * (x @ u.T)) @ d.T
    torch.testing.assert_close(ffn(x), by_hand)
    torch.testing.assert_close(swiglu(x, g, u, d), by_hand)
    swapped = (F.silu(x @ u.T) * (x @ g.T)) @ d.T     # the gate is not symmetric
    assert not torch.allclose(ffn(x), swapped, atol=1e-4)


def test_swiglu_equals_transformers_llama_mlp():
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    from transformers import LlamaConfig as HFConfig

    hf = llama.LlamaMLP(HFConfig(hidden_size=32, intermediate_size=96, hidden_act="silu"))
    ours = SwiGLU(32, 96)
    ours.load_state_dict(hf.state_dict())
    x = torch.randn(3, 7, 32)
    torch.testing.assert_close(ours(x), hf(x))


@pytest.mark.parametrize("activation, fn", [("relu", F.relu), ("gelu", F.gelu),
                                            ("silu", F.silu)])
def test_mlp_equals_its_formula(activation, fn):
    torch.manual_seed(1)
    mlp = MLP(8, 32, activation)
    x = torch.randn(4, 8)
    torch.testing.assert_close(mlp(x), fn(x @ mlp.up_proj.weight.T) @ mlp.down_proj.weight.T)


def test_swish_family():
    x = torch.linspace(-6, 6, 121)
    torch.testing.assert_close(swish(x), F.silu(x))
    torch.testing.assert_close(swish(x, 0.0), x / 2)
    # x * sigmoid(beta x) - relu(x) peaks at 0.2785 / beta (the dip below zero, scaled)
    torch.testing.assert_close(swish(x, 50.0), F.relu(x), atol=0.2785 / 50 * 1.01, rtol=0)
    assert float(swish(x).min()) == pytest.approx(-0.2785, abs=1e-3)  # the dip below zero


def test_the_model_is_built_from_these_ffns():
    swi = Llama(LlamaConfig.from_preset("micro", dim=48))
    relu = Llama(LlamaConfig.from_preset("micro", dim=48, ffn_type="relu"))
    assert isinstance(swi.layers[0].mlp, SwiGLU) and isinstance(relu.layers[0].mlp, MLP)
    assert swi.layers[0].mlp.up_proj.out_features == 128      # 2/3 of 4 * 48
    assert relu.layers[0].mlp.up_proj.out_features == 192     # 4 * 48
    count = sum(p.numel() for p in swi.parameters())
    assert count == sum(p.numel() for p in relu.parameters())  # matched exactly at dim 48


def test_bad_arguments_say_what_to_change():
    with pytest.raises(ValueError, match="dim must be a positive integer"):
        ffn_hidden_dim(0)
    with pytest.raises(ValueError, match="multiple_of must be a positive integer"):
        ffn_hidden_dim(4096, multiple_of=0)
    with pytest.raises(ValueError, match="ffn_dim_multiplier must be positive"):
        ffn_hidden_dim(4096, 256, -1.0)
    with pytest.raises(ValueError, match="unknown activation 'tanh'"):
        MLP(8, 32, "tanh")
    with pytest.raises(ValueError, match="hidden_dim must be a positive integer"):
        SwiGLU(8, 0)
    with pytest.raises(ValueError, match="unknown ffn_type"):
        ffn_parameter_count(8, 32, "geglu")


def test_activation_curves_have_the_textbook_derivatives():
    from llama_edu.widgets.ffn import activation_curves

    curves = activation_curves(beta=2.0, x_min=-4.0, x_max=4.0, n_points=81)
    x = torch.linspace(-4.0, 4.0, 81, dtype=torch.float64)
    sig = torch.sigmoid(x)
    torch.testing.assert_close(curves["SiLU = Swish_1"][1], sig * (1 + x * (1 - sig)))
    torch.testing.assert_close(curves["ReLU"][1], (x > 0).double())
    sig2 = torch.sigmoid(2.0 * x)
    torch.testing.assert_close(curves["Swish_2"][1], sig2 + 2.0 * x * sig2 * (1 - sig2))
    torch.testing.assert_close(curves["GELU"][0], F.gelu(x))


def test_activation_explorer_redraws_on_beta():
    import matplotlib.pyplot as plt

    from llama_edu.widgets.ffn import activation_explorer

    explorer = activation_explorer(beta=1.0)
    first = bytes(explorer.image.value)
    explorer.controls["beta"].value = 5.0
    assert explorer.redraws == 2 and bytes(explorer.image.value) != first
    fig = explorer.figure()
    assert [ax.get_title() for ax in fig.axes] == ["Activations f(x)", "Derivatives f'(x)"]
    plt.close(fig)
