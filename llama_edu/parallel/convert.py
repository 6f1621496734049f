"""A whole Llama in tensor-parallel form, and PyTorch's own TP as a reference (lesson 12).

`parallelize_llama` swaps every attention and SwiGLU for its tensor-parallel block, splits
the embedding and the LM head; `parallelize` does the same for a single module.
"""

from __future__ import annotations

import copy

from torch import nn

from ..attention import Attention
from ..ffn import SwiGLU
from ..model import Llama
from .blocks import TensorParallelAttention, TensorParallelSwiGLU, attention_layout
from .groups import current_device, get_world_size
from .layers import (
    ColumnParallelLinear,
    ParallelEmbedding,
    RowParallelLinear,
    _check_divides,
    _resolve,
)


def parallelize_llama(model: Llama, rank: int | None = None,
                      world_size: int | None = None) -> Llama:
    """A copy of `model` holding this rank's shards: tensor-parallel attention and SwiGLU
    in every layer, the embedding split along dim, the LM head column-parallel (gathered).

    Norms (and a tied embedding/LM head) stay replicated. Same forward, same logits.
    """
    if not isinstance(model, Llama):
        raise TypeError(f"parallelize_llama needs a llama_edu.model.Llama, got "
                        f"{type(model).__name__}")
    config = model.config
    rank, world_size = _resolve(rank, world_size)
    if config.ffn_type != "swiglu":
        raise ValueError(f"tensor parallelism here covers the SwiGLU FFN, got ffn_type="
                         f"{config.ffn_type!r}; use ffn_type='swiglu'")
    attention_layout(config.n_heads, config.n_kv_heads, world_size)   # clear errors first
    _check_divides(config.ffn_hidden_dim, world_size, "the FFN hidden_dim")
    if not config.tie_word_embeddings:
        _check_divides(config.dim, world_size, "dim")
        _check_divides(config.vocab_size, world_size, "vocab_size")
    tp_model = copy.deepcopy(model)
    for layer in tp_model.layers:
        layer.self_attn = TensorParallelAttention.from_attention(layer.self_attn, rank,
                                                                  world_size)
        layer.mlp = TensorParallelSwiGLU.from_swiglu(layer.mlp, rank, world_size)
    if not config.tie_word_embeddings:
        tp_model.embed_tokens = ParallelEmbedding.from_embedding(model.embed_tokens, rank,
                                                                 world_size)
        tp_model.lm_head = ColumnParallelLinear.from_linear(model.lm_head, rank, world_size,
                                                            gather_output=True)
    return tp_model


def parallelize(module: nn.Module, rank: int | None = None, world_size: int | None = None,
                style: str | None = None) -> nn.Module:
    """This rank's tensor-parallel version of a single-process module.

    Llama -> parallelize_llama; Attention -> TensorParallelAttention; SwiGLU ->
    TensorParallelSwiGLU; nn.Linear with style "column" (full input, gathered output) or
    "row" (full input scattered, outputs summed). style="torch" shards a SwiGLU with
    PyTorch's own tensor-parallel API instead, as an outside reference.
    """
    if style == "torch":
        return _torch_tensor_parallel(module)
    if isinstance(module, Llama):
        return parallelize_llama(module, rank, world_size)
    if isinstance(module, Attention):
        return TensorParallelAttention.from_attention(module, rank, world_size)
    if isinstance(module, SwiGLU):
        return TensorParallelSwiGLU.from_swiglu(module, rank, world_size)
    if isinstance(module, nn.Linear):
        if style == "column":
            return ColumnParallelLinear.from_linear(module, rank, world_size,
                                                    gather_output=True)
        if style == "row":
            return RowParallelLinear.from_linear(module, rank, world_size,
                                                 input_is_parallel=False)
        raise ValueError(f"an nn.Linear needs style='column' or 'row', got {style!r}")
    raise TypeError(f"no tensor-parallel form for {type(module).__name__}; use Llama, "
                    "Attention, SwiGLU or nn.Linear")


def _torch_tensor_parallel(ffn: nn.Module) -> nn.Module:
    """PyTorch's own tensor parallelism (DTensor): gate and up Colwise, down Rowwise."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor.parallel import (
        ColwiseParallel,
        RowwiseParallel,
        parallelize_module,
    )

    if not isinstance(ffn, SwiGLU):
        raise TypeError(f"style='torch' covers a SwiGLU, got {type(ffn).__name__}")
    mesh = init_device_mesh(current_device().type, (get_world_size(),))
    return parallelize_module(ffn, mesh, {"gate_proj": ColwiseParallel(),
                                          "up_proj": ColwiseParallel(),
                                          "down_proj": RowwiseParallel()})
