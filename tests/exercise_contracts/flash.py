"""Lesson 08's check: the FlashAttention-2 forward of one query block."""

import math

import torch

from llama_edu import flash

from ._contract import Contract


def block_ok(q_block, k, v, first_pos, block_k, causal):
    rows, d = q_block.shape[-2], q_block.shape[-1]
    positions = first_pos + torch.arange(rows)                  # (rows,)
    m = torch.full(q_block.shape[:-1], float("-inf"))
    l = torch.zeros(q_block.shape[:-1])
    acc = torch.zeros(*q_block.shape[:-1], v.shape[-1])
    for start in range(0, k.shape[-2], block_k):
        if causal and start > positions[-1]:                    # this and later tiles: hidden
            break
        s = q_block @ k[..., start:start + block_k, :].transpose(-1, -2) / math.sqrt(d)
        if causal:
            keys = torch.arange(start, start + s.shape[-1])
            s = s.masked_fill(keys[None, :] > positions[:, None], float("-inf"))
        m_new = torch.maximum(m, s.amax(-1))
        alpha = torch.exp(m - m_new)
        p = torch.exp(s - m_new[..., None])
        l = alpha * l + p.sum(-1)
        acc = alpha[..., None] * acc + p @ v[..., start:start + block_k, :]
        m = m_new
    return acc / l[..., None], m + torch.log(l)


def block_ok_sliced(q_block, k, v, first_pos, block_k, causal):
    """Another right answer: cut the keys at the last row's position, then a while loop."""
    rows = q_block.shape[-2]
    q = q_block / q_block.shape[-1] ** 0.5
    kv_len = min(k.shape[-2], first_pos + rows) if causal else k.shape[-2]
    m = torch.full(q.shape[:-1], -math.inf)
    l, acc = torch.zeros_like(m), torch.zeros(*q.shape[:-1], v.shape[-1])
    start = 0
    while start < kv_len:
        end = min(start + block_k, k.shape[-2])
        s = q @ k[..., start:end, :].mT
        if causal:
            hidden = torch.arange(start, end) > (first_pos + torch.arange(rows))[:, None]
            s = torch.where(hidden, -math.inf, s)
        m_new = torch.max(m, s.max(-1).values)
        p, alpha = (s - m_new[..., None]).exp(), (m - m_new).exp()
        l, acc, m = alpha * l + p.sum(-1), alpha[..., None] * acc + p @ v[..., start:end, :], m_new
        start = end
    return acc / l[..., None], m + l.log()


def block_with(q_block, k, v, first_pos, block_k, causal, *, rescale_l=True, rescale_acc=True,
               m_init=-math.inf, running_max=True, subtract_max=True, skip_rule="last",
               offset=True, strict_mask=False, divide_inside=False, divide_end=True,
               scale=True, no_skip=False, lse_without_max=False):
    """A learner's loop with one slip switched on by a keyword."""
    rows, d = q_block.shape[-2], q_block.shape[-1]
    positions = torch.arange(rows) + (first_pos if offset else 0)
    m = torch.full(q_block.shape[:-1], m_init)
    l = torch.zeros(q_block.shape[:-1])
    acc = torch.zeros(*q_block.shape[:-1], v.shape[-1])
    for start in range(0, k.shape[-2], block_k):
        limit = {"last": positions[-1], "first": positions[0], "diag": positions[-1] - 1}
        if causal and not no_skip and start > limit[skip_rule]:
            break
        s = q_block @ k[..., start:start + block_k, :].transpose(-1, -2)
        s = s / math.sqrt(d) if scale else s
        if causal:
            keys = torch.arange(start, start + s.shape[-1])[None, :]
            hide = keys >= positions[:, None] if strict_mask else keys > positions[:, None]
            s = s.masked_fill(hide, float("-inf"))
        m_new = torch.maximum(m, s.amax(-1)) if running_max else s.amax(-1)
        alpha = torch.exp(m - m_new)
        p = torch.exp(s - m_new[..., None]) if subtract_max else torch.exp(s)
        if not subtract_max:
            alpha = torch.ones_like(alpha)
        l = (alpha * l if rescale_l else l) + p.sum(-1)
        old = alpha[..., None] * acc if rescale_acc else acc
        acc = old + p @ v[..., start:start + block_k, :]
        if divide_inside:
            acc = acc / l[..., None]
        m = m_new
    out = acc / l[..., None] if divide_end and not divide_inside else acc
    return out, torch.log(l) if lse_without_max else m + torch.log(l)


def slip(**kwargs):
    return lambda *args: block_with(*args, **kwargs)


