"""LayerNorm and RMSNorm: parity with torch.nn, fp32 statistics, invariances, clear errors."""

import pytest
import torch

from llama_edu.model import Llama, LlamaConfig
from llama_edu.norms import LayerNorm, RMSNorm, layer_norm, rms_norm
from llama_edu.numerics import assert_close, tolerance


def _pair(kind, dim, dtype=torch.float32, eps=1e-5, seed=0):
    """Ours and torch's norm with the same random gain (and bias)."""
    torch.manual_seed(seed)
    if kind == "rms":
        ours, ref = RMSNorm(dim, eps), torch.nn.RMSNorm(dim, eps=eps)
    else:
        ours, ref = LayerNorm(dim, eps), torch.nn.LayerNorm(dim, eps=eps)
    with torch.no_grad():
        ref.weight.copy_(torch.rand(dim) + 0.5)
        if kind == "ln":
            ref.bias.copy_(torch.randn(dim))
    ours.load_state_dict(ref.state_dict())
    return ours.to(dtype), ref.to(dtype)


@pytest.mark.parametrize("kind", ["rms", "ln"])
@pytest.mark.parametrize("shape", [(5, 64), (2, 3, 96), (1, 1, 7)])
def test_fp32_forward_and_backward_equal_torch(kind, shape):
    ours, ref = _pair(kind, shape[-1])
    x = (torch.randn(shape) * 3 + 0.7).requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    out, out_ref = ours(x), ref(x_ref)
    # forward: a mean over the last axis, then a scale (depth 2); backward: two more
    # reductions over the last axis, and the weight's gradient sums over every row.
    dim, rows = shape[-1], x.numel() // shape[-1]
    assert_close(out, out_ref, reduction=dim, depth=2)
    upstream = torch.randn(shape)
    out.backward(upstream)
    out_ref.backward(upstream)
    assert_close(x.grad, x_ref.grad, reduction=dim, depth=4)
    assert_close(ours.weight.grad, ref.weight.grad, reduction=max(dim, rows), depth=4)


@pytest.mark.parametrize("kind", ["rms", "ln"])
def test_bf16_autocast_matches_torch_at_bf16_tolerance(kind):
    ours, ref = _pair(kind, 128, dtype=torch.bfloat16)
    x = (torch.randn(4, 9, 128) * 2 + 1).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, out_ref = ours(x), ref(x)
    assert out.dtype == out_ref.dtype == torch.bfloat16
    torch.testing.assert_close(out, out_ref)  # the default bf16 tolerance: rtol 1.6e-2


def test_rmsnorm_statistics_are_fp32_then_cast_back():
    # In fp16, 1000^2 = 1e6 overflows (max 65504): a norm computed in fp16 would return 0.
    x = torch.full((2, 8), 1000.0, dtype=torch.float16)
    x[1] = -1000.0
    norm = RMSNorm(8).half()
    out = norm(x)
    assert out.dtype == torch.float16
    naive = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)
    assert torch.all(naive == 0)  # what fp16 statistics would give
    torch.testing.assert_close(out, torch.tensor([[1.0] * 8, [-1.0] * 8]).half())
    torch.testing.assert_close(LayerNorm(8).half()(x + torch.arange(8.0).half()),
                               torch.nn.functional.layer_norm(
                                   (x + torch.arange(8.0).half()).float(), (8,)).half())


def test_rmsnorm_gain_follows_llama_type_promotion():
    x = torch.randn(3, 16).bfloat16()
    assert RMSNorm(16)(x).dtype == torch.float32          # fp32 gain promotes, as in HF/Meta
    assert RMSNorm(16).bfloat16()(x).dtype == torch.bfloat16
    assert LayerNorm(16)(x).dtype == torch.bfloat16       # as torch.nn.LayerNorm returns


