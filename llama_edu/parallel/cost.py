"""What tensor parallelism sends and what it computes, per token (lesson 12)."""

from __future__ import annotations

from ..model import LlamaConfig


def tensor_parallel_traffic(config: LlamaConfig, world_size: int,
                            bytes_per_value: int = 2) -> dict[str, float]:
    """What tensor parallelism sends, per token, in a forward pass.

    Each layer all-reduces two (tokens, dim) activations (after o_proj and down_proj): 2*dim
    values per token per layer. A ring all-reduce makes each rank send (and receive)
    2*(p-1)/p times the tensor (Patarasuk & Yuan, 2009). Backward sends as much again.
    """
    dim, layers, p = config.dim, config.n_layers, world_size
    values_per_layer = 2 * dim                               # two all-reduces of dim values
    ring = 2 * (p - 1) / p
    kv_dim = config.n_kv_heads * config.head_dim
    layer_params = 2 * dim * dim + 2 * dim * kv_dim + 3 * dim * config.ffn_hidden_dim
    return {
        "all_reduces_per_layer": 2,
        "values_per_token_per_layer": values_per_layer,
        "bytes_per_token_per_layer": values_per_layer * bytes_per_value,
        "bytes_per_token": values_per_layer * bytes_per_value * layers,
        "sent_per_rank_per_token": values_per_layer * bytes_per_value * layers * ring,
        "flops_per_token_per_rank": 2 * layer_params * layers / p,   # matmuls, forward
    }


def tensor_parallel_times(config: LlamaConfig, world_size: int, bandwidth_gb_s: float,
                          tflops: float = 989.0, bytes_per_value: int = 2) -> tuple[float, float]:
    """(compute, communication) seconds per token per layer of a forward pass, at peak speed.

    compute = 2 * layer parameters / p / FLOP/s; communication = ring all-reduce bytes sent
    per rank / link bandwidth (bytes each way). Latency and overlap are left out. The
    default 989 TFLOP/s is an H100 SXM's dense BF16 peak (NVIDIA's datasheet).
    """
    if bandwidth_gb_s <= 0 or tflops <= 0 or world_size < 1:
        raise ValueError("bandwidth_gb_s and tflops must be positive and world_size >= 1")
    traffic = tensor_parallel_traffic(config, world_size, bytes_per_value)
    compute = traffic["flops_per_token_per_rank"] / config.n_layers / (tflops * 1e12)
    sent = traffic["sent_per_rank_per_token"] / config.n_layers
    return compute, sent / (bandwidth_gb_s * 1e9)
