"""How this process takes part in training: alone, as one of N data-parallel ranks, or holding a shard.

The training loop (reward/loop.py) and the savers ask a `Plan` instead of testing for FSDP
themselves, so single-device training reads as single-device training:

    plan.sync_gradients(model)        DDP: one Σ of the gradients over ranks per optimizer step
                                      (FSDP reduce-scattered them inside backward already)
    plan.filler_count(n, device)      FSDP: zero-weight passes so every rank joins every collective
    plan.takes_part                   who evaluates and saves: rank 0, every rank under FSDP (the
                                      forward and the gather of the full weights are collectives)
    plan.optimizer_state / plan.load_optimizer_state / plan.full_weights
                                      whole-model state for checkpoints (gathered under FSDP)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from reward.parallel.distributed import SINGLE_PROCESS, World, sum_gradients
from reward.parallel.sharding import filler_passes, full_optimizer_state, full_weights, load_full_optimizer_state


@dataclass(frozen=True)
class Plan:
    world: World = field(default_factory=lambda: SINGLE_PROCESS)
    sharded: bool = False  # --fsdp: parameters, gradients and AdamW state are FSDP2 shards

    @property
    def is_main(self) -> bool:
        return self.world.is_main

    @property
    def takes_part(self) -> bool:
        """Whether this rank runs evaluation and saving (rank 0 records and writes either way)."""
        return self.world.is_main or self.sharded

    def sync_gradients(self, model: nn.Module) -> None:
        if not self.sharded:
            sum_gradients(model, self.world)  # Σ over ranks: each already divided by the global pair count

    def filler_count(self, num_micro_batches: int, device: torch.device) -> int:
        if not self.sharded:
            return 0
        return filler_passes(num_micro_batches, self.world, device)

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
