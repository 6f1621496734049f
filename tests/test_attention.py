"""Attention: the formula equals SDPA, masks as properties, the KV cache equals a full
forward, GQA reduces to MHA, the MHA -> GQA conversion, and the lessons' explorers."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from llama_edu.attention import (
    Attention,
    KVCache,
    attention,
    attention_maps,
    attention_probs,
    build_mask,
    causal_mask,
    convert_to_gqa,
    masked_softmax,
    mean_pool_kv_heads,
    padding_mask,
    repeat_kv,
    sdpa,
)
from llama_edu.model import Llama, LlamaConfig

TOL = {"rtol": 1e-5, "atol": 1e-5}


def qkv(batch=2, n_heads=3, q_len=5, kv_len=5, head_dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, n_heads, q_len, head_dim, generator=g),
            torch.randn(batch, n_heads, kv_len, head_dim, generator=g),
            torch.randn(batch, n_heads, kv_len, head_dim, generator=g))


# ---- the formula against F.scaled_dot_product_attention --------------------------------


def test_formula_equals_sdpa_without_a_mask():
    q, k, v = qkv(q_len=4, kv_len=7)
    torch.testing.assert_close(attention(q, k, v), F.scaled_dot_product_attention(q, k, v), **TOL)


def test_formula_equals_sdpa_with_is_causal():
    q, k, v = qkv(q_len=6, kv_len=6)
    torch.testing.assert_close(attention(q, k, v, is_causal=True),
                               F.scaled_dot_product_attention(q, k, v, is_causal=True), **TOL)


def test_is_causal_with_a_cached_prefix_is_bottom_right_unlike_sdpas_top_left():
    q, k, v = qkv(q_len=3, kv_len=7)
    ours = attention(q, k, v, is_causal=True)
    bottom_right = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(3, 7))
    torch.testing.assert_close(ours, bottom_right, **TOL)
    assert not torch.allclose(ours, F.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_formula_equals_sdpa_with_padding_and_causal_mask():
    q, k, v = qkv(batch=3, q_len=6, kv_len=6)
    lengths = torch.tensor([6, 4, 2])
    attention_mask = (torch.arange(6)[None, :] >= 6 - lengths[:, None]).long()  # left padding
    mask, is_causal = build_mask(6, 6, attention_mask)
    assert mask.shape == (3, 1, 6, 6) and not is_causal
    ours = attention(q, k, v, mask)
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                               **TOL)
    assert not ours.isnan().any()
    assert (ours[2, :, :4] == 0).all()       # padded queries see no key at all: zeros


def test_fully_masked_rows_give_zeros_and_finite_gradients():
    q, k, v = qkv(q_len=4, kv_len=5)
    for t in (q, k, v):
        t.requires_grad_(True)
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[1] = False
    mask[3, :4] = False
    out = attention(q, k, v, mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                               **TOL)
    assert (out[:, :, 1] == 0).all()
    out.square().sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))


def test_additive_float_mask_equals_sdpa():
    q, k, v = qkv(q_len=5, kv_len=5)
    g = torch.Generator().manual_seed(3)
    bias = torch.randn(1, 3, 5, 5, generator=g)          # like ALiBi: one bias per head
    bias = bias.masked_fill(~causal_mask(5), float("-inf"))
    bias[..., 0, :] = float("-inf")                      # and one fully hidden row
    ours = attention(q, k, v, bias)
    torch.testing.assert_close(ours, F.scaled_dot_product_attention(q, k, v, attn_mask=bias),
                               **TOL)
    assert not ours.isnan().any()
    opened = bias.clamp_min(-5)              # is_causal hides the future again
    opened[..., 0, :] = float("-inf")
    torch.testing.assert_close(attention(q, k, v, opened, is_causal=True),
                               attention(q, k, v, bias), **TOL)


def test_attention_probs_rows_sum_to_one_and_respect_the_mask():
    q, k, _ = qkv(q_len=4, kv_len=6)
    probs = attention_probs(q, k, is_causal=True)
    torch.testing.assert_close(probs.sum(-1), torch.ones(2, 3, 4))
    assert (probs[..., ~causal_mask(4, 6)] == 0).all()


def test_masked_softmax_equals_torch_softmax_and_survives_huge_scores():
    g = torch.Generator().manual_seed(0)
    scores = torch.randn(4, 9, generator=g)
    torch.testing.assert_close(masked_softmax(scores), torch.softmax(scores, -1))
    huge = scores * 1e4
    assert torch.isfinite(masked_softmax(huge)).all()
    torch.testing.assert_close(masked_softmax(huge), torch.softmax(huge, -1))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.booleans(), min_size=5, max_size=5), min_size=1, max_size=6),
       st.floats(-50, 50))
def test_masked_softmax_properties(mask_rows, shift):
    mask = torch.tensor(mask_rows)
    scores = torch.randn(mask.shape)
    probs = masked_softmax(scores, mask)
    assert (probs[~mask] == 0).all()
    sums = probs.sum(-1)
    torch.testing.assert_close(sums, mask.any(-1).float())
    torch.testing.assert_close(masked_softmax(scores + shift, mask), probs)  # shift-invariant


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_sdpa_with_grouped_kv_equals_the_formula_with_repeated_heads(n_kv_heads):
    q, _, _ = qkv(n_heads=4, q_len=5, kv_len=5)
    _, k, v = qkv(n_heads=n_kv_heads, q_len=5, kv_len=5, seed=1)
    n_rep = 4 // n_kv_heads
    k_rep, v_rep = (repeat_kv(t.transpose(1, 2), n_rep).transpose(1, 2) for t in (k, v))
    mask = causal_mask(5) & torch.tensor([False, True, True, True, True])
    torch.testing.assert_close(sdpa(q, k, v, mask), attention(q, k_rep, v_rep, mask), **TOL)


# ---- masks as properties ---------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 12), st.integers(0, 12))
def test_causal_mask_properties(q_len, extra):
    kv_len = q_len + extra
    mask = causal_mask(q_len, kv_len)
    assert mask.shape == (q_len, kv_len) and mask.dtype == torch.bool
    assert torch.equal(mask, torch.ones(q_len, kv_len, dtype=torch.bool).tril(extra))
    for i in range(q_len):                   # query i sits at position extra + i
        assert mask[i].sum() == extra + i + 1
        assert mask[i, : extra + i + 1].all()
    if q_len:
        assert mask[-1].all()                # the newest token sees everything
    # a decode step's row is the matching row of the full square mask
    full = causal_mask(kv_len)
    assert torch.equal(mask, full[extra:])


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 6), st.integers(0, 6), st.data())
def test_build_mask_is_causal_and_padding(q_len, extra, data):
    kv_len = q_len + extra
    batch = data.draw(st.integers(1, 3))
    rows = data.draw(st.lists(st.lists(st.integers(0, 1), min_size=kv_len, max_size=kv_len),
                              min_size=batch, max_size=batch))
    attention_mask = torch.tensor(rows)
    mask, is_causal = build_mask(q_len, kv_len, attention_mask)
    assert not is_causal and mask.shape == (batch, 1, q_len, kv_len)
    expected = causal_mask(q_len, kv_len)[None, None] & attention_mask.bool()[:, None, None, :]
    assert torch.equal(mask, expected)
    plain, plain_causal = build_mask(q_len, kv_len)
    if q_len == kv_len:                      # SDPA's fast causal path, no mask tensor
        assert plain is None and plain_causal == (q_len > 1)
    elif q_len == 1:                         # one new token sees the whole cache
        assert plain is None and not plain_causal
    else:
        assert torch.equal(plain, causal_mask(q_len, kv_len)) and not plain_causal


def test_mask_errors_say_what_to_change():
    with pytest.raises(ValueError, match="q_len <= kv_len"):
        causal_mask(5, 3)
    with pytest.raises(ValueError, match=r"\(batch, seq\)"):
        padding_mask(torch.ones(5))
    with pytest.raises(ValueError, match="cached \\+ new"):
        build_mask(1, 6, torch.ones(2, 5))
    q, k, v = qkv()
    with pytest.raises(ValueError, match="same head_dim"):
        attention(q, k[..., :4], v)
    with pytest.raises(ValueError, match="same positions"):
        attention(q, k, v[:, :, :3])


# ---- repeat_kv and GQA ------------------------------------------------------------------


@pytest.mark.parametrize("n_rep", [1, 2, 3])
def test_repeat_kv_is_repeat_interleave_on_the_head_dim(n_rep):
    x = torch.randn(2, 5, 2, 4)
    out = repeat_kv(x, n_rep)
    torch.testing.assert_close(out, torch.repeat_interleave(x, n_rep, dim=2), rtol=0, atol=0)
    for h in range(2 * n_rep):               # query head h reads kv head h // n_rep
        assert torch.equal(out[:, :, h], x[:, :, h // n_rep])
    with pytest.raises(ValueError, match="positive integer"):
        repeat_kv(x, 0)
    with pytest.raises(ValueError, match="n_kv_heads, head_dim"):
        repeat_kv(x[0], 2)


def test_attention_with_n_kv_heads_equal_n_heads_is_torch_multihead_attention():
    torch.manual_seed(0)
    dim, n_heads = 24, 4
    ours = Attention(dim, n_heads, n_kv_heads=n_heads, use_sdpa=False)
    ref = torch.nn.MultiheadAttention(dim, n_heads, bias=False, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(torch.cat([ours.q_proj.weight, ours.k_proj.weight,
                                            ours.v_proj.weight]))
        ref.out_proj.weight.copy_(ours.o_proj.weight)
    x = torch.randn(2, 7, dim)
    expected, _ = ref(x, x, x, attn_mask=~causal_mask(7), need_weights=False)
    torch.testing.assert_close(ours(x, is_causal=True), expected, **TOL)


@pytest.mark.parametrize("n_kv_heads", [2, 1])
def test_gqa_equals_mha_whose_kv_heads_are_repeated(n_kv_heads):
    torch.manual_seed(0)
    dim, n_heads, head_dim = 32, 4, 8
    gqa = Attention(dim, n_heads, n_kv_heads)
    mha = Attention(dim, n_heads, n_heads)
    n_rep = n_heads // n_kv_heads
    with torch.no_grad():
        for name in ("q_proj", "o_proj"):
            getattr(mha, name).weight.copy_(getattr(gqa, name).weight)
        for name in ("k_proj", "v_proj"):
            w = getattr(gqa, name).weight.view(n_kv_heads, head_dim, dim)
            getattr(mha, name).weight.copy_(w.repeat_interleave(n_rep, 0).reshape(-1, dim))
    x = torch.randn(2, 6, dim)
    torch.testing.assert_close(gqa(x, is_causal=True), mha(x, is_causal=True), **TOL)
    # mean-pooling those repeated heads gives the GQA weights back exactly
    torch.testing.assert_close(mean_pool_kv_heads(mha.k_proj.weight, n_heads, n_kv_heads),
                               gqa.k_proj.weight)


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_sdpa_and_plain_attention_modules_agree_with_rope_and_padding(n_kv_heads):
    torch.manual_seed(0)
    config = LlamaConfig.from_preset("micro", n_kv_heads=n_kv_heads)
    fast = Llama(config).eval()
    plain = Llama(dataclasses.replace(config, attn_impl="plain")).eval()
    plain.load_state_dict(fast.state_dict())
    tokens = torch.randint(0, 256, (2, 9))
    attention_mask = torch.ones(2, 9, dtype=torch.long)
    attention_mask[1, :3] = 0
    torch.testing.assert_close(plain(tokens, attention_mask=attention_mask),
                               fast(tokens, attention_mask=attention_mask), **TOL)


def test_attention_config_errors():
    with pytest.raises(ValueError, match=r"n_kv_heads in \[1, 2, 3, 6\]"):
        Attention(24, 6, 4)
    with pytest.raises(ValueError, match="divisible by n_heads"):
        Attention(30, 4)


# ---- MHA -> GQA conversion ---------------------------------------------------------------


def test_mean_pool_kv_heads_groups_neighbouring_heads():
    weight = torch.arange(4 * 2 * 3, dtype=torch.float).reshape(8, 3)   # 4 heads, head_dim 2
    pooled = mean_pool_kv_heads(weight, n_heads=4, n_kv_heads=2)
    torch.testing.assert_close(pooled[:2], (weight[0:2] + weight[2:4]) / 2)
    torch.testing.assert_close(pooled[2:], (weight[4:6] + weight[6:8]) / 2)
    torch.testing.assert_close(mean_pool_kv_heads(weight, 4, 4), weight)
    torch.testing.assert_close(mean_pool_kv_heads(weight, 4, 1), weight.view(4, 2, 3).mean(0))
    with pytest.raises(ValueError, match="must divide"):
        mean_pool_kv_heads(weight, 4, 3)


def test_convert_to_gqa_is_exact_when_the_grouped_heads_agree():
    torch.manual_seed(0)
    mha = Llama(LlamaConfig.from_preset("micro", n_kv_heads=4)).eval()
    with torch.no_grad():                    # make heads 0=1 and 2=3 in every K and V
        for layer in mha.layers:
            for proj in (layer.self_attn.k_proj, layer.self_attn.v_proj):
                w = proj.weight.view(2, 2, 8, 32)
                w[:, 1] = w[:, 0]
    tokens = torch.randint(0, 256, (2, 10))
    for method in ("mean", "first"):
        gqa = convert_to_gqa(mha, 2, method)
        assert gqa.config.n_kv_heads == 2 and gqa.layers[0].self_attn.k_proj.weight.shape == (
            16, 32)
        torch.testing.assert_close(gqa(tokens), mha(tokens), **TOL)
    mqa = convert_to_gqa(mha, 1)
    assert not torch.allclose(mqa(tokens), mha(tokens))   # heads 0 and 2 differ
    with pytest.raises(ValueError, match="must divide"):
        convert_to_gqa(mha, 3)
    with pytest.raises(ValueError, match="'mean' or 'first'"):
        convert_to_gqa(mha, 2, "random")


# ---- the KV cache ----------------------------------------------------------------------


@pytest.mark.parametrize("n_kv_heads, attn_impl", [(4, "sdpa"), (2, "sdpa"), (1, "sdpa"),
                                                   (2, "plain")])
def test_step_by_step_decoding_with_the_cache_equals_the_full_forward(n_kv_heads, attn_impl):
    torch.manual_seed(1)
    model = Llama(LlamaConfig.from_preset("micro", n_kv_heads=n_kv_heads,
                                          attn_impl=attn_impl)).eval()
    tokens = torch.randint(0, 256, (3, 14))
    full = model(tokens)
    cache = model.make_cache(batch_size=3, max_seq_len=16)
    steps = [model(tokens[:, :6], 0, cache)]                       # prefill
    steps += [model(tokens[:, t:t + 1], t, cache) for t in range(6, 10)]
    steps.append(model(tokens[:, 10:14], 10, cache))                # a multi-token step
    torch.testing.assert_close(torch.cat(steps, 1), full, **TOL)
    assert all(c.length == 14 for c in cache)


def test_cached_decoding_with_left_padding_equals_the_full_forward():
    torch.manual_seed(2)
    model = Llama(LlamaConfig.from_preset("micro")).eval()
    tokens = torch.randint(0, 256, (2, 10))
    attention_mask = torch.ones(2, 10, dtype=torch.long)
    attention_mask[1, :4] = 0
    full = model(tokens, attention_mask=attention_mask)
    cache = model.make_cache(2, 10)
    steps = [model(tokens[:, :5], 0, cache, attention_mask[:, :5])]
    steps += [model(tokens[:, t:t + 1], t, cache, attention_mask[:, :t + 1])
              for t in range(5, 10)]
    real = attention_mask.bool()
    torch.testing.assert_close(torch.cat(steps, 1)[real], full[real], **TOL)


@pytest.mark.parametrize("attn_impl", ["sdpa", "plain"])
def test_training_through_left_padding_keeps_gradients_finite(attn_impl):
    torch.manual_seed(0)
    model = Llama(LlamaConfig.from_preset("micro", attn_impl=attn_impl))
    tokens = torch.randint(0, 256, (2, 10))
    attention_mask = torch.ones(2, 10, dtype=torch.long)
    attention_mask[1, :4] = 0                # the pad queries see no key at all
    logits = model(tokens, attention_mask=attention_mask)
    logits[attention_mask.bool()].logsumexp(-1).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_left_padding_leaves_the_real_tokens_logits_unchanged():
    torch.manual_seed(0)
    model = Llama(LlamaConfig.from_preset("micro")).eval()
    tokens = torch.randint(0, 256, (1, 6))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), tokens], 1)
    attention_mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
    positions = (attention_mask.cumsum(-1) - 1).clamp_min(0)
    for position_ids in (None, positions):   # RoPE sees only offsets, so both work
        out = model(padded, attention_mask=attention_mask, position_ids=position_ids)
        torch.testing.assert_close(out[:, 3:], model(tokens), **TOL)


def test_attention_module_cache_equals_full_attention():
    torch.manual_seed(0)
    layer = Attention(16, 4, 2)
    x = torch.randn(2, 6, 16)
    full = layer(x, is_causal=True)
    cache = KVCache(2, 8, 2, 4)
    outs = [layer(x[:, :3], mask=None, is_causal=True, cache=cache, start_pos=0)]
    outs += [layer(x[:, t:t + 1], cache=cache, start_pos=t) for t in range(3, 6)]
    torch.testing.assert_close(torch.cat(outs, 1), full, **TOL)


def test_cache_overflow_gaps_and_shapes_raise_clear_errors():
    cache = KVCache(1, 4, 2, 3)
    k = torch.zeros(1, 3, 2, 3)
    cache.update(k, k, 0)
    with pytest.raises(ValueError, match="KV cache overflow: writing positions 3..4"):
        cache.update(k[:, :2], k[:, :2], 3)
    with pytest.raises(ValueError, match="leaves a gap"):
        KVCache(1, 8, 2, 3).update(k, k, 2)
    with pytest.raises(ValueError, match="do not fit the cache"):
        cache.update(torch.zeros(1, 1, 4, 3), torch.zeros(1, 1, 4, 3), 3)
    with pytest.raises(ValueError, match="one shape"):
        cache.update(k[:, :1], k, 3)
    with pytest.raises(ValueError, match="sizes must be positive"):
        KVCache(1, 0, 2, 3)
    model = Llama(LlamaConfig.from_preset("micro")).eval()
    cache = model.make_cache(1, max_seq_len=6)
    model(torch.zeros(1, 6, dtype=torch.long), 0, cache)
    with pytest.raises(ValueError, match="KV cache overflow"):
        model(torch.zeros(1, 1, dtype=torch.long), 6, cache)


def test_cache_reset_length_and_memory():
    cache = KVCache(2, 10, 2, 4, dtype=torch.float16)
    assert cache.memory_bytes() == 2 * 2 * 10 * 2 * 4 * 2
    assert cache.memory_bytes(used=True) == 0
    keys, values = cache.update(torch.ones(2, 3, 2, 4), torch.ones(2, 3, 2, 4), 0)
    assert keys.shape == (2, 3, 2, 4) and cache.length == 3
    assert cache.memory_bytes(used=True) == 2 * 2 * 3 * 2 * 4 * 2
    keys, _ = cache.update(torch.full((2, 1, 2, 4), 2.0), torch.ones(2, 1, 2, 4), 3)
    assert keys.shape == (2, 4, 2, 4) and (keys[:, 3] == 2).all() and (keys[:, :3] == 1).all()
    cache.reset()
    assert cache.length == 0 and "length=0" in repr(cache)
    keys, _ = cache.update(torch.zeros(1, 2, 2, 4), torch.zeros(1, 2, 2, 4), 0)  # smaller batch
    assert keys.shape == (1, 2, 2, 4)


def test_model_cache_memory_matches_the_per_token_formula():
    from llama_edu.model import kv_cache_bytes_per_token

    config = LlamaConfig.from_preset("micro")
    cache = Llama(config).make_cache(1, 100)
    total = sum(c.memory_bytes() for c in cache)
    assert total == 100 * kv_cache_bytes_per_token(config, bytes_per_value=4)


# ---- attention maps and the explorers ---------------------------------------------------


def test_attention_maps_reproduce_the_layer_output():
    torch.manual_seed(0)
    model = Llama(LlamaConfig.from_preset("micro")).eval()
    tokens = torch.randint(0, 256, (2, 9))
    captured = {}

    def grab(module, args, kwargs, output):
        captured["x"], captured["out"] = args[0], output

    layer = model.layers[1].self_attn
    handle = layer.register_forward_hook(grab, with_kwargs=True)
    maps = attention_maps(model, tokens)
    handle.remove()
    assert len(maps) == 2 and maps[1].shape == (2, 4, 9, 9)
    torch.testing.assert_close(maps[1].sum(-1), torch.ones(2, 4, 9))
    assert (maps[1][..., ~causal_mask(9)] == 0).all()
    q, k, v = layer.project(captured["x"], *model.rotary(torch.arange(9)))
    mixed = maps[1] @ repeat_kv(v, layer.n_rep).transpose(1, 2)     # (b, h, s, hd)
    out = layer.o_proj(mixed.transpose(1, 2).reshape(2, 9, -1))
    torch.testing.assert_close(out, captured["out"], **TOL)
    seeing = attention_maps(model, tokens, causal=False)[1]
    assert (seeing[..., ~causal_mask(9)] > 0).all()
    padded = torch.ones(2, 9, dtype=torch.long)
    padded[0, :3] = 0
    weights = attention_maps(model, tokens, padded, causal=False)[0]
    assert (weights[0, :, :, :3] == 0).all() and (weights[1, :, :, :3] > 0).all()


def test_attention_explorer_toggles_and_handles_chinese_text():
    import warnings

    from llama_edu.widgets.attention import attention_explorer, token_labels

    torch.manual_seed(0)
    model = Llama(LlamaConfig.from_preset("micro")).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")       # e.g. a missing-glyph warning would fail here
        explorer = attention_explorer(model, None, ["The cat sat.", "注意力 is attention"])
        first = bytes(explorer.image.value)
        explorer.controls["causal"].value = False
        explorer.controls["sentence"].value = "注意力 is attention"
        explorer.controls["padding"].value = "left-padded, not masked"
    assert explorer.redraws == 4 and bytes(explorer.image.value) != first
    assert token_labels(None, list(b"a b")) == ["a", "␣", "b"]
    with pytest.raises(ValueError, match="at least one sentence"):
        attention_explorer(model, None, [])


def test_kv_cache_explorer_steps_through_the_cache():
    from llama_edu.widgets.attention import cache_steps, kv_cache_explorer

    torch.manual_seed(0)
    model = Llama(LlamaConfig.from_preset("micro")).eval()
    ids = list(b"step by step")
    cache, weights = cache_steps(model, ids)
    assert cache[0].length == len(ids) and weights[0].shape == (4, len(ids), len(ids))
    full_k = model.layers[0].self_attn.project(model.layers[0].input_layernorm(
        model.embed_tokens(torch.tensor([ids]))), *model.rotary(torch.arange(len(ids))))[1]
    torch.testing.assert_close(cache[0].k, full_k.detach(), **TOL)
    explorer = kv_cache_explorer(model, None, "step by step")
    explorer.controls["step"].value = 5
    assert explorer.redraws == 2
