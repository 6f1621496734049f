"""The sampling explorer of lesson 11: temperature, top-k and top-p sliders that show the
next-token distribution they leave and re-sample continuations from the shipped model.

    sampling_explorer()                                  # the course model and tokenizer
    sampling_explorer(model, tokenizer, "Once upon a time")
"""

from __future__ import annotations

import ipywidgets as widgets
import numpy as np
import torch

from .. import viz
from ..generate import filter_logits, generate
from . import Explorer

_MONO = "DejaVu Sans Mono"  # the samples panel; CJK fonts are its fallbacks when installed


def plot_text(text: str) -> str:
    """Text the plot fonts can draw (see `viz.drawable`), so matplotlib stays quiet."""
    return viz.drawable(text)


def piece_label(tokenizer, token_id: int) -> str:
    """A token as a short label: the SentencePiece space mark shown as '_'."""
    return plot_text(tokenizer.id_to_piece(int(token_id)).replace("\u2581", "_"))


def next_token_logits(model, tokenizer, prompt: str) -> torch.Tensor:
    """Logits for the token after `prompt` (with BOS).   -> (vocab,)"""
    ids = torch.tensor([tokenizer.encode(prompt, bos=True)],
                       device=model.embed_tokens.weight.device)
    with torch.no_grad():
        return model(ids)[0, -1].float().cpu()


def draw_sampling(model, tokenizer, prompt: str, logits: torch.Tensor, temperature: float,
                  top_k: int, top_p: float, seed: int, n_show: int = 15, n_samples: int = 3,
                  n_tokens: int = 24):
    """Bars: the model's next-token probabilities, and what is left after temperature,
    top-k and top-p; text: continuations sampled with those settings."""
    k = top_k or None
    if temperature == 0:
        kept = torch.zeros_like(logits).scatter(0, logits.argmax()[None], 1.0)
    else:
        kept = torch.softmax(filter_logits(logits, temperature, k, top_p), dim=-1)
    raw = torch.softmax(logits, dim=-1)
    order = torch.argsort(raw, descending=True)[:n_show]
    fig, (ax, text_ax) = viz.figure(2, height=4.2)
    x = np.arange(n_show)
    ax.bar(x - 0.2, raw[order].numpy(), width=0.4, label="model (T = 1)",
           color=viz.COLORS[0])
    ax.bar(x + 0.2, kept[order].numpy(), width=0.4, label="after the sliders",
           color=viz.COLORS[1])
    ax.set_xticks(x, [piece_label(tokenizer, i) for i in order.tolist()], rotation=70,
                  fontsize=8)
    n_kept = int((kept > 0).sum())
    viz.label(ax, f"Next token: {n_kept} of {len(logits)} can be drawn",
              "token (15 most likely)", "probability")
    ax.legend(fontsize=8)

    prompt_ids = tokenizer.encode(prompt, bos=True)
    generator = torch.Generator(model.embed_tokens.weight.device).manual_seed(seed)
    lines = []
    for _ in range(n_samples):
        new = generate(model, prompt_ids, n_tokens, temperature=temperature, top_k=k,
                       top_p=top_p, eos_id=tokenizer.eos_id, generator=generator)
        lines.append(viz.drawable(tokenizer.decode(prompt_ids + new), _MONO))
    text_ax.axis("off")
    text_ax.set_title(f"{n_samples} samples of {n_tokens} tokens (seed {seed})")
    text_ax.text(0.0, 1.0, "\n\n".join(_wrap(line, 48) for line in lines), va="top",
                 ha="left", fontsize=8.5, family=list(viz.font_family(_MONO)),
                 transform=text_ax.transAxes)
    return fig


def _wrap(text: str, width: int) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text.replace("\n", " "), width)) or text


def sampling_explorer(model=None, tokenizer=None, prompt: str = "Once upon a time, in a",
                      temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                      seed: int = 0) -> Explorer:
    """Sliders for temperature (0 = greedy), top-k (0 = off), top-p (1 = off) and the seed."""
    if model is None or tokenizer is None:
        from ..checkpoint import load_course_model

        model, tokenizer = load_course_model()
    if not isinstance(prompt, str) or not prompt:
        raise ValueError("prompt must be a non-empty string")
    model.eval()
    logits = next_token_logits(model, tokenizer, prompt)

    def draw(temperature, top_k, top_p, seed):
        return draw_sampling(model, tokenizer, prompt, logits, temperature, top_k, top_p,
                             seed)

    controls = {
        "temperature": widgets.FloatSlider(value=temperature, min=0.0, max=2.0, step=0.05,
                                           description="temperature", continuous_update=False),
        "top_k": widgets.IntSlider(value=top_k, min=0, max=200, step=1,
                                   description="top-k (0 off)", continuous_update=False),
        "top_p": widgets.FloatSlider(value=top_p, min=0.05, max=1.0, step=0.05,
                                     description="top-p", continuous_update=False),
        "seed": widgets.IntSlider(value=seed, min=0, max=20, description="seed",
                                  continuous_update=False),
    }
    return Explorer(draw, controls, title=f"Sampling after {prompt!r}")
