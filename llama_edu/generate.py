"""From logits to text: greedy decoding and sampling with the KV cache (lesson 11).

At each step the model gives logits z over the vocabulary for the next token.

    greedy:       next = argmax z
    temperature:  p = softmax(z / T)         T < 1 sharpens, T > 1 flattens
    top-k:        keep the k largest logits, the rest get -inf          (Fan et al., 2018)
    top-p:        keep the smallest set of tokens whose probabilities add up to at least
                  p, the rest get -inf (nucleus sampling; Holtzman et al., 2020)

The filters apply in that order (temperature, top-k, top-p), as in Hugging Face
`generate`. Generation always runs with the KV cache: one prefill of the prompt, then one
token per step; prompts of unequal length are left-padded, with an attention mask and
position ids that skip the padding.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import Tensor

from .model import Llama
from .precision import choose_precision

# ---------------------------------------------------------------------------------------
# Turning logits into a choice


def apply_temperature(logits: Tensor, temperature: float) -> Tensor:
    """z / T.   (..., vocab) -> (..., vocab)"""
    if not temperature > 0:
        raise ValueError(f"temperature must be positive here, got {temperature}; "
                         "temperature 0 means greedy decoding (argmax)")
    return logits / temperature


def top_k_filter(logits: Tensor, k: int) -> Tensor:
    """Keep the k largest logits of each row; the others become -inf."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"top_k must be a positive integer, got {k!r}")
    if k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]          # (..., 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Keep the most likely tokens until their probabilities reach p; the rest get -inf.

    A token stays when the probability of the tokens ranked above it is below p, so the
    most likely token always stays and the kept set is the smallest with mass >= p.
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must lie in (0, 1], got {p}")
    if p == 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits.float(), dim=-1)
    mass_above = probs.cumsum(-1) - probs                        # (..., vocab), sorted
    remove_sorted = mass_above >= p
    remove = remove_sorted.scatter(-1, order, remove_sorted)    # back to vocabulary order
    return logits.masked_fill(remove, float("-inf"))


