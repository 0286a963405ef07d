"""The state of a run besides its weights: what a resumed run needs to continue bit for bit.

    optimizer (AdamW moments; unsharded under FSDP), scheduler, gradient scaler, the optimizer step,
    the count of skipped non-finite steps, the number of processes, every RNG (Python, torch,
    CUDA, numpy), and the fingerprint of the training pairs it steps through (`data`: their count
    and a hash of their token ids, reward/run/resume_rules.py; a resume compares it)

`training_state` builds it from the loop's `Progress` (reward/loop.py) at a save, and
`restore_training_state` puts it back into a new run's `Progress` before its first step: the recipe
hands the loop both as its `save` and `restore`. Tensors and plain values only:
reward/run/checkpoints.py writes it as training_state.pt and reads it with `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import random
from typing import Any

import torch

from reward.loop import Progress
from reward.parallel.plan import Plan


def rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    try:
        import numpy as np

        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        state["numpy"] = (kind, torch.from_numpy(keys.copy()), pos, has_gauss, gauss)  # tensors load safely
    except ImportError:  # numpy is optional for us
        pass
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "numpy" in state:
        import numpy as np

        kind, keys, pos, has_gauss, gauss = state["numpy"]
        np.random.set_state((kind, keys.numpy(), pos, has_gauss, gauss))


def training_state(progress: Progress, model, plan: Plan, rows: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything besides the weights that a resumed run needs to continue bit for bit, and (`rows`) what it
    must continue on. Under FSDP the optimizer state is gathered unsharded (a collective: every rank calls this)."""
    return {
        "data": rows,  # {"pairs": N, "blake2b": hex}: plain values, read with weights_only=True
        "step": progress.step,
        "world_size": plan.world.size,  # a resume checks it: positions in the data count global steps
        "nonfinite_steps": progress.nonfinite_steps,
        "optimizer": plan.optimizer_state(model, progress.optimizer),
        "scheduler": progress.scheduler.state_dict(),
        "scaler": progress.scaler.state_dict() if progress.scaler else None,
        "rng": rng_state(),
    }


def restore_training_state(state: dict[str, Any], progress: Progress, model, plan: Plan) -> None:
    """Put a checkpoint's state back into a fresh run's `progress` (the weights are already in `model`)."""
    plan.load_optimizer_state(model, progress.optimizer, state["optimizer"])
    progress.scheduler.load_state_dict(state["scheduler"])
    if progress.scaler and state["scaler"]:
        progress.scaler.load_state_dict(state["scaler"])
    set_rng_state(state["rng"])
    progress.step, progress.nonfinite_steps = state["step"], state.get("nonfinite_steps", 0)
