"""The loss options scoring uses: the model's training options (centring, label smoothing, how a `strength`
column was read), so that the loss score.py prints (and `--explain` takes apart) is the loss the training
evaluation reported."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from reward.errors import UserError


@dataclass
class LossOptions:
    """The loss options scoring uses, so that its loss is the training loss of the model."""

    center_rewards_coefficient: float | None = None
    label_smoothing: float = 0.0
    source: str = "defaults"  # where they came from, for the printed line
    strength_as: str = "ignore"  # a pair's strength column, as training read it (reward/labels/strength.py)
    strength_weights: str = "1:1,2:2,3:3"


def training_loss_options(
    model_dir: str, center_rewards_coefficient: float | None = None, label_smoothing: float | None = None
) -> LossOptions:
    """Options given here win; the rest come from MODEL_DIR/training_config.json (written by train.py)
    when the folder has one, else the defaults (no centring, no smoothing)."""
    path = Path(model_dir) / "training_config.json"
    saved: dict = {}
    if path.is_file():
        try:
            saved = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise UserError(f"{path}: not valid JSON ({exc})") from exc
    sources = []
    if center_rewards_coefficient is None and saved.get("center_rewards_coefficient") is not None:
        center_rewards_coefficient = float(saved["center_rewards_coefficient"])
        sources.append("center_rewards_coefficient")
    if label_smoothing is None and saved.get("label_smoothing") is not None:
        label_smoothing = float(saved["label_smoothing"])
        sources.append("label_smoothing")
    strength = {key: str(saved[key]) for key in ("strength_as", "strength_weights") if saved.get(key)}
    sources += list(strength)
    source = f"{', '.join(sources)} from {path}" if sources else "command line / defaults"
    return LossOptions(center_rewards_coefficient, label_smoothing or 0.0, source, **strength)
