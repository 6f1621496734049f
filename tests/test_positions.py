"""Positions: both RoPE layouts, the weight permutation, HF parity, sinusoidal, ALiBi, errors."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from llama_edu import attention, model
from llama_edu.numerics import SAFETY, tolerance, unit_roundoff
from llama_edu.positions import (
    RotaryEmbedding,
    alibi_bias,
    alibi_slopes,
    apply_rope,
    apply_rope_complex,
    half_split_to_interleaved,
    interleaved_to_half_split,
    rope_cos_sin,
    rope_freqs_cis,
    rope_inv_freq,
    rope_scores_by_distance,
    rotate_half,
    sinusoidal,
)
from llama_edu.widgets.positions import alibi_explorer, rope_explorer

hf_llama = pytest.importorskip("transformers.models.llama.modeling_llama")
HFLlamaConfig = pytest.importorskip("transformers").LlamaConfig


def rotate_pairs_by_hand(x, positions, rope_theta=10_000.0):
    """Interleaved RoPE written as explicit 2x2 rotations, one pair at a time (slow, plain)."""
    out = torch.empty_like(x, dtype=torch.float64)
    head_dim = x.shape[-1]
    for s, m in enumerate(positions):
        for j in range(head_dim // 2):
            angle = m * rope_theta ** (-2 * j / head_dim)
            a, b = x[:, s, :, 2 * j].double(), x[:, s, :, 2 * j + 1].double()
            out[:, s, :, 2 * j] = a * math.cos(angle) - b * math.sin(angle)
            out[:, s, :, 2 * j + 1] = a * math.sin(angle) + b * math.cos(angle)
    return out


# --- frequencies -------------------------------------------------------------------------

@pytest.mark.parametrize("rope_theta", [10_000.0, 500_000.0])
def test_inverse_frequencies_run_from_one_down_to_theta_to_the_minus_one(rope_theta):
    inv_freq = rope_inv_freq(128, rope_theta)
    assert inv_freq.shape == (64,)
    assert inv_freq[0] == 1.0
    # theta ** -x = exp(-x ln theta) in fp32: the exponent's rounding grows by x ln theta
    u = unit_roundoff(torch.float32)
    assert math.isclose(inv_freq[-1].item(), rope_theta ** (-126 / 128),
                        rel_tol=SAFETY * u * math.log(rope_theta))
    assert (inv_freq[1:] < inv_freq[:-1]).all()


def test_llama3_theta_rotates_slower_than_llama2():
    assert (rope_inv_freq(128, 500_000.0)[1:] < rope_inv_freq(128, 10_000.0)[1:]).all()


# --- RoPE, half-split ----------------------------------------------------------------------

def test_rotate_half_swaps_the_halves_with_a_sign():
    x = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert rotate_half(x).tolist() == [-3.0, -4.0, 1.0, 2.0]


def test_position_zero_is_the_identity_and_rotations_keep_norms():
    torch.manual_seed(0)
    x = torch.randn(2, 7, 3, 16)
    cos, sin = rope_cos_sin(7, 16)
    y = apply_rope(x, cos, sin)
    torch.testing.assert_close(y[:, 0], x[:, 0])
    def pair_lengths(t):                             # pair j is (t_j, t_{j+8})
        return t[..., :8] ** 2 + t[..., 8:] ** 2

    torch.testing.assert_close(pair_lengths(y), pair_lengths(x))


@pytest.mark.parametrize("rope_theta", [10_000.0, 500_000.0])
def test_rotary_tables_and_rotation_equal_hf_transformers(rope_theta):
    torch.manual_seed(1)
    n_heads, head_dim = 4, 16
    config = HFLlamaConfig(hidden_size=n_heads * head_dim, num_attention_heads=n_heads,
                           max_position_embeddings=4096, rope_theta=rope_theta)
    hf_rotary = hf_llama.LlamaRotaryEmbedding(config)
    position_ids = torch.tensor([[0, 1, 2, 3, 4, 5], [7, 100, 1000, 2047, 4000, 4095]])
    q = torch.randn(2, 6, n_heads, head_dim)                  # (batch, seq, heads, head_dim)
    k = torch.randn(2, 6, n_heads, head_dim)
    hf_cos, hf_sin = hf_rotary(q, position_ids)               # (batch, seq, head_dim)
    cos, sin = RotaryEmbedding(head_dim, 4096, rope_theta)(position_ids)
    # Both compute cos(p * theta_j) in fp32 from the same formula; vectorised sin/cos
    # kernels may differ by a few units in the last place of the angle p * theta_j, i.e. by
    # about u * p with p up to 4095 (the rounding of the angle, not of the cosine).
    trig = tolerance(torch.float32, scale=4096.0)
    torch.testing.assert_close(cos, hf_cos, **trig)
    torch.testing.assert_close(sin, hf_sin, **trig)
    hf_q, hf_k = hf_llama.apply_rotary_pos_emb(q, k, hf_cos, hf_sin, unsqueeze_dim=2)
    # the same tables, then two products and a sum per entry
    rotation = tolerance(torch.float32, reduction=2, depth=2, scale=float(q.abs().max()))
    torch.testing.assert_close(apply_rope(q, cos, sin), hf_q, **rotation)
    torch.testing.assert_close(apply_rope(k, cos, sin), hf_k, **rotation)


def test_half_split_rope_equals_explicit_rotations_after_reordering_features():
    torch.manual_seed(2)
    x = torch.randn(1, 5, 2, 8)
    cos, sin = rope_cos_sin(5, 8)
    order = interleaved_to_half_split(torch.arange(8), 1)    # half-split slot <- interleaved
    by_hand = rotate_pairs_by_hand(x[..., torch.argsort(order)], range(5))
    torch.testing.assert_close(apply_rope(x, cos, sin).double(), by_hand[..., order])


@settings(max_examples=25, deadline=None)
@given(m=st.integers(0, 500), n=st.integers(0, 500), shift=st.integers(0, 500))
def test_q_dot_k_depends_only_on_the_offset(m, n, shift):
    generator = torch.Generator().manual_seed(3)
    q = torch.randn(1, 1, 1, 32, generator=generator, dtype=torch.float64)
    k = torch.randn(1, 1, 1, 32, generator=generator, dtype=torch.float64)
    cos, sin = (t.double() for t in rope_cos_sin(1001, 32))

    def score(i, j):
        q_i = apply_rope(q, cos[i:i + 1], sin[i:i + 1])
        k_j = apply_rope(k, cos[j:j + 1], sin[j:j + 1])
        return (q_i * k_j).sum().item()

    # The tables are fp32: the angle p * theta_j is off by up to about 2u * p radians, so
    # each score is off by sum_j |q_j| |k_j| * 2u * (largest position).
    largest = max(m, n) + shift
    bound = SAFETY * 2 * unit_roundoff(torch.float32) * largest * float((q.abs() * k.abs()).sum())
    assert math.isclose(score(m, n), score(m + shift, n + shift), rel_tol=0, abs_tol=bound)


def test_scores_by_distance_match_rotating_both_vectors_and_decay_for_ones():
    torch.manual_seed(6)
    q, k = torch.randn(16, dtype=torch.float64), torch.randn(16, dtype=torch.float64)
    scores = rope_scores_by_distance(q, k, 40)
    cos, sin = (t.double() for t in rope_cos_sin(60, 16))
    q_at_50 = apply_rope(q.view(1, 1, 1, 16), cos[50:51], sin[50:51]).flatten()
    k_at_20 = apply_rope(k.view(1, 1, 1, 16), cos[20:21], sin[20:21]).flatten()
    # fp32 tables at positions up to 50: angles off by about 2u * 50 radians
    bound = SAFETY * 2 * unit_roundoff(torch.float32) * 50 * float((q.abs() * k.abs()).sum())
    assert math.isclose(scores[30].item(), (q_at_50 @ k_at_20).item(), rel_tol=0,
                        abs_tol=bound)
    ones = torch.ones(64)
    decay = rope_scores_by_distance(ones, ones, 512) / 64
    assert decay[0] == 1 and decay[256:].mean() < 0.5 * decay[:8].mean()
    with pytest.raises(ValueError, match="1-D vectors"):
        rope_scores_by_distance(q, k[:8], 4)


def test_rotary_embedding_caches_tables_per_device_and_is_not_saved():
    rotary = RotaryEmbedding(8, 16)
    cos, _ = rotary(torch.arange(4))
    assert cos.shape == (4, 8)
    assert rotary.tables(torch.device("cpu"))[0] is rotary.tables(torch.device("cpu"))[0]
    assert rotary.state_dict() == {}


def test_the_model_uses_this_modules_rope():
    llama = model.Llama(model.LlamaConfig.from_preset("micro"))
    assert isinstance(llama.rotary, RotaryEmbedding)
    assert attention.apply_rope is apply_rope


# --- RoPE, interleaved complex form and the weight permutation ----------------------------

def test_complex_form_equals_explicit_rotations_of_pairs_2j_2j_plus_1():
    torch.manual_seed(4)
    x = torch.randn(2, 6, 3, 8)
    positions = [0, 1, 2, 3, 4, 5]
    freqs_cis = rope_freqs_cis(6, 8)
    assert freqs_cis.dtype == torch.complex64 and freqs_cis.shape == (6, 4)
    torch.testing.assert_close(apply_rope_complex(x, freqs_cis).double(),
                               rotate_pairs_by_hand(x, positions))


def test_complex_form_keeps_the_dtype():
    x = torch.randn(1, 3, 2, 8, dtype=torch.bfloat16)
    assert apply_rope_complex(x, rope_freqs_cis(3, 8)).dtype == torch.bfloat16


def test_permutation_of_an_index_vector_is_even_then_odd_per_head():
    order = interleaved_to_half_split(torch.arange(16), 2)
    assert order.tolist() == [0, 2, 4, 6, 1, 3, 5, 7, 8, 10, 12, 14, 9, 11, 13, 15]
    assert half_split_to_interleaved(order, 2).tolist() == list(range(16))


@pytest.mark.parametrize("n_heads, head_dim", [(1, 2), (4, 8), (3, 16), (8, 64)])
def test_permutations_are_inverse_of_each_other(n_heads, head_dim):
    weight = torch.randn(n_heads * head_dim, 24)
    there = interleaved_to_half_split(weight, n_heads)
    assert not torch.equal(there, weight) or head_dim == 2
    assert torch.equal(half_split_to_interleaved(there, n_heads), weight)
    assert torch.equal(interleaved_to_half_split(half_split_to_interleaved(weight, n_heads),
                                                 n_heads), weight)


@pytest.mark.parametrize("rope_theta", [10_000.0, 500_000.0])
def test_both_layouts_give_the_same_attention_after_the_weight_permutation(rope_theta):
    """Meta weights + complex interleaved RoPE == permuted (HF) weights + HF's rotary code."""
    torch.manual_seed(5)
    batch, seq, dim, n_heads, n_kv_heads, head_dim = 2, 9, 48, 4, 2, 12
    x = torch.randn(batch, seq, dim)
    wq_meta = torch.randn(n_heads * head_dim, dim)
    wk_meta = torch.randn(n_kv_heads * head_dim, dim)
    q_meta = (x @ wq_meta.T).view(batch, seq, n_heads, head_dim)
    k_meta = (x @ wk_meta.T).view(batch, seq, n_kv_heads, head_dim)
    freqs_cis = rope_freqs_cis(seq, head_dim, rope_theta)
    q_meta, k_meta = apply_rope_complex(q_meta, freqs_cis), apply_rope_complex(k_meta, freqs_cis)

    wq_hf = interleaved_to_half_split(wq_meta, n_heads)
    wk_hf = interleaved_to_half_split(wk_meta, n_kv_heads)      # k_proj: n_kv_heads
    q_hf = (x @ wq_hf.T).view(batch, seq, n_heads, head_dim)
    k_hf = (x @ wk_hf.T).view(batch, seq, n_kv_heads, head_dim)
    config = HFLlamaConfig(hidden_size=dim, num_attention_heads=n_heads,
                           num_key_value_heads=n_kv_heads, rope_theta=rope_theta)
    cos, sin = hf_llama.LlamaRotaryEmbedding(config)(x, torch.arange(seq)[None])
    q_hf, k_hf = hf_llama.apply_rotary_pos_emb(q_hf, k_hf, cos, sin, unsqueeze_dim=2)

    def scores(q, k):                                           # (b, heads, seq, seq)
        k = attention.repeat_kv(k, n_heads // n_kv_heads)
        return q.transpose(1, 2) @ k.transpose(1, 2).transpose(-2, -1)

    # Two fp32 routes (complex multiply vs cos/sin tables, another matmul layout): a
    # projection over `dim` inputs, the rotation, then a dot product over head_dim.
    qk = tolerance(torch.float32, reduction=dim, depth=3)
    expected = scores(q_meta, k_meta)
    torch.testing.assert_close(scores(q_hf, k_hf), expected, rtol=qk["rtol"],
                               atol=qk["rtol"] * float(expected.abs().max()))
    order = interleaved_to_half_split(torch.arange(head_dim), 1)
    proj = tolerance(torch.float32, reduction=dim, depth=2, scale=float(q_meta.abs().max()))
    torch.testing.assert_close(q_hf, q_meta[..., order], **proj)


def test_permutation_works_on_a_bias_vector_too():
    bias = torch.arange(8.0)
    assert interleaved_to_half_split(bias, 2).tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


# --- sinusoidal ---------------------------------------------------------------------------

def test_sinusoidal_puts_sin_at_even_and_cos_at_odd_dimensions():
    table = sinusoidal(32, 128)
    assert table.shape == (32, 128)
    for pos, i in [(0, 0), (1, 0), (5, 3), (31, 63), (17, 20)]:
        w = 10_000.0 ** (-2 * i / 128)
        # fp32 table: the angle pos * w is rounded, so sin/cos are off by about u * pos
        bound = tolerance(torch.float32, scale=max(pos, 1))["atol"]
        assert math.isclose(table[pos, 2 * i].item(), math.sin(pos * w), abs_tol=bound)
        assert math.isclose(table[pos, 2 * i + 1].item(), math.cos(pos * w), abs_tol=bound)
    assert table[0, 0::2].abs().max() == 0 and (table[0, 1::2] == 1).all()


def test_sinusoidal_offset_is_a_fixed_linear_map():
    """PE[pos + k] = M_k PE[pos] with M_k a block rotation that does not depend on pos."""
    table = sinusoidal(40, 8).double()
    offset = 7
    w = 10_000.0 ** (-torch.arange(0, 8, 2, dtype=torch.float64) / 8)
    c, s = torch.cos(offset * w), torch.sin(offset * w)
    sin_part, cos_part = table[:-offset, 0::2], table[:-offset, 1::2]
    # the table is fp32: its angles (positions up to 40) are rounded to about u * 40
    fp32_table = tolerance(torch.float32, scale=40.0)
    torch.testing.assert_close(table[offset:, 0::2], sin_part * c + cos_part * s, **fp32_table)
    torch.testing.assert_close(table[offset:, 1::2], cos_part * c - sin_part * s, **fp32_table)


# --- ALiBi --------------------------------------------------------------------------------

def papers_slopes(n_heads):
    """The ALiBi paper's rule, written from its description with log2 (independent form)."""
    def geometric(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start ** i for i in range(n)]
    if math.log2(n_heads).is_integer():
        return geometric(n_heads)
    closest = 2 ** math.floor(math.log2(n_heads))
    return geometric(closest) + papers_slopes(2 * closest)[0::2][: n_heads - closest]


def test_alibi_slopes_for_8_heads_are_halves_down_to_1_over_256():
    assert alibi_slopes(8).tolist() == [1 / 2 ** k for k in range(1, 9)]


def test_alibi_slopes_for_12_heads_interleave_the_16_head_slopes():
    slopes = alibi_slopes(12)
    expected = [2.0 ** -k for k in range(1, 9)] + [2.0 ** -(k + 0.5) for k in range(4)]
    torch.testing.assert_close(slopes, torch.tensor(expected))


@pytest.mark.parametrize("n_heads", [1, 2, 3, 5, 6, 7, 12, 16, 20, 24, 40, 64, 96])
def test_alibi_slopes_follow_the_papers_rule(n_heads):
    slopes = alibi_slopes(n_heads)
    assert slopes.shape == (n_heads,) and slopes.dim() == 1
    torch.testing.assert_close(slopes, torch.tensor(papers_slopes(n_heads)))
    assert len(set(slopes.tolist())) == n_heads and (slopes > 0).all() and (slopes < 1).all()


def test_alibi_bias_is_minus_slope_times_distance():
    slopes = alibi_slopes(4)
    bias = alibi_bias(slopes, torch.arange(5), torch.arange(5))
    assert bias.shape == (4, 5, 5)
    assert (bias.diagonal(dim1=-2, dim2=-1) == 0).all()
    assert bias[1, 4, 0].item() == -slopes[1].item() * 4
    decode = alibi_bias(slopes, torch.tensor([4]), torch.arange(5))   # one query at position 4
    torch.testing.assert_close(decode, bias[:, 4:])


# --- errors -------------------------------------------------------------------------------

@pytest.mark.parametrize("make", [
    lambda: rope_inv_freq(7),
    lambda: rope_cos_sin(4, 15),
    lambda: rope_freqs_cis(4, 3),
    lambda: RotaryEmbedding(9, 16),
])
def test_odd_head_dim_is_refused(make):
    with pytest.raises(ValueError, match="even, positive head_dim"):
        make()


def test_positions_beyond_the_table_are_refused():
    rotary = RotaryEmbedding(8, max_seq_len=16)
    with pytest.raises(ValueError, match="beyond the RoPE table of max_seq_len=16"):
        rotary(torch.arange(17))
    with pytest.raises(ValueError, match="non-negative"):
        rotary(torch.tensor([-1, 0]))
    with pytest.raises(TypeError, match="integers"):
        rotary(torch.arange(4.0))


def test_tables_that_do_not_fit_x_are_refused():
    x = torch.randn(1, 6, 2, 8)
    cos, sin = rope_cos_sin(4, 8)
    with pytest.raises(ValueError, match="6 positions but the cos/sin table has 4 rows"):
        apply_rope(x, cos, sin)
    cos, sin = rope_cos_sin(6, 16)
    with pytest.raises(ValueError, match="head_dim 8"):
        apply_rope(x, cos, sin)
    with pytest.raises(ValueError, match="freqs_cis table has 5 rows"):
        apply_rope_complex(x, rope_freqs_cis(5, 8))
    with pytest.raises(ValueError, match=r"\(batch, seq, n_heads, head_dim\)"):
        apply_rope(x[0], *rope_cos_sin(6, 8))


def test_bad_permutation_inputs_are_refused():
    with pytest.raises(ValueError, match="pass n_kv_heads"):
        interleaved_to_half_split(torch.randn(24, 8), 5)
    with pytest.raises(ValueError, match="even head_dim"):
        half_split_to_interleaved(torch.randn(12, 8), 4)       # head_dim 3
    with pytest.raises(ValueError, match="shape"):
        interleaved_to_half_split(torch.randn(2, 8, 8), 1)
    with pytest.raises(TypeError, match="torch.Tensor"):
        interleaved_to_half_split([[1.0, 2.0]], 1)


def test_bad_sinusoidal_and_alibi_inputs_are_refused():
    with pytest.raises(ValueError, match="even, positive dim"):
        sinusoidal(4, 5)
    with pytest.raises(ValueError, match="n_heads must be positive"):
        alibi_slopes(0)
    with pytest.raises(TypeError, match="n_heads must be an int"):
        alibi_slopes(8.0)


# --- explorers ----------------------------------------------------------------------------

def test_explorers_draw_and_redraw_on_every_control():
    rope = rope_explorer(head_dim=16, max_position=32, max_distance=64)
    alibi = alibi_explorer()
    for explorer, changes in ((rope, {"position": 20, "pair": 3, "rope_theta": 500_000.0}),
                              (alibi, {"n_heads": 12, "head": 15, "seq_len": 8})):
        assert bytes(explorer.image.value).startswith(b"\x89PNG")
        for name, value in changes.items():
            before = explorer.redraws
            explorer.controls[name].value = value
            assert explorer.redraws == before + 1, name
        assert not explorer.errors.outputs, explorer.errors.outputs
    fig = alibi.figure(n_heads=6, head=5, seq_len=5)
    assert fig.axes[0].get_title().startswith("head 5 of 6")
    assert all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes[:2])
