"""Checks for lesson 13: the answer-only labels of SFT, and a LoRA layer's forward pass."""

from __future__ import annotations

import torch

from ..align import IGNORE, answer_labels, pad_examples
from ..lora import LoRALinear
from ..numerics import assert_close
from ._common import call, expect, passed, rng

__all__ = ["check_sft_labels", "check_lora_forward"]


# ---------------------------------------------------------------------------------------
# SFT labels: (prompt ids, answer ids) pairs -> padded ids and labels


def _random_pairs(generator, n: int, vocab: int = 50) -> list[tuple[list[int], list[int]]]:
    pairs = []
    for _ in range(n):
        p, a = (int(v) for v in torch.randint(1, 9, (2,), generator=generator))
        pairs.append((torch.randint(3, vocab, (p,), generator=generator).tolist(),
                      torch.randint(3, vocab, (a,), generator=generator).tolist() + [2]))
    return pairs


def _sft_cases():
    generator = rng(131)
    yield "three pairs of different lengths", _random_pairs(generator, 3), 0
    yield "one pair (nothing to pad)", _random_pairs(generator, 1), 0
    yield "a one-token prompt", [([1], [7, 8, 2]), ([1, 4, 5, 6], [9, 2])], 0
    yield "pad id 3 (not 0)", _random_pairs(generator, 4), 3


def _sft_mistakes(pairs, pad_id):
    longest = max(len(p) + len(a) for p, a in pairs)
    full = [(p + a, p + a) for p, a in pairs]
    yield (pad_examples(full, pad_id)[1],
           "the prompt's tokens are labelled too: put IGNORE (-100) under every prompt "
           "token, so that the loss counts only the answer")
    ids, labels = pad_examples([answer_labels(p, a) for p, a in pairs], pad_id)
    yield (torch.where(labels == IGNORE, ids, labels).masked_fill(
               torch.tensor([[i < len(p) for i in range(longest)] for p, _ in pairs]), IGNORE),
           "the padding is labelled with the pad id: padding positions need IGNORE as well, "
           "or the model learns to predict padding")
    shifted = torch.full_like(labels, IGNORE)
    shifted[:, :-1] = labels[:, 1:]
    yield (shifted, "your labels are shifted by one: keep label t under token t; the loss "
                    "(masked_lm_loss) shifts them itself")
    left = torch.full_like(labels, IGNORE)
    for row, (p, a) in enumerate(pairs):
        n = len(p) + len(a)
        left[row, longest - n:] = torch.tensor([IGNORE] * len(p) + a)
    yield (left, "you padded on the left: pad on the right, so that the tokens keep "
                 "positions 0, 1, ... and causal attention never sees the padding")


def check_sft_labels(sft_labels) -> None:
    """sft_labels(pairs, pad_id) -> (ids, labels), both (batch, longest) long tensors."""
    for name, pairs, pad_id in _sft_cases():
        got = call(sft_labels, [(list(p), list(a)) for p, a in pairs], pad_id,
                   what="sft_labels")
        expect(isinstance(got, tuple) and len(got) == 2,
               f"sft_labels should return a pair (ids, labels), got {type(got).__name__}")
        ids, labels = got
        want_ids, want_labels = pad_examples([answer_labels(p, a) for p, a in pairs], pad_id)
        for what, actual, want in (("ids", ids, want_ids), ("labels", labels, want_labels)):
            expect(isinstance(actual, torch.Tensor) and actual.shape == want.shape,
                   f"{name}: {what} should be a tensor of shape {tuple(want.shape)}, got "
                   f"{getattr(actual, 'shape', type(actual).__name__)}")
        expect(torch.equal(ids.long(), want_ids),
               f"{name}: ids should be prompt + answer, right-padded with pad_id={pad_id}; "
               f"expected {want_ids.tolist()}, got {ids.tolist()}")
        if not torch.equal(labels.long(), want_labels):
            for wrong, sentence in _sft_mistakes(pairs, pad_id):
                if torch.equal(labels.long(), wrong):
                    raise AssertionError(f"{name}: {sentence}")
            raise AssertionError(f"{name}: expected labels {want_labels.tolist()}, got "
                                 f"{labels.tolist()}")
    passed("sft_labels masks prompts and padding with IGNORE and keeps every answer token")


# ---------------------------------------------------------------------------------------
# A LoRA layer's forward


def _lora_cases():
    generator = rng(137)
    cases = (("a (3, 16) batch, r=4, alpha=8", (3, 16), 12, 4, 8.0),
             ("(2, 5, 16) tokens, r=1, alpha=16", (2, 5, 16), 16, 1, 16.0),
             ("r = alpha = 8 (scale 1)", (4, 16), 8, 8, 8.0))
    for name, shape, out_f, r, alpha in cases:
        x = torch.randn(*shape, generator=generator)
        weight = torch.randn(out_f, shape[-1], generator=generator) / 4
        lora_a = torch.randn(r, shape[-1], generator=generator) / 4
        lora_b = torch.randn(out_f, r, generator=generator) / 4
        yield name, x, weight, lora_a, lora_b, alpha


def _lora_reference(x, weight, lora_a, lora_b, alpha):
    base = torch.nn.Linear(weight.shape[1], weight.shape[0], bias=False)
    layer = LoRALinear(base, lora_a.shape[0], alpha)
    with torch.no_grad():
        base.weight.copy_(weight)
        layer.lora_A.copy_(lora_a)
        layer.lora_B.copy_(lora_b)
    return layer(x).detach()


def check_lora_forward(lora_forward) -> None:
    """lora_forward(x, weight, lora_A, lora_B, alpha) -> x W^T + (alpha / r) x A^T B^T."""
    for name, x, weight, lora_a, lora_b, alpha in _lora_cases():
        got = call(lora_forward, x.clone(), weight.clone(), lora_a.clone(), lora_b.clone(),
                   alpha, what="lora_forward")
        want = _lora_reference(x, weight, lora_a, lora_b, alpha)
        expect(isinstance(got, torch.Tensor) and got.shape == want.shape,
               f"{name}: expected a tensor of shape {tuple(want.shape)}, got "
               f"{getattr(got, 'shape', type(got).__name__)}")
        got = got.detach()
        r = lora_a.shape[0]
        base, update = x @ weight.T, x @ lora_a.T @ lora_b.T
        for wrong, sentence in (
                (base + alpha * update, "you scaled the update by alpha; LoRA scales it by "
                                        "alpha / r (Hu et al., 2021, §4.1)"),
                (base + r / alpha * update, "you scaled the update by r / alpha; it is "
                                            "alpha / r"),
                (base + update, "the update is not scaled: multiply B A x by alpha / r"),
                (alpha / r * update, "the frozen weight's output is missing: h = W x + "
                                     "(alpha / r) B A x"),
                (base, "the low-rank update is missing: add (alpha / r) B A x")):
            if not torch.allclose(want, wrong) and torch.allclose(got, wrong, atol=1e-5):
                raise AssertionError(f"{name}: {sentence}")
        try:
            assert_close(got, want, reduction=x.shape[-1] + r, depth=2)
        except AssertionError as error:
            raise AssertionError(f"lora_forward, {name}: the output differs from W x + "
                                 f"(alpha / r) B A x: {str(error).splitlines()[0]}") from None
    passed("lora_forward equals LoRALinear: W x + (alpha / r) B A x")
