"""Weight-only quantisation: equal to torch's own quantisers, error bounds, exact sizes."""

import warnings

import pytest
import torch

from llama_edu.model import Llama, LlamaConfig
from llama_edu.quantize import (
    dequantize,
    pack_4bit,
    quantize_4bit,
    quantize_int8,
    quantize_model,
    quantized_bytes,
    unpack_4bit,
)


def weights(rows=12, cols=96, seed=0):
    generator = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=generator)
    w[0, 5] = 9.0                                          # an outlier in one row
    return w


def torch_quantizer(fn, *args):
    with warnings.catch_warnings():                     # torch.ao's quantised dtypes are
        warnings.simplefilter("ignore", UserWarning)    # deprecated, and still the reference
        return fn(*args)


def test_int8_codes_equal_torchs_per_channel_quantiser():
    w = weights()
    q = quantize_int8(w)
    assert q.codes.dtype == torch.int8 and q.codes.abs().max() <= 127
    reference = torch_quantizer(torch.quantize_per_channel, w, q.scale.double().squeeze(1),
                                torch.zeros(w.shape[0], dtype=torch.long), 0, torch.qint8)
    assert torch.equal(reference.int_repr(), q.codes)
    assert torch.equal(reference.dequantize(), dequantize(q))


@pytest.mark.parametrize("group", [32, 16])
def test_4bit_absmax_equals_torchs_quint4x2_per_group(group):
    w = weights()
    q = quantize_4bit(w, group)
    values = dequantize(q)
    for r in range(w.shape[0]):
        for g in range(w.shape[1] // group):
            cols = slice(g * group, (g + 1) * group)
            ref = torch_quantizer(torch.quantize_per_tensor, w[r, cols].contiguous(),
                                  float(q.scale[r, g]), 8, torch.quint4x2)
            assert torch.equal(ref.dequantize(), values[r, cols])
            assert torch.equal(ref.int_repr(), q.codes[r, g * group // 2:(g + 1) * group // 2])


@pytest.mark.parametrize("make", [
    lambda w: quantize_int8(w),
    lambda w: quantize_4bit(w, None),
    lambda w: quantize_4bit(w, 32),
    lambda w: quantize_4bit(w, 32, "minmax"),
])
def test_rounding_error_is_at_most_half_a_step(make):
    w = weights()
    q = make(w)
    step = q.scale.float().repeat_interleave(q.group_size, dim=1)       # (rows, cols)
    error = (dequantize(q) - w).abs()
    # half a step, plus the fp16 rounding of the scale (and of the minimum) times the code
    slack = 16 * 2.0**-11 * (w.abs() + step)
    assert (error <= step / 2 + slack).all()


def test_groups_beat_one_scale_per_row_and_int8_beats_4bit():
    w = weights(64, 256)
    err = {name: (dequantize(q) - w).norm() / w.norm() for name, q in {
        "int8": quantize_int8(w), "row4": quantize_4bit(w, None),
        "group4": quantize_4bit(w, 32)}.items()}
    assert err["int8"] < err["group4"] < err["row4"]


def test_pack_and_unpack_are_inverse():
    codes = torch.randint(0, 16, (5, 14), dtype=torch.uint8)
    packed = pack_4bit(codes)
    assert packed.shape == (5, 7) and torch.equal(unpack_4bit(packed), codes)


@pytest.mark.parametrize("bits, group, scheme", [(8, None, "absmax"), (4, None, "absmax"),
                                                 (4, 32, "absmax"), (4, 16, "minmax")])
def test_sizes_are_exact(bits, group, scheme):
    w = weights(10, 64)
    q = quantize_int8(w) if bits == 8 else quantize_4bit(w, group, scheme)
    assert q.nbytes == quantized_bytes((10, 64), bits, group, scheme)
    groups = 10 * (1 if group is None or bits == 8 else 64 // group)
    codes = 10 * 64 if bits == 8 else 10 * 32
    assert q.nbytes == codes + groups * (4 if scheme == "minmax" else 2)


def test_an_all_zero_row_stays_zero():
    w = weights()
    w[3] = 0
    for q in (quantize_int8(w), quantize_4bit(w, 32), quantize_4bit(w, 32, "minmax")):
        assert torch.isfinite(dequantize(q)).all() and (dequantize(q)[3] == 0).all()


def test_bad_arguments_say_what_to_change():
    with pytest.raises(ValueError, match=r"divide the row length 96; try one of \[16, 32\]"):
        quantize_4bit(weights(), 64)
    with pytest.raises(ValueError, match="scheme must be"):
        quantize_4bit(weights(), 32, "nf4")
    with pytest.raises(TypeError, match="2-D float weight matrix"):
        quantize_int8(torch.ones(3))


@pytest.mark.parametrize("tied", [False, True])
def test_quantize_model_counts_a_tied_matrix_once_and_keeps_the_original(tied):
    config = LlamaConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=64,
                         multiple_of=16, max_seq_len=16, tie_word_embeddings=tied)
    torch.manual_seed(0)
    model = Llama(config).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    small, n_bytes = quantize_model(model, 4, 16)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    unique = {id(p): p for p in model.parameters()}.values()
    expected = sum(quantized_bytes(tuple(p.shape), 4, 16) if p.dim() == 2
                   else p.numel() * 4 for p in unique)
    assert n_bytes == expected
    assert (small.lm_head.weight is small.embed_tokens.weight) == tied
    assert torch.equal(small.layers[0].mlp.up_proj.weight,
                       dequantize(quantize_4bit(model.layers[0].mlp.up_proj.weight, 16)))
