"""Checks for lesson 03: write RMSNorm; write a decoder block's forward, Pre-LN and Post-LN."""

from __future__ import annotations

import torch

from ..model import DecoderLayer, LlamaConfig
from ..norms import rms_norm
from ..numerics import autocast_tolerance, tolerance
from ..positions import RotaryEmbedding
from ._common import call, close, expect, passed, rng

__all__ = ["check_rmsnorm", "check_decoder_block"]


def _close(actual, expected: torch.Tensor) -> bool:
    """Within the rounding of an RMSNorm: a mean of squares over the last axis, then a
    square root, a division and a product (depth 4), in the less precise dtype."""
    return close(actual, expected, reduction=expected.shape[-1], depth=4, equal_nan=True)


def _rmsnorm_mistakes(x: torch.Tensor, weight: torch.Tensor, eps: float):
    """What the classic slips return, each with the sentence that explains it."""
    x = x.double()
    w = weight.double()
    ms = x.pow(2).mean(-1, keepdim=True)
    mean = x.mean(-1, keepdim=True)
    var = (x - mean).pow(2).mean(-1, keepdim=True)
    yield ((x - mean) / torch.sqrt(var + eps) * w,
           "you subtracted the mean: that is LayerNorm. RMSNorm only rescales: "
           "x / sqrt(mean(x^2) + eps) * weight")
    yield ((x - mean) / torch.sqrt(ms + eps) * w,
           "you subtracted the mean before dividing: RMSNorm does not re-centre, leave x as it is")
    yield (x / (torch.sqrt(ms) + eps) * w,
           "eps belongs under the square root: sqrt(mean(x^2) + eps), not sqrt(mean(x^2)) + eps "
           "(it only shows for small inputs, where eps matters)")
    yield (x / torch.sqrt(ms - eps) * w,
           "eps is added, not subtracted: sqrt(mean(x^2) + eps). (One of the course's source "
           "notes has this slip; with small inputs mean(x^2) - eps goes negative.)")
    yield (x / torch.sqrt(ms + eps), "you forgot to multiply by the learned gain `weight`")
    yield (x / (ms + eps) * w, "you divided by mean(x^2) + eps; take its square root first")
    yield (x / torch.sqrt(x.pow(2).sum(-1, keepdim=True) + eps) * w,
           "you used the sum of squares (the L2 norm); RMSNorm uses the mean of squares, "
           "so the result has unit root-mean-square rather than unit length")
    yield (x / torch.sqrt(x.pow(2).mean(0, keepdim=True) + eps) * w,
           "you averaged over the first axis; normalise each vector over the LAST axis: "
           ".mean(-1, keepdim=True)")
    yield (x / torch.sqrt(x.pow(2).mean() + eps) * w,
           "you averaged over the whole tensor; each vector (the last axis) gets its own "
           "root-mean-square: .mean(-1, keepdim=True)")
    yield (x / torch.sqrt(x.var(-1, keepdim=True) + eps) * w,
           "you divided by the variance, which subtracts the mean inside; RMSNorm uses the "
           "plain mean of squares, mean(x^2)")


def _rmsnorm_cases():
    generator = rng(3)
    yield "a (4, 16) batch", torch.randn(4, 16, generator=generator) * 2, 1e-5
    yield ("vectors with a large mean (about 3)",
           torch.randn(3, 12, generator=generator) + 3.0, 1e-5)
    yield ("small inputs (about 1e-3), where eps matters",
           torch.randn(5, 8, generator=generator) * 1e-3, 1e-5)
    yield "a (2, 3, 10) input", torch.randn(2, 3, 10, generator=generator), 1e-6


