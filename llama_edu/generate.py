"""From logits to text: greedy decoding, sampling and beam search with the KV cache
(lesson 11).

At each step the model gives logits z over the vocabulary for the next token.

    greedy:       next = argmax z
    repetition:   z_i / theta if z_i > 0 else z_i * theta, for every token i already in the
                  text (penalized sampling; Keskar et al., 2019, CTRL, section 4.1)
    temperature:  p = softmax(z / T)         T < 1 sharpens, T > 1 flattens
    top-k:        keep the k largest logits, the rest get -inf          (Fan et al., 2018)
    top-p:        keep the smallest set of tokens whose probabilities add up to at least
                  p, the rest get -inf (nucleus sampling; Holtzman et al., 2020)
    beam search:  keep the num_beams prefixes of highest log-probability, one step at a
                  time; a finished one scores sum log p / length ** length_penalty

The filters apply in that order (repetition penalty, temperature, top-k, top-p), as in
Hugging Face `generate`. Ties are kept: every token whose logit equals the k-th largest,
or equals the last logit the nucleus needs, stays. Generation always runs with the KV
cache: one prefill of the prompt, then one token per step; prompts of unequal length are
left-padded, with an attention mask and position ids that skip the padding.
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
    """Keep the k largest logits of each row (and any tied with the k-th); the others
    become -inf."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"top_k must be a positive integer, got {k!r}")
    if k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]          # (..., 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: Tensor, p: float) -> Tensor:
    """Keep the most likely tokens until their probabilities reach p; the rest get -inf.

    A token stays when the probability of the tokens ranked above it is below p, so the
    most likely token always stays and the kept set is the smallest with mass >= p. Tokens
    whose logit ties the last one kept stay too, so the result does not depend on how the
    sort orders equal logits.
    """
    if not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must lie in (0, 1], got {p}")
    if p == 1.0:
        return logits
    sorted_logits, _ = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits.float(), dim=-1)
    mass_above = probs.cumsum(-1) - probs                        # (..., vocab), sorted
    n_kept = (mass_above < p).sum(-1, keepdim=True)              # (..., 1), at least 1
    cutoff = sorted_logits.gather(-1, n_kept - 1)                # the last logit kept
    return logits.masked_fill(logits < cutoff, float("-inf"))


def repetition_penalty(logits: Tensor, previous_ids: Tensor, penalty: float) -> Tensor:
    """CTRL's penalty on tokens already in the text (Keskar et al., 2019, section 4.1).

    logits (batch, vocab), previous_ids (batch, seq) -> (batch, vocab). Each token that
    occurs in its row's previous ids, once or many times, has its logit divided by
    `penalty` if positive and multiplied by it if negative, so it loses probability for
    penalty > 1. (The paper divides before the softmax by theta for every such token; the
    sign rule, as in Hugging Face's RepetitionPenaltyLogitsProcessor, keeps a negative
    logit from rising.)
    """
    if not penalty > 0:
        raise ValueError(f"repetition_penalty must be positive (1.0 is none), got {penalty}")
    seen = logits.gather(-1, previous_ids)                       # (batch, seq)
    seen = torch.where(seen > 0, seen / penalty, seen * penalty)
    return logits.scatter(-1, previous_ids, seen)


def filter_logits(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> Tensor:
    """Temperature, then top-k, then top-p: the logits that sampling draws from.
    top_k None or 0 and top_p None or 1.0 switch that filter off (as in HF)."""
    logits = apply_temperature(logits.float(), temperature)
    if top_k:
        logits = top_k_filter(logits, top_k)
    if top_p is not None:
        logits = top_p_filter(logits, top_p)
    return logits


def sampling_probs(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                   top_p: float | None = None) -> Tensor:
    """The distribution a sample is drawn from, (..., vocab): softmax of `filter_logits`,
    or at temperature 0 the one-hot vector of the argmax (greedy)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    return torch.softmax(filter_logits(logits, temperature, top_k, top_p), dim=-1)


def sample_next(logits: Tensor, temperature: float = 0.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> Tensor:
    """One token per row.   logits (batch, vocab) -> ids (batch,)

    temperature 0 is greedy (argmax; top_k and top_p then change nothing).
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 is greedy), got {temperature}")
    if temperature == 0:
        return logits.argmax(-1)
    probs = sampling_probs(logits, temperature, top_k, top_p)
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
           generator: torch.Generator | None, precision: str = "fp32",
           penalty: float = 1.0) -> Iterator[Tensor]:
    """Yield the next token of every row, (batch,), step by step; rows that met EOS
    repeat it. Stops when every row has met EOS or after max_new_tokens. The forward
    passes run in `precision` (llama_edu.precision); sampling reads fp32 logits, after
    the repetition `penalty` on every token of the prompt and of the text so far."""
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
    history = torch.where(mask == 1, tokens, tokens[:, -1:])      # pads -> a real prompt id
    for step in range(max_new_tokens):
        scores = logits[:, -1]                                    # (b, vocab)
        if penalty != 1.0:
            scores = repetition_penalty(scores, history, penalty)
        token = sample_next(scores, temperature, top_k, top_p, generator)   # (b,)
        if eos_id is not None:
            token = torch.where(done, torch.full_like(token, eos_id), token)
            done |= token == eos_id
        yield token
        if step + 1 == max_new_tokens or (eos_id is not None and bool(done.all())):
            return
        if penalty != 1.0:
            history = torch.cat([history, token[:, None]], dim=1)
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
             *, generator: torch.Generator | None = None, precision: str = "fp32",
             repetition_penalty: float = 1.0):
    """The new token ids after a prompt, decoded with the KV cache.

    prompt_ids: a list of ids (-> a list of new ids) or a list of such lists of any
    lengths (-> a list of lists). temperature 0 is greedy; otherwise sampling from the
    temperature-scaled, top-k and top-p filtered distribution, drawn with `generator`.
    A row stops after eos_id (which it includes) or after max_new_tokens. `precision`
    ("fp32", "bf16", "fp16" or "auto") is the dtype of the forward passes' matmuls.
    `repetition_penalty` > 1 applies CTRL's penalty (see `repetition_penalty`) first.
    """
    prompts, batched = _as_prompts(prompt_ids)
    _check(model, prompts, max_new_tokens)
    columns = list(_steps(model, prompts, max_new_tokens, temperature, top_k, top_p, eos_id,
                          generator, precision, repetition_penalty))
    rows = torch.stack(columns, 1).tolist() if columns else [[] for _ in prompts]
    rows = [_trim(row, eos_id) for row in rows]
    return rows if batched else rows[0]


