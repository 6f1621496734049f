"""Checks for lesson 09: the whole Llama forward pass from its pieces, and counting
parameters by hand."""

from __future__ import annotations

import torch
from torch import nn

from ..model import DecoderLayer, Llama, LlamaConfig, count_parameters
from ..numerics import model_tolerance
from ._common import ForbiddenCall, call, expect, expect_tensor, forbids, passed, rng

__all__ = ["check_llama_forward", "check_parameter_count"]


# ---------------------------------------------------------------------------------------
# The whole forward pass from the model's pieces:
#   h = embed(tokens); per layer h = h + Attn(Norm1(h)); h = h + FFN(Norm2(h));
#   logits = head(Norm(h))

class _Forbidden(nn.Module):
    """A container of pieces whose own forward is off limits in this exercise."""

    what = "the model"

    def forward(self, *args, **kwargs):
        raise ForbiddenCall(f"your function called {self.what} itself, which runs llama_edu's "
                            "own forward pass; this exercise asks you to write that pass from "
                            "its pieces (embed_tokens, rotary, each layer's norms, self_attn "
                            "and mlp, then norm and lm_head)")


class _LayerPieces(_Forbidden):
    """One decoder layer's pieces under Llama's names, without the layer's forward."""

    what = "a layer (model.layers[i](...))"

    def __init__(self, layer: DecoderLayer):
        super().__init__()
        self.input_layernorm, self.self_attn = layer.input_layernorm, layer.self_attn
        self.post_attention_layernorm, self.mlp = layer.post_attention_layernorm, layer.mlp


class _ModelPieces(_Forbidden):
    """A Llama's pieces under the package's names, without its forward."""

    what = "the model (model(tokens))"

    def __init__(self, model: Llama):
        super().__init__()
        self.config = model.config
        self.embed_tokens, self.rotary = model.embed_tokens, model.rotary
        self.layers = nn.ModuleList(_LayerPieces(layer) for layer in model.layers)
        self.norm, self.lm_head = model.norm, model.lm_head


_FORWARD_CASES = [  # name, config fields, batch, seq
    ("2 layers, grouped-query attention, 2 texts of 7 tokens",
     dict(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=50), 2, 7),
    ("1 layer with the LM head tied to the embedding, 1 text of 5 tokens",
     dict(dim=24, n_layers=1, n_heads=3, vocab_size=37, tie_word_embeddings=True), 1, 5),
    ("3 layers, multi-query attention, rope_theta 1e6, 3 texts of 1 token (t = 1)",
     dict(dim=32, n_layers=3, n_heads=4, n_kv_heads=1, vocab_size=64, rope_theta=1e6), 3, 1),
    ("4 layers, multi-head attention, 1 text of 12 tokens",
     dict(dim=16, n_layers=4, n_heads=2, vocab_size=40), 1, 12),
]


def _forward_case(fields: dict, batch: int, seq: int, seed: int):
    """A Llama with trained-scale random weights (norm gains too) and random tokens."""
    generator = rng(seed)
    config = LlamaConfig(**fields, multiple_of=8, max_seq_len=32)
    model = Llama(config).eval()
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(0.5 + torch.rand(param.shape, generator=generator))
            elif name.startswith("embed_tokens"):
                param.copy_(torch.randn(param.shape, generator=generator))
            else:
                param.copy_(torch.randn(param.shape, generator=generator) * param.shape[1] ** -0.5)
    tokens = torch.randint(0, config.vocab_size, (batch, seq), generator=generator)
    return model, tokens


def _forward_variant(model: Llama, tokens: torch.Tensor, *, post_norm=False, attn_res=True,
                     ffn_res=True, final_norm=True, normed_stream=False, reverse=False,
                     causal=True, rope=True, parallel=False, one_norm=False,
                     softmax=False) -> torch.Tensor:
    """The forward pass with one classic slip switched on (all off: the right answer)."""
    seq = tokens.shape[1]
    cos, sin = model.rotary(torch.arange(seq)) if rope else (None, None)
    h = model.embed_tokens(tokens)
    layers = list(model.layers)[::-1] if reverse else model.layers
    for layer in layers:
        norm1 = layer.input_layernorm
        norm2 = norm1 if one_norm else layer.post_attention_layernorm

        def attn(t, layer=layer):
            return layer.self_attn(t, cos, sin, None, causal and seq > 1)
        if post_norm:
            h = norm1(h + attn(h))
            h = norm2(h + layer.mlp(h))
            continue
        if normed_stream:                 # h = norm(h), then the residual adds the normed h
            h = norm1(h)
            h = h + attn(h)
            h = norm2(h)
            h = h + layer.mlp(h)
            continue
        x = h
        a = attn(norm1(h))
        h = h + a if attn_res else a
        f = layer.mlp(norm2(x if parallel else h))
        h = h + f if ffn_res else f
    logits = model.lm_head(model.norm(h) if final_norm else h)
    return torch.softmax(logits, -1) if softmax else logits


