"""Non-finite steps: a step whose loss or gradient is NaN/inf is skipped (weights untouched, counted,
strict JSON in metrics.jsonl), too many in a row stop the run in one error line (exit 3) without a
non-finite checkpoint, and the count survives a resume.

The NaN is injected by patching the reward forward (both paths), as a real overflow would show.
"""

from __future__ import annotations

import contextlib
import io
import json
import math

import pytest
import torch
from conftest import all_finite, checkpoint_steps, latest, read_metrics, small_run, weights, without_timing

import train
from reward.collate import PairBatch
from reward.config import parse_config
from reward.fast.packing import PackedBatch
from reward.loop import NonFiniteError

pytestmark = pytest.mark.usefixtures("quiet_datasets", "one_torch_thread")


class NaNRewards:
    """Patches the micro-batches' `rewards` (padded and packed) so the rewards are NaN during `bad_steps`
    (backward then yields NaN gradients, as a real overflow would). `should_stop` tracks the step and
    snapshots the weights after every step; pass it to `train.main`."""

    def __init__(self, monkeypatch, bad_steps, first_step: int = 1):
        self.bad, self.step, self.model = set(bad_steps), first_step, None
        self.snapshots: dict[int, dict[str, torch.Tensor]] = {}
        for layout in (PairBatch, PackedBatch):
            real = layout.rewards

            def rewards(batch, model, _real=real):
                self.model = model
                r = _real(batch, model)
                return r * float("nan") if self.step in self.bad else r

            monkeypatch.setattr(layout, "rewards", rewards)

    def should_stop(self, step: int) -> bool:
        self.snapshots[step] = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.step = step + 1
        return False


# --- 4. non-finite loss --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def skipped_step_run(tmp_path_factory):
    """4 steps; the rewards (hence loss and gradients) of step 2 are NaN."""
    out = tmp_path_factory.mktemp("nonfinite") / "run"
    stdout = io.StringIO()
    with pytest.MonkeyPatch.context() as monkeypatch, contextlib.redirect_stdout(stdout):
        nan = NaNRewards(monkeypatch, bad_steps={2})
        result = train.main(
            parse_config(small_run(out, "--max_steps", "4", "--eval_split_size", "0")), None, nan.should_stop
        )
    return result, out, nan.snapshots, stdout.getvalue()


def test_nonfinite_step_is_skipped_counted_and_leaves_the_weights_alone(skipped_step_run):
    result, out, snapshots, stdout = skipped_step_run
    assert result.nonfinite_steps == 1 and result.steps == 4
    assert "step 2: non-finite loss or gradient" in stdout
    records = read_metrics(out)
    assert [r["nonfinite_steps"] for r in records] == [0, 1, 1, 1]
    assert records[1]["lr"] > 0  # step 2 would have moved the weights had it not been skipped

    assert all(all_finite(s) for s in snapshots.values())
    assert all(torch.equal(snapshots[2][k], snapshots[1][k]) for k in snapshots[1])  # step 2 changed nothing
    assert any(not torch.equal(snapshots[3][k], snapshots[2][k]) for k in snapshots[2])  # step 3 did update
    assert all_finite(weights(out))
    assert math.isfinite(result.train["loss"])


def test_metrics_of_a_skipped_step_are_strict_json(skipped_step_run):
    _, out, _, _ = skipped_step_run

    def reject(constant):
        raise ValueError(f"not JSON: {constant}")

    for line in (out / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=reject)


def test_consecutive_nonfinite_steps_stop_without_a_nonfinite_checkpoint(tmp_path, monkeypatch):
    out = tmp_path / "run"
    args = small_run(out, "--max_steps", "8", "--eval_split_size", "0", "--save_steps", "1")
    nan = NaNRewards(monkeypatch, bad_steps=range(2, 9))
    with pytest.raises(NonFiniteError, match="3 optimizer steps in a row"):
        train.main(parse_config([*args, "--max_nonfinite_steps", "3"]), None, nan.should_stop)
    # steps 2 and 3 were skipped (their checkpoints hold step 1's weights); step 4 raised before saving
    assert checkpoint_steps(out) == [1, 2, 3] and latest(out) == "checkpoint-3"
    for step in (1, 2, 3):
        assert all_finite(weights(out / f"checkpoint-{step}"))
    assert not (out / "model.safetensors").exists()  # no final export


@pytest.mark.filterwarnings("ignore:Detected call of:UserWarning")  # every step skipped: AdamW never stepped
def test_cli_exits_3_with_one_error_line_on_nonfinite_training(tmp_path, monkeypatch, capsys):
    NaNRewards(monkeypatch, bad_steps={1})  # step never advances without should_stop: every step is NaN
    out = tmp_path / "run"
    code = train.cli(small_run(out, "--max_steps", "6", "--eval_split_size", "0", "--max_nonfinite_steps", "2"))
    err = capsys.readouterr().err
    assert code == 3
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines[-1].startswith("error: 2 optimizer steps in a row had a non-finite loss or gradient")
    assert sum(line.startswith("error:") for line in lines) == 1 and "Traceback" not in err
    assert not list(out.glob("checkpoint-*")) and not (out / "model.safetensors").exists()


def test_nonfinite_count_survives_a_resume(tmp_path, monkeypatch):
    base = ["--max_steps", "4", "--eval_split_size", "0"]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    with monkeypatch.context() as m:
        whole = train.main(parse_config(small_run(full, *base)), None, NaNRewards(m, {2}).should_stop)
    with monkeypatch.context() as m:
        nan = NaNRewards(m, {2})
        train.main(parse_config(small_run(resumed, *base)), None, lambda step: nan.should_stop(step) or step == 3)
    with monkeypatch.context() as m:
        nan = NaNRewards(m, {2}, first_step=4)
        cfg = parse_config(small_run(resumed, *base, "--resume_from_checkpoint", "latest"))
        result = train.main(cfg, None, nan.should_stop)
    assert without_timing(read_metrics(resumed)) == without_timing(read_metrics(full))
    assert result.nonfinite_steps == whole.nonfinite_steps == 1
