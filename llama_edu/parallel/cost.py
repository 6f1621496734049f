"""What parallel training sends and what it computes (lesson 12).

A ring all-reduce of n bytes over p ranks is a reduce-scatter then an all-gather, each of
p - 1 steps in which every rank sends one n/p chunk to its neighbour: 2 (p - 1) / p * n
bytes sent per rank (Patarasuk & Yuan, 2009). Tensor parallelism pays it on activations,
data parallelism on gradients, sequence parallelism splits it in its two halves, pipeline
parallelism sends activations once per stage boundary instead (GPipe, Huang et al., 2019;
Narayanan et al., 2021).
"""

from __future__ import annotations

from torch import Tensor

from ..model import LlamaConfig


def ring_fraction(world_size: int) -> float:
    """Bytes one rank sends in a ring all-reduce, per byte of the tensor: 2 (p - 1) / p."""
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    return 2 * (world_size - 1) / world_size


def ring_all_reduce(tensors: list[Tensor]) -> tuple[list[Tensor], list[int]]:
    """Simulate a ring all-reduce of one tensor per rank, step by step.

    Each tensor is cut into p chunks. Reduce-scatter: at step s rank r sends chunk
    (r - s) mod p to rank r + 1, which adds it to its own; after p - 1 steps rank r holds
    the full sum of chunk (r + 1) mod p. All-gather: p - 1 more steps pass the summed chunks
    round. Returns (each rank's result, the bytes each rank sent).
    """
    p = len(tensors)
    if p == 0 or any(t.shape != tensors[0].shape for t in tensors):
        raise ValueError("ring_all_reduce needs one tensor per rank, all of the same shape")
    flat = [t.detach().reshape(-1).clone() for t in tensors]          # (n,) per rank
    chunks = [list(f.tensor_split(p)) for f in flat]                  # views into flat
    sent = [0] * p
    for phase in ("reduce-scatter", "all-gather"):
        for step in range(p - 1):
            shift = step if phase == "reduce-scatter" else step - 1
            messages = [(r, (r - shift) % p, chunks[r][(r - shift) % p].clone())
                        for r in range(p)]                            # all send at once
            for r, index, chunk in messages:
                sent[r] += chunk.numel() * chunk.element_size()
                receiver = chunks[(r + 1) % p][index]
                if phase == "reduce-scatter":
                    receiver += chunk
                else:
                    receiver.copy_(chunk)
    return [f.view_as(t) for f, t in zip(flat, tensors, strict=True)], sent


def data_parallel_traffic(n_params: int, world_size: int, bytes_per_grad: int = 2) -> float:
    """Bytes each rank sends per optimizer step when DDP all-reduces the gradients in a
    ring: 2 (p - 1) / p * n_params * bytes_per_grad, whatever the number of tokens."""
    return ring_fraction(world_size) * n_params * bytes_per_grad


def tensor_parallel_traffic(config: LlamaConfig, world_size: int,
                            bytes_per_value: int = 2) -> dict[str, float]:
    """What tensor parallelism sends, per token, in a forward pass.

    Each layer all-reduces two (tokens, dim) activations (after o_proj and down_proj): 2*dim
    values per token per layer. A ring all-reduce makes each rank send (and receive)
    2*(p-1)/p times the tensor (Patarasuk & Yuan, 2009). Backward sends as much again.
    """
    dim, layers, p = config.dim, config.n_layers, world_size
    values_per_layer = 2 * dim                               # two all-reduces of dim values
    kv_dim = config.n_kv_heads * config.head_dim
    layer_params = 2 * dim * dim + 2 * dim * kv_dim + 3 * dim * config.ffn_hidden_dim
    return {
        "all_reduces_per_layer": 2,
        "values_per_token_per_layer": values_per_layer,
        "bytes_per_token_per_layer": values_per_layer * bytes_per_value,
        "bytes_per_token": values_per_layer * bytes_per_value * layers,
        "sent_per_rank_per_token": values_per_layer * bytes_per_value * layers
                                   * ring_fraction(p),
        "flops_per_token_per_rank": 2 * layer_params * layers / p,   # matmuls, forward
    }


def sequence_parallel_traffic(config: LlamaConfig, world_size: int, tokens: int,
                              bytes_per_value: int = 2) -> dict[str, float]:
    """Bytes one rank sends per layer, forward, for `tokens` tokens: tensor parallelism's
    two all-reduces against sequence parallelism's two all-gathers and two reduce-scatters.

    Sequence parallelism (Korthikanti et al., 2022, §4.2.2) keeps the norms' activations
    split along the sequence: each all-reduce becomes a reduce-scatter (into sequence
    slices) and, before the next column-parallel layer, an all-gather. Each half sends
    (p - 1) / p of the tensor per rank, so the bytes are the same; the activations stored
    between the blocks shrink by p.
    """
    tensor = tokens * config.dim * bytes_per_value                   # one (tokens, dim)
    half = (world_size - 1) / world_size * tensor                    # one reduce-scatter
    return {"tensor_parallel": 2 * ring_fraction(world_size) * tensor,
            "sequence_parallel": 2 * (half + half),                  # 2 x (RS + AG)
            "stored_activations_tp": tensor, "stored_activations_sp": tensor / world_size}


