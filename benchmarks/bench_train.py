"""Training throughput: llama_edu's Llama against transformers' LlamaForCausalLM (lesson 10).

Same config, same weights (copied with `llama_edu.interop.to_hf_model`), same batches, CPU
fp32. One training step = forward, next-token cross-entropy, backward, gradient clipping,
AdamW step with the Llama 2 settings. The two models take turns, step for step, so a
busy machine slows both alike; each side's time is the median of its steps after warm-up.
Target: llama_edu tokens/s >= 1.0x transformers' tokens/s.

    python benchmarks/bench_train.py [--preset tiny] [--batch 8] [--seq-len 128]
                                     [--steps 12] [--threads N]
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
from llama_edu.train import TrainConfig, lm_loss, make_optimizer

TARGET = 1.0


def step_fn(model: nn.Module, forward, config: TrainConfig):
    """One training step of `model`, whose logits come from forward(model, x)."""
    optimizer = make_optimizer(model, config)

    def step(x: torch.Tensor, y: torch.Tensor) -> float:
        loss = lm_loss(forward(model, x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.clip)
        optimizer.step()
        return loss.item()

    return step


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="tiny", help="model size (tiny)")
    parser.add_argument("--batch", type=int, default=8, help="sequences per step (8)")
    parser.add_argument("--seq-len", type=int, default=128, help="tokens per sequence (128)")
    parser.add_argument("--steps", type=int, default=12, help="timed steps per model (12)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (2)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    ours = Llama(LlamaConfig.from_preset(args.preset)).train()
    theirs = to_hf_model(ours, attn_implementation="sdpa").train()
    recipe = TrainConfig(lr=1e-3, warmup=0)
    steps = {"llama_edu": step_fn(ours, lambda m, x: m(x), recipe),
             "transformers": step_fn(theirs, lambda m, x: m(input_ids=x).logits, recipe)}
    generator = torch.Generator().manual_seed(0)
    vocab = ours.config.vocab_size
    times: dict[str, list[float]] = {name: [] for name in steps}
    losses: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(args.warmup + args.steps):
        x = torch.randint(0, vocab, (args.batch, args.seq_len + 1), generator=generator)
        for name, step in steps.items():
            start = time.perf_counter()
            losses[name].append(step(x[:, :-1], x[:, 1:]))
            if i >= args.warmup:
                times[name].append(time.perf_counter() - start)

    tokens = args.batch * args.seq_len
    rate = {name: tokens / statistics.median(t) for name, t in times.items()}
    drift = max(abs(a - b) for a, b in zip(losses["llama_edu"], losses["transformers"],
                                           strict=True))
    print(describe(torch.device("cpu")))
    print(f"preset {args.preset}, batch {args.batch} x {args.seq_len} tokens, fp32, "
          f"{args.steps} timed steps each (median), models alternating")
    for name, value in rate.items():
        print(f"  {name:13s} {value:9,.0f} tokens/s")
    print(f"  same weights, same batches: losses agree to {drift:.1e} over "
          f"{len(losses['llama_edu'])} steps")
    ratio = rate["llama_edu"] / rate["transformers"]
    verdict = "meets" if ratio >= TARGET else "misses"
    print(f"training throughput llama_edu / transformers: {ratio:.2f}x "
          f"({verdict} the target of {TARGET:.1f}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
