"""Lesson 09's checks: the decoder layer's residual wiring, and counting parameters."""

from ._contract import Contract

# ---- the decoder layer ------------------------------------------------------------------


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


def decoder_layer(x, attention, ffn, attention_norm, ffn_norm):  # as nbgrader releases it
    raise NotImplementedError()


# ---- counting parameters ----------------------------------------------------------------


def count(dim, n_layers, n_heads, n_kv_heads, vocab_size, hidden_dim, tie_word_embeddings):
    kv_dim = n_kv_heads * (dim // n_heads)
    per_layer = 2 * dim * dim + 2 * dim * kv_dim + 3 * dim * hidden_dim + 2 * dim
    head = 0 if tie_word_embeddings else vocab_size * dim
    return vocab_size * dim + n_layers * per_layer + dim + head


def counting(**slip):
    """count with one classic slip switched on."""
    def fn(dim, n_layers, n_heads, n_kv_heads, vocab_size, hidden_dim, tie_word_embeddings):
        kv_dim = dim if slip.get("kv_full") else n_kv_heads * (dim // n_heads)
        per_layer = (2 * dim * dim + 2 * dim * kv_dim + slip.get("mats", 3) * dim * hidden_dim
                     + (0 if slip.get("no_norms") else 2 * dim))
        head = vocab_size * dim if slip.get("always_head") or not tie_word_embeddings else 0
        final = 0 if slip.get("no_final_norm") else dim
        return vocab_size * dim + n_layers * per_layer + final + head
    return fn


CONTRACTS = {
    "check_decoder_layer": Contract(
        references=[pre_ln], stub=decoder_layer, passed="decoder_layer is wired like Llama",
        mistakes=[
            (post_ln, "Post-LN"),
            (no_residual, "no residual connection"),
            (parallel_block, "parallel block of GPT-J"),
            (one_norm_twice, "its own norm"),
            (normed_residual, "added the normalised x to the residual"),
            (second_residual_from_x, "second residual adds x"),
            (normed_output, "normalised the layer's output"),
            (lambda x, *args, **kw: x[:, -1], r"returned shape \(2, 16\), expected \(2, 5, 16\)"),
            (lambda x, attention, ffn, attention_norm, ffn_norm:
             pre_ln(x, attention, ffn, attention_norm, ffn_norm) * 1.01, "off by up to"),
        ]),
    "check_parameter_count": Contract(
        references=[count], passed="6,738,415,616",
        mistakes=[
            (counting(kv_full=True), "n_kv_heads \\* head_dim"),
            (counting(mats=2), "three matrices in SwiGLU"),
            (counting(no_norms=True, no_final_norm=True), "two per layer and one final"),
            (counting(no_norms=True), "two RMSNorm gains of each layer"),
            (counting(no_final_norm=True), "final RMSNorm's gain"),
            (counting(always_head=True), "count it once"),
            (lambda d, n, h, kv, v, hid, tie: count(d, n, h, kv, v, hid, True),
             "LM head .* is missing"),
            (lambda *args: "6.7B", "should return an int, got str"),
            (lambda *args: count(*args) + 1,                               # no known slip
             r"expected 6,738,415,616, got 6,738,415,617 \(off by \+1\)"),
        ]),
}
