"""Explorers for lessons 05 and 06: attention maps of a model, and the KV cache filling.

    attention_explorer(model, tokenizer, sentences)   # lesson 05: sentence, layer, head,
                                                      # causal and padding toggles
    kv_cache_explorer(model, tokenizer, text)         # lesson 06: decode step by step

`tokenizer` needs `encode(text, bos=...)` and `id_to_piece(id)`; None means UTF-8 bytes
(ids 0-255), for models trained on `llama_edu.data.byte_tokens`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import ipywidgets as widgets
import numpy as np
import torch
from matplotlib.patches import Rectangle
from torch import Tensor, nn

from .. import viz
from ..attention import attention_maps
from . import Explorer

PAD_LABEL = "<pad>"
PADDING_CHOICES = ("no padding", "left-padded, masked", "left-padded, not masked")


def token_ids(tokenizer, text: str, max_tokens: int = 32) -> list[int]:
    """Ids of `text`, with BOS when the tokenizer has one; None: UTF-8 bytes."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"text must be a non-empty string, got {text!r}")
    if tokenizer is None:
        ids = list(text.encode("utf-8"))
    else:
        try:
            ids = list(tokenizer.encode(text, bos=True))
        except TypeError:
            ids = list(tokenizer.encode(text))
    return ids[:max_tokens]


def token_labels(tokenizer, ids: Sequence[int]) -> list[str]:
    """A short printable label for each id (bytes: the character or <0xNN>)."""
    labels = []
    for i in ids:
        if tokenizer is None:
            piece = chr(i) if 32 <= i < 127 else f"<0x{i:02X}>"
        else:
            piece = tokenizer.id_to_piece(int(i))
        labels.append(viz.drawable(piece.replace("\n", "\\n").replace(" ", "␣")) or "''")
    return labels


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _padded_batch(ids: list[int], n_pad: int, pad_id: int):
    """Left padding, as batched generation uses: -> tokens, attention_mask, position_ids,
    each (1, n_pad + len(ids)); the real tokens keep positions 0 .. len(ids) - 1."""
    tokens = torch.tensor([[pad_id] * n_pad + ids])
    attention_mask = torch.tensor([[0] * n_pad + [1] * len(ids)])
    position_ids = (attention_mask.cumsum(-1) - 1).clamp_min(0)
    return tokens, attention_mask, position_ids


def attention_explorer(model: nn.Module, tokenizer=None, sentences: Sequence[str] = (),
                       n_pad: int = 3, max_tokens: int = 24) -> Explorer:
    """Pick a sentence, a layer and a head of `model` and see where each token looks.

    Toggles: the causal mask (off: the same queries and keys scored without it, i.e. what
    the head would read if it could see the future) and padding (the sentence left-padded
    by n_pad tokens, with or without the padding mask).
    """
    sentences = list(sentences)
    if not sentences:
        raise ValueError("give at least one sentence to look at")
    config = model.config
    pad_id = getattr(tokenizer, "pad_id", None)
    pad_id = 0 if not isinstance(pad_id, int) or pad_id < 0 else pad_id

    @lru_cache(maxsize=32)
    def maps(sentence: str, causal: bool, padding: str):
        ids = token_ids(tokenizer, sentence, max_tokens)
        labels = token_labels(tokenizer, ids)
        n = n_pad if padding != PADDING_CHOICES[0] else 0
        tokens, mask, positions = _padded_batch(ids, n, pad_id)
        device = _device(model)
        use_mask = mask.to(device) if padding == PADDING_CHOICES[1] else None
        weights = attention_maps(model, tokens.to(device), use_mask, positions.to(device),
                                 causal=causal)
        return [w[0].cpu() for w in weights], [PAD_LABEL] * n + labels

    def draw(sentence, layer, head, causal, padding):
        weights, labels = maps(sentence, causal, padding)
        fig, ax = viz.figure(height=5.2)
        viz.heatmap(ax, weights[layer][head], f"layer {layer}, head {head}: attention weights "
                    f"({'causal' if causal else 'no causal mask'}, {padding})",
                    "key (the token being read)", "query (the token reading)",
                    xticklabels=labels, yticklabels=labels)
        return fig

    controls = {
        "sentence": widgets.Dropdown(options=sentences, value=sentences[0],
                                     description="sentence"),
        "layer": widgets.IntSlider(0, 0, config.n_layers - 1, description="layer"),
        "head": widgets.IntSlider(0, 0, config.n_heads - 1, description="head"),
        "causal": widgets.Checkbox(True, description="causal mask"),
        "padding": widgets.Dropdown(options=PADDING_CHOICES, value=PADDING_CHOICES[0],
                                    description="padding"),
    }
    return Explorer(draw, controls, title="Attention maps: rows are queries, each row sums to 1")