def stream(model: Llama, prompt_ids, max_new_tokens: int, temperature: float = 0.0,
           top_k: int | None = None, top_p: float | None = None, eos_id: int | None = None,
           *, generator: torch.Generator | None = None, precision: str = "fp32",
           repetition_penalty: float = 1.0) -> Iterator[int]:
    """Like `generate` for one prompt, but yields each new id as soon as it exists."""
    prompts, batched = _as_prompts(prompt_ids)
    if batched:
        raise ValueError("stream takes one prompt (a list of ids); use generate for a batch")
    _check(model, prompts, max_new_tokens)
    for token in _steps(model, prompts, max_new_tokens, temperature, top_k, top_p, eos_id,
                        generator, precision, repetition_penalty):
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


# ---------------------------------------------------------------------------------------
# Beam search


@torch.inference_mode()
def beam_search(model: Llama, prompt_ids: list[int], num_beams: int, max_new_tokens: int,
                eos_id: int | None = None, length_penalty: float = 1.0,
                early_stopping: bool | str = False) -> tuple[list[int], float]:
    """The new ids of the best beam after one prompt, and its score.

    Keeps the `num_beams` prefixes of highest total log-probability (beam search as in
    Sutskever et al., 2014, section 3.2). Each step scores every beam's every next token
    and takes the 2 x num_beams best; those among the first num_beams that end in eos_id,
    or reach max_new_tokens, are finished hypotheses with score
    sum log p / (new tokens) ** length_penalty (a simpler form of Wu et al., 2016,
    section 7), and the best num_beams unfinished ones go on, their KV cache rows copied
    along. It stops when num_beams hypotheses are finished and (early_stopping True) at
    once, or (False) when the best running beam, at its present length, cannot beat the
    worst of them; "never" assumes the longest length when length_penalty > 0. These are
    Hugging Face's rules for `generate(num_beams=...)`, which this equals.
    """
    prompts, batched = _as_prompts(prompt_ids)
    if batched:
        raise ValueError("beam_search takes one prompt (a list of ids)")
    if not isinstance(num_beams, int) or num_beams < 1:
        raise ValueError(f"num_beams must be a positive integer, got {num_beams!r}")
    _check(model, prompts, max_new_tokens)
    if max_new_tokens == 0:
        return [], 0.0
    device = model.embed_tokens.weight.device
    prompt = torch.tensor(prompts, device=device).expand(num_beams, -1)   # (beams, len)
    cache = model.make_cache(num_beams, prompt.shape[1] + max_new_tokens)
    logits = model(prompt, 0, cache)[:, -1].float()                        # (beams, vocab)
    scores = torch.full((num_beams,), -1e9, device=device)                 # only beam 0
    scores[0] = 0.0                                                       # starts alive
    beams = torch.empty(num_beams, 0, dtype=torch.long, device=device)    # (beams, step)
    finished: list[tuple[float, list[int]]] = []                          # (score, ids)
    vocab = logits.shape[-1]
    for step in range(max_new_tokens):
        total = scores[:, None] + torch.log_softmax(logits, dim=-1)       # (beams, vocab)
        top, index = torch.topk(total.flatten(), 2 * num_beams)           # (2 beams,)
        parent, token = index // vocab, index % vocab
        ends = torch.full_like(token, step + 1 == max_new_tokens, dtype=torch.bool)
        if eos_id is not None:
            ends |= token == eos_id
        full = len(finished) == num_beams
        for rank in range(num_beams):
            if ends[rank] and not (full and early_stopping is True):
                ids = beams[parent[rank]].tolist() + [int(token[rank])]
                finished.append((float(top[rank]) / (step + 1) ** length_penalty, ids))
        finished = sorted(finished, key=lambda f: -f[0])[:num_beams]
        keep = torch.topk(top - 1e9 * ends.float(), num_beams).indices   # (beams,)
        scores, parent, token = top[keep] - 1e9 * ends[keep].float(), parent[keep], token[keep]
        beams = torch.cat([beams[parent], token[:, None]], dim=1)
        if len(finished) == num_beams:
            if early_stopping is True:
                break
            length = max_new_tokens if early_stopping == "never" and length_penalty > 0 \
                else step + 1
            if float(scores.max()) / length ** length_penalty <= finished[-1][0]:
                break
        if step + 1 == max_new_tokens:
            break
        for layer_cache in cache:                                          # follow the parents
            layer_cache.k.copy_(layer_cache.k[parent])
            layer_cache.v.copy_(layer_cache.v[parent])
        start = prompt.shape[1] + step
        logits = model(token[:, None], start, cache)[:, -1].float()
    score, ids = finished[0]
    return ids, score
