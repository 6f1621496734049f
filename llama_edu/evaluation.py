"""How good is a trained model, per language (lessons 10 and 11)?

- `text_loss(model, tokenizer, text)`: the mean next-token loss, in nats per token, over
  consecutive windows of `text`: on held-out stories (`llama_edu.data.held_out_stories`)
  it is the validation loss of one language.
- `chinese_continuations(model, tokenizer)`: continue the opening clause of held-out
  Chinese stories and count how many continuations are valid UTF-8 (no byte-fallback
  sequence left broken) and stay in Chinese up to the end of their first sentence.
"""

from __future__ import annotations

import codecs

import torch

from .data import held_out_stories
from .generate import generate
from .train import lm_loss


@torch.no_grad()
def text_loss(model, tokenizer, text: str, seq_len: int | None = None) -> float:
    """Mean next-token loss (nats/token) of `text`, in consecutive windows of seq_len."""
    ids = torch.tensor(tokenizer.encode(text, bos=True))
    seq_len = seq_len or model.config.max_seq_len
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for start in range(0, len(ids) - 1, seq_len):
        window = ids[start:start + seq_len + 1].to(device)
        if len(window) < 2:
            break
        loss = lm_loss(model(window[None, :-1]).float(), window[None, 1:])
        total, count = total + float(loss) * (len(window) - 1), count + len(window) - 1
    return total / count


def _is_chinese(text: str) -> bool:
    """No Latin letters, and most characters CJK ideographs or full-width punctuation."""
    if any("a" <= ch.lower() <= "z" for ch in text):
        return False
    cjk = sum(1 for ch in text if "\u4e00" <= ch <= "\u9fff" or "\u3000" <= ch <= "\u303f"
              or "\uff00" <= ch <= "\uffef")
    return cjk >= 0.8 * max(len(text.strip()), 1)


def chinese_continuations(model, tokenizer, n: int = 200, max_new_tokens: int = 48,
                          temperature: float = 0.8, seed: int = 0) -> dict:
    """Sample continuations of the opening clause (up to the first "，") of `n` held-out
    Chinese stories. Returns counts of those whose new ids decode as valid UTF-8 (a
    character left unfinished by the token budget at the very end is not counted against
    them) and of those that stay Chinese up to their first "。", with examples."""
    stories = held_out_stories("zh", n).split("\n\n")
    generator = torch.Generator(next(model.parameters()).device).manual_seed(seed)
    valid = chinese = 0
    examples = []
    for story in stories:
        prompt = story[:story.index("，") + 1]
        ids = tokenizer.encode(prompt, bos=True)
        new = generate(model, ids, max_new_tokens, temperature=temperature,
                       eos_id=tokenizer.eos_id, generator=generator)
        decoder = codecs.getincrementaldecoder("utf-8")()   # strict; holds an unfinished tail
        try:
            text = decoder.decode(b"".join(tokenizer.id_to_bytes(i) for i in new))
        except UnicodeDecodeError:                            # a broken byte sequence
            continue
        valid += 1
        sentence = text.split("。")[0]
        chinese += _is_chinese(sentence)
        if len(examples) < 3:
            examples.append(prompt + text)
    return {"n": n, "valid_utf8": valid, "chinese_first_sentence": chinese,
            "examples": examples}
