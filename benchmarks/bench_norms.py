"""RMSNorm vs LayerNorm, forward + backward, at Llama's width (lesson 03).

Zhang & Sennrich (2019) report RMSNorm cutting the running time of the normalisation by
7% to 64% against LayerNorm (the "up to 40% faster" often quoted). This measures it on the
machine at hand, for the course's modules and for torch's own as peers, in one run, and
prints ratios (RMSNorm time / LayerNorm time: below 1 means RMSNorm is faster).

    python benchmarks/bench_norms.py                      # CPU (or the GPU pick_device finds)
    python benchmarks/bench_norms.py --device cuda --dtype bfloat16 --rows 4096 16384

Timings are medians over interleaved repetitions, after warm-up, with the device
synchronised around each one. A shared or busy machine makes them noisy: rerun.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from llama_edu.device import describe, pick_device, synchronize
from llama_edu.norms import LayerNorm, RMSNorm


def make_norms(dim: int, device, dtype) -> dict[str, torch.nn.Module]:
    """The four contenders, with the gain in the compute dtype (as a bf16 model has it)."""
    norms = {"llama_edu RMSNorm": RMSNorm(dim), "llama_edu LayerNorm": LayerNorm(dim),
             "torch RMSNorm": torch.nn.RMSNorm(dim, eps=1e-5),
             "torch LayerNorm": torch.nn.LayerNorm(dim, eps=1e-5)}
    return {name: norm.to(device=device, dtype=dtype) for name, norm in norms.items()}


def time_forward_backward(norms: dict[str, torch.nn.Module], x: torch.Tensor, reps: int,
                          warmup: int = 3) -> dict[str, float]:
    """Median seconds of norm(x).backward(upstream) per contender, interleaved so that a
    change in machine load hits them all alike."""
    upstream = torch.randn_like(x)
    inputs = {name: x.detach().clone().requires_grad_() for name in norms}
    times: dict[str, list[float]] = {name: [] for name in norms}

    def once(name):
        norm, inp = norms[name], inputs[name]
        inp.grad = None
        norm.zero_grad(set_to_none=True)
        synchronize(x.device)
        began = time.perf_counter()
        norm(inp).backward(upstream)
        synchronize(x.device)
        return time.perf_counter() - began

    for _ in range(warmup):
        for name in norms:
            once(name)
    for _ in range(reps):
        for name in norms:
            times[name].append(once(name))
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cpu, cuda or mps (default: best)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16",
                                                               "float16"])
    parser.add_argument("--dim", type=int, default=4096, help="hidden size (Llama 2 7B: 4096)")
    parser.add_argument("--rows", type=int, nargs="+", default=[512, 2048, 8192],
                        help="batch * seq_len values")
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's choice)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = pick_device(args.device)
    dtype = getattr(torch, args.dtype)
    torch.manual_seed(0)
    print(describe(device))
    print(f"forward + backward on (rows, {args.dim}) {args.dtype} inputs, median of {args.reps}")
    norms = make_norms(args.dim, device, dtype)
    header = "".join(f"{name:>22}" for name in norms)
    print(f"{'rows':>6}{header}{'ours RMS/LN':>13}{'torch RMS/LN':>14}")
    for rows in args.rows:
        x = torch.randn(rows, args.dim, device=device, dtype=dtype)
        t = time_forward_backward(norms, x, args.reps)
        cells = "".join(f"{t[name] * 1e3:>19.3f} ms" for name in norms)
        ours = t["llama_edu RMSNorm"] / t["llama_edu LayerNorm"]
        peer = t["torch RMSNorm"] / t["torch LayerNorm"]
        print(f"{rows:>6}{cells}{ours:>13.2f}{peer:>14.2f}")


if __name__ == "__main__":
    main()
