"""Tiled (flash) attention against naive attention and PyTorch's SDPA (lesson 08).

CPU, batch 1, 8 heads, head_dim 64, causal, seq 1024 / 2048 / 4096, fp32:
  - peak memory of `llama_edu.flash.tiled_attention` as a fraction of naive attention's
    (`llama_edu.attention.attention`), measured by `profiling.peak_memory`; target <= 1/8 at 4096;
  - time of the tiled PyTorch loop and of naive attention as multiples of SDPA's.
On a CUDA GPU, also (fp16): the Triton kernel's time as a multiple of SDPA's, and the GPU
peak memory (torch.cuda.max_memory_allocated) of naive vs SDPA vs the Triton kernel.
Every ratio compares runs made in this one process, on the same inputs.

    python benchmarks/bench_attention.py [--lengths 1024 2048 4096] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
import torch.nn.functional as F

from llama_edu import flash, profiling
from llama_edu.attention import attention
from llama_edu.device import describe, synchronize

MEMORY_TARGET = 1 / 8   # tiled peak / naive peak at the longest length


def best_time(fn, *args, repeats: int, device: torch.device, **kwargs) -> float:
    """Fastest of `repeats` runs, in seconds (after one untimed warm-up on a GPU)."""
    if device.type == "cuda":
        fn(*args, **kwargs)
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn(*args, **kwargs)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return min(times)


def inputs(n: int, args, device: torch.device, dtype: torch.dtype):
    g = torch.Generator().manual_seed(n)
    return [torch.randn(args.batch, args.heads, n, args.head_dim, generator=g)
            .to(device=device, dtype=dtype) for _ in range(3)]


def cpu_rows(args) -> list[dict]:
    cpu, rows = torch.device("cpu"), []
    for n in args.lengths:
        q, k, v = inputs(n, args, cpu, torch.float32)
        tiled = dict(causal=args.causal, block_q=args.block, block_k=args.block)
        with torch.no_grad():
            naive_peak = profiling.peak_memory(attention, q, k, v, is_causal=args.causal)
            tiled_peak = profiling.peak_memory(flash.tiled_attention, q, k, v, **tiled)
            t_sdpa = best_time(F.scaled_dot_product_attention, q, k, v, is_causal=args.causal,
                               repeats=args.repeats, device=cpu)
            t_tiled = best_time(flash.tiled_attention, q, k, v, **tiled, repeats=args.repeats,
                                device=cpu)
            t_naive = best_time(attention, q, k, v, is_causal=args.causal,
                                repeats=args.repeats, device=cpu)
            error = (flash.tiled_attention(q, k, v, **tiled)
                     - F.scaled_dot_product_attention(q, k, v, is_causal=args.causal))
        rows.append(dict(n=n, naive_mib=naive_peak / 2**20, tiled_mib=tiled_peak / 2**20,
                         memory_ratio=tiled_peak / naive_peak, t_sdpa=t_sdpa,
                         tiled_vs_sdpa=t_tiled / t_sdpa, naive_vs_sdpa=t_naive / t_sdpa,
                         max_error=float(error.abs().max())))
    return rows


def gpu_rows(args) -> list[dict]:
    gpu, rows = torch.device("cuda"), []
    kernels = flash.triton_kernels() if flash.triton_available() else None
    for n in args.lengths:
        q, k, v = inputs(n, args, gpu, torch.float16)
        row = dict(n=n)
        with torch.no_grad():
            row["naive_mib"] = profiling.peak_memory(attention, q, k, v,
                                                     is_causal=args.causal) / 2**20
            row["sdpa_mib"] = profiling.peak_memory(F.scaled_dot_product_attention, q, k, v,
                                                    is_causal=args.causal) / 2**20
            row["t_sdpa"] = best_time(F.scaled_dot_product_attention, q, k, v,
                                      is_causal=args.causal, repeats=10 * args.repeats,
                                      device=gpu)
            if kernels is not None:
                row["triton_mib"] = profiling.peak_memory(kernels.flash_attention, q, k, v,
                                                          causal=args.causal) / 2**20
                row["triton_vs_sdpa"] = best_time(kernels.flash_attention, q, k, v,
                                                  causal=args.causal,
                                                  repeats=10 * args.repeats,
                                                  device=gpu) / row["t_sdpa"]
                out = kernels.flash_attention(q, k, v, causal=args.causal).float()
                ref = F.scaled_dot_product_attention(q, k, v, is_causal=args.causal).float()
                row["max_error"] = float((out - ref).abs().max())
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 2048, 4096])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--block", type=int, default=64, help="block_q = block_k (CPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-causal", dest="causal", action="store_false")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice); 1 avoids stalls "
                             "when the cores are shared with other jobs")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(describe(torch.device("cpu")))
    print(f"batch {args.batch}, {args.heads} heads, head_dim {args.head_dim}, "
          f"{'causal' if args.causal else 'full'}, tiles {args.block}x{args.block}\n")

    print("CPU, fp32 (times: best of", args.repeats, "runs)")
    print(f"{'seq':>6} {'naive MiB':>10} {'tiled MiB':>10} {'tiled/naive':>12} "
          f"{'SDPA ms':>9} {'tiled/SDPA':>11} {'naive/SDPA':>11} {'max |diff|':>11}")
    rows = cpu_rows(args)
    for r in rows:
        print(f"{r['n']:>6} {r['naive_mib']:>10.1f} {r['tiled_mib']:>10.1f} "
              f"{r['memory_ratio']:>12.4f} {r['t_sdpa'] * 1e3:>9.1f} "
              f"{r['tiled_vs_sdpa']:>11.1f} {r['naive_vs_sdpa']:>11.1f} {r['max_error']:>11.1e}")
    last = rows[-1]
    met = last["memory_ratio"] <= MEMORY_TARGET
    print(f"\npeak memory, tiled / naive at {last['n']}: {last['memory_ratio']:.4f} "
          f"(1/{1 / last['memory_ratio']:.0f}; target <= 1/8): {'met' if met else 'MISSED'}")
    print(f"time, tiled / SDPA at {last['n']}: {last['tiled_vs_sdpa']:.1f}x")

    if torch.cuda.is_available():
        print(f"\nGPU ({torch.cuda.get_device_name()}), fp16, times: best of "
              f"{10 * args.repeats} runs")
        for r in gpu_rows(args):
            line = (f"seq {r['n']:>5}: peak MiB naive {r['naive_mib']:.1f}, SDPA "
                    f"{r['sdpa_mib']:.1f}; SDPA {r['t_sdpa'] * 1e3:.3f} ms")
            if "triton_vs_sdpa" in r:
                line += (f"; Triton {r['triton_mib']:.1f} MiB, Triton / SDPA time "
                         f"{r['triton_vs_sdpa']:.2f}x, max |diff| {r['max_error']:.1e}")
            print(line)
    else:
        print("\nno CUDA GPU: the Triton kernel vs SDPA comparison needs one")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
