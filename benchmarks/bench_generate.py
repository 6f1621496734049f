"""Greedy generation speed (lessons 06 and 11), CPU, in one run:

1. the KV cache: `llama_edu.generate.generate` (prefill once, then one token per step)
   against `generate_no_cache` (the whole sequence through the model at every step);
   target: the cache at least 5x faster;
2. against Hugging Face: `generate` against `transformers.LlamaForCausalLM.generate` on
   the same weights (copied with `llama_edu.interop.to_hf_model`), both with their caches;
   target: at least 1.0x;
3. in bf16: both again under `torch.autocast("cpu", dtype=torch.bfloat16)` (ours through
   `generate(..., precision="bf16")`), side by side with fp32. bf16 tokens may part from
   fp32's at a near tie (llama_edu.numerics.compare_greedy), so they are not required equal.

The course's small model (preset `small`, random weights: speed does not depend on what
the weights say), a 16-token prompt and 256 new tokens. Each contender runs `--repeats`
times, taking turns, and keeps its fastest run; the greedy tokens must agree.

    python benchmarks/bench_generate.py [--preset small] [--prompt-len 16] [--new 256]
                                        [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings

import torch

from llama_edu.device import describe
from llama_edu.generate import generate, generate_no_cache
from llama_edu.interop import to_hf_model
from llama_edu.model import Llama, LlamaConfig

CACHE_TARGET = 5.0
HF_TARGET = 1.0


def hf_generate(hf_model, prompt: list[int], new: int, dtype=None) -> list[int]:
    ids = torch.tensor([prompt])
    with torch.inference_mode(), warnings.catch_warnings(), torch.autocast(
            "cpu", dtype=dtype, enabled=dtype is not None):
        warnings.simplefilter("ignore")
        out = hf_model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                max_new_tokens=new, min_new_tokens=new, pad_token_id=0,
                                eos_token_id=None)
    return out[0, len(prompt):].tolist()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", help="model size (small)")
    parser.add_argument("--prompt-len", type=int, default=16, help="prompt tokens (16)")
    parser.add_argument("--new", type=int, default=256, help="tokens to generate (256)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per contender (3)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = Llama(LlamaConfig.from_preset(args.preset)).eval()
    hf_model = to_hf_model(model, attn_implementation="sdpa")
    prompt = torch.randint(3, model.config.vocab_size, (args.prompt_len,)).tolist()
    contenders = {
        "llama_edu, KV cache": lambda: generate(model, prompt, args.new),
        "llama_edu, no cache": lambda: generate_no_cache(model, prompt, args.new),
        "transformers generate": lambda: hf_generate(hf_model, prompt, args.new),
        "llama_edu, KV cache, bf16": lambda: generate(model, prompt, args.new,
                                                      precision="bf16"),
        "transformers generate, bf16": lambda: hf_generate(hf_model, prompt, args.new,
                                                           torch.bfloat16),
    }
    best = {name: float("inf") for name in contenders}
    outputs = {}
    for _ in range(args.repeats):
        for name, run in contenders.items():
            start = time.perf_counter()
            outputs[name] = run()
            best[name] = min(best[name], time.perf_counter() - start)
    rate = {name: args.new / seconds for name, seconds in best.items()}

    print(describe(torch.device("cpu")))
    print(f"preset {args.preset}: greedy, {args.prompt_len}-token prompt, {args.new} new "
          f"tokens, best of {args.repeats} alternating runs (fp32 unless marked bf16)")
    for name, value in rate.items():
        print(f"  {name:28s} {value:8.1f} tokens/s")
    fp32 = [tuple(tokens) for name, tokens in outputs.items() if "bf16" not in name]
    same = len(set(fp32)) == 1
    print(f"  the three fp32 runs produce the same {args.new} tokens: {same}")
    cache = rate["llama_edu, KV cache"] / rate["llama_edu, no cache"]
    hf = rate["llama_edu, KV cache"] / rate["transformers generate"]
    print(f"KV cache speedup (cache / no cache): {cache:.1f}x "
          f"({'meets' if cache >= CACHE_TARGET else 'misses'} the target of {CACHE_TARGET:.0f}x)")
    print(f"greedy throughput llama_edu / transformers: {hf:.2f}x "
          f"({'meets' if hf >= HF_TARGET else 'misses'} the target of {HF_TARGET:.1f}x)")
    bf16 = rate["llama_edu, KV cache, bf16"]
    print(f"bf16 / fp32, llama_edu: {bf16 / rate['llama_edu, KV cache']:.2f}x; llama_edu / "
          f"transformers under the same bf16 autocast: "
          f"{bf16 / rate['transformers generate, bf16']:.2f}x")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
