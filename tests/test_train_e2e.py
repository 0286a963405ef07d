"""End to end: train.py and score.py as subprocesses, main(cfg) from Python, and CLI errors."""

import json
import random
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import read_metrics
from datasets import Dataset
from safetensors.torch import load_file

import train
from reward.config import parse_config
from reward.presets.synthetic import length_stats

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str], timeout: int = 600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_default_run_learns_the_task_and_scores(tmp_path):
    """`python train.py` (the embedded default, only the output dir moved) reaches >= 90 % held-out."""
    out = tmp_path / "default"
    proc = run(["train.py", "--output_dir", str(out), "--disable_tqdm"])
    assert "format: explicit prompt" in proc.stdout
    assert re.search(r"pairs kept: train \d+ \(dropped 0", proc.stdout)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "training_config.json", "README.md"):
        assert (out / name).exists(), name
    final = read_metrics(out)[-1]
    assert final["eval_accuracy"] >= 0.90, final
    assert {"step", "loss", "accuracy", "margin", "lr", "grad_norm", "pairs_per_s", "tokens_per_s"} <= set(final)

    # the printed scoring command works as printed and agrees with the training-time eval
    command = proc.stdout.split("score with: ", 1)[1].splitlines()[0]
    scored = run(shlex.split(command)[1:] + ["--output", str(tmp_path / "scored.jsonl")])
    accuracy = float(re.search(r"accuracy ([0-9.]+)", scored.stdout).group(1))
    assert accuracy == pytest.approx(final["eval_accuracy"], abs=1e-4)
    rows = [json.loads(line) for line in (tmp_path / "scored.jsonl").read_text().splitlines()]
    assert len(rows) == final["eval_pairs"]
    assert sum(r["r_chosen"] > r["r_rejected"] for r in rows) / len(rows) == pytest.approx(accuracy, abs=1e-4)

    # the printed consumer check: every consumer within 1e-4 of training, or named with the option that fixes it
    command = proc.stdout.split("check what GRPO, RewardBench, PPO and the pipeline see: ", 1)[1].splitlines()[0]
    check = run(shlex.split(command)[1:]).stdout
    lines = check.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("consumer ") and line.endswith("verdict"))
    fixes = lines[lines.index("what to change:") + 1 :]
    for line in lines[header + 1 : lines.index("what to change:")]:
        assert line.endswith("same as training") or re.search(r"DIFFERS \(fix \d+ below\)$", line), line
    assert len(fixes) == check.count("DIFFERS (fix") == 4  # GRPO, 2 x RewardBench, a rollout cut before EOS
    assert all(re.search(r"--(append_eos|add_special_tokens|text_as_chat) ", fix) for fix in fixes), fixes


def lexical_pairs(n: int, seed: int) -> list[dict]:
    """An easy conversational task: the chosen reply is polite. Learned in a few dozen steps."""
    rng = random.Random(seed)
    topics = ["the weather", "a recipe", "my code", "the news", "a poem", "the train times"]
    rows = []
    for _ in range(n):
        question = [{"role": "user", "content": f"Can you help with {rng.choice(topics)}?"}]
        polite = rng.choice(["Thank you for asking, happy to help.", "Of course, with pleasure."])
        rude = rng.choice(["No. Figure it out yourself.", "Not my problem, go away now."])
        rows.append(
            {
                "prompt": question,
                "chosen": [{"role": "assistant", "content": polite}],
                "rejected": [{"role": "assistant", "content": rude}],
            }
        )
    return rows


@pytest.mark.slow
def test_small_conversational_run_with_every_training_feature(tmp_path):
    data = tmp_path / "polite.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in lexical_pairs(240, seed=0)))
    out = tmp_path / "run"
    proc = run(
        [
            "train.py",
            "--dataset_name",
            str(data),
            "--output_dir",
            str(out),
            "--max_steps",
            "24",
            "--per_device_train_batch_size",
            "8",
            "--gradient_accumulation_steps",
            "2",
            "--learning_rate",
            "1e-3",
            "--bf16",
            "--gradient_checkpointing",
            "--save_steps",
            "12",
            "--eval_steps",
            "12",
            "--logging_steps",
            "6",
            "--lr_scheduler_type",
            "cosine",
            "--warmup_steps",
            "3",
            "--disable_tqdm",
        ]
    )
    assert "format: conversational" in proc.stdout and "bf16 autocast" in proc.stdout
    records = read_metrics(out)
    assert [r["step"] for r in records if "loss" in r] == [6, 12, 18, 24]
    assert records[-1]["eval_accuracy"] >= 0.9
    assert (out / "checkpoint-12" / "model.safetensors").exists()
    scored = run(["score.py", "--model", str(out), "--input", str(data)])
    assert float(re.search(r"accuracy ([0-9.]+)", scored.stdout).group(1)) >= 0.9


