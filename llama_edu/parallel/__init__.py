"""Tensor, data and sharded parallelism on torch.distributed (lesson 12).

Tensor parallelism (Shoeybi et al., 2019, Megatron-LM) splits each weight across p ranks;
data parallelism copies the model and all-reduces the gradients; ZeRO / FSDP (Rajbhandari
et al., 2020) shard the optimizer state, gradients and weights over the data-parallel
ranks. The modules, in the order the lesson meets them:

    groups       process groups (torchrun's environment) and `launch`, torchrun for a notebook
    collectives  copy_to_parallel (f), reduce_from_parallel (g), gather and scatter
    layers       ColumnParallelLinear, RowParallelLinear, ParallelEmbedding; state dicts
    blocks       TensorParallelSwiGLU, TensorParallelAttention: one all-reduce per block
    convert      parallelize_llama, parallelize; PyTorch's DTensor TP as a reference
    cost         what each kind of parallelism sends (ring all-reduce, sequence, pipeline)
    sharded      ZeRO's memory per GPU; PyTorch's FSDP and ZeroRedundancyOptimizer runs
    demos        functions to launch: the lesson's demos and the tests' comparisons
"""

from .blocks import TensorParallelAttention, TensorParallelSwiGLU, attention_layout
from .collectives import (
    _CopyToParallel,
    _ReduceFromParallel,
    copy_to_parallel,
    gather_from_parallel,
    reduce_from_parallel,
    scatter_to_parallel,
)
from .convert import parallelize, parallelize_llama
from .cost import (
    all_reduce_seconds,
    attention_score_flops,
    data_parallel_traffic,
    gpipe_schedule,
    kv_replica_all_reduces,
    pipeline_bubble,
    pipeline_traffic,
    ring_all_reduce,
    ring_fraction,
    sequence_parallel_traffic,
    tensor_parallel_times,
    tensor_parallel_traffic,
)
from .demos import (
    count_all_reduces,
    data_parallel_run,
    forward_backward,
    hello_ranks,
    max_differences,
    mlp_on_ranks,
    parallel_forward_backward,
    probe_grad,
    run_in_sequence,
    single_process_run,
    time_all_reduce,
)
from .groups import (
    cleanup,
    current_device,
    default_backend,
    free_port,
    get_rank,
    get_world_size,
    init_distributed,
    is_main_process,
    launch,
)
from .layers import (
    ColumnParallelLinear,
    ParallelEmbedding,
    RowParallelLinear,
    gather_state_dict,
    load_full_state_dict,
    shard,
)
from .sharded import fsdp_run, zero_memory

__all__ = [
    # groups and launch
    "default_backend", "current_device", "init_distributed", "get_rank", "get_world_size",
    "is_main_process", "cleanup", "free_port", "launch",
    # collectives (the notebook prints the source of the two autograd Functions)
    "copy_to_parallel", "reduce_from_parallel", "gather_from_parallel", "scatter_to_parallel",
    "_CopyToParallel", "_ReduceFromParallel",
    # sharded layers and blocks, whole models, state dicts
    "shard", "ColumnParallelLinear", "RowParallelLinear", "ParallelEmbedding",
    "TensorParallelSwiGLU", "attention_layout", "TensorParallelAttention",
    "parallelize_llama", "load_full_state_dict", "gather_state_dict", "parallelize",
    # the cost model
    "ring_fraction", "ring_all_reduce", "data_parallel_traffic", "tensor_parallel_traffic",
    "tensor_parallel_times", "sequence_parallel_traffic", "pipeline_traffic",
    "pipeline_bubble", "gpipe_schedule", "kv_replica_all_reduces", "attention_score_flops",
    "all_reduce_seconds",
    # sharded data parallelism
    "zero_memory", "fsdp_run",
    # functions to launch
    "hello_ranks", "run_in_sequence", "time_all_reduce", "probe_grad", "forward_backward",
    "parallel_forward_backward", "max_differences", "data_parallel_run", "single_process_run",
    "count_all_reduces", "mlp_on_ranks",
]
