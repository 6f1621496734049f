"""Lesson 03's checks: RMSNorm, and a decoder block's forward (Pre-LN and Post-LN)."""

import torch

from ._contract import Contract

# ---- RMSNorm ----------------------------------------------------------------------------


def rmsnorm_ok(x, weight, eps=1e-5):
    x32 = x.float()
    return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)).type_as(x) * weight


def rmsnorm_plain(x, weight, eps=1e-5):  # the CONTRIBUTING example: stays in x's dtype
    return x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


# ---- a decoder block --------------------------------------------------------------------


def block_ok(x, attn, ffn, attn_norm, ffn_norm, placement):
    if placement == "pre":
        h = x + attn(attn_norm(x))
        return h + ffn(ffn_norm(h))
    h = attn_norm(x + attn(x))
    return ffn_norm(h + ffn(h))


def block_two_branches(x, attn, ffn, attn_norm, ffn_norm, placement):
    pre = placement == "pre"
    x = x + attn(attn_norm(x)) if pre else attn_norm(x + attn(x))
    return x + ffn(ffn_norm(x)) if pre else ffn_norm(x + ffn(x))


def _pre_wrong(pre_fn):
    """A block right for Post-LN and wrong for Pre-LN in the way pre_fn is."""
    def block(x, attn, ffn, attn_norm, ffn_norm, placement):
        if placement == "pre":
            return pre_fn(x, attn, ffn, attn_norm, ffn_norm)
        return block_ok(x, attn, ffn, attn_norm, ffn_norm, "post")
    return block


def _post_wrong(post_fn):
    def block(x, attn, ffn, attn_norm, ffn_norm, placement):
        if placement == "post":
            return post_fn(x, attn, ffn, attn_norm, ffn_norm)
        return block_ok(x, attn, ffn, attn_norm, ffn_norm, "pre")
    return block


def _pre_h(x, attn, norm):
    return x + attn(norm(x))


def _normed_residual(x, attn, ffn, an, fn):
    h = an(x) + attn(an(x))
    return h + ffn(fn(h))


CONTRACTS = {
    "check_rmsnorm": Contract(references=[rmsnorm_ok, rmsnorm_plain], mistakes=[
        (lambda x, w, eps: (x - x.mean(-1, keepdim=True))
         / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + eps) * w,
         "you subtracted the mean: that is LayerNorm"),
        (lambda x, w, eps: x / (torch.sqrt(x.pow(2).mean(-1, keepdim=True)) + eps) * w,
         "eps belongs under the square root"),
        (lambda x, w, eps: x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) - eps) * w,
         "eps is added, not subtracted"),
        (lambda x, w, eps: x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + eps),
         "forgot to multiply by the learned gain"),
        (lambda x, w, eps: x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps) * w,
         "sum of squares"),
        (lambda x, w, eps: x / torch.sqrt(x.pow(2).mean() + eps) * w,
         "averaged over the whole tensor"),
        (lambda x, w, eps: x / torch.sqrt(x.pow(2).mean(-1) + eps) * w,
         "keepdim=True"),
        (lambda x, w, eps: x.float() / torch.sqrt(x.float().pow(2).mean(-1, keepdim=True)
                                                  + eps) * w,
         "should return bfloat16"),
    ]),
    "check_decoder_block": Contract(references=[block_ok, block_two_branches], mistakes=[
        (lambda x, a, f, an, fn, p: block_ok(x, a, f, an, fn, "post"),
         "for placement='pre' you wrote Post-LN"),
        (lambda x, a, f, an, fn, p: block_ok(x, a, f, an, fn, "pre"),
         "for placement='post' you wrote Pre-LN"),
        (_pre_wrong(_normed_residual), "the residual must carry x itself"),
        (_pre_wrong(lambda x, a, f, an, fn: _pre_h(x, a, an) + f(an(_pre_h(x, a, an)))),
         "each sub-layer has its own gain"),
        (_pre_wrong(lambda x, a, f, an, fn: x + a(an(x)) + f(fn(x))),
         "parallel block"),
        (_pre_wrong(lambda x, a, f, an, fn: f(fn(_pre_h(x, a, an)))),
         "dropped the FFN's residual"),
        (_pre_wrong(lambda x, a, f, an, fn: _pre_h(x, a, an) + f(fn(_pre_h(x, a, an))) + x),
         "x was added twice"),
        (_post_wrong(lambda x, a, f, an, fn: an(x + a(x)) + f(fn(an(x + a(x))))),
         "only the attention half is Post-LN"),
        (_post_wrong(lambda x, a, f, an, fn: fn(an(x + a(x)) + f(an(an(x + a(x)))))),
         "with no norm on the FFN's input"),
        (_post_wrong(lambda x, a, f, an, fn: (x + an(a(x))) + fn(f(x + an(a(x))))),
         "normalised the sub-layer's output before adding"),
        (_post_wrong(lambda x, a, f, an, fn: fn(f(an(a(x))))),
         "dropped the residual connections"),
        (_post_wrong(lambda x, a, f, an, fn: fn(an(x + a(x)) + f(x))),
         r"the FFN reads h \(the normalised"),
        (lambda x, a, f, an, fn, p: block_ok(x, a, f, an, fn, p)[..., :-1],
         "returned shape"),
        (lambda x, a, f, an, fn, p: block_ok(x, a, f, an, fn, p).tolist(),
         "should return a torch.Tensor"),
    ]),
}
