"""`--report_to`: the metrics.jsonl records, also sent to TensorBoard, trackio or Weights & Biases.

Each tracker is its own library, imported only when asked for (`require_trackers` runs in preflight,
so a missing one is a one-line error before any data or model loads). Only rank 0 reports, and it
sends exactly the records it writes to metrics.jsonl (train records every `logging_steps`, eval
records on the eval schedule), under the names the HF Trainer's callbacks use
(transformers/integrations/integration_utils.py `rewrite_logs`): `eval_loss` -> `eval/loss`,
`loss` -> `train/loss`, at the record's optimizer `step`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from reward.errors import UserError, first_line
from reward.options import TRACKERS  # each the name of its module and of its pip package


def chosen(report_to: list[str]) -> list[str]:
    """`--report_to` as tracker names ('all': each one installed, as HF's 'all')."""
    if report_to == ["all"]:
        return [name for name in TRACKERS if importlib.util.find_spec(name)]
    return [name for name in report_to if name != "none"]


def require_trackers(report_to: list[str]) -> None:
    """Import each chosen tracker now, so a missing one stops the run before anything loads."""
    missing = " ".join(name for name in chosen(report_to) if not importable(name))
    if missing:
        raise UserError(f"--report_to {missing}: not installed (pip install {missing}, or the 'trackers' extra)")


def importable(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


HF_NAMES = {"lr": "learning_rate"}  # metrics.jsonl's short names -> the HF Trainer's log names


def tracker_keys(record: dict[str, Any]) -> dict[str, float]:
    """A metrics.jsonl record as tracker scalars: numbers only, eval_x -> eval/x, the rest train/x."""
    out = {}
    for key, value in record.items():
        if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        key = HF_NAMES.get(key, key)
        out[f"eval/{key[5:]}" if key.startswith("eval_") else f"train/{key}"] = value
    return out


def default_logging_dir(output_dir: str) -> str:
    """HF's default TensorBoard folder: OUTPUT_DIR/runs/<date>_<host>."""
    return str(Path(output_dir) / "runs" / f"{datetime.now():%b%d_%H-%M-%S}_{socket.gethostname()}")


class Trackers:
    """The chosen trackers, opened for one run: `log(record)` sends a record to each, `close()` ends them.
    Opened in preflight, so a tracker that cannot start (W&B not logged in) stops the run before any
    data or model loads; the ones already open are closed again."""

    def __init__(self, cfg: Any, options: dict[str, Any]) -> None:
        self.names = chosen(cfg.report_to)
        self.sinks: list[Callable[[int, dict[str, float]], None]] = []
        self.closers: list[Callable[[], None]] = []
        try:
            self.open(cfg, options, cfg.run_name or Path(cfg.output_dir).resolve().name)
        except Exception as exc:
            failed = self.names[len(self.closers)]  # each tracker that opened left its closer
            self.close()
            raise UserError(f"--report_to: {failed} could not start ({first_line(exc)})") from exc

    def open(self, cfg: Any, options: dict[str, Any], run_name: str) -> None:
        if "tensorboard" in self.names:
            from torch.utils.tensorboard import SummaryWriter

            self.logging_dir = cfg.logging_dir or default_logging_dir(cfg.output_dir)
            writer = SummaryWriter(log_dir=self.logging_dir)
            writer.add_text("options", "\n".join(f"    {k}: {v!r}" for k, v in options.items()))
            self.sinks.append(lambda step, scalars: [writer.add_scalar(k, v, step) for k, v in scalars.items()])
            self.closers.append(writer.close)
        if "trackio" in self.names:
            import trackio

            trackio.init(project=cfg.project, name=run_name, config=options)
            self.sinks.append(lambda step, scalars: trackio.log(scalars, step=step))
            self.closers.append(trackio.finish)
        if "wandb" in self.names:
            import wandb

            with argv_without_secrets():  # W&B records sys.argv with the run: never the Hub token
                run = wandb.init(project=cfg.project, name=run_name, config=options, dir=cfg.output_dir)
            self.sinks.append(lambda step, scalars: run.log(scalars, step=step))
            self.closers.append(run.finish)

    def log(self, record: dict[str, Any]) -> None:
        scalars = tracker_keys(record)
        for sink in self.sinks:
            sink(record["step"], scalars)

    def close(self) -> None:
        for close in reversed(self.closers):
            close()
        self.closers = []


SECRET_FLAGS = ("--hub_token",)


@contextlib.contextmanager
def argv_without_secrets() -> Iterator[None]:
    """sys.argv with the value of each secret flag (`--hub_token X`, `--hub_token=X`) masked, for as long as
    the block runs."""
    saved = list(sys.argv)
    masked = []
    for i, token in enumerate(saved):
        after_flag = i > 0 and saved[i - 1] in SECRET_FLAGS
        flag, eq, _ = token.partition("=")
        masked.append("***" if after_flag else f"{flag}=***" if eq and flag in SECRET_FLAGS else token)
    sys.argv[:] = masked
    try:
        yield
    finally:
        sys.argv[:] = saved


def open_trackers(cfg: Any, options: dict[str, Any], is_main: bool) -> Trackers | None:
    """The run's trackers (None when `--report_to none` or on ranks > 0)."""
    if not is_main or not chosen(cfg.report_to):
        return None
    trackers = Trackers(cfg, options)
    print(f"reporting to: {', '.join(trackers.names)}")
    return trackers
