"""`--fsdp`: shard parameters, gradients and AdamW state across processes with FSDP2 (`fully_shard`).

Each process keeps 1/N of every parameter (a DTensor shard), of its gradient and of AdamW's two
moments; a layer's full weights exist only while it runs (all-gathered in its forward, again in
its backward, then freed), and its gradient is reduce-scattered right after its backward. Works
with nccl on GPUs and with gloo on CPU (tests/test_fsdp.py runs 2 CPU processes).

Units: every decoder layer (the classes in HF's `model._no_split_modules`), then each direct
child of the reward model (the backbone, whose unit keeps embeddings and final norm, and the
`score` head) as a root of its own. The reward model itself is *not* wrapped: the packed forward
(reward/fast/packed_forward.py) calls `model.base_model(...)` and `model.score(...)` directly, and FSDP2
all-gathers a unit's parameters in that unit's forward pre-hook: a wrapped top-level model would
own the embeddings and the head, and its hook never runs on that path.

Exactness, the same contract as reward/parallel/distributed.py: every rank divides its per-pair losses by
the pair count of the *global* step, so the gradients must be summed over ranks, not averaged as
FSDP2 does by default. Gradients are reduced after every micro-batch (FSDP2's default; the
sharded gradients accumulate): only shards are held between micro-batches, at the price of one
reduce-scatter per micro-batch (`set_requires_gradient_sync(False)` would save those but keep whole
unsharded gradients, DDP's memory, until the last micro-batch). FSDP2's collectives
run inside forward and backward, so every rank must run as many passes as the busiest rank
(`filler_passes`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from transformers import PreTrainedModel

from reward.errors import UserError
from reward.model import decoder_layers
from reward.parallel.distributed import World


def check_fsdp_world(world: World) -> None:
    """--fsdp needs a process group of 2+ (torchrun); a plain run has no one to shard with."""
    if world.size < 2:
        raise UserError("--fsdp shards across processes: launch with torchrun --nproc_per_node N (N >= 2)")


def shard_model(model: PreTrainedModel, world: World, device: torch.device) -> PreTrainedModel:
    """Shard `model` in place across the `world.size` processes of `device.type`; returns it.

    Call it on the model still on the CPU: `fully_shard` moves each shard to the mesh's device, so
    no process ever holds the whole model on its GPU.
    """
    check_fsdp_world(world)
    if any(True for _ in model.parameters(recurse=False)):
        raise UserError(f"--fsdp: {type(model).__name__} has parameters outside its submodules; cannot shard it")
    mesh = init_device_mesh(device.type, (world.size,))
    for module in decoder_layers(model):  # a list: fully_shard swaps each unit's class
        fully_shard(module, mesh=mesh)
    for child in model.children():  # backbone (embeddings, norm) and head: each a root
        if any(True for _ in child.parameters()):
            # explicit True: FSDP2's default (None) keeps a root's weights gathered from forward to
            # backward, so a forward without backward (evaluation, the packing self-check) would
            # leave plain full tensors in the module, not the shards the optimizer holds
            fully_shard(child, mesh=mesh, reshard_after_forward=True)
    for module in model.modules():
        if isinstance(module, FSDPModule):
            # Σ over ranks, not FSDP2's mean. With a divide factor of 1 FSDP2 picks
            # ReduceOp.PREMUL_SUM(1/1), which gloo rejects ("Cannot use ReduceOp.PREMUL_SUM with
            # Gloo"); forcing sum-only comms makes it a plain SUM and a division by 1 (a no-op).
            module.set_gradient_divide_factor(1.0)
            module.set_force_sum_reduction_for_comms(True)
    return model


def filler_passes(num_micro_batches: int, world: World, device: torch.device) -> int:
    """How many zero-weight forward/backward passes this rank adds to keep up with the busiest rank.

    FSDP2 all-gathers in every forward and reduce-scatters in every backward, so a rank that ran
    fewer passes than another (an epoch's uneven last step) would leave the others waiting forever.
    """
    most = torch.tensor([num_micro_batches], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(most, op=torch.distributed.ReduceOp.MAX)
    return int(most.item()) - num_micro_batches


# --- whole-model state, for checkpoints and the exported folder ----------------------------------
# cpu_offload with full_state_dict: the gathered tensors land on rank 0's CPU only, the other
# ranks get {} (torch.distributed.checkpoint.state_dict.StateDictOptions), so no GPU ever holds
# the whole model. Every rank must call these: each one all-gathers the shards.
_FULL_ON_RANK0 = StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded weights (parameter names as in the unsharded model) on rank 0; {} elsewhere. Collective."""
    return get_model_state_dict(model, options=_FULL_ON_RANK0)


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """The optimizer state with unsharded tensors, keyed by parameter name, on rank 0; {} elsewhere. Collective."""
    return get_optimizer_state_dict(model, optimizer, options=_FULL_ON_RANK0)


def load_full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    """Load what `full_optimizer_state` saved: every rank passes the whole state and keeps its shard."""
    set_optimizer_state_dict(model, optimizer, state, options=StateDictOptions(full_state_dict=True))
