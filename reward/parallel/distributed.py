"""More than one process: `torchrun --nproc_per_node N train.py ...` (gloo on CPU, nccl on GPU).

Data parallel, exact: every rank builds the same global order (seed, epoch); each global
micro-batch of N·b pairs is cut into N rank slices of b. After the micro-batches of an optimizer
step, the gradients are summed across ranks with `all_reduce`. Because every rank divides its
per-pair losses by the pair count of the *global* step (known on every rank from the shared
order), the summed gradient is exactly the single-process gradient of the whole step — also when
an epoch's last step leaves some rank fewer pairs, or none.

Why an all-reduce after accumulation rather than DDP's backward hooks: the packed forward
(reward/fast/packed_forward.py) calls the backbone and the score head directly, which DDP's forward
wrapper would not see, and a rank with no pairs in an uneven last step must still join the
reduction without a forward pass. One reduction per optimizer step is what DDP's `no_sync`
accumulation does too.

Only rank 0 prints, shows progress, evaluates, logs and writes checkpoints; the other ranks wait
for it at their next collective. `--fsdp` shards the model instead of replicating it:
reward/parallel/sharding.py.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from reward.metrics import MetricTotals


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE_PROCESS = World()


def init_world() -> World:
    """Join the process group torchrun describes in the environment; a plain run is a world of 1."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return SINGLE_PROCESS
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    world = World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    if torch.cuda.is_available():
        torch.cuda.set_device(world.local_rank)
    return world


def device_for(world: World, use_cpu: bool) -> torch.device:
    if torch.cuda.is_available() and not use_cpu:
        return torch.device("cuda", world.local_rank)
    return torch.device("cpu")


def sum_gradients(model: torch.nn.Module, world: World) -> None:
    """Σ over ranks of every gradient, in one flat buffer (a rank without pairs adds zeros)."""
    if world.size == 1:
        return
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])  # (P,)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p, g in zip(params, grads):
        p.grad = flat[offset : offset + g.numel()].view_as(g).clone()
        offset += g.numel()


def reduce_totals(totals: MetricTotals, world: World, device: torch.device) -> MetricTotals:
    """The step's metrics over all ranks' pairs (sums, then global min/max); a rank without pairs adds zeros."""
    if world.size == 1:
        return totals
    counts = [totals.pairs, totals.decided, totals.rewards]
    sums = totals.sums if totals.sums is not None else torch.zeros(4, dtype=torch.float64, device=device)
    everything = torch.cat([torch.tensor(counts, dtype=torch.float64, device=device), sums.to(device)])  # (7,)
    inf = torch.tensor([-torch.inf, -torch.inf], dtype=torch.float64, device=device)
    extremes = totals.extremes.to(device) if totals.extremes is not None else inf  # (2,): −min, max
    dist.all_reduce(everything, op=dist.ReduceOp.SUM)
    dist.all_reduce(extremes, op=dist.ReduceOp.MAX)
    out = MetricTotals()
    pairs, decided, rewards = everything[:3].tolist()
    if pairs:
        out.merge_sums(int(pairs), int(decided), int(rewards), everything[3:], extremes)
    return out


def any_rank(flag: bool, world: World, device: torch.device) -> bool:
    """True on every rank if it is True on one (a stop request must stop all ranks together)."""
    if world.size == 1:
        return flag
    value = torch.tensor([float(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def sum_int(value: int, world: World, device: torch.device) -> int:
    if world.size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return int(t.item())


def barrier(world: World) -> None:
    if world.size > 1:
        dist.barrier()


def shutdown() -> None:
    """Leave the process group. The model and its FSDP state (which may hold gloo work objects that
    keep tensors) are freed first, by `gc.collect()`, while the interpreter is fully alive: freed
    during interpreter finalization instead, such objects can make a gloo rank abort at exit
    ("terminate called without an active exception", SIGABRT; pytorch/pytorch PR 179291 describes
    the mechanism). Seen once in CI at the end of a 2-process --fsdp run."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()