@pytest.mark.parametrize("scale", [1e-3, 0.5, 7.0, 1e3])
def test_rmsnorm_is_scale_invariant_but_not_shift_invariant(scale):
    torch.manual_seed(1)
    x = torch.randn(6, 32, dtype=torch.float64)
    base = rms_norm(x, eps=0.0)
    torch.testing.assert_close(rms_norm(scale * x, eps=0.0), base)
    torch.testing.assert_close(rms_norm(-scale * x, eps=0.0), -base)
    shifted = rms_norm(x + 3.0, eps=0.0)
    assert (shifted - base).abs().max() > 0.5


@pytest.mark.parametrize("scale, shift", [(1e-3, 0.0), (0.5, -2.0), (7.0, 5.0), (1e3, 1e3)])
def test_layernorm_is_scale_and_shift_invariant(scale, shift):
    torch.manual_seed(2)
    x = torch.randn(6, 32, dtype=torch.float64)
    torch.testing.assert_close(layer_norm(scale * x + shift, eps=0.0), layer_norm(x, eps=0.0))


def test_outputs_have_the_promised_statistics():
    x = torch.randn(10, 256) * 4 + 3
    y = rms_norm(x, eps=0.0)
    torch.testing.assert_close(y.pow(2).mean(-1), torch.ones(10))
    z = layer_norm(x, eps=0.0)
    # a mean of 256 values of size up to |z|: zero up to the rounding of that sum
    zero = tolerance(torch.float32, reduction=256, depth=2, scale=float(z.abs().max()))
    torch.testing.assert_close(z.mean(-1), torch.zeros(10), **zero)
    torch.testing.assert_close(z.var(-1, unbiased=False), torch.ones(10))


def test_eps_keeps_an_all_zero_vector_finite():
    zeros = torch.zeros(2, 8)
    assert torch.equal(RMSNorm(8)(zeros), zeros)
    assert torch.equal(LayerNorm(8)(zeros), zeros)


def test_the_model_is_built_from_these_norms():
    for norm_type, cls in (("rmsnorm", RMSNorm), ("layernorm", LayerNorm)):
        model = Llama(LlamaConfig.from_preset("micro", norm_type=norm_type))
        layer = model.layers[0]
        assert isinstance(layer.input_layernorm, cls) and isinstance(model.norm, cls)
        assert isinstance(layer.post_attention_layernorm, cls)


def test_bad_arguments_say_what_to_change():
    with pytest.raises(ValueError, match="positive integer"):
        RMSNorm(0)
    with pytest.raises(ValueError, match="positive integer"):
        LayerNorm(16.0)
    with pytest.raises(ValueError, match="eps must be >= 0"):
        RMSNorm(16, eps=-1e-5)
    with pytest.raises(ValueError, match=r"last axis, which must have size 16; got input of "
                                         r"shape \(2, 8\)"):
        RMSNorm(16)(torch.randn(2, 8))
    with pytest.raises(ValueError, match="must have size 16"):
        LayerNorm(16)(torch.tensor(1.0))
    with pytest.raises(TypeError, match="floating-point"):
        LayerNorm(4)(torch.ones(2, 4, dtype=torch.long))
    with pytest.raises(TypeError, match="expects a tensor"):
        RMSNorm(4)([1.0, 2.0, 3.0, 4.0])


def test_norm_explorer_redraws_and_shows_the_shift_only_in_rmsnorm():
    import matplotlib.pyplot as plt

    from llama_edu.widgets.norms import draw_norm_distributions, norm_explorer

    explorer = norm_explorer(shift=0.0, scale=1.0)
    first = bytes(explorer.image.value)
    explorer.controls["shift"].value = 4.0
    assert explorer.redraws == 2 and bytes(explorer.image.value) != first
    fig = draw_norm_distributions(shift=4.0, scale=10.0)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[1].startswith("LayerNorm(x)\nmean +0.00, RMS 1.00")
    assert titles[2].startswith("RMSNorm(x)") and "RMS 1.00" in titles[2]
    assert "mean +0.00" not in titles[2]          # the shift survives RMSNorm
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
    plt.close(fig)
    assert plt.get_fignums() == []
