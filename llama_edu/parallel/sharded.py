"""Sharded data parallelism: ZeRO's memory arithmetic and PyTorch's FSDP (lesson 12).

Mixed-precision Adam keeps, per parameter, 2 bytes of fp16/bf16 weights, 2 of gradients
and K = 12 of fp32 optimizer state (master weights, m, v): 16 bytes (Rajbhandari et al.,
2020, ZeRO, §3 and Fig. 1). Data parallelism copies all of it to every rank; ZeRO shards it
over N ranks, one stage at a time:

    DDP     (2 + 2 + K) Psi            ZeRO-2 (+ gradients)   2 Psi + (2 + K) Psi / N
    ZeRO-1  2 Psi + 2 Psi + K Psi / N  ZeRO-3 (+ weights)     (2 + 2 + K) Psi / N

PyTorch's FSDP (`fully_shard`) is ZeRO-3: each rank keeps 1/N of every parameter, gathers
a layer's full weights just before using it, and reduce-scatters the gradients.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .demos import rank_batch
from .groups import current_device

WEIGHT_BYTES, GRAD_BYTES, ADAM_K = 2, 2, 12


def zero_memory(n_params: float, world_size: int, k: int = ADAM_K) -> dict[str, float]:
    """Bytes of model states per GPU for each ZeRO stage (ZeRO paper, §3 and Fig. 1)."""
    if world_size < 1:
        raise ValueError(f"world_size must be at least 1, got {world_size}")
    psi, n = float(n_params), world_size
    return {"DDP": (WEIGHT_BYTES + GRAD_BYTES + k) * psi,
            "ZeRO-1": WEIGHT_BYTES * psi + GRAD_BYTES * psi + k * psi / n,
            "ZeRO-2": WEIGHT_BYTES * psi + (GRAD_BYTES + k) * psi / n,
            "ZeRO-3": (WEIGHT_BYTES + GRAD_BYTES + k) * psi / n}


def _shard_layers(model: nn.Module, mesh) -> None:
    """fully_shard each transformer layer, then the root (the embedding, norm and head)."""
    from torch.distributed.fsdp import fully_shard

    for layer in getattr(model, "layers", []):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)


def fsdp_run(rank: int, world_size: int, model: nn.Module, tokens: torch.Tensor,
             steps: int = 3, lr: float = 1e-2) -> dict:
    """Launch me: train `model` with FSDP (fully_shard, ZeRO-3) and with PyTorch's
    ZeroRedundancyOptimizer (ZeRO-1, under DDP), each rank on its equal slice of the batch.

    Returns, for each, the full weights after `steps` AdamW steps (gathered back), and how
    many parameter values and Adam moments this rank itself kept.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel

    from ..train import lm_loss

    device = current_device()
    x, y = rank_batch(tokens, rank, world_size, device)

    fsdp = copy.deepcopy(model).to(device)
    _shard_layers(fsdp, init_device_mesh(device.type, (world_size,)))
    optimizer = torch.optim.AdamW(fsdp.parameters(), lr=lr)
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        lm_loss(fsdp(x), y).backward()        # all-gathers weights, reduce-scatters grads
        optimizer.step()                      # on this rank's shard only
    kept = sum(p.to_local().numel() for p in fsdp.parameters())
    moments = sum(s["exp_avg"].to_local().numel() for s in optimizer.state.values())
    fsdp_weights = {n: p.full_tensor() for n, p in fsdp.named_parameters()}

    ddp = DistributedDataParallel(copy.deepcopy(model).to(device),
                                  device_ids=[device.index] if device.type == "cuda" else None)
    zero1 = ZeroRedundancyOptimizer(ddp.parameters(), optimizer_class=torch.optim.AdamW, lr=lr)
    for _ in range(steps):
        zero1.zero_grad(set_to_none=True)
        lm_loss(ddp(x), y).backward()
        zero1.step()                          # own shard's update, then broadcast
    zero1_moments = sum(s["exp_avg"].numel() for s in zero1.optim.state.values())
    return {"fsdp_weights": fsdp_weights, "fsdp_params_kept": kept, "fsdp_moments": moments,
            "zero1_weights": {n: p.detach() for n, p in ddp.module.named_parameters()},
            "zero1_moments": zero1_moments}