def check_rmsnorm(fn) -> None:
    """fn(x, weight, eps) -> x / sqrt(mean(x^2, last axis) + eps) * weight, shape of x."""
    generator = rng(4)
    for label, x, eps in _rmsnorm_cases():
        weight = torch.rand(x.shape[-1], generator=generator) + 0.5
        what = f"rmsnorm on {label} (eps={eps:g})"
        try:
            out = call(fn, x.clone(), weight.clone(), eps, what=what)
        except AssertionError as error:
            if "size of tensor" in str(error):
                raise AssertionError(f"{error}. Keep the averaged axis with .mean(-1, "
                                     "keepdim=True) so that it broadcasts against x") from None
            raise
        expected = rms_norm(x, weight, eps)
        if not isinstance(out, torch.Tensor):
            raise AssertionError(f"{what} should return a torch.Tensor, got "
                                 f"{type(out).__name__}")
        if tuple(out.shape) != tuple(x.shape):
            raise AssertionError(
                f"{what} returned shape {tuple(out.shape)}, expected {tuple(x.shape)} (the shape "
                "of x). Keep the averaged axis with .mean(-1, keepdim=True) so it broadcasts")
        if _close(out, expected):
            continue
        for mistake, hint in _rmsnorm_mistakes(x, weight, eps):
            if _close(out, mistake.to(expected.dtype)):
                raise AssertionError(f"{what}: {hint}")
        worst = float((out.detach().double() - expected.double()).abs().nan_to_num(1e30).max())
        raise AssertionError(f"{what} is off by up to {worst:.3g}. Expected x / sqrt(mean(x^2) "
                             "+ eps) * weight, averaging over the last axis")
    # bf16 in, bf16 out: compute the statistics in float32 and cast back, as Llama does
    x = torch.randn(3, 64, generator=generator).mul(4).bfloat16()
    weight = (torch.rand(64, generator=generator) + 0.5).bfloat16()
    what = "rmsnorm on a bfloat16 input with a bfloat16 weight"
    out = call(fn, x, weight, 1e-5, what=what)
    expect(isinstance(out, torch.Tensor) and out.dtype == torch.bfloat16,
           f"{what} should return bfloat16 (the input's dtype), got "
           f"{getattr(out, 'dtype', type(out).__name__)}. Compute in float32 with x.float(), "
           "then cast back with .to(x.dtype) or .type_as(x) before multiplying by weight")
    # statistics in float32, then two bfloat16 roundings (the cast back and the product with
    # weight): numerics.autocast_tolerance's model, not sqrt(n) roundings of a bf16 sum
    reference = rms_norm(x, weight, 1e-5).double()
    tol = autocast_tolerance(torch.bfloat16, depth=2, scale=float(reference.abs().max()))
    expect(torch.allclose(out.double(), reference, **tol),
           f"{what} is off by more than bfloat16 rounding; compute the mean of squares in "
           "float32 (x.float()) and cast back at the end")
    passed("rmsnorm is right: it rescales each vector by its root-mean-square, eps under the "
           "root, in float32, and keeps the input's dtype")


# ---- a decoder block's forward: where the norms go ----------------------------------------


def _block_mistakes(x, attn, ffn, attn_norm, ffn_norm, placement):
    """What the classic slips return for one placement, each with its sentence."""
    if placement == "pre":
        h = x + attn(attn_norm(x))
        yield (_post(x, attn, ffn, attn_norm, ffn_norm),
               "for placement='pre' you wrote Post-LN (Norm after the residual sum). Pre-LN "
               "normalises only the sub-layer's input: h = x + attn(attn_norm(x))")
        normed = attn_norm(x)
        h_bad = normed + attn(normed)
        yield (h_bad + ffn(ffn_norm(h_bad)),
               "the residual must carry x itself, not attn_norm(x): h = x + attn(attn_norm(x)). "
               "Pre-LN leaves the residual stream un-normalised")
        yield (h + ffn(attn_norm(h)),
               "the FFN's input goes through the block's second norm, ffn_norm(h), not attn_norm "
               "again: each sub-layer has its own gain")
        yield (h + ffn(ffn_norm(x)),
               "your FFN reads x, so attention and FFN run side by side (GPT-J's parallel "
               "block). Llama's block is sequential: out = h + ffn(ffn_norm(h))")
        yield (ffn(ffn_norm(h)),
               "you dropped the FFN's residual connection: out = h + ffn(ffn_norm(h))")
        yield (h + ffn(ffn_norm(h)) + x,
               "x was added twice: h already contains it, so out = h + ffn(ffn_norm(h))")
    else:
        yield (_pre(x, attn, ffn, attn_norm, ffn_norm),
               "for placement='post' you wrote Pre-LN. Post-LN normalises after the residual "
               "sum: h = attn_norm(x + attn(x)); out = ffn_norm(h + ffn(h))")
        h = attn_norm(x + attn(x))
        yield (h + ffn(ffn_norm(h)),
               "only the attention half is Post-LN: the FFN half must also normalise after its "
               "sum, out = ffn_norm(h + ffn(h))")
        yield (ffn_norm(h + ffn(attn_norm(h))),
               "in Post-LN the sub-layers read the stream as it is: out = ffn_norm(h + ffn(h)), "
               "with no norm on the FFN's input")
        h_bad = x + attn_norm(attn(x))
        yield (h_bad + ffn_norm(ffn(h_bad)),
               "you normalised the sub-layer's output before adding it; Post-LN normalises the "
               "sum: h = attn_norm(x + attn(x))")
        yield (ffn_norm(ffn(attn_norm(attn(x)))),
               "you dropped the residual connections: h = attn_norm(x + attn(x)), "
               "out = ffn_norm(h + ffn(h))")
        yield (ffn_norm(h + ffn(x)),
               "the FFN reads h (the normalised stream after attention), not x")