def block_full_softmax(q_block, k, v, first_pos, block_k, causal):
    s = q_block @ k.transpose(-1, -2) / math.sqrt(q_block.shape[-1])
    if causal:
        hidden = torch.arange(k.shape[-2]) > (first_pos + torch.arange(q_block.shape[-2]))[:, None]
        s = s.masked_fill(hidden, float("-inf"))
    return torch.softmax(s, -1) @ v, torch.logsumexp(s, -1)


def block_sdpa(q_block, k, v, first_pos, block_k, causal):
    out = torch.nn.functional.scaled_dot_product_attention(q_block, k, v)
    return out, out[..., 0]


def block_package(q_block, k, v, first_pos, block_k, causal):
    q4, k4, v4 = (t.reshape(-1, 1, *t.shape[-2:]) for t in (q_block, k, v))
    out = flash.tiled_attention(q4, k4, v4, block_q=q_block.shape[-2], block_k=block_k)
    return out.reshape(q_block.shape), q_block[..., 0]


def block_online_step(q_block, k, v, first_pos, block_k, causal):
    m = torch.full(q_block.shape[:-1], float("-inf"))
    l, acc = torch.zeros_like(m), torch.zeros_like(q_block)
    for start in range(0, k.shape[-2], block_k):
        s = q_block @ k[..., start:start + block_k, :].mT / math.sqrt(q_block.shape[-1])
        m, l, acc = flash.online_step(m, l, acc, s, v[..., start:start + block_k, :])
    return acc / l[..., None], m + torch.log(l)


def merge_ok(out1, lse1, out2, lse2):
    lse = torch.logaddexp(lse1, lse2)
    return (torch.exp(lse1 - lse)[..., None] * out1 + torch.exp(lse2 - lse)[..., None] * out2,
            lse)


def merge_ok_by_max(out1, lse1, out2, lse2):
    m = torch.maximum(lse1, lse2)
    w1, w2 = torch.exp(lse1 - m), torch.exp(lse2 - m)
    return (w1[..., None] * out1 + w2[..., None] * out2) / (w1 + w2)[..., None], \
        m + torch.log(w1 + w2)


def merge_unstable(out1, lse1, out2, lse2):
    e1, e2 = torch.exp(lse1), torch.exp(lse2)
    return (e1[..., None] * out1 + e2[..., None] * out2) / (e1 + e2)[..., None], \
        torch.log(e1 + e2)


CONTRACTS = {
    "check_flash_query_block": Contract(
        references=[block_ok, block_ok_sliced], passed="flash_query_block equals SDPA",
        mistakes=[
            (slip(rescale_l=False, rescale_acc=False), "neither l nor acc was rescaled"),
            (slip(rescale_acc=False), "l was rescaled but acc .* was not"),
            (slip(rescale_l=False), "acc was rescaled but l was not"),
            (slip(m_init=0.0), "the running max starts at 0 instead of -inf"),
            (slip(running_max=False), "the new max is the tile's max alone"),
            (slip(subtract_max=False), "the raw scores were exponentiated"),
            (slip(skip_rule="first"), "skipped when the block's FIRST row sees none"),
            (slip(skip_rule="diag"), "the tile that starts at the last row's own position"),
            (slip(no_skip=True), "a tile wholly after the block's last position was computed"),
            (slip(offset=False), "taken as positions 0..rows-1"),
            (slip(strict_mask=True), "hides each query's own key"),
            (slip(divide_inside=True), "acc was divided by l inside the loop"),
            (slip(divide_end=False), "out is acc, not acc / l"),
            (slip(scale=False), "the scores were not scaled"),
            (block_full_softmax, "calls softmax, which this exercise asks you to write without"),
            (block_sdpa, "calls scaled_dot_product_attention"),
            (block_package, "calls llama_edu.flash.tiled_attention"),
            (block_online_step, "calls llama_edu.flash.online_step"),
            (slip(lse_without_max=True), "out is right but lse is off"),
            (lambda *args: block_ok(*args)[0], "should return a pair of tensors"),
            (lambda *args: (block_ok(*args)[0][..., :1], block_ok(*args)[1]), "out has shape"),
        ]),
    "check_merge_attention": Contract(
        references=[merge_ok, merge_ok_by_max], passed="merge_attention is right",
        mistakes=[
            (lambda o1, l1, o2, l2: ((o1 + o2) / 2, torch.logaddexp(l1, l2)),
             "the two outputs were averaged"),
            (lambda o1, l1, o2, l2: (torch.exp(l1)[..., None] * o1
                                     + torch.exp(l2)[..., None] * o2, torch.logaddexp(l1, l2)),
             "weighted by exp\\(lse_i\\) without dividing"),
            (merge_unstable, "exp\\(lse\\) overflows float32"),
            (lambda o1, l1, o2, l2: (merge_ok(o1, l1, o2, l2)[0], torch.maximum(l1, l2)),
             "out is right but lse is not"),
            (lambda o1, l1, o2, l2: o1, "should return a pair of tensors"),
        ]),
}
