"""benchmarks/eval_speed.py and benchmarks/profile_step.py on the tiny model, in this process.

Their timings are not checked (they belong to benchmark runs); what the README's tables rely on is:
eval_speed's two paths give the same metrics and the packed one computes fewer positions per pair,
and profile_step accounts for the step (every op's self time in one bucket, counted once, so the
ops fit in the wall time) with the matmuls and the segment attention among them."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from benchmarks import eval_speed, profile_step, serve_bench

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


def test_serve_bench_quick_measures_both_servers_on_every_group_size(tmp_path):
    """benchmarks/serve_bench.py --quick: ours and the OpenRLHF baseline (benchmarks/serve_rm_baseline.py) as
    subprocesses, a row per server and G, every request answered with G rewards; the baseline's rewards are
    the model's own unpadded forward, ours the baseline's."""
    out = tmp_path / "serve.json"
    result = serve_bench.main(["--quick", "--workdir", str(tmp_path / "work"), "--out", str(out)])
    rows = {(r["server"], r["G"]): r for r in result["rows"]}
    assert set(rows) == {(server, g) for server in ("baseline", "ours") for g in (4, 8)}  # --quick: G = 4, 8
    for (server, g), row in rows.items():
        assert row["completions_per_s"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0
        assert row["all_got_G_rewards"] and row["completions"] == 8 * g and not row["errors"]  # 8 requests
        assert row["exit_code"] == 0  # SIGTERM: a clean stop
        assert row["first_line"].startswith(f"reward-serve{'-baseline' if server == 'baseline' else ''}: listening on")
    assert json.loads(out.read_text())["rows"] == result["rows"]

    # The baseline runs every row whole, left-padded: more positions than real tokens, the whole prompt each time;
    # ours computes a group's prompt once: P / G prompt tokens per completion.
    base, ours = rows["baseline", 4], rows["ours", 4]
    assert base["tokens_computed_per_completion"] > base["real_tokens_per_completion"]
    assert base["prompt_tokens_per_completion"] == base["prompt_tokens_mean"] >= 64  # --quick: prompts >= 64 tokens
    assert ours["prompt_tokens_per_completion"] == pytest.approx(base["prompt_tokens_mean"] / 4, abs=0.01)

    # Left padding with OpenRLHF's position ids gives each query's reward as if it ran alone (checked on the
    # first request, whose queries differ in length), and ours scores the same token ids.
    folder = result["folder"]
    model, tokenizer = AutoModelForSequenceClassification.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)
    (first,) = serve_bench.workload(tokenizer, 1, serve_bench.parse_args(["--quick"]), 4)
    texts = serve_bench.queries(first, 4)
    assert len({len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts}) > 1  # padding happened
    with torch.no_grad():
        alone = [model(**tokenizer(t, add_special_tokens=False, return_tensors="pt")).logits.item() for t in texts]
    assert result["rewards"]["baseline"][4][0] == pytest.approx(alone, abs=1e-5)
    assert all(c["max_abs_reward_difference"] < 1e-4 for c in result["comparison"])


def test_ratings_benchmark_trains_trl_on_the_implied_pairs_and_ours_on_the_ratings(tmp_path):
    """benchmarks/vs_trl_ratings.py: TRL gets exactly the pairs the ratings imply (ties give none), as many
    prompts' worth per step as ours; both models are measured on the same held-out rows by one function; ours
    computes each prompt once and no padding, TRL the prompt twice per pair, padded."""
    from benchmarks import vs_trl_ratings

    group = {"prompt": "p", "completions": ["a", "b", "c", "d"], "scores": [2.0, 0.0, 2.0, 1.0]}
    pairs = [(row["chosen"], row["rejected"]) for row in vs_trl_ratings.implied_pair_rows([group])]
    assert pairs == [("a", "b"), ("a", "d"), ("c", "b"), ("c", "d"), ("d", "b")]  # the tie a = c: no pair
    assert vs_trl_ratings.trl_accumulation(8, 4.5, 8) == 4 and vs_trl_ratings.trl_accumulation(1, 4.5, 8) == 1

    argv = ["--num_prompts", "60", "--max_steps", "2", "--repeats", "1", "--threads", "2"]
    result = vs_trl_ratings.main(argv + ["--workdir", str(tmp_path / "work"), "--results_dir", str(tmp_path / "r")])
    trl, ours = result["trl"], result["ours"]
    assert trl["items"] == 2 * trl["trl_pairs_per_step"] == 2 * 8 * trl["trl_accumulation"]  # 2 steps of B x k pairs
    assert ours["prompts"] == 2 * 8 and ours["items"] == ours["sequences"] >= ours["prompts"]  # 2 steps of 8 prompts
    assert trl["sequences"] == 2 * trl["items"]
    assert abs(trl["epochs"] - ours["epochs"]) < 0.5 * ours["epochs"]  # a step holds 8 prompts' worth of pairs
    for key in ("eval_prompts", "eval_completions", "eval_implied_pairs", "train_prompts", "train_implied_pairs"):
        assert trl[key] == ours[key] > 0
    for system in (trl, ours):
        assert 0 <= system["eval_accuracy"] <= 1 and -1 <= system["eval_spearman"] <= 1
    assert ours["positions_run"] == ours["tokens_computed"] < trl["tokens_computed"] < trl["positions_run"]
    assert ours["tokens_computed_per_prompt"] < 0.5 * trl["tokens_computed_per_prompt"]
    (saved,) = (tmp_path / "r").glob("*-ratings-tiny.json")
    assert "command: python benchmarks/vs_trl_ratings.py" in json.loads(saved.read_text())["header"]