_FORWARD_MISTAKES = [
    (dict(post_norm=True),
     "you normalised after adding the residual, h = Norm(h + Attn(h)): that is Post-LN, the "
     "2017 Transformer. Llama is Pre-LN: each sublayer reads a normalised copy and adds its "
     "output to the untouched stream, h = h + attn(norm(h))"),
    (dict(attn_res=False, ffn_res=False),
     "there is no residual connection: add each sublayer's output to the stream "
     "(h = h + ...), do not replace the stream with it"),
    (dict(attn_res=False),
     "the attention sublayer has no residual: h = h + self_attn(...), not h = self_attn(...)"),
    (dict(ffn_res=False),
     "the FFN sublayer has no residual: h = h + mlp(...), not h = mlp(...)"),
    (dict(final_norm=False),
     "the LM head read the un-normalised residual stream: apply the final model.norm to the "
     "last layer's output and give its result to lm_head"),
    (dict(normed_stream=True),
     "you normalised the residual stream itself (h = norm(h), then h + attn(h)); only the "
     "sublayer's input is normalised, the stream carries the un-normalised h"),
    (dict(reverse=True),
     "the layers ran in the wrong order: model.layers[0] comes first, right after the "
     "embedding"),
    (dict(causal=False),
     "attention is not causal, so every position reads the tokens after it: pass "
     "is_causal=True to self_attn"),
    (dict(rope=False),
     "the attention got no positions: compute cos, sin = model.rotary(positions) once and "
     "pass them to every self_attn"),
    (dict(parallel=True),
     "the FFN reads the layer's input instead of h after attention: that is the parallel "
     "block of GPT-J and PaLM; Llama runs the FFN on h = h + attn(norm(h))"),
    (dict(one_norm=True),
     "you used input_layernorm before the FFN too; each sublayer has its own norm (its own "
     "gain): the FFN reads post_attention_layernorm(h)"),
    (dict(softmax=True),
     "you returned probabilities; the model returns logits (lm_head's output, no softmax)"),
]


@forbids("forward")
def check_llama_forward(fn) -> None:
    """fn(model, tokens) -> logits (batch, seq, vocab_size), written from the model's pieces
    (model.embed_tokens, model.rotary, model.layers[i].input_layernorm / self_attn /
    post_attention_layernorm / mlp, model.norm, model.lm_head) without calling the model's
    or a layer's forward."""
    for k, (name, fields, batch, seq) in enumerate(_FORWARD_CASES):
        model, tokens = _forward_case(fields, batch, seq, 40 + k)
        what = f"llama_forward on {name}"
        with torch.no_grad():
            expected = model(tokens)
            out = call(fn, _ModelPieces(model), tokens.clone(), what=what,
                       forbidden=check_llama_forward.forbidden_calls)
            expect(isinstance(out, torch.Tensor),
                   f"{what} should return the logits as a torch.Tensor, got {type(out).__name__}")
            if tuple(out.shape) != tuple(expected.shape):
                hint = (" (batch, seq, dim): the LM head is missing" if out.shape[-1:] ==
                        (model.config.dim,) and out.dim() == 3 else "")
                raise AssertionError(f"{what} returned shape {tuple(out.shape)}, expected "
                                     f"{tuple(expected.shape)} = (batch, seq, vocab_size){hint}")
            tol = model_tolerance(model.config, scale=float(expected.abs().max()))
            if _close(out, expected, tol):
                continue
            for slip, hint in _FORWARD_MISTAKES:
                wrong = _forward_variant(model, tokens, **slip)
                if _close(out, wrong, tol) and not _close(wrong, expected, tol):
                    raise AssertionError(f"{what}: {hint}")
            expect_tensor(out, expected, what, atol=tol["atol"], rtol=tol["rtol"],
                          hint="per layer: h = h + self_attn(input_layernorm(h), cos, sin, "
                          "is_causal=True); h = h + mlp(post_attention_layernorm(h)); then "
                          "lm_head(norm(h))")
    passed("llama_forward equals llama_edu's Llama on 4 configs (GQA, tied head, MQA with "
           "t = 1, 4 layers)")


def _close(a: torch.Tensor, b: torch.Tensor, tol: dict) -> bool:
    return torch.allclose(a.detach().double(), b.double(), atol=tol["atol"], rtol=tol["rtol"])


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
