"""A real `trl.GRPOTrainer` (CPU, a tiny random policy, one step) scored by a running reward server through
`reward.RemoteRewardFunction`: the rewards GRPO computes equal score.py's for the same prompt + completion,
with one server and spread over two; and the README's three commands (train, serve, one GRPO step)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_grpo import PROMPTS, THIRD_PARTY, run_grpo, score_py_rewards

from reward import RemoteRewardFunction

pytest.importorskip("trl", reason="needs the bench extra: pip install -e '.[bench]'")
pytest.importorskip("fastapi", reason="needs the serve extra: pip install -e '.[serve]'")
from reward.serve.cli import start_in_thread  # noqa: E402

pytestmark = [pytest.mark.slow, *THIRD_PARTY]
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(trained_tiny_dir) -> Path:
    return trained_tiny_dir


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    from conftest import save_tiny_policy

    return save_tiny_policy(tmp_path_factory.mktemp("policy"))


@pytest.mark.parametrize("servers", [1, 2])
def test_grpo_rewards_from_the_server_equal_score_py(policy, model_dir, tmp_path, servers):
    running = [start_in_thread(str(model_dir)) for _ in range(servers)]
    try:
        remote = RemoteRewardFunction([server.url for server in running])
        prompts, completions, rewards, logged = run_grpo(policy, [remote], PROMPTS[:2], tmp_path / "grpo")
    finally:
        for server in running:
            server.stop()
    expected = score_py_rewards(model_dir, prompts, completions, tmp_path)
    assert len(rewards) == 4 and max(abs(a - b) for a, b in zip(rewards, expected)) <= 1e-5
    assert logged["reward"] == pytest.approx(sum(rewards) / len(rewards), abs=1e-5)
    assert "rewards/remote_reward/mean" in logged  # TRL names the metric after the function's __name__


def test_the_readme_three_commands(model_dir):
    """`python train.py` is `train_tiny` here; then `reward-serve --model DIR` and `python -m
    python examples/grpo_step.py` as the README gives them, each a process of its own."""
    server = subprocess.Popen(
        [sys.executable, "-m", "reward.serve", "--model", str(model_dir), "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        url = re.search(r"listening on (http://\S+)", server.stdout.readline()).group(1)
        step = subprocess.run(
            [sys.executable, "examples/grpo_step.py", "--reward_url", url],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        server.terminate()
        assert server.wait(30) == 0
    assert step.returncode == 0, step.stderr[-3000:]
    lines = step.stdout.splitlines()
    assert sum(bool(re.match(r"^[+-]\d\.\d{4}  '", line)) for line in lines) == 8  # 2 prompts x 4 completions
    assert f"GRPO step done: 8 completions scored by {url}" in lines[-1]
