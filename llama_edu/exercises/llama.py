"""Checks for lesson 09: the decoder layer's residual wiring, and counting parameters by hand."""

from __future__ import annotations

import torch

from ..model import DecoderLayer, LlamaConfig, count_parameters
from ..positions import rope_cos_sin
from ._common import call, expect, expect_tensor, passed, rng

__all__ = ["check_decoder_layer", "check_parameter_count"]


# ---------------------------------------------------------------------------------------
# The decoder layer: h = x + Attn(Norm1(x));  out = h + FFN(Norm2(h))

def _layer_case(dim: int, n_heads: int, n_kv_heads: int, batch: int, seq: int, seed: int):
    """A random decoder layer (norm gains too, so the two norms differ) and its pieces."""
    generator = rng(seed)
    config = LlamaConfig(dim=dim, n_layers=1, n_heads=n_heads, n_kv_heads=n_kv_heads,
                         vocab_size=16, multiple_of=8, max_seq_len=32)
    layer = DecoderLayer(config).eval()
    with torch.no_grad():
        for name, param in layer.named_parameters():
            if name.endswith("layernorm.weight"):
                param.copy_(0.5 + torch.rand(param.shape, generator=generator))
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * param.shape[1] ** -0.5)
    x = torch.randn(batch, seq, dim, generator=generator) * 2 + 0.5
    cos, sin = rope_cos_sin(seq, config.head_dim)

    def attention(t):                       # causal self-attention with RoPE, (b, s, dim)
        return layer.self_attn(t, cos, sin, None, seq > 1)

    pieces = {"attention": attention, "ffn": layer.mlp,
              "attention_norm": layer.input_layernorm, "ffn_norm": layer.post_attention_layernorm}
    with torch.no_grad():
        expected = layer(x, cos, sin, None, seq > 1)
    return x, pieces, expected


def _wiring_mistakes(x, attention, ffn, attention_norm, ffn_norm):
    """What each classic wrong wiring returns, with the feedback it deserves."""
    h = x + attention(attention_norm(x))
    post = attention_norm(x + attention(x))
    parallel = ("the FFN reads x instead of h: that is the parallel block of GPT-J and PaLM. "
                "Llama runs the FFN after attention, on h = x + attention(attention_norm(x))")
    return [
        (ffn_norm(post + ffn(post)),
         "you normalised after adding the residual (Norm(x + Attn(x))): that is Post-LN, the "
         "2017 Transformer. Llama is Pre-LN: normalise the input of each sublayer and add its "
         "output to the untouched x: h = x + attention(attention_norm(x))"),
        (ffn(ffn_norm(attention(attention_norm(x)))),
         "there is no residual connection: add each sublayer's output to its input "
         "(h = x + ..., out = h + ...)"),
        (h + ffn(ffn_norm(attention(attention_norm(x)))),
         "the FFN reads only the attention output; it must read h = x + attention(...), the "
         "residual stream after the attention block"),
        (attention_norm(x) + attention(attention_norm(x))
         + ffn(ffn_norm(attention_norm(x) + attention(attention_norm(x)))),
         "you added the normalised x to the residual. The residual stream carries x itself; "
         "only the sublayer's input is normalised"),
        (h + ffn(ffn_norm(x)), parallel),
        (h + ffn(attention_norm(h)),
         "you used attention_norm before the FFN too; each sublayer has its own norm (its own "
         "gain): out = h + ffn(ffn_norm(h))"),
        (x + ffn(ffn_norm(h)),
         "the second residual adds x; it must add h, so the attention's contribution is kept: "
         "out = h + ffn(ffn_norm(h))"),
        (ffn_norm(h + ffn(ffn_norm(h))),
         "you normalised the layer's output. In Pre-LN the output stays unnormalised; the "
         "model applies one final RMSNorm after the last layer"),
    ]


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a.detach().double(), b.double(), atol=1e-4, rtol=1e-4)


def check_decoder_layer(fn) -> None:
    """fn(x, attention, ffn, attention_norm, ffn_norm) -> the Pre-LN decoder layer's output.

    Each piece is a callable (batch, seq, dim) -> (batch, seq, dim).
    """
    cases = [(16, 4, 2, 2, 5, 0), (24, 6, 6, 1, 1, 1), (32, 4, 1, 3, 7, 2)]
    for dim, n_heads, n_kv_heads, batch, seq, seed in cases:
        x, pieces, expected = _layer_case(dim, n_heads, n_kv_heads, batch, seq, seed)
        what = f"decoder_layer on x of shape {(batch, seq, dim)}"
        with torch.no_grad():
            out = call(fn, x.clone(), **pieces, what=what)
            expect(isinstance(out, torch.Tensor),
                   f"{what} should return a torch.Tensor, got {type(out).__name__}")
            expect(out.shape == expected.shape, f"{what} returned shape {tuple(out.shape)}, "
                   f"expected {tuple(expected.shape)}: the layer keeps the shape of x")
            for wrong, hint in _wiring_mistakes(x, **pieces):
                if _close(out, wrong) and not _close(out, expected):
                    raise AssertionError(f"{what}: {hint}")
            expect_tensor(out, expected, what, atol=1e-4, rtol=1e-4,
                          hint="compare your wiring with h = x + attention(attention_norm(x)); "
                          "out = h + ffn(ffn_norm(h))")
    passed("decoder_layer is wired like Llama: h = x + Attn(Norm(x)); out = h + FFN(Norm(h))")


