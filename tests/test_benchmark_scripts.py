"""benchmarks/eval_speed.py and benchmarks/profile_step.py on the tiny model, in this process.

Their timings are not checked (they belong to benchmark runs); what the README's tables rely on is:
eval_speed's two paths give the same metrics and the packed one computes fewer positions per pair,
and profile_step accounts for the step (every op's self time in one bucket, counted once, so the
ops fit in the wall time) with the matmuls and the segment attention among them."""

from __future__ import annotations

import json

import pytest

from benchmarks import eval_speed, profile_step

pytestmark = pytest.mark.slow  # builds and loads models, calibrates the matmul rate


def test_eval_speed_paths_agree_and_packing_computes_less(tmp_path):
    result = eval_speed.main(
        ["--model", "tiny", "--num_pairs", "80", "--repeats", "1", "--threads", "2"]
        + ["--workdir", str(tmp_path / "work"), "--results_dir", str(tmp_path / "results")]
    )
    assert result["pairs"] == 8  # 10 % of the generated pairs are the held-out set
    for what in ("evaluate", "score.py"):
        assert result[what]["max_metric_difference"] <= 1e-5
        assert result[what]["speedup"] > 0
    # the prompt once per pair and no padding: fewer positions than the padded batches run
    assert result["packed_tokens_per_pair"] < 0.8 * result["padded_positions_per_pair"]
    assert all(len(seconds) == 1 for seconds in result["seconds"].values())
    (saved,) = (tmp_path / "results").glob("*-eval-tiny.json")
    on_disk = json.loads(saved.read_text())
    assert on_disk["evaluate"] == result["evaluate"] and "command: python benchmarks/eval_speed.py" in on_disk["header"]


@pytest.mark.parametrize("padded", [False, True], ids=["packed", "padded"])
def test_profile_accounts_for_the_whole_step(tmp_path, padded):
    argv = ["--model", "tiny", "--batch_size", "4", "--warmup", "1", "--steps", "1", "--workdir", str(tmp_path)]
    argv += ["--results_dir", str(tmp_path / "results")]
    result = profile_step.main(argv + (["--padded"] if padded else []))
    buckets = result["buckets"]
    assert set(buckets) <= {name for name, _ in profile_step.BUCKETS} | {
        "other element-wise",
        "Python, collator, dispatch (not in any op)",
    }
    assert buckets["linear (matmul)"] > 0 and buckets["attention"] > 0
    # self times count each microsecond once, in the op that spent it: together they fit in the wall time
    ops = sum(s for name, s in buckets.items() if not name.startswith("Python"))
    assert 0 < ops <= result["wall"]
    assert 0 < result["true_linear_utilisation"] < result["true_utilisation"] < 1.5  # rates over a measured ceiling
    # the ceiling is read before the timed steps and after each one (argv: 1 step), the highest reading used
    assert len(result["matmul_flops"]) == 2 and all(r > 0 for r in result["matmul_flops"])
    assert 0 < result["matmul_share_of_ceiling"] < 1.5
    (saved,) = (tmp_path / "results").glob("*-profile-tiny*.json")
    assert json.loads(saved.read_text())["matmul_flops"] == result["matmul_flops"]
    top_names = [name for name, _, _ in result["top"]]
    assert any("scaled_dot_product" in name for name in top_names)
