"""Explorer for lesson 07: how many KV heads, and what they cost in cache memory.

    gqa_explorer()                 # Llama-2-70B's shape, 8 KV heads, 4096 tokens

Left: which KV head each query head reads (query heads j*group .. j*group + group - 1 share
KV head j). Right: the fp16 KV cache of one sequence against the context length, for every
n_kv_heads that divides n_heads, the chosen one in bold, beside the fp16 weights.
"""

from __future__ import annotations

import functools

import ipywidgets as widgets
import torch

from .. import viz
from ..model import LlamaConfig, kv_cache_bytes_per_token
from . import Explorer

PRESETS = ("llama2-7b", "llama2-13b", "llama2-70b", "llama3-8b", "llama3-70b")
CONTEXTS = (512, 1024, 2048, 4096, 8192, 16384, 32768)
GiB = 2**30


def kv_head_choices(n_heads: int) -> list[int]:
    """Every n_kv_heads a layer with n_heads query heads allows: the divisors of n_heads."""
    return [d for d in range(1, n_heads + 1) if n_heads % d == 0]


def head_reads(n_heads: int, n_kv_heads: int) -> torch.Tensor:
    """(n_kv_heads, n_heads) of 0/1: 1 where query head h reads KV head h // group."""
    if n_kv_heads < 1 or n_heads % n_kv_heads:
        raise ValueError(f"n_kv_heads ({n_kv_heads}) must divide n_heads ({n_heads}); try "
                         f"{kv_head_choices(n_heads)}")
    reads = torch.zeros(n_kv_heads, n_heads)
    reads[torch.arange(n_heads) // (n_heads // n_kv_heads), torch.arange(n_heads)] = 1
    return reads


def weight_count(config: LlamaConfig) -> int:
    """The parameters of a Llama config, by formula (the tests hold it to count_parameters):
    embeddings (and an untied head) + per layer q, k, v, o, the three FFN matrices and two
    norms + the final norm."""
    dim, hd = config.dim, config.head_dim
    attention = 2 * dim * config.n_heads * hd + 2 * dim * config.n_kv_heads * hd
    layer = attention + 3 * dim * config.ffn_hidden_dim + 2 * dim
    heads = 1 if config.tie_word_embeddings else 2
    return heads * config.vocab_size * dim + config.n_layers * layer + dim


@functools.lru_cache(maxsize=64)
def weights_gib(preset: str, n_kv_heads: int) -> float:
    """fp16 weights of the preset with n_kv_heads KV heads, in GiB."""
    return weight_count(LlamaConfig.from_preset(preset, n_kv_heads=n_kv_heads)) * 2 / GiB


def draw_gqa(n_kv_heads: int = 8, preset: str = "llama2-70b", context: int = 4096):
    """The head grouping and the cache's memory for one preset and context length."""
    config = LlamaConfig.from_preset(preset)
    choices = kv_head_choices(config.n_heads)
    n_kv_heads = max(c for c in choices if c <= max(int(n_kv_heads), 1))  # a divisor
    group = config.n_heads // n_kv_heads
    fig, (left, right) = viz.figure(2, height=3.8)
    image = viz.heatmap(left, head_reads(config.n_heads, n_kv_heads), f"{preset}: "
                        f"{n_kv_heads} KV head(s), groups of {group}",
                        "query head", "KV head", colorbar=False)
    image.set_clim(0, 1)
    per_token = {c: kv_cache_bytes_per_token(LlamaConfig.from_preset(preset, n_kv_heads=c))
                 for c in choices}
    for c in choices:
        bold = c == n_kv_heads
        right.plot(CONTEXTS, [per_token[c] * t / GiB for t in CONTEXTS], "o-" if bold else "-",
                   color=viz.COLORS[1] if bold else "lightgrey", linewidth=2.5 if bold else 1,
                   label=f"{c} KV heads" if bold else None, zorder=3 if bold else 1)
    chosen = per_token[n_kv_heads] * context / GiB
    right.plot([context], [chosen], "o", ms=12, mfc="none", color="black",
               label=f"{context} tokens: {chosen:.2f} GiB")
    right.axhline(weights_gib(preset, n_kv_heads), color=viz.COLORS[0], linestyle="--",
                  label=f"fp16 weights: {weights_gib(preset, n_kv_heads):.0f} GiB")
    right.set_xscale("log", base=2)
    right.set_yscale("log")
    right.set_xticks(CONTEXTS, [f"{t // 1024}K" if t >= 1024 else str(t) for t in CONTEXTS])
    right.legend(loc="upper left", fontsize=8)
    mha = per_token[config.n_heads] / per_token[n_kv_heads]
    viz.label(right, f"KV cache of one sequence (fp16), 1/{mha:.0f} of MHA's",
              "context length (tokens)", "memory (GiB)")
    return fig


def gqa_explorer(n_kv_heads: int = 8, preset: str = "llama2-70b",
                 context: int = 4096) -> Explorer:
    """Slide n_kv_heads (the divisors of the preset's n_heads), pick a preset and a context."""
    options = kv_head_choices(LlamaConfig.from_preset(preset).n_heads)
    kv_slider = widgets.SelectionSlider(options=options, value=n_kv_heads,
                                        description="KV heads")
    preset_menu = widgets.Dropdown(options=PRESETS, value=preset, description="preset")
    context_slider = widgets.SelectionSlider(options=CONTEXTS, value=context,
                                             description="context")

    def new_preset(change) -> None:      # registered before the Explorer's redraw
        config = LlamaConfig.from_preset(change["new"])
        kv_slider.options = kv_head_choices(config.n_heads)
        kv_slider.value = config.n_kv_heads

    preset_menu.observe(new_preset, names="value")
    return Explorer(draw_gqa, {"n_kv_heads": kv_slider, "preset": preset_menu,
                               "context": context_slider},
                    title="Grouped-query attention: which KV head each query head reads, and "
                          "what the cache costs")