# ---------------------------------------------------------------------------------------
# Counting parameters by hand

_COUNT_CASES = [  # name, config; the 7B and 70B are the released sizes
    ("llama2-7b", LlamaConfig.from_preset("llama2-7b")),
    ("llama2-70b (GQA, n_kv_heads=8)", LlamaConfig.from_preset("llama2-70b")),
    ("the course's tiny model", LlamaConfig.from_preset("tiny")),
    ("a tied micro model", LlamaConfig.from_preset("micro", tie_word_embeddings=True)),
    ("an MQA model (n_kv_heads=1)", LlamaConfig(dim=64, n_layers=3, n_heads=8, n_kv_heads=1,
                                                vocab_size=1000, hidden_dim=200)),
]


def _count(config: LlamaConfig, *, kv_full: bool = False, ffn_mats: int = 3,
           norms: bool = True, final_norm: bool = True, head: bool | None = None) -> int:
    """The formula, with switches that reproduce the classic slips."""
    dim, hidden = config.dim, config.ffn_hidden_dim
    kv_dim = dim if kv_full else config.n_kv_heads * config.head_dim
    attention = 2 * dim * dim + 2 * dim * kv_dim                 # q, o and k, v
    layer = attention + ffn_mats * dim * hidden + (2 * dim if norms else 0)
    head = not config.tie_word_embeddings if head is None else head
    return (config.vocab_size * dim * (2 if head else 1) + config.n_layers * layer
            + (dim if final_norm else 0))


_EXPECTED: dict[str, int] = {}


def _expected_count(name: str, config: LlamaConfig) -> int:
    """count_parameters of the model itself (built on the meta device), once per case."""
    if name not in _EXPECTED:
        _EXPECTED[name] = count_parameters(config)
        assert _EXPECTED[name] == _count(config), name     # the formula is the model's
    return _EXPECTED[name]


def check_parameter_count(fn) -> None:
    """fn(dim, n_layers, n_heads, n_kv_heads, vocab_size, hidden_dim, tie_word_embeddings)
    -> the number of parameters of that Llama."""
    for name, config in _COUNT_CASES:
        expected = _expected_count(name, config)
        what = f"count_llama_parameters for {name}"
        out = call(fn, config.dim, config.n_layers, config.n_heads, config.n_kv_heads,
                   config.vocab_size, config.ffn_hidden_dim, config.tie_word_embeddings,
                   what=what)
        if isinstance(out, float) and out.is_integer():
            out = int(out)
        expect(isinstance(out, int) and not isinstance(out, bool),
               f"{what} should return an int, got {type(out).__name__} {out!r}")
        if out == expected:
            continue
        mistakes = [
            (_count(config, kv_full=True),
             "k_proj and v_proj got dim x dim weights. With grouped-query attention they map "
             "dim -> n_kv_heads * head_dim (head_dim = dim // n_heads)"),
            (_count(config, ffn_mats=2),
             "the FFN has three matrices in SwiGLU (gate, up: dim x hidden; down: hidden x "
             "dim), not two"),
            (_count(config, norms=False, final_norm=False),
             "the RMSNorm gains are missing: two per layer and one final, dim each"),
            (_count(config, norms=False),
             "the two RMSNorm gains of each layer (dim each) are missing"),
            (_count(config, final_norm=False),
             "the final RMSNorm's gain (dim) is missing"),
            (_count(config, head=True),
             "with tie_word_embeddings the LM head is the embedding matrix: count it once"),
            (_count(config, head=False),
             "the LM head (vocab_size x dim) is missing; untied, it is a second matrix "
             "beside the embedding"),
        ]
        for wrong, hint in mistakes:
            if out == wrong:
                raise AssertionError(f"{what}: expected {expected:,}, got {out:,}: {hint}")
        raise AssertionError(f"{what}: expected {expected:,}, got {out:,} (off by "
                             f"{out - expected:+,}). Per layer: q, k, v, o, three FFN matrices "
                             "and two norm gains; plus the embedding, the final norm and the "
                             "LM head")
    passed("count_llama_parameters gives 6,738,415,616 for Llama-2-7B and every other case")
