"""The Llama 2 model, assembled from the lessons' pieces (lessons 00 and 09).

    tokens -> embed_tokens -> n_layers x [ h = x + Attention(RMSNorm(x))
                                           out = h + SwiGLU(RMSNorm(h)) ]
           -> RMSNorm -> lm_head -> logits                   (Touvron et al., 2023)

Submodule names follow Hugging Face's LlamaForCausalLM (without its `model.` prefix), so
`print(Llama(config))` reads like the Llama-2-7B structure printed in most write-ups.

The defaults are Llama 2. Four switches turn a piece back into what came before it, so a
lesson can train the same model with one idea changed: `pos_encoding` (rope, alibi,
sinusoidal, none), `norm_type` (rmsnorm, layernorm), `norm_placement` (pre, post) and
`ffn_type` (swiglu, relu, gelu).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .attention import Attention, KVCache, build_mask, causal_mask
from .device import values_checkable
from .ffn import MLP, SwiGLU, ffn_hidden_dim
from .norms import LayerNorm, RMSNorm
from .positions import (
    RotaryEmbedding,
    alibi_bias,
    alibi_slopes,
    check_rope_scaling,
    sinusoidal,
)

_CHOICES = {
    "attn_impl": ("sdpa", "plain"),
    "pos_encoding": ("rope", "alibi", "sinusoidal", "none"),
    "norm_type": ("rmsnorm", "layernorm"),
    "norm_placement": ("pre", "post"),
    "ffn_type": ("swiglu", "relu", "gelu"),
}


@dataclass
class LlamaConfig:
    """Everything that fixes the shape of a Llama model. Defaults are Llama-2-7B."""

    dim: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = None          # None: same as n_heads (multi-head attention)
    vocab_size: int = 32_000
    multiple_of: int = 256                 # the FFN hidden size is rounded up to this
    ffn_dim_multiplier: float | None = None
    hidden_dim: int | None = None          # explicit FFN size; None: derived the Llama way
    norm_eps: float = 1e-5
    rope_theta: float = 10_000.0
    rope_scaling: dict | None = None       # HF format: {"rope_type": "llama3", "factor": 8, ...}
    max_seq_len: int = 4096
    tie_word_embeddings: bool = False
    attn_impl: str = "sdpa"                # "sdpa" (fast) or "plain" (the lesson's formula)
    pos_encoding: str = "rope"             # lesson 02: "rope", "alibi", "sinusoidal", "none"
    norm_type: str = "rmsnorm"             # lesson 03: "rmsnorm" or "layernorm"
    norm_placement: str = "pre"            # lesson 03: "pre" (Llama) or "post" (2017)
    ffn_type: str = "swiglu"               # lesson 04: "swiglu", "relu" or "gelu"

    def __post_init__(self):
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        for name in ("dim", "n_layers", "n_heads", "n_kv_heads", "vocab_size",
                     "multiple_of", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.dim % self.n_heads:
            options = [h for h in range(1, self.dim + 1) if self.dim % h == 0 and h <= 128]
            raise ValueError(f"dim ({self.dim}) must be divisible by n_heads ({self.n_heads}); "
                             f"try n_heads in {options}")
        if self.head_dim % 2 and self.pos_encoding == "rope":
            raise ValueError(f"head_dim = dim / n_heads = {self.head_dim} must be even for "
                             "RoPE; change dim or n_heads")
        if self.n_heads % self.n_kv_heads:
            options = [h for h in range(1, self.n_heads + 1) if self.n_heads % h == 0]
            raise ValueError(f"n_heads ({self.n_heads}) must be divisible by n_kv_heads "
                             f"({self.n_kv_heads}); try n_kv_heads in {options}")
        if self.hidden_dim is not None and self.hidden_dim <= 0:
            raise ValueError(f"hidden_dim must be positive or None, got {self.hidden_dim}")
        if self.norm_eps <= 0 or self.rope_theta <= 0:
            raise ValueError("norm_eps and rope_theta must be positive, got "
                             f"{self.norm_eps} and {self.rope_theta}")
        check_rope_scaling(self.rope_scaling)
        for name, choices in _CHOICES.items():
            if getattr(self, name) not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {getattr(self, name)!r}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def ffn_hidden_dim(self) -> int:
        """hidden_dim if given; else 4 * dim for ReLU/GELU, the Llama rule for SwiGLU."""
        if self.hidden_dim is not None:
            return self.hidden_dim
        if self.ffn_type != "swiglu":
            return 4 * self.dim
        return ffn_hidden_dim(self.dim, self.multiple_of, self.ffn_dim_multiplier)

    @property
    def is_llama(self) -> bool:
        """True when every switch is at Llama 2's choice (what HF and Meta formats can hold)."""
        return (self.pos_encoding, self.norm_type, self.norm_placement, self.ffn_type) == (
            "rope", "rmsnorm", "pre", "swiglu")

    @classmethod
    def from_preset(cls, name: str, **overrides) -> LlamaConfig:
        """A named configuration (see PRESETS), optionally with fields changed."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> LlamaConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown LlamaConfig fields {unknown}; known fields: {sorted(known)}")
        return cls(**values)


# Llama 3.1 and 3.2 stretch RoPE from the 8K context they were pretrained at to 128K.
def _llama3_scaling(factor: float) -> dict:
    return {"rope_type": "llama3", "factor": factor, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}


def _llama3(dim, n_layers, n_heads, multiplier, multiple_of, scaling=None, tied=False):
    """Llama 3 (Dubey et al., 2024, Table 3): 128,256 pieces, 8 KV heads, rope_theta 5e5."""
    return LlamaConfig(dim=dim, n_layers=n_layers, n_heads=n_heads, n_kv_heads=8,
                       vocab_size=128_256, ffn_dim_multiplier=multiplier,
                       multiple_of=multiple_of, rope_theta=500_000.0,
                       rope_scaling=None if scaling is None else _llama3_scaling(scaling),
                       max_seq_len=8192 if scaling is None else 131_072,
                       tie_word_embeddings=tied)


# Llama 1 (Touvron et al., 2023a), Llama 2 (Touvron et al., 2023b) and Llama 3 as released
# by Meta, then the course's own sizes: `micro` for tests, `tiny` (the shipped checkpoint,
# trains on a CPU in minutes) and `small` (a GPU run of seconds).
PRESETS: dict[str, LlamaConfig] = {
    "llama1-7b": LlamaConfig(dim=4096, n_layers=32, n_heads=32, norm_eps=1e-6, max_seq_len=2048),
    "llama1-13b": LlamaConfig(dim=5120, n_layers=40, n_heads=40, norm_eps=1e-6, max_seq_len=2048),
    "llama1-33b": LlamaConfig(dim=6656, n_layers=60, n_heads=52, norm_eps=1e-6, max_seq_len=2048),
    "llama1-65b": LlamaConfig(dim=8192, n_layers=80, n_heads=64, norm_eps=1e-6, max_seq_len=2048),
    "llama2-7b": LlamaConfig(dim=4096, n_layers=32, n_heads=32),
    "llama2-13b": LlamaConfig(dim=5120, n_layers=40, n_heads=40),
    "llama2-70b": LlamaConfig(dim=8192, n_layers=80, n_heads=64, n_kv_heads=8,
                              ffn_dim_multiplier=1.3, multiple_of=4096),
    "llama3-8b": _llama3(4096, 32, 32, 1.3, 1024),
    "llama3-70b": _llama3(8192, 80, 64, 1.3, 4096),
    "llama3.1-8b": _llama3(4096, 32, 32, 1.3, 1024, scaling=8.0),
    "llama3.1-70b": _llama3(8192, 80, 64, 1.3, 4096, scaling=8.0),
    "llama3.1-405b": _llama3(16384, 126, 128, 1.2, 4096, scaling=8.0),
    "llama3.2-1b": _llama3(2048, 16, 32, 1.5, 256, scaling=32.0, tied=True),
    "llama3.2-3b": _llama3(3072, 28, 24, 1.0, 256, scaling=32.0, tied=True),
    "micro": LlamaConfig(dim=32, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=256,
                         multiple_of=16, max_seq_len=128),
    "tiny": LlamaConfig(dim=128, n_layers=4, n_heads=4, n_kv_heads=2, vocab_size=4096,
                        multiple_of=32, max_seq_len=256),
    "small": LlamaConfig(dim=256, n_layers=6, n_heads=8, n_kv_heads=4, vocab_size=4096,
                         multiple_of=64, max_seq_len=512),
}


def make_norm(config: LlamaConfig) -> nn.Module:
    if config.norm_type == "layernorm":
        return LayerNorm(config.dim, config.norm_eps)
    return RMSNorm(config.dim, config.norm_eps)


def make_ffn(config: LlamaConfig) -> nn.Module:
    if config.ffn_type == "swiglu":
        return SwiGLU(config.dim, config.ffn_hidden_dim)
    return MLP(config.dim, config.ffn_hidden_dim, activation=config.ffn_type)


class DecoderLayer(nn.Module):
    """One block: attention and the FFN, each with a norm and a residual connection.

    Pre-LN (Llama):  h = x + Attn(Norm(x));     out = h + FFN(Norm(h))
    Post-LN (2017):  h = Norm(x + Attn(x));     out = Norm(h + FFN(h))
    """

    def __init__(self, config: LlamaConfig):
        super().__init__()
        self.pre_norm = config.norm_placement == "pre"
        self.self_attn = Attention(config.dim, config.n_heads, config.n_kv_heads,
                                   use_sdpa=config.attn_impl == "sdpa")
        self.mlp = make_ffn(config)
        self.input_layernorm = make_norm(config)
        self.post_attention_layernorm = make_norm(config)

    def forward(self, x: Tensor, cos: Tensor | None = None, sin: Tensor | None = None,
                mask: Tensor | None = None, is_causal: bool = False,
                cache: KVCache | None = None, start_pos: int = 0) -> Tensor:
        """(batch, seq, dim) -> (batch, seq, dim)"""
        if self.pre_norm:
            h = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, is_causal,
                                   cache, start_pos)
            return h + self.mlp(self.post_attention_layernorm(h))
        h = self.input_layernorm(x + self.self_attn(x, cos, sin, mask, is_causal, cache,
                                                     start_pos))
        return self.post_attention_layernorm(h + self.mlp(h))


class Llama(nn.Module):
    """Llama 2: `model(tokens)` maps (batch, seq) token ids to (batch, seq, vocab) logits."""

    def __init__(self, config: LlamaConfig):
        super().__init__()
        if not isinstance(config, LlamaConfig):
            raise TypeError(f"Llama needs a LlamaConfig, got {type(config).__name__}; "
                            "try LlamaConfig.from_preset('tiny')")
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.dim)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.n_layers))
        self.norm = make_norm(config)
        self.lm_head = nn.Linear(config.dim, config.vocab_size, bias=False)
        self.rotary = (RotaryEmbedding(config.head_dim, config.max_seq_len, config.rope_theta,
                                       config.rope_scaling)
                       if config.pos_encoding == "rope" else None)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # a meta tensor has no values to draw (and drawing them costs ms per tensor there)
        if isinstance(module, (nn.Linear, nn.Embedding)) and not module.weight.is_meta:
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, tokens: Tensor, start_pos: int = 0, cache: list[KVCache] | None = None,
                attention_mask: Tensor | None = None,
                position_ids: Tensor | None = None) -> Tensor:
        """tokens: (batch, seq) ids at positions start_pos .. start_pos + seq - 1.

        cache: one KVCache per layer (see `make_cache`) to reuse earlier keys and values.
        attention_mask: (batch, start_pos + seq), 1 for real tokens and 0 for padding.
        position_ids: (batch, seq) RoPE positions; default start_pos + arange(seq).
        Returns logits (batch, seq, vocab_size).
        """
        tokens = self._check_tokens(tokens)
        batch, seq = tokens.shape
        if start_pos < 0 or start_pos + seq > self.config.max_seq_len:
            raise ValueError(f"positions {start_pos}..{start_pos + seq - 1} exceed "
                             f"max_seq_len={self.config.max_seq_len}")
        if cache is not None and len(cache) != len(self.layers):
            raise ValueError(f"cache has {len(cache)} layers but the model has "
                             f"{len(self.layers)}; build it with model.make_cache(...)")
        if cache is None and start_pos != 0:
            raise ValueError("start_pos > 0 needs the cache that holds the earlier positions")
        if position_ids is None:
            position_ids = torch.arange(start_pos, start_pos + seq, device=tokens.device)
        mask, is_causal = build_mask(seq, start_pos + seq, attention_mask, tokens.device)
        h = self.embed_tokens(tokens)                        # (batch, seq, dim)

        cos = sin = None
        kind = self.config.pos_encoding
        if kind == "rope":
            cos, sin = self.rotary(position_ids)             # (seq or (b, seq), head_dim)
        elif kind == "sinusoidal":  # scaled as in Vaswani et al., so tokens are not drowned
            table = sinusoidal(self.config.max_seq_len, self.config.dim)  # (max_seq, dim)
            h = h * math.sqrt(self.config.dim) + table.to(h.device, h.dtype)[position_ids]
        elif kind == "alibi":
            mask, is_causal = self._alibi_mask(seq, start_pos, mask, h), False
        for i, layer in enumerate(self.layers):
            h = layer(h, cos, sin, mask, is_causal, None if cache is None else cache[i],
                      start_pos)
        return self.lm_head(self.norm(h))                    # (batch, seq, vocab_size)

    def _alibi_mask(self, seq: int, start_pos: int, mask: Tensor | None, h: Tensor) -> Tensor:
        """The causal/padding mask as an additive bias with ALiBi's distance penalty."""
        kv_len = start_pos + seq
        if mask is None:
            mask = causal_mask(seq, kv_len, h.device)
        positions = torch.arange(kv_len, device=h.device)
        slopes = alibi_slopes(self.config.n_heads).to(h.device)
        bias = alibi_bias(slopes, positions[start_pos:], positions)  # (n_heads, seq, kv_len)
        return bias.to(h.dtype).masked_fill(~mask, float("-inf"))   # (b or 1, h, seq, kv)

    def _check_tokens(self, tokens: Tensor) -> Tensor:
        if not isinstance(tokens, Tensor):
            raise TypeError(f"tokens must be a LongTensor of shape (batch, seq), got "
                            f"{type(tokens).__name__}")
        if tokens.dim() == 1:
            raise ValueError(f"tokens must be (batch, seq), got shape {tuple(tokens.shape)}; "
                             "add a batch dimension with tokens[None]")
        if tokens.dim() != 2 or tokens.shape[1] == 0:
            raise ValueError(f"tokens must be a non-empty (batch, seq) tensor, got shape "
                             f"{tuple(tokens.shape)}")
        if tokens.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"tokens must hold integer ids, got dtype {tokens.dtype}")
        if values_checkable(tokens):
            low, high = int(tokens.min()), int(tokens.max())
            if low < 0 or high >= self.config.vocab_size:
                raise ValueError(f"token ids must lie in [0, {self.config.vocab_size}), got "
                                 f"values from {low} to {high}; does the tokenizer match "
                                 "the model's vocab_size?")
        return tokens

    def make_cache(self, batch_size: int, max_seq_len: int | None = None,
                   dtype: torch.dtype | None = None) -> list[KVCache]:
        """One preallocated KVCache per layer, on the model's device and dtype."""
        weight = self.embed_tokens.weight
        max_seq_len = self.config.max_seq_len if max_seq_len is None else max_seq_len
        if max_seq_len > self.config.max_seq_len:
            raise ValueError(f"max_seq_len ({max_seq_len}) exceeds the model's "
                             f"({self.config.max_seq_len})")
        return [layer.self_attn.make_cache(batch_size, max_seq_len, weight.device,
                                           dtype or weight.dtype)
                for layer in self.layers]


