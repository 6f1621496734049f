"""Lesson 09's checks: the whole Llama forward from its pieces, and counting parameters."""

import torch

from ._contract import Contract

# ---- the whole forward pass -------------------------------------------------------------


def forward_ok(model, tokens):
    seq = tokens.shape[1]
    cos, sin = model.rotary(torch.arange(seq, device=tokens.device))   # (seq, head_dim)
    h = model.embed_tokens(tokens)                                      # (b, seq, dim)
    for layer in model.layers:
        h = h + layer.self_attn(layer.input_layernorm(h), cos, sin, is_causal=True)
        h = h + layer.mlp(layer.post_attention_layernorm(h))
    return model.lm_head(model.norm(h))                                 # (b, seq, vocab)


def forward_ok_explicit(model, tokens):
    """The same, with a mask built by hand instead of is_causal (a learner may do that)."""
    batch, seq = tokens.shape
    positions = torch.arange(seq)
    cos, sin = model.rotary(positions)
    mask = torch.ones(seq, seq, dtype=torch.bool).tril()
    h = model.embed_tokens(tokens)
    for i in range(len(model.layers)):
        layer = model.layers[i]
        attn_in = layer.input_layernorm(h)
        h = h + layer.self_attn(attn_in, cos, sin, mask)
        ffn_in = layer.post_attention_layernorm(h)
        h = h + layer.mlp(ffn_in)
    h = model.norm(h)
    return model.lm_head(h)


def forwarding(**slip):
    """forward_ok with one classic slip."""
    def fn(model, tokens):
        seq = tokens.shape[1]
        cos, sin = model.rotary(torch.arange(seq)) if not slip.get("no_rope") else (None, None)
        h = model.embed_tokens(tokens)
        layers = list(model.layers)
        if slip.get("reverse"):
            layers = layers[::-1]
        for layer in layers:
            causal = not slip.get("not_causal")
            one = slip.get("one_norm")
            norm2 = layer.input_layernorm if one else layer.post_attention_layernorm
            if slip.get("post_norm"):
                h = layer.input_layernorm(h + layer.self_attn(h, cos, sin, is_causal=causal))
                h = norm2(h + layer.mlp(h))
                continue
            if slip.get("in_place"):
                h = layer.input_layernorm(h)
                h = h + layer.self_attn(h, cos, sin, is_causal=causal)
                h = norm2(h)
                h = h + layer.mlp(h)
                continue
            x = h
            a = layer.self_attn(layer.input_layernorm(h), cos, sin, is_causal=causal)
            h = a if slip.get("no_attn_res") or slip.get("no_res") else h + a
            f = layer.mlp(norm2(x if slip.get("parallel") else h))
            h = f if slip.get("no_ffn_res") or slip.get("no_res") else h + f
        if slip.get("no_final_norm"):
            return model.lm_head(h)
        if slip.get("unused_norm"):
            model.norm(h)
            return model.lm_head(h)
        logits = model.lm_head(model.norm(h))
        if slip.get("softmax"):
            return torch.softmax(logits, -1)
        if slip.get("hidden"):
            return model.norm(h)
        return logits
    return fn


def calls_model(model, tokens):
    return model(tokens)


def calls_layers(model, tokens):
    cos, sin = model.rotary(torch.arange(tokens.shape[1]))
    h = model.embed_tokens(tokens)
    for layer in model.layers:
        h = layer(h, cos, sin, is_causal=True)
    return model.lm_head(model.norm(h))


def llama_forward(model, tokens):  # as nbgrader releases it
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
    "check_llama_forward": Contract(
        references=[forward_ok, forward_ok_explicit], stub=llama_forward,
        passed="llama_forward equals llama_edu's Llama",
        mistakes=[
            (forwarding(post_norm=True), "Post-LN"),
            (forwarding(no_res=True), "there is no residual connection"),
            (forwarding(no_attn_res=True), "attention sublayer has no residual"),
            (forwarding(no_ffn_res=True), "FFN sublayer has no residual"),
            (forwarding(no_final_norm=True), "un-normalised residual stream"),
            (forwarding(in_place=True), "normalised the residual stream itself"),
            (forwarding(reverse=True), "wrong order"),
            (forwarding(not_causal=True), "is_causal=True"),
            (forwarding(no_rope=True), "got no positions"),
            (forwarding(parallel=True), "parallel block"),
            (forwarding(one_norm=True), "its own norm"),
            (forwarding(softmax=True), "returned probabilities"),
            (forwarding(hidden=True), "the LM head is missing"),
            (calls_model, r"called the model \(model\(tokens\)\) itself"),
            (calls_layers, r"called a layer"),
            (lambda model, tokens: forward_ok(model, tokens) * 1.01, "off by up to"),
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
