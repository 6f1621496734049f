"""The parity tests as other CPUs run them: every ATEN_CPU_CAPABILITY and thread count.

PyTorch picks its vectorised CPU kernels (default, AVX2, AVX-512) from what the processor
supports, and `ATEN_CPU_CAPABILITY` set before torch is imported picks a lower one. Kernels
and thread counts sum in other orders, so they round differently; a tolerance that holds on
one laptop must hold on all of them. This runs the `parity` tests (see conftest.py) once
per combination, in a fresh process each, and prints a table:

    python tests/kernel_matrix.py                           # 3 capabilities x 1, 2 threads
    python tests/kernel_matrix.py --capability avx2 --threads 1
    python tests/kernel_matrix.py --capability default -- -x tests/test_model.py

A capability the processor lacks falls back to the best it has; the table shows the one
torch reports.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CAPABILITIES = ("default", "avx2", "avx512")
THREADS = (1, 2)


def run(capability: str, threads: int, extra: list[str]) -> tuple[int, float, str]:
    # inductor's cache keys (its precompiled header included) do not record the ATen
    # capability, so each capability compiles into a cache of its own
    cache = Path(tempfile.gettempdir()) / f"llama_edu_inductor_{capability}"
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability, OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), TORCHINDUCTOR_CACHE_DIR=str(cache))
    probe = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability(), "
                               "torch.get_num_threads())"],
        env=env, capture_output=True, text=True, check=True)
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pytest", "-m", "parity", "-q", *extra],
                            cwd=ROOT, env=env)
    return result.returncode, time.perf_counter() - start, probe.stdout.strip()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capability", choices=CAPABILITIES, action="append",
                        help="run only this capability (repeatable); default: all three")
    parser.add_argument("--threads", type=int, action="append",
                        help="run only this thread count (repeatable); default: 1 and 2")
    parser.add_argument("pytest_args", nargs="*", help="passed on to pytest (after --)")
    args = parser.parse_args(argv)
    rows = []
    for capability in args.capability or CAPABILITIES:
        for threads in args.threads or THREADS:
            print(f"\n=== ATEN_CPU_CAPABILITY={capability} OMP_NUM_THREADS={threads} ===",
                  flush=True)
            rows.append((capability, threads, *run(capability, threads, args.pytest_args)))
    print("\ncapability  threads  torch reports        result  seconds")
    for capability, threads, code, seconds, reported in rows:
        verdict = "passed" if code == 0 else f"FAILED ({code})"
        print(f"{capability:<10}  {threads:>7}  {reported:<19}  {verdict:<6}  {seconds:7.0f}")
    return 0 if all(code == 0 for _, _, code, _, _ in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