def count_parameters(model_or_config: nn.Module | LlamaConfig) -> int:
    """Number of parameters (shared ones once). A config is counted on the meta device,
    so even llama2-70b costs no memory."""
    if isinstance(model_or_config, LlamaConfig):
        with torch.device("meta"):
            model_or_config = Llama(model_or_config)
    if not isinstance(model_or_config, nn.Module):
        raise TypeError("expected a LlamaConfig or nn.Module, got "
                        f"{type(model_or_config).__name__}")
    return sum(p.numel() for p in model_or_config.parameters())


def parameter_breakdown(config: LlamaConfig) -> dict[str, int]:
    """Where the parameters live: embeddings, attention, MLP, norms and the LM head."""
    with torch.device("meta"):
        model = Llama(config)
    groups = {"embeddings": 0, "attention": 0, "mlp": 0, "norms": 0, "lm_head": 0}
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        if name.startswith("embed_tokens"):
            groups["embeddings"] += param.numel()
        elif name.startswith("lm_head"):
            groups["lm_head"] += param.numel()
        elif ".self_attn." in name:
            groups["attention"] += param.numel()
        elif ".mlp." in name:
            groups["mlp"] += param.numel()
        else:
            groups["norms"] += param.numel()
    return groups


def kv_cache_bytes_per_token(config: LlamaConfig, bytes_per_value: int = 2) -> int:
    """2 (k and v) x n_layers x n_kv_heads x head_dim x bytes per value.

    This is memory the cache *adds* (lesson 06): 512 KiB per token, 2 GiB per 4096-token
    sequence for Llama-2-7B in fp16, per sequence of a batch. The cache saves compute, not
    memory."""
    return 2 * config.n_layers * config.n_kv_heads * config.head_dim * bytes_per_value