def _pre(x, attn, ffn, attn_norm, ffn_norm):
    h = x + attn(attn_norm(x))
    return h + ffn(ffn_norm(h))


def _post(x, attn, ffn, attn_norm, ffn_norm):
    h = attn_norm(x + attn(x))
    return ffn_norm(h + ffn(h))


def _block_cases():
    generator = rng(6)
    for placement in ("pre", "post"):
        for label, shape, norm_type in (("a (2, 7, 32) batch", (2, 7), "rmsnorm"),
                                        ("one token", (1, 1), "rmsnorm"),
                                        ("LayerNorm norms, (3, 5)", (3, 5), "layernorm")):
            yield placement, label, shape, norm_type, generator


def check_decoder_block(fn) -> None:
    """fn(x, attn, ffn, attn_norm, ffn_norm, placement) -> the block's output, equal to
    llama_edu.model.DecoderLayer with norm_placement=placement ("pre" or "post")."""
    for placement, label, (batch, seq), norm_type, generator in _block_cases():
        cfg = LlamaConfig.from_preset("micro", norm_placement=placement, norm_type=norm_type)
        with torch.random.fork_rng(devices=[]):     # leave the learner's global seed alone
            layer = DecoderLayer(cfg).eval()
        with torch.no_grad():                       # distinct gains, so the two norms differ
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                norm.weight.copy_(torch.rand(cfg.dim, generator=generator) + 0.5)
                if getattr(norm, "bias", None) is not None:
                    norm.bias.copy_(torch.randn(cfg.dim, generator=generator) * 0.3)
            for module in layer.modules():          # std 0.02 would make the sub-layers tiny
                if isinstance(module, torch.nn.Linear):
                    module.weight.normal_(0, cfg.dim ** -0.5, generator=generator)
        x = torch.randn(batch, seq, cfg.dim, generator=generator) * 2 + 0.5
        cos, sin = RotaryEmbedding(cfg.head_dim, cfg.max_seq_len, cfg.rope_theta)(
            torch.arange(seq))

        def attn(h, layer=layer, cos=cos, sin=sin):
            return layer.self_attn(h, cos, sin, None, True)

        parts = (attn, layer.mlp, layer.input_layernorm, layer.post_attention_layernorm)
        what = f"your block with placement={placement!r}, run on {label}"
        with torch.no_grad():
            expected = layer(x, cos, sin, None, True)
            out = call(fn, x.clone(), *parts, placement, what=what)
            if not isinstance(out, torch.Tensor):
                raise AssertionError(f"{what} should return a torch.Tensor, got "
                                     f"{type(out).__name__}")
            if tuple(out.shape) != tuple(x.shape):
                raise AssertionError(f"{what} returned shape {tuple(out.shape)}, expected "
                                     f"{tuple(x.shape)}, the shape of x")
            # fp32, three chained steps per sub-layer (norm, projections, residual sum)
            tol = tolerance(torch.float32, reduction=cfg.ffn_hidden_dim, depth=8,
                            scale=float(expected.abs().max()))
            if torch.allclose(out, expected, **tol):
                continue
            for mistake, hint in _block_mistakes(x, *parts, placement):
                if torch.allclose(out, mistake, **tol):
                    raise AssertionError(f"{what}: {hint}")
        worst = float((out - expected).abs().nan_to_num(1e30).max())
        raise AssertionError(
            f"{what} is off by up to {worst:.3g}. Pre-LN: h = x + attn(attn_norm(x)), "
            "out = h + ffn(ffn_norm(h)); Post-LN: h = attn_norm(x + attn(x)), "
            "out = ffn_norm(h + ffn(h))")
    passed("your block matches DecoderLayer in both placements: Pre-LN normalises each "
           "sub-layer's input, Post-LN each residual sum")
