"""llama_edu.profiling: the peak-memory meter (exact on the CPU, where it counts tensors)."""

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from llama_edu.profiling import peak_memory


def test_peak_memory_counts_live_tensors_exactly():
    def build():
        a = torch.empty(1000)                        # 4000 bytes
        b = torch.empty(500, dtype=torch.float64)    # 4000 more: 8000 live
        del a
        c = torch.empty(10)                          # 4040 live
        return b.view(10, 50), c                     # a view adds nothing

    assert peak_memory(build) == 8000


def test_peak_memory_sees_the_operations_inside_a_composite_function():
    # SDPA's math path is one Python call made of ATen ops; its (b, h, n, n) fp32 scores
    # are an intermediate that only an op-level count can see.
    q = k = v = torch.randn(1, 2, 64, 8)
    with sdpa_kernel(SDPBackend.MATH):
        peak = peak_memory(F.scaled_dot_product_attention, q, k, v)
    assert peak >= 2 * 64 * 64 * 4


def test_peak_memory_sees_what_autograd_runs_for_backward():
    x = torch.randn(256, 256, requires_grad=True)

    def backward():
        (x @ x).sum().backward()                     # the backward makes two 256 x 256 products

    assert peak_memory(backward) >= 2 * 256 * 256 * 4


def test_timer_and_median_ms_measure_wall_time():
    import time

    from llama_edu.profiling import median_ms, timer

    with timer("cpu") as t:
        time.sleep(0.02)
    assert 0.015 < t.seconds < 1.0 and abs(t.ms - 1e3 * t.seconds) < 1e-9
    calls = []
    ms = median_ms(lambda: (calls.append(1), time.sleep(0.005)), reps=3, warmup=2)
    assert len(calls) == 5 and 4.0 < ms < 500.0


def test_median_ms_refuses_no_repetitions():
    import pytest

    from llama_edu.profiling import median_ms

    with pytest.raises(ValueError, match="reps >= 1"):
        median_ms(lambda: None, reps=0)
