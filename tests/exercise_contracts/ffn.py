"""Lesson 04's checks: a Llama's parameter count with GQA and the FFN multiplier, and the FFN
width solved from a released total."""

from llama_edu.ffn import ffn_hidden_dim

from ._contract import Contract

# ---- the parameter count ------------------------------------------------------------------


def count_ok(dim, n_layers, n_heads, n_kv_heads, vocab_size, multiple_of,
             ffn_dim_multiplier=None):
    hidden = int(2 * 4 * dim / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    hidden = multiple_of * -(-hidden // multiple_of)               # round up
    kv_dim = n_kv_heads * (dim // n_heads)
    attention = 2 * dim * dim + 2 * dim * kv_dim                   # q, o; k, v (GQA)
    per_layer = attention + 3 * dim * hidden + 2 * dim
    return 2 * vocab_size * dim + n_layers * per_layer + dim


def count_with_package_width(dim, n_layers, n_heads, n_kv_heads, vocab_size, multiple_of,
                             ffn_dim_multiplier=None):
    hidden = ffn_hidden_dim(dim, multiple_of, ffn_dim_multiplier)
    head_dim = dim // n_heads
    layer = dim * n_heads * head_dim * 2 + dim * n_kv_heads * head_dim * 2 + 3 * dim * hidden
    return vocab_size * dim * 2 + n_layers * (layer + 2 * dim) + dim


def _count_variant(**slip):
    def count(dim, n_layers, n_heads, n_kv_heads, vocab_size, multiple_of,
              ffn_dim_multiplier=None):
        mult = None if slip.get("no_mult") else ffn_dim_multiplier
        hidden = int(2 * 4 * dim / 3)
        if mult is not None:
            hidden = int(mult * hidden)
        hidden = multiple_of * (hidden // multiple_of if slip.get("down")
                                else -(-hidden // multiple_of))
        kv_dim = n_kv_heads * (dim // n_heads)
        attention = {"mha": 4 * dim * dim, "kv_dim": 2 * dim * dim + 2 * dim * n_kv_heads * dim,
                     "one": 3 * dim * dim + dim * kv_dim}.get(slip.get("attn"),
                                                             2 * dim * dim + 2 * dim * kv_dim)
        per_layer = attention + slip.get("mats", 3) * dim * hidden + \
            (0 if slip.get("no_norms") else 2 * dim)
        final = 0 if slip.get("no_norms") or slip.get("no_final") else dim
        total = (1 if slip.get("tied") else 2) * vocab_size * dim + n_layers * per_layer + final
        return float(total) if slip.get("float") else total
    return count


# ---- the FFN width ------------------------------------------------------------------------


def width_ok(total, dim, n_layers, n_heads, n_kv_heads, vocab_size):
    kv_dim = n_kv_heads * (dim // n_heads)
    not_ffn = 2 * vocab_size * dim + dim + n_layers * (2 * dim * dim + 2 * dim * kv_dim + 2 * dim)
    return (total - not_ffn) // (3 * dim * n_layers)


def _width_variant(attn="gqa", mats=3, norms=True, embeddings=2, per_layer=True, cast=int):
    def width(total, dim, n_layers, n_heads, n_kv_heads, vocab_size):
        kv_dim = n_kv_heads * (dim // n_heads)
        attention = 4 * dim * dim if attn == "mha" else 2 * dim * dim + 2 * dim * kv_dim
        layer = attention + (2 * dim if norms else 0)
        rest = embeddings * vocab_size * dim + (dim if norms else 0)
        layers = n_layers if per_layer else 1
        out = (total - rest - layers * layer) / (mats * dim * layers)
        return cast(out) if out == int(out) else out
    return width


CONTRACTS = {
    "check_gqa_parameter_count": Contract(references=[count_ok, count_with_package_width],
                                      mistakes=[
        (_count_variant(attn="mha"), "counted k_proj and v_proj at full width"),
        (_count_variant(attn="kv_dim"), "not n_kv_heads \\* dim"),
        (_count_variant(attn="one"), "not only one of them"),
        (_count_variant(no_mult=True), "ignored ffn_dim_multiplier"),
        (_count_variant(down=True), "rounded the FFN width down"),
        (_count_variant(mats=2), "three matrices"),
        (_count_variant(no_norms=True), "left out the RMSNorm gains"),
        (_count_variant(no_final=True), "final norm"),
        (_count_variant(tied=True), "not tied to the embedding"),
        (_count_variant(float=True), "should return an int"),
    ]),
    "check_ffn_width": Contract(references=[width_ok], mistakes=[
        (_width_variant(attn="mha"), "multi-head"),
        (_width_variant(mats=2), "three matrices of dim x hidden"),
        (_width_variant(norms=False), "norms' gains"),
        (_width_variant(embeddings=1), "subtracted the embedding once"),
        (_width_variant(per_layer=False), "multiply the per-layer terms by n_layers"),
        (_width_variant(cast=float), "should return an int"),
    ]),
}
