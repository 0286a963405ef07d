"""Every snippet of a saved model's card (README.md) runs as written (only the policy name is swapped for
a local random policy), and the pipeline and PPO-style snippets print the trained reward."""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import save_tiny_policy, train_tiny
from datasets import Dataset
from test_consumers import polite_pairs

from reward.data import CONVERSATIONAL
from reward.eval.model_card import example_of, render_model_card
from reward.eval.scoring import RewardScorer

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
POLICY_LINE = 'policy = "Qwen/Qwen2.5-0.5B-Instruct"  # your policy model'
HAS_TRL = importlib.util.find_spec("trl") is not None


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    return save_tiny_policy(tmp_path_factory.mktemp("policy"))


FORMATS = {
    "trl": {},
    "grpo": {"append_eos": False, "add_special_tokens": False},
    "conversational": {"dataset": "polite", "max_steps": 3},
}


@pytest.fixture(scope="module", params=list(FORMATS))
def model(request, tmp_path_factory):
    options = dict(FORMATS[request.param])
    if options.pop("dataset", None):
        options["dataset"] = Dataset.from_list(polite_pairs(64))
    return request.param, train_tiny(tmp_path_factory.mktemp(request.param) / "rm", **options)


def snippets(folder: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (folder / "README.md").read_text(), re.S)


RUNNER = """
import contextlib, io, json, sys
outputs = []
for code in json.loads(sys.stdin.read()):
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "<snippet>", "exec"), {"__name__": "__main__"})  # a fresh namespace each
    outputs.append(printed.getvalue())
print(json.dumps(outputs))
"""


def run_snippets(code: list[str], cwd: Path) -> list[str]:
    """Each snippet as written, one after the other in one fresh interpreter (one import of torch, not
    one per snippet); returns what each printed."""
    proc = subprocess.run(
        [sys.executable, "-c", RUNNER], input=json.dumps(code), cwd=cwd, capture_output=True, text=True, timeout=900
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def trained_reward(folder: Path, data_format: str | None) -> float:
    """The reward of the card's made-up example (a card quotes no data row by default)."""
    prompt, response = example_of(None, data_format)
    return RewardScorer(folder, device="cpu", show_progress=False).rewards([prompt], [response])[0]


def test_every_snippet_runs_and_the_pipeline_ppo_and_served_ones_print_the_trained_reward(model, policy, tmp_path):
    from reward.serve.cli import start_in_thread

    name, folder = model
    code = snippets(folder)
    assert len(code) == 5  # pipeline, GRPO + RewardFunction, GRPO + folder, PPO-style, served
    assert all(POLICY_LINE in snippet for snippet in code[1:3])
    server = start_in_thread(str(folder))  # the snippet's server, on a free port instead of 8000
    served = code[4].replace("http://127.0.0.1:8000", server.url)
    runnable = [code[0], code[3], served]
    if HAS_TRL:  # the GRPO snippets need the bench extra; the policy is a local random one
        runnable += [snippet.replace(POLICY_LINE, f"policy = {str(policy)!r}") for snippet in code[1:3]]
    try:
        printed = run_snippets(runnable, folder.parent)  # the card names the folder relatively: run beside it
    finally:
        server.stop()
    want = trained_reward(folder, CONVERSATIONAL if name == "conversational" else None)
    for snippet, out in zip(runnable[:3], printed[:3]):
        assert float(out.strip().splitlines()[-1]) == pytest.approx(want, abs=1e-5), snippet
    card = (folder / "README.md").read_text()
    assert "TRL removed `PPOTrainer` after 1.12" in card and "trl<=1.12" in card
    path_note = card.split("### TRL GRPO with the folder\n")[1].split("```")[0]
    if name == "trl":
        assert "**Not GRPO's format** (EOS appended, special tokens added" in path_note
    elif name == "grpo":
        assert "Trained in GRPO's format" in path_note
    else:
        assert "Trained on conversations" in path_note


def test_the_card_quotes_no_data_row_or_absolute_path_unless_a_row_is_asked_for(model):
    from transformers import AutoModelForSequenceClassification

    _, folder = model
    first = json.loads((folder / "heldout_pairs.jsonl").read_text().splitlines()[0])
    chat = isinstance(first["chosen"], list)
    quoted_as = [repr(m["content"] if chat else m) for m in (first["chosen"][-1:] if chat else [first["chosen"]])]
    card = (folder / "README.md").read_text()
    assert not [q for q in quoted_as if q in card]  # no response of the data, as the snippets would quote it
    assert str(folder.parent) not in card and f"({folder.name!r})" in card  # the folder, never its local path

    rm = AutoModelForSequenceClassification.from_pretrained(folder)
    cfg = json.loads((folder / "training_config.json").read_text())
    facts = {"format": CONVERSATIONAL if chat else "explicit prompt", "example": first}
    assert all(q in render_model_card(folder, rm, {**cfg, "card_example_row": True}, facts) for q in quoted_as)
    assert not [q for q in quoted_as if q in render_model_card(folder, rm, cfg, facts)]  # the row: only when asked
