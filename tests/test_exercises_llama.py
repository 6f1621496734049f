"""Lesson 09's checks: the reference passes, stubs and classic mistakes get their own words."""

import pytest

from llama_edu.exercises import check_decoder_layer, check_parameter_count

# ---------------------------------------------------------------------------------------
# the decoder layer


def pre_ln(x, attention, ffn, attention_norm, ffn_norm):
    h = x + attention(attention_norm(x))
    return h + ffn(ffn_norm(h))


def post_ln(x, attention, ffn, attention_norm, ffn_norm):
    h = attention_norm(x + attention(x))
    return ffn_norm(h + ffn(h))


def no_residual(x, attention, ffn, attention_norm, ffn_norm):
    return ffn(ffn_norm(attention(attention_norm(x))))


def parallel_block(x, attention, ffn, attention_norm, ffn_norm):
    return x + attention(attention_norm(x)) + ffn(ffn_norm(x))


def one_norm_twice(x, attention, ffn, attention_norm, ffn_norm):
    h = x + attention(attention_norm(x))
    return h + ffn(attention_norm(h))


def normed_residual(x, attention, ffn, attention_norm, ffn_norm):
    x = attention_norm(x)
    h = x + attention(x)
    return h + ffn(ffn_norm(h))


def second_residual_from_x(x, attention, ffn, attention_norm, ffn_norm):
    h = x + attention(attention_norm(x))
    return x + ffn(ffn_norm(h))


def normed_output(x, attention, ffn, attention_norm, ffn_norm):
    h = x + attention(attention_norm(x))
    return ffn_norm(h + ffn(ffn_norm(h)))


def stub(x, attention, ffn, attention_norm, ffn_norm):
    raise NotImplementedError()


def test_the_reference_wiring_passes(capsys):
    check_decoder_layer(pre_ln)
    out, err = capsys.readouterr()
    assert out.count("\n") == 1 and "decoder_layer is wired like Llama" in out and err == ""


@pytest.mark.parametrize("fn, match", [
    (stub, "not written yet"),
    (post_ln, "Post-LN"),
    (no_residual, "no residual connection"),
    (parallel_block, "parallel block of GPT-J"),
    (one_norm_twice, "its own norm"),
    (normed_residual, "added the normalised x to the residual"),
    (second_residual_from_x, "second residual adds x"),
    (normed_output, "normalised the layer's output"),
    (lambda x, *args, **kw: x[:, -1], r"returned shape \(2, 16\), expected \(2, 5, 16\)"),
    (lambda x, attention, ffn, attention_norm, ffn_norm: pre_ln(x, attention, ffn,
                                                                attention_norm, ffn_norm) * 1.01,
     "off by up to"),
])
def test_mistakes_get_their_own_feedback(fn, match):
    with pytest.raises(AssertionError, match=match):
        check_decoder_layer(fn)


# ---------------------------------------------------------------------------------------
# counting parameters


def count(dim, n_layers, n_heads, n_kv_heads, vocab_size, hidden_dim, tie_word_embeddings):
    kv_dim = n_kv_heads * (dim // n_heads)
    per_layer = 2 * dim * dim + 2 * dim * kv_dim + 3 * dim * hidden_dim + 2 * dim
    head = 0 if tie_word_embeddings else vocab_size * dim
    return vocab_size * dim + n_layers * per_layer + dim + head


def test_the_reference_count_passes(capsys):
    check_parameter_count(count)
    out, err = capsys.readouterr()
    assert "6,738,415,616" in out and out.count("\n") == 1 and err == ""


def counting(**slip):
    def fn(dim, n_layers, n_heads, n_kv_heads, vocab_size, hidden_dim, tie_word_embeddings):
        kv_dim = dim if slip.get("kv_full") else n_kv_heads * (dim // n_heads)
        per_layer = (2 * dim * dim + 2 * dim * kv_dim + slip.get("mats", 3) * dim * hidden_dim
                     + (0 if slip.get("no_norms") else 2 * dim))
        head = vocab_size * dim if slip.get("always_head") or not tie_word_embeddings else 0
        final = 0 if slip.get("no_final_norm") else dim
        return vocab_size * dim + n_layers * per_layer + final + head
    return fn


@pytest.mark.parametrize("slip, match", [
    ({"kv_full": True}, "n_kv_heads \\* head_dim"),
    ({"mats": 2}, "three matrices in SwiGLU"),
    ({"no_norms": True, "no_final_norm": True}, "two per layer and one final"),
    ({"no_norms": True}, "two RMSNorm gains of each layer"),
    ({"no_final_norm": True}, "final RMSNorm's gain"),
    ({"always_head": True}, "count it once"),
])
def test_counting_slips_are_named(slip, match):
    with pytest.raises(AssertionError, match=match):
        check_parameter_count(counting(**slip))


def test_other_count_errors_say_what_came_back():
    with pytest.raises(AssertionError, match="not written yet"):
        check_parameter_count(lambda *args: (_ for _ in ()).throw(NotImplementedError()))
    with pytest.raises(AssertionError, match="should return an int, got str"):
        check_parameter_count(lambda *args: "6.7B")
    with pytest.raises(AssertionError, match=r"expected 6,738,415,616, got 6,738,415,617 "
                                             r"\(off by \+1\)"):
        check_parameter_count(lambda *args: count(*args) + 1)
    with pytest.raises(AssertionError, match="LM head .* is missing"):
        check_parameter_count(lambda d, n, h, kv, v, hid, tie: count(d, n, h, kv, v, hid, True))