def pipeline_traffic(micro_batch: int, seq_len: int, dim: int,
                     bytes_per_value: int = 2) -> int:
    """Bytes one pipeline stage sends to the next per micro-batch, forward: its output
    activations b * s * h (Narayanan et al., 2021, §3.2); the backward sends their
    gradient, as many bytes, the other way."""
    return micro_batch * seq_len * dim * bytes_per_value


def pipeline_bubble(stages: int, micro_batches: int) -> float:
    """Fraction of a GPipe schedule's time a stage sits idle: (p - 1) / (m + p - 1).

    Each of p stages works m forward slots and waits p - 1 to fill and drain the pipe
    (Huang et al., 2019, §2.2; Narayanan et al., 2021, §2.2.1 state it relative to the
    ideal time, (p - 1) / m). 1F1B schedules keep the bubble and store fewer activations.
    """
    if stages < 1 or micro_batches < 1:
        raise ValueError("stages and micro_batches must be at least 1")
    return (stages - 1) / (micro_batches + stages - 1)


def gpipe_schedule(stages: int, micro_batches: int) -> list[list[int | None]]:
    """The forward pass of a GPipe schedule as a grid: row = stage, column = time slot,
    entry = the micro-batch that stage works on then (None: idle). Micro-batch j reaches
    stage s at slot s + j."""
    slots = micro_batches + stages - 1
    return [[t - s if 0 <= t - s < micro_batches else None for t in range(slots)]
            for s in range(stages)]


def kv_replica_all_reduces(config: LlamaConfig, world_size: int,
                           bytes_per_value: int = 2) -> dict[str, float]:
    """The backward all-reduces that copying KV heads adds, per layer.

    When world_size > n_kv_heads, world / n_kv_heads ranks hold a copy of each KV head
    (`attention_layout`), and the copies' weight gradients must be summed over the ranks
    holding them: one all-reduce for k_proj and one for v_proj, each of a
    (head_dim, dim) shard per rank, per layer and step. Splitting (world <= n_kv_heads)
    needs none.
    """
    from .blocks import attention_layout

    _, local_kv, replicas = attention_layout(config.n_heads, config.n_kv_heads, world_size)
    extra = 2 if replicas > 1 else 0
    shard = local_kv * config.head_dim * config.dim * bytes_per_value
    return {"replicas": replicas, "extra_all_reduces_per_layer": extra,
            "bytes_per_all_reduce": shard if extra else 0,
            "sent_per_rank_per_step": extra * shard * ring_fraction(replicas)
                                      * config.n_layers}


def attention_score_flops(config: LlamaConfig, context: int) -> int:
    """Forward FLOPs of one token's q.k scores and weighted sum of values, all layers:
    2 * 2 * context * n_heads * head_dim per layer, the logits QK^T and the weighted sum
    of values (Hoffmann et al., 2022, App. F). The weight count 2 * N leaves them out;
    they grow with the context."""
    return 4 * context * config.n_heads * config.head_dim * config.n_layers


def all_reduce_seconds(n_bytes: float, world_size: int, bandwidth_gb_s: float,
                       latency_s: float = 0.0) -> float:
    """The alpha-beta model of a ring all-reduce: 2 (p - 1) steps, each paying the link's
    latency alpha, plus 2 (p - 1) / p * n bytes at bandwidth beta (Thakur et al., 2005)."""
    if world_size == 1:
        return 0.0
    return 2 * (world_size - 1) * latency_s + ring_fraction(world_size) * n_bytes / (
        bandwidth_gb_s * 1e9)


def tensor_parallel_times(config: LlamaConfig, world_size: int, bandwidth_gb_s: float,
                          tflops: float = 989.0, bytes_per_value: int = 2,
                          latency_s: float = 0.0) -> tuple[float, float]:
    """(compute, communication) seconds per token per layer of a forward pass, at peak speed.

    compute = 2 * layer parameters / p / FLOP/s; communication = ring all-reduce bytes sent
    per rank / link bandwidth (bytes each way). Attention-score FLOPs and overlap are left
    out; latency too unless `latency_s` (per ring step) is given, which one token per
    all-reduce pays in full. The default 989 TFLOP/s is an H100 SXM's dense BF16 peak
    (NVIDIA's datasheet).
    """
    if bandwidth_gb_s <= 0 or tflops <= 0 or world_size < 1:
        raise ValueError("bandwidth_gb_s and tflops must be positive and world_size >= 1")
    traffic = tensor_parallel_traffic(config, world_size, bytes_per_value)
    compute = traffic["flops_per_token_per_rank"] / config.n_layers / (tflops * 1e12)
    sent = traffic["sent_per_rank_per_token"] / config.n_layers
    latency = 2 * 2 * (world_size - 1) * latency_s          # two all-reduces per layer
    return compute, sent / (bandwidth_gb_s * 1e9) + latency