@torch.no_grad()
def cache_steps(model: nn.Module, ids: Sequence[int]) -> tuple[list, list[Tensor]]:
    """Feed ids one at a time through a fresh cache.

    -> the caches after the last step (one per layer), and the attention weights of each
    layer on the whole sequence: row t is what the decode step of token t computed.
    """
    device = _device(model)
    tokens = torch.tensor([list(ids)], device=device)
    cache = model.make_cache(1, len(ids))
    for t in range(len(ids)):
        model(tokens[:, t:t + 1], t, cache)
    return cache, [w[0].cpu() for w in attention_maps(model, tokens)]


def kv_cache_explorer(model: nn.Module, tokenizer=None, text: str = "The cat sat on the mat.",
                      max_tokens: int = 24) -> Explorer:
    """Step through decoding `text` one token at a time and watch the cache fill.

    Left, middle: one layer's cached keys and values (rows = positions; the grey rows are
    allocated but not written yet; the framed row was written at this step). Right: the
    new token's query reading every cached key.
    """
    ids = token_ids(tokenizer, text, max_tokens)
    labels = token_labels(tokenizer, ids)
    cache, weights = cache_steps(model, ids)
    n = len(ids)
    per_position = cache[0].memory_bytes() // n * len(cache)   # all layers, one position

    def draw(step, layer, head):
        fig, axes = viz.figure(3, height=4.4, width_ratios=[1, 1, 1.3])
        for ax, name, tensor in ((axes[0], "keys", cache[layer].k), (axes[1], "values",
                                                                     cache[layer].v)):
            data = tensor[0].flatten(1).float().cpu().numpy().copy()   # (positions, features)
            data[step + 1:] = np.nan
            viz.heatmap(ax, data, f"cached {name}, layer {layer}",
                        "feature (n_kv_heads x head_dim)", "position", colorbar=False,
                        center=True, yticklabels=labels)
            ax.set_facecolor("#dddddd")
            ax.add_patch(Rectangle((-0.5, step - 0.5), data.shape[1], 1, fill=False,
                                   edgecolor="#d62728", linewidth=2))
        row = weights[layer][head, step, :step + 1].numpy()
        axes[2].barh(range(step + 1), row, color=viz.COLORS[0])
        axes[2].set_ylim(n - 0.5, -0.5)
        axes[2].set_yticks(range(n), labels)
        viz.label(axes[2], f"query of {labels[step]!r} (head {head})", "attention weight",
                  "cached position")
        fig.suptitle(f"step {step}: token {labels[step]!r} written at position {step}; "
                     f"{step + 1} of {n} positions filled, {(step + 1) * per_position:,} of "
                     f"{n * per_position:,} bytes (all layers)")
        return fig

    controls = {
        "step": widgets.IntSlider(n // 2, 0, n - 1, description="step"),
        "layer": widgets.IntSlider(0, 0, model.config.n_layers - 1, description="layer"),
        "head": widgets.IntSlider(0, 0, model.config.n_heads - 1, description="head"),
    }
    return Explorer(draw, controls, title="The KV cache, one decode step at a time")
