"""The chat explorer of lesson 13: a temperature slider, a message box, and the
conversation so far with the next-token distribution of the answer's first token.

    chat_explorer(model, tokenizer, system="Answer in one word.")

Each new message in the box is answered (and the exchange kept); moving the temperature
re-samples the newest answer, with the same seed, from the distribution it shows.
"""

from __future__ import annotations

import textwrap

import ipywidgets as widgets
import torch

from .. import viz
from ..chat import fit_dialog
from ..generate import apply_temperature, generate, text_pieces
from . import Explorer
from .generate import piece_label, plot_text


class ChatState:
    """The finished exchanges, and the answer of the newest message at a temperature."""

    def __init__(self, model, tokenizer, system: str | None, max_new_tokens: int = 24):
        self.model, self.tokenizer, self.max_new_tokens = model, tokenizer, max_new_tokens
        self.done = [] if system is None else [{"role": "system", "content": system}]
        self.current: str | None = None
        self.answer = ""

    def reply(self, message: str, temperature: float, seed: int = 0):
        """The dialog up to `message` and the first token's probabilities: (ids, probs)."""
        message = message.strip()
        if self.current is not None and message != self.current:      # a new message
            self.done += [{"role": "user", "content": self.current},
                          {"role": "assistant", "content": self.answer}]
        self.current = message
        room = self.model.config.max_seq_len - self.max_new_tokens
        self.done, ids = fit_dialog(self.tokenizer,
                                    self.done + [{"role": "user", "content": message}], room)
        self.done = self.done[:-1]
        device = self.model.embed_tokens.weight.device
        with torch.no_grad():
            logits = self.model(torch.tensor([ids], device=device))[0, -1].float().cpu()
        probs = torch.softmax(apply_temperature(logits, max(temperature, 1e-4)), -1)
        generator = torch.Generator(device).manual_seed(seed)
        new = generate(self.model, ids, self.max_new_tokens, temperature,
                       eos_id=self.tokenizer.eos_id, generator=generator)
        self.answer = "".join(text_pieces(self.tokenizer, ids, new)).strip()
        return ids, probs


def draw_chat(state: ChatState, message: str, temperature: float, n_show: int = 10):
    _, probs = state.reply(message, temperature)
    fig, (talk, bars) = viz.figure(ncols=2, height=4.2, width_ratios=[1.6, 1])
    lines = []
    for turn in state.done + [{"role": "user", "content": state.current},
                              {"role": "assistant", "content": state.answer}]:
        who = {"system": "system", "user": "you", "assistant": "llama"}[turn["role"]]
        text = turn["content"] if len(turn["content"]) < 200 else \
            turn["content"][:90] + " ... " + turn["content"][-90:]
        wrapped = textwrap.wrap(text.replace("\n", " "), 60) or [""]
        lines += [f"{who}: {wrapped[0]}"] + [f"      {w}" for w in wrapped[1:]]
    talk.text(0.0, 1.0, plot_text("\n".join(lines[-18:])), va="top", ha="left",
              fontsize=8, family=viz.font_family("DejaVu Sans Mono"))
    talk.set_axis_off()
    talk.set_title(f"The conversation so far ({len(state.done) // 2} earlier exchanges kept)")
    top = torch.topk(probs, n_show)
    names = [piece_label(state.tokenizer, i) for i in top.indices.tolist()]
    bars.barh(range(n_show)[::-1], top.values.numpy(), color=viz.COLORS[0])
    bars.set_yticks(range(n_show)[::-1], names)
    bars.set_xlim(0, 1)
    viz.label(bars, f"The answer's first token at T = {temperature:.2f}",
              "probability", "token")
    return fig


def chat_explorer(model, tokenizer, system: str | None = None,
                  message: str = "What is 12 + 7?") -> Explorer:
    """Explorer: the temperature (first, a slider) and the message box."""
    state = ChatState(model, tokenizer, system)
    controls = {
        "temperature": widgets.FloatSlider(value=0.0, min=0.0, max=2.0, step=0.1,
                                           description="temperature"),
        "message": widgets.Text(value=message, description="you:", continuous_update=False,
                                layout=widgets.Layout(width="60%")),
    }
    return Explorer(lambda temperature, message: draw_chat(state, message, temperature),
                    controls, title="Chat with the shipped tiny-chat model")