@pytest.mark.slow
def test_main_is_callable_with_a_dataset_and_a_config_file(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(f"output_dir: {tmp_path / 'out'}\nmax_steps: 50\nlearning_rate: 0.5\nlogging_steps: 5\n")
    cfg = parse_config(["--config", str(config), "--learning_rate", "1e-3", "--disable_tqdm"])
    assert (cfg.max_steps, cfg.learning_rate, cfg.logging_steps) == (50, 1e-3, 5)  # flags win over the file
    cfg.max_steps = 6
    result = train.main(cfg, dataset=Dataset.from_list(lexical_pairs(40, seed=1)))
    assert result.steps == 6 and result.eval is not None and result.eval["pairs"] == 4
    assert json.loads((tmp_path / "out" / "training_config.json").read_text())["learning_rate"] == 1e-3


@pytest.mark.parametrize(
    "args, message",
    [
        (["--bf16", "--fp16"], "mutually exclusive"),
        (["--per_device_train_batch_size", "0"], "batch sizes must be >= 1"),
        (["--learning_rate", "-1"], "--learning_rate"),
        (["--dataset_name", "./missing.jsonl"], "missing.jsonl: no such file"),
    ],
)
def test_bad_options_are_one_clear_line(args, message, tmp_path, capsys):
    assert train.cli([*args, "--output_dir", str(tmp_path / "x"), "--disable_tqdm"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU error")
def test_fp16_without_cuda_is_a_clear_error(tmp_path, capsys):
    assert train.cli(["--fp16", "--output_dir", str(tmp_path / "x")]) == 2
    assert "--fp16 needs a CUDA GPU" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fp16_with_grad_scaler_on_cuda(tmp_path):
    cfg = parse_config(["--fp16", "--max_steps", "5", "--output_dir", str(tmp_path / "o"), "--disable_tqdm"])
    result = train.main(cfg, dataset=Dataset.from_list(lexical_pairs(40, seed=2)))
    assert torch.isfinite(torch.tensor(result.train["loss"]))


def test_generated_task_is_not_solved_by_length():
    from reward.presets.synthetic import generate_pairs

    rows = generate_pairs(12000)
    assert 0.45 <= length_stats(rows) <= 0.55
    assert generate_pairs(50, seed=3) == generate_pairs(50, seed=3)


@pytest.mark.slow
def test_train_draws_its_curves(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "curves.png"
    cfg = parse_config(
        [
            "--output_dir",
            str(tmp_path / "o"),
            "--max_steps",
            "4",
            "--logging_steps",
            "1",
            "--eval_steps",
            "2",
            "--plot_curves",
            str(png),
            "--disable_tqdm",
        ]
    )
    train.main(cfg, dataset=Dataset.from_list(lexical_pairs(40, seed=4)))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="torch.compile on CPU needs a C compiler")
def test_torch_compile_gives_the_eager_losses_and_checkpoint(tmp_path):
    """--torch_compile is a speed option only: same per-step losses as eager, same checkpoint names."""

    def run_with(extra: list[str]) -> tuple[list[float], dict[str, torch.Tensor]]:
        out = tmp_path / ("compiled" if extra else "eager")
        cfg = parse_config(
            [
                "--output_dir",
                str(out),
                "--max_steps",
                "3",
                "--logging_steps",
                "1",
                "--per_device_train_batch_size",
                "4",
                "--eval_strategy",
                "no",
                "--padding_free",
                "false",
                "--share_prefix",
                "false",
                "--disable_tqdm",
                *extra,
            ]
        )
        train.main(cfg, dataset=Dataset.from_list(lexical_pairs(24, seed=5)))
        return [r["loss"] for r in read_metrics(out)], load_file(out / "model.safetensors")

    # dynamo's own counters (what torch's tests read): graphs captured since the last clear
    from torch._dynamo.utils import counters

    counters.clear()
    eager_losses, eager_weights = run_with([])
    assert counters["stats"]["unique_graphs"] == 0
    compiled_losses, compiled_weights = run_with(["--torch_compile"])
    assert counters["stats"]["unique_graphs"] > 0 and counters["frames"]["ok"] > 0  # something was compiled
    assert compiled_losses == pytest.approx(eager_losses, abs=1e-5)
    assert compiled_weights.keys() == eager_weights.keys()  # no "_orig_mod." prefixes
    assert max((compiled_weights[k] - eager_weights[k]).abs().max().item() for k in eager_weights) < 1e-4
