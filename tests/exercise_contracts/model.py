"""Lesson 00's check: counting a Llama's parameters by hand."""

from ._contract import Contract


def hidden_size(dim, multiple_of, ffn_dim_multiplier):
    hidden = int(2 * 4 * dim / 3)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return -(-hidden // multiple_of) * multiple_of


def count_ok(dim, n_layers, n_heads, n_kv_heads, vocab_size, multiple_of, ffn_dim_multiplier):
    head_dim = dim // n_heads
    hidden = hidden_size(dim, multiple_of, ffn_dim_multiplier)
    attention = 2 * dim * dim + 2 * dim * n_kv_heads * head_dim
    layer = attention + 3 * dim * hidden + 2 * dim
    return 2 * vocab_size * dim + n_layers * layer + dim


def _variant(kv=True, multiplier=True, round_up=True, four=False, mats=3, norms=2, final=1,
             tables=2, as_float=False):
    def count(dim, n_layers, n_heads, n_kv_heads, vocab_size, multiple_of, ffn_dim_multiplier):
        head_dim = dim // n_heads
        hidden = int(2 * 4 * dim / 3)
        if ffn_dim_multiplier is not None and multiplier:
            hidden = int(ffn_dim_multiplier * hidden)
        if round_up:
            hidden = -(-hidden // multiple_of) * multiple_of
        if four:
            hidden = 4 * dim
        n_kv = n_kv_heads if kv else n_heads
        layer = 2 * dim * dim + 2 * dim * n_kv * head_dim + mats * dim * hidden + norms * dim
        total = tables * vocab_size * dim + n_layers * layer + final * dim
        return float(total) if as_float else total
    return count


def count_with_model(dim, n_layers, n_heads, n_kv_heads, vocab_size, multiple_of,
                     ffn_dim_multiplier):
    from llama_edu.model import LlamaConfig, count_parameters

    return count_parameters(LlamaConfig(dim=dim, n_layers=n_layers, n_heads=n_heads,
                                        n_kv_heads=n_kv_heads, vocab_size=vocab_size,
                                        multiple_of=multiple_of,
                                        ffn_dim_multiplier=ffn_dim_multiplier))


def attention_ok(dim, n_heads, n_kv_heads):
    head_dim = dim // n_heads
    return 2 * dim * dim + 2 * dim * n_kv_heads * head_dim


def attention_mha(dim, n_heads, n_kv_heads):
    return 4 * dim * dim


def attention_no_head_dim(dim, n_heads, n_kv_heads):
    return 2 * dim * dim + 2 * dim * n_kv_heads


def attention_no_o(dim, n_heads, n_kv_heads):
    return dim * dim + 2 * dim * n_kv_heads * (dim // n_heads)


def attention_only_k(dim, n_heads, n_kv_heads):
    return 2 * dim * dim + dim * n_kv_heads * (dim // n_heads)


CONTRACTS = {
    "check_attention_parameters": Contract(references=[attention_ok], mistakes=[
        (attention_mha, "as in multi-head attention"),
        (attention_no_head_dim, "not n_kv_heads"),
        (attention_no_o, "left out o_proj"),
        (attention_only_k, "count both k_proj and v_proj"),
        (lambda dim, n_heads, n_kv_heads: attention_ok(dim, n_heads, n_kv_heads) / 1,
         "should return an int"),
    ]),
    "check_count_parameters": Contract(references=[count_ok], mistakes=[
        (_variant(kv=False), "with grouped-query attention"),
        (_variant(multiplier=False), "you left out ffn_dim_multiplier"),
        (_variant(round_up=False), "rounded UP to a multiple of multiple_of"),
        (_variant(four=True), "hidden size of 4 \\* dim"),
        (_variant(mats=2), "three matrices"),
        (_variant(norms=0, final=0), "left out the RMSNorm weights"),
        (_variant(final=0), "left out the final norm"),
        (_variant(tables=1), "does not tie"),
        (_variant(as_float=True), "should return an int"),
        (count_with_model, "calls numel"),
    ]),
}
