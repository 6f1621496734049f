"""Training throughput: llama_edu's Llama, eager and compiled, in fp32 and under bf16
autocast, against transformers' LlamaForCausalLM in the same two precisions (lessons 10, 16).

Same config, same weights (copied with `llama_edu.interop.to_hf_model`), same batches. One
training step = forward, next-token cross-entropy in fp32, backward, gradient clipping,
AdamW step with the Llama 2 settings; master weights and optimizer state stay fp32 in every
variant. The variants take turns, step for step, so a busy machine slows all alike; each
one's time is the median of its steps after warm-up (compilation happens in warm-up).
MFU is measured against the same run's matmul peak of the dtype the matmuls ran in.

Targets: llama_edu eager fp32 >= 1.0x transformers fp32; llama_edu bf16 >= 1.5x
transformers fp32 and >= 1.0x transformers under the same bf16 autocast (where the
hardware runs bf16 fast; `choose_precision("auto")` says whether it does).

    python benchmarks/bench_train.py [--preset tiny] [--batch 8] [--seq-len 128]
                                     [--steps 12] [--threads N] [--no-compile]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from torch import nn

from llama_edu.device import describe
from llama_edu.interop import to_hf_model
from llama_edu.model import Llama, LlamaConfig
from llama_edu.precision import choose_precision
from llama_edu.profiling import matmul_flops, mfu, train_flops_per_token
from llama_edu.train import TrainConfig, lm_loss, make_optimizer

TARGETS = {("llama_edu eager fp32", "transformers fp32"): 1.0,
           ("llama_edu compiled fp32", "llama_edu eager fp32"): None,  # reported, no target
           ("llama_edu eager bf16", "transformers fp32"): 1.5,
           ("llama_edu eager bf16", "transformers bf16"): 1.0,
           ("llama_edu compiled bf16", "transformers bf16"): None}


def step_fn(model: nn.Module, forward, config: TrainConfig, dtype: torch.dtype | None):
    """One training step of `model`, whose logits come from forward(model, x), with the
    matmuls under autocast to `dtype` (None: fp32) and the loss in fp32."""
    optimizer = make_optimizer(model, config)

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
            logits = forward(model, x)
        loss = lm_loss(logits.float(), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        optimizer.step()
        return loss.item()

    return step


def variants(preset: str, compile_: bool, recipe: TrainConfig) -> dict:
    torch.manual_seed(0)
    base = Llama(LlamaConfig.from_preset(preset))
    steps = {}
    for precision, dtype in (("fp32", None), ("bf16", torch.bfloat16)):
        ours = Llama(base.config).train()
        ours.load_state_dict(base.state_dict())
        theirs = to_hf_model(base, attn_implementation="sdpa").train()
        steps[f"llama_edu eager {precision}"] = step_fn(ours, lambda m, x: m(x), recipe, dtype)
        if compile_:
            compiled = Llama(base.config).train()
            compiled.load_state_dict(base.state_dict())
            fast = torch.compile(compiled, fullgraph=True)
            steps[f"llama_edu compiled {precision}"] = step_fn(
                compiled, lambda m, x, fast=fast: fast(x), recipe, dtype)
        steps[f"transformers {precision}"] = step_fn(
            theirs, lambda m, x: m(input_ids=x).logits, recipe, dtype)
    return base.config, steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="model size (tiny)")
    parser.add_argument("--batch", type=int, default=8, help="sequences per step (8)")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (128)")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per variant (12)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    config, steps = variants(args.preset, not args.no_compile, TrainConfig(lr=1e-3, warmup=0))
    generator = torch.Generator().manual_seed(0)
    times: dict[str, list[float]] = {name: [] for name in steps}
    losses: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(args.warmup + args.steps):
        x = torch.randint(0, config.vocab_size, (args.batch, args.seq_len + 1),
                          generator=generator)
        for name, step in steps.items():
            start = time.perf_counter()
            losses[name].append(step(x[:, :-1], x[:, 1:]))
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)

    tokens = args.batch * args.seq_len
    rate = {name: tokens / statistics.median(t) for name, t in times.items()}
    peaks = {"fp32": matmul_flops(torch.float32), "bf16": matmul_flops(torch.bfloat16)}
    per_token = train_flops_per_token(config, args.seq_len)
    print(describe(torch.device("cpu")))
    print(f"auto precision here: {choose_precision('auto', 'cpu')}")
    print(f"matmul peak (2048^2): fp32 {peaks['fp32'] / 1e9:,.0f} GFLOP/s, "
          f"bf16 {peaks['bf16'] / 1e9:,.0f} GFLOP/s")
    print(f"preset {args.preset}, batch {args.batch} x {args.seq_len} tokens, "
          f"{args.steps} timed steps each (median), variants alternating")
    for name, value in rate.items():
        share = mfu(value, per_token, peaks[name.rsplit(" ", 1)[1]])
        print(f"  {name:24s} {value:9,.0f} tokens/s   MFU {share:6.2%}")
    for precision in ("fp32", "bf16"):
        same = [n for n in steps if n.endswith(precision)]
        drift = max(abs(a - b) for n in same[1:]
                    for a, b in zip(losses[same[0]], losses[n], strict=True))
        print(f"  {precision}: the variants' losses agree to {drift:.1e} over "
              f"{len(losses[same[0]])} steps (same weights, same batches)")
    for (a, b), target in TARGETS.items():
        if a not in rate or b not in rate:
            continue
        ratio = rate[a] / rate[b]
        verdict = ("" if target is None else
                   f" ({'meets' if ratio >= target else 'misses'} the target of {target:.1f}x)")
        print(f"{a} / {b}: {ratio:.2f}x{verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
