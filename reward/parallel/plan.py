"""How this process takes part in training: alone, as one of N data-parallel ranks, or holding a shard.

`Plan` is what the training loop asks of its processes (reward/loop.py `Processes`), so the loop reads
as single-device training and never tests for FSDP itself:

    plan.extra_passes(n)              FSDP: zero-weight passes so every rank joins every collective
    plan.sync_gradients(model)        DDP: one Σ of the gradients over ranks per optimizer step
                                      (FSDP reduce-scattered them inside backward already)
    plan.clip_gradients(model, max)   the global norm (FSDP: of sharded gradients, gathered)
    plan.reduce / total / any         the step's metrics, token counts and stop requests over ranks
    plan.takes_part                   who evaluates and saves: rank 0, every rank under FSDP (the
                                      forward and the gather of the full weights are collectives)

and, for checkpoints and the exported folder (reward/run/state.py, the recipe):

    plan.optimizer_state / plan.load_optimizer_state / plan.full_weights
                                      whole-model state (gathered under FSDP)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn
from torch.distributed.tensor import DTensor

from reward.metrics import MetricTotals
from reward.parallel.distributed import SINGLE_PROCESS, World, any_rank, reduce_totals, sum_gradients, sum_int
from reward.parallel.sharding import filler_passes, full_optimizer_state, full_weights, load_full_optimizer_state


@dataclass(frozen=True)
class Plan:
    world: World = field(default_factory=lambda: SINGLE_PROCESS)
    sharded: bool = False  # --fsdp: parameters, gradients and AdamW state are FSDP2 shards
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))  # where collectives' tensors live

    @property
    def rank(self) -> int:
        return self.world.rank

    @property
    def size(self) -> int:
        return self.world.size

    @property
    def is_main(self) -> bool:
        return self.world.is_main

    @property
    def takes_part(self) -> bool:
        """Whether this rank runs evaluation and saving (rank 0 records and writes either way)."""
        return self.world.is_main or self.sharded

    def extra_passes(self, num_passes: int) -> int:
        return filler_passes(num_passes, self.world, self.device) if self.sharded else 0

    def sync_gradients(self, model: nn.Module) -> None:
        if not self.sharded:
            sum_gradients(model, self.world)  # Σ over ranks: each already divided by the global units

    def clip_gradients(self, model: nn.Module, max_norm: float) -> torch.Tensor:
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm)
        if isinstance(norm, DTensor):  # FSDP: a norm over sharded gradients, a partial sum per rank
            norm = norm.full_tensor()  # the global norm, the same on every rank
        return norm

    def reduce(self, totals: MetricTotals) -> MetricTotals:
        return reduce_totals(totals, self.world, self.device)

    def total(self, value: int) -> int:
        return sum_int(value, self.world, self.device)

    def any(self, flag: bool) -> bool:
        return any_rank(flag, self.world, self.device)

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        """The optimizer state to save: unsharded and keyed by parameter name under FSDP (collective)."""
        if not self.sharded:
            return optimizer.state_dict()
        return full_optimizer_state(model, optimizer)

    def load_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        if not self.sharded:
            optimizer.load_state_dict(state)
            return
        load_full_optimizer_state(model, optimizer, state)

    def full_weights(self, model: nn.Module) -> dict | None:
        """The whole model's weights on rank 0 under FSDP (collective: every rank calls it); None otherwise."""
        if not self.sharded:
            return None
        return full_weights(model)


SINGLE = Plan()