def filter_logits(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> Tensor:
    """Temperature, then top-k, then top-p: the logits that sampling draws from."""
    logits = apply_temperature(logits.float(), temperature)
    if top_k is not None:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return logits


def sample_next(logits: Tensor, temperature: float = 0.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> Tensor:
    """One token per row.   logits (batch, vocab) -> ids (batch,)

    temperature 0 is greedy (argmax; top_k and top_p then change nothing).
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


# ---------------------------------------------------------------------------------------
# Prompts: one or a batch of unequal lengths


def _as_prompts(prompt_ids) -> tuple[list[list[int]], bool]:
    """-> (list of prompts, whether a batch was given)"""
    if isinstance(prompt_ids, Tensor):
        if prompt_ids.dim() == 1:
            return [prompt_ids.tolist()], False
        if prompt_ids.dim() == 2:
            return prompt_ids.tolist(), True
        raise ValueError(f"prompt_ids as a tensor must be (seq,) or (batch, seq), got shape "
                         f"{tuple(prompt_ids.shape)}")
    if not isinstance(prompt_ids, Sequence) or isinstance(prompt_ids, str):
        raise TypeError("prompt_ids must be a list of token ids (or a list of such lists), "
                        f"got {type(prompt_ids).__name__}; encode text with the tokenizer")
    if prompt_ids and all(isinstance(p, (Sequence, Tensor)) and not isinstance(p, str)
                          for p in prompt_ids):
        return [list(map(int, p)) for p in prompt_ids], True
    return [list(map(int, prompt_ids))], False


def left_pad(prompts: list[list[int]], pad_id: int = 0,
             device: torch.device | str | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Right-align prompts of unequal length.

    -> tokens (batch, max_len), attention_mask (batch, max_len) with 0 on padding, and
    position_ids (batch, max_len) counting from 0 at each prompt's first real token.
    """
    longest = max(len(p) for p in prompts)
    tokens = torch.full((len(prompts), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), longest), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            tokens[row, longest - len(prompt):] = torch.tensor(prompt)
            mask[row, longest - len(prompt):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return tokens.to(device), mask.to(device), positions.to(device)


def _check(model: Llama, prompts: list[list[int]], max_new_tokens: int) -> None:
    if not isinstance(model, Llama):
        raise TypeError(f"model must be a llama_edu Llama, got {type(model).__name__}")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be a non-negative integer, got {max_new_tokens!r}")
    if any(len(p) == 0 for p in prompts):
        raise ValueError("every prompt needs at least one token; start it with BOS "
                         "(tokenizer.encode(text, bos=True))")
    vocab = model.config.vocab_size
    if any(not 0 <= t < vocab for p in prompts for t in p):
        raise ValueError(f"prompt ids must lie in [0, {vocab}); does the tokenizer match "
                         "the model?")
    total = max(len(p) for p in prompts) + max_new_tokens
    if total > model.config.max_seq_len:
        raise ValueError(f"prompt ({max(len(p) for p in prompts)} tokens) plus max_new_tokens "
                         f"({max_new_tokens}) exceeds max_seq_len={model.config.max_seq_len}; "
                         "shorten one of them")


# ---------------------------------------------------------------------------------------
# Decoding with the KV cache


@torch.inference_mode()
def _steps(model: Llama, prompts: list[list[int]], max_new_tokens: int, temperature: float,
           top_k: int | None, top_p: float | None, eos_id: int | None,
           generator: torch.Generator | None, precision: str = "fp32") -> Iterator[Tensor]:
    """Yield the next token of every row, (batch,), step by step; rows that met EOS
    repeat it. Stops when every row has met EOS or after max_new_tokens. The forward
    passes run in `precision` (llama_edu.precision); sampling reads fp32 logits."""
    device = model.embed_tokens.weight.device
    autocast = choose_precision(precision, device).autocast
    tokens, mask, positions = left_pad(prompts, device=device)
    batch, length = tokens.shape
    padded = bool((mask == 0).any())
    cache = model.make_cache(batch, length + max_new_tokens)
    with autocast():
        logits = model(tokens, 0, cache, mask if padded else None,
                       positions if padded else None).float()     # prefill: (b, len, vocab)
    done = torch.zeros(batch, dtype=torch.bool, device=device)
    next_pos = positions[:, -1:] + 1                              # (b, 1)
    for step in range(max_new_tokens):
        token = sample_next(logits[:, -1], temperature, top_k, top_p, generator)   # (b,)
        if eos_id is not None:
            token = torch.where(done, torch.full_like(token, eos_id), token)
            done |= token == eos_id
        yield token
        if step + 1 == max_new_tokens or (eos_id is not None and bool(done.all())):
            return
        if padded:
            mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=1)
        with autocast():
            logits = model(token[:, None], length + step, cache, mask if padded else None,
                           next_pos if padded else None).float()  # decode: (b, 1, vocab)
        next_pos = next_pos + 1


def _trim(ids: list[int], eos_id: int | None) -> list[int]:
    """Cut a row after its first EOS (the EOS itself stays, as in HF generate)."""
    if eos_id is not None and eos_id in ids:
        return ids[:ids.index(eos_id) + 1]
    return ids


def generate(model: Llama, prompt_ids, max_new_tokens: int, temperature: float = 0.0,
             top_k: int | None = None, top_p: float | None = None, eos_id: int | None = None,
             *, generator: torch.Generator | None = None, precision: str = "fp32"):
    """The new token ids after a prompt, decoded with the KV cache.

    prompt_ids: a list of ids (-> a list of new ids) or a list of such lists of any
    lengths (-> a list of lists). temperature 0 is greedy; otherwise sampling from the
    temperature-scaled, top-k and top-p filtered distribution, drawn with `generator`.
    A row stops after eos_id (which it includes) or after max_new_tokens. `precision`
    ("fp32", "bf16", "fp16" or "auto") is the dtype of the forward passes' matmuls.
    """
    prompts, batched = _as_prompts(prompt_ids)
    _check(model, prompts, max_new_tokens)
    columns = list(_steps(model, prompts, max_new_tokens, temperature, top_k, top_p, eos_id,
                          generator, precision))
    rows = torch.stack(columns, 1).tolist() if columns else [[] for _ in prompts]
    rows = [_trim(row, eos_id) for row in rows]
    return rows if batched else rows[0]


def stream(model: Llama, prompt_ids, max_new_tokens: int, temperature: float = 0.0,
           top_k: int | None = None, top_p: float | None = None, eos_id: int | None = None,
           *, generator: torch.Generator | None = None,
           precision: str = "fp32") -> Iterator[int]:
    """Like `generate` for one prompt, but yields each new id as soon as it exists."""
    prompts, batched = _as_prompts(prompt_ids)
    if batched:
        raise ValueError("stream takes one prompt (a list of ids); use generate for a batch")
    _check(model, prompts, max_new_tokens)
    for token in _steps(model, prompts, max_new_tokens, temperature, top_k, top_p, eos_id,
                        generator, precision):
        yield int(token[0])


def stream_text(model: Llama, tokenizer, prompt: str, max_new_tokens: int = 64,
                **sampling) -> Iterator[str]:
    """Yield text pieces as they are generated (see `text_pieces` for split characters)."""
    prompt_ids = tokenizer.encode(prompt, bos=True)
    eos_id = sampling.pop("eos_id", tokenizer.eos_id)
    yield from text_pieces(tokenizer, prompt_ids,
                           stream(model, prompt_ids, max_new_tokens, eos_id=eos_id, **sampling))


def text_pieces(tokenizer, prompt_ids: list[int], new_ids: Iterable[int]) -> Iterator[str]:
    """The text that each new id adds after the prompt, never showing half a character.

    A character outside the vocabulary arrives as several byte tokens (<0xE7><0x8C><0xAB>
    for 猫); until its last byte is there, the decoded text ends in U+FFFD, so it is held
    back. Whatever is still held when the ids end is an incomplete tail and is dropped:
    the pieces joined equal decode(prompt + new ids) after the prompt's text, less that tail.
    """
    ids = list(prompt_ids)
    shown = tokenizer.decode(ids)             # decode with the prompt: keeps the leading space
    for token in new_ids:
        ids.append(token)
        text = tokenizer.decode(ids)
        if text.endswith("\ufffd") or text == shown:   # an incomplete character: wait
            continue
        if not text.startswith(shown):
            raise RuntimeError(f"decoding one more id changed earlier text: {shown!r} became "
                               f"{text!r}; the tokenizer's decode is not prefix-stable")
        yield text[len(shown):]
        shown = text


def generate_text(model: Llama, tokenizer, prompt: str, max_new_tokens: int = 64,
                  **sampling) -> str:
    """The prompt's continuation as text (stops at the tokenizer's EOS)."""
    return "".join(stream_text(model, tokenizer, prompt, max_new_tokens, **sampling))


# ---------------------------------------------------------------------------------------
# The reference without a cache (for tests and for measuring what the cache saves)


@torch.inference_mode()
def generate_no_cache(model: Llama, prompt_ids, max_new_tokens: int,
                      eos_id: int | None = None):
    """Greedy decoding that runs the whole sequence through the model at every step.

    Quadratic in the length, but needs no cache: the reference `generate` must equal.
    """
    prompts, batched = _as_prompts(prompt_ids)
    _check(model, prompts, max_new_tokens)
    device = model.embed_tokens.weight.device
    tokens, mask, positions = left_pad(prompts, device=device)
    padded = bool((mask == 0).any())
    rows: list[list[int]] = [[] for _ in prompts]
    done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
    for _ in range(max_new_tokens):
        logits = model(tokens, attention_mask=mask if padded else None,
                       position_ids=positions if padded else None)
        token = logits[:, -1].argmax(-1)                                    # (b,)
        if eos_id is not None:
            token = torch.where(done, torch.full_like(token, eos_id), token)
            done |= token == eos_id
        for row, t in zip(rows, token.tolist(), strict=True):
            row.append(t)
        if bool(done.all()):
            break
        tokens = torch.cat([tokens, token[:, None]], 1)
        mask = torch.cat([mask, mask.new_ones(len(prompts), 1)], 1)
        positions = torch.cat([positions, positions[:, -1:] + 1], 1)
    rows = [_trim(row, eos_id) for row in rows]
    return rows if batched else rows[0]
