"""LoRA (`--use_peft`): what is trained, the merged export loaded without peft, the adapter folder,
exact resume from a LoRA checkpoint, and the one-line errors. Tiny model, CPU, a few steps each."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import small_run
from safetensors.torch import load_file
from transformers import AutoModelForSequenceClassification

import reward.collate
import reward.finetune.lora
import reward.recipe as recipe
import train
from reward.config import TrainConfig, parse_config
from reward.errors import UserError
from reward.finetune.lora import ADAPTER_DIR, adapter_to_resume, add_lora, save_lora_model
from reward.formatting import format_text
from reward.loop import build_optimizer
from reward.model import compute_rewards
from reward.presets.synthetic import generate_pairs
from reward.presets.tiny import build_tiny_tokenizer, tiny_model
from reward.run.checkpoints import STATE_FILE

peft = pytest.importorskip("peft")
pytestmark = pytest.mark.usefixtures("quiet_datasets", "one_torch_thread")  # conftest.py

BACKBONE_LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

# the exported folder must load with no peft at all: `import peft` fails in this process
PIPELINE_WITHOUT_PEFT = """
import json, sys
sys.modules["peft"] = None
from transformers import pipeline
texts = json.loads(sys.stdin.read())
rm = pipeline("text-classification", model=sys.argv[1], device="cpu")
print(json.dumps([rm(t)[0]["score"] for t in texts]))
"""


def texts_and_ids(tokenizer, n: int = 4) -> tuple[list[str], dict[str, torch.Tensor]]:
    """Formatted strings (as the pipeline gets them) and the same texts right-padded (as training sees them)."""
    rows = generate_pairs(n, seed=11)
    texts = [format_text(r["prompt"] + r[side], tokenizer) for r in rows for side in ("chosen", "rejected")]
    assert tokenizer.padding_side == "right"
    return texts, dict(tokenizer(texts, padding=True, return_tensors="pt"))  # (2n, T) each


@torch.no_grad()
def rewards_of(model, batch: dict[str, torch.Tensor]) -> list[float]:
    model.eval()
    return compute_rewards(model, batch["input_ids"], batch["attention_mask"]).tolist()  # (N,)


def lora_options(out: Path, *extra: str) -> list[str]:
    """conftest's tiny run with LoRA on, on the CPU."""
    return ["--use_peft", *small_run(out, "--use_cpu", *extra)]


# --- 1. what is trained ----------------------------------------------------------------------------
def test_only_adapters_and_the_score_head_train(tmp_path):
    tokenizer = build_tiny_tokenizer()
    cfg = TrainConfig(use_peft=True, learning_rate=1e-2)
    model = add_lora(tiny_model(tokenizer, seed=0), cfg)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_A." in n or ".lora_B." in n or ".score.modules_to_save." in n for n in trainable)
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable if ".lora_" in n}
    assert adapted == set(BACKBONE_LINEARS)  # all-linear: every Linear of the backbone, not the head
    assert not any("score" in n and ".lora_" in n for n in trainable)
    optimizer = build_optimizer(model, cfg)  # frozen weights get no AdamW state
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(trainable)

    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    head = model.get_base_model().score.modules_to_save["default"].weight
    head_before = head.detach().clone()
    _, batch = texts_and_ids(tokenizer)
    for _ in range(2):  # B = 0 at init: the second step is the first to move A
        rewards = compute_rewards(model, batch["input_ids"], batch["attention_mask"])  # (8,)
        loss = -torch.nn.functional.logsigmoid(rewards[::2] - rewards[1::2]).sum()  # chosen, rejected alternate
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    assert not torch.equal(head, head_before)  # the head itself is trained, in full
    assert all(p.abs().sum() > 0 for n, p in model.named_parameters() if ".lora_B." in n)  # adapters moved off 0
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)  # backbone untouched

    # the export merges a copy: the training model keeps its adapters and its exact weights
    before = {k: v.clone() for k, v in model.state_dict().items()}
    save_lora_model(model, tokenizer, tmp_path / "export", cfg.to_dict())
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert isinstance(model, peft.PeftModel)


# --- 2 and 3. the merged export, without peft, and the adapter alone --------------------------------
@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    """One 4-step --use_peft run with the default batching (packed where the model allows it), and a
    checkpoint at step 2; the trained PeftModel is kept for comparison."""
    out = tmp_path_factory.mktemp("lora") / "run"
    kept = {}
    real_add_lora = recipe.add_lora

    def keep(*args):
        kept["model"] = real_add_lora(*args)
        return kept["model"]

    recipe.add_lora = keep
    try:
        cfg = parse_config(lora_options(out, "--max_steps", "4", "--save_steps", "2", "--learning_rate", "1e-2"))
        train.main(cfg)
    finally:
        recipe.add_lora = real_add_lora
    return out, kept["model"]


@pytest.mark.slow
def test_merged_export_loads_without_peft_and_scores_as_the_adapted_model(lora_run):
    out, model = lora_run
    tokenizer = build_tiny_tokenizer()
    texts, batch = texts_and_ids(tokenizer)
    adapted = rewards_of(model, batch)
    base = rewards_of(tiny_model(tokenizer, seed=42), batch)  # what training started from
    assert adapted != pytest.approx(base, abs=1e-3)  # the adapters changed something: the test is not trivial

    proc = subprocess.run(
        [sys.executable, "-c", PIPELINE_WITHOUT_PEFT, str(out)],
        input=json.dumps(texts),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == pytest.approx(adapted, abs=1e-5)

    # the folder is the plain base architecture: no peft traces in the config or the weight names
    config_text = (out / "config.json").read_text()
    assert "peft" not in config_text.lower() and "lora" not in config_text.lower()
    assert json.loads(config_text)["architectures"] == ["LlamaForSequenceClassification"]
    config = json.loads(config_text)  # the merged copy keeps what the run recorded
    assert config["reward_format"]["append_eos"] is True and config["reward_stats"]["std"] > 0
    plain = set(tiny_model(tokenizer).state_dict())
    assert set(load_file(out / "model.safetensors")) == plain


@pytest.mark.parametrize("folder", ["", "checkpoint-2"], ids=["final", "checkpoint"])
def test_adapter_folder_on_the_base_reproduces_the_merged_model(lora_run, folder):
    out = lora_run[0] / folder
    adapter = out / ADAPTER_DIR
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    tokenizer = build_tiny_tokenizer()
    _, batch = texts_and_ids(tokenizer)
    base = tiny_model(tokenizer, seed=42)  # the run's base; its random score head must be replaced
    with_adapter = rewards_of(peft.PeftModel.from_pretrained(base, adapter), batch)
    merged = rewards_of(AutoModelForSequenceClassification.from_pretrained(out), batch)
    assert with_adapter == pytest.approx(merged, abs=1e-5)


# --- 4. exact resume ------------------------------------------------------------------------------
def test_stopped_and_resumed_lora_run_equals_the_uninterrupted_run(tmp_path):
    k = 2
    extra = [
        "--max_steps",
        str(2 * k),
        "--per_device_train_batch_size",
        "4",
        "--gradient_accumulation_steps",
        "2",
        "--save_steps",
        "1",
        "--eval_steps",
        "2",
        "--learning_rate",
        "1e-2",
        "--padding_free",
        "false",
        "--share_prefix",
        "false",
    ]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    whole = train.main(parse_config(lora_options(full, *extra)))
    stopped = train.main(parse_config(lora_options(resumed, *extra)), should_stop=lambda step: step == k)
    assert stopped.stopped and stopped.steps == k
    # the checkpoint's weights are merged, so resuming must rebuild base + adapter (not adapt the merged W)
    result = train.main(parse_config(lora_options(resumed, *extra, "--resume_from_checkpoint", "latest")))
    assert result.steps == 2 * k
    assert (result.train, result.eval) == (whole.train, whole.eval)

    for name in ("model.safetensors", f"{ADAPTER_DIR}/adapter_model.safetensors"):
        a, b = load_file(full / name), load_file(resumed / name)
        assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a), name
    state_a = torch.load(full / f"checkpoint-{2 * k}" / STATE_FILE, weights_only=True)
    state_b = torch.load(resumed / f"checkpoint-{2 * k}" / STATE_FILE, weights_only=True)
    for param, moments in state_a["optimizer"]["state"].items():
        assert all(torch.equal(v, state_b["optimizer"]["state"][param][m]) for m, v in moments.items())


def test_lora_and_full_checkpoints_are_not_mixed(tmp_path):
    (tmp_path / "checkpoint-1" / ADAPTER_DIR).mkdir(parents=True)
    with pytest.raises(UserError, match="resume it with the same --use_peft"):
        adapter_to_resume(tmp_path / "checkpoint-1", use_peft=False)
    (tmp_path / "checkpoint-2").mkdir()
    with pytest.raises(UserError, match="not saved by a --use_peft run"):
        adapter_to_resume(tmp_path / "checkpoint-2", use_peft=True)
    assert adapter_to_resume(None, use_peft=True) is None


# --- 5. errors -------------------------------------------------------------------------------------
def test_missing_peft_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "peft", None)  # `import peft` now raises ImportError
    assert train.cli(["--use_peft", "--output_dir", str(tmp_path / "x"), "--disable_tqdm"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --use_peft needs the peft extra: pip install") and "Traceback" not in err
    assert err.count("\n") == 1
    with pytest.raises(UserError):
        reward.finetune.lora.require_peft()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--lora_r", "0"], "--lora_r must be >= 1"),
        (["--lora_alpha", "0"], "--lora_alpha must be > 0"),
        (["--lora_dropout", "1"], "--lora_dropout must be in [0, 1)"),
        (["--lora_target_modules", "all-linear,q_proj"], "cannot be combined"),
    ],
)
def test_bad_lora_options_are_one_clear_line(args, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        parse_config(["--use_peft", *args])


def test_target_modules_by_name_comma_or_space_separated():
    assert parse_config(["--lora_target_modules", "q_proj,v_proj"]).lora_target_modules == ["q_proj", "v_proj"]
    assert parse_config(["--lora_target_modules", "q_proj", "v_proj"]).lora_target_modules == ["q_proj", "v_proj"]
    model = add_lora(tiny_model(build_tiny_tokenizer()), TrainConfig(lora_target_modules=["q_proj", "v_proj"]))
    adapted = {n.split(".lora_")[0].rsplit(".", 1)[-1] for n, p in model.named_parameters() if ".lora_A." in n}
    assert adapted == {"q_proj", "v_proj"}
    with pytest.raises(UserError, match="--lora_target_modules nope"):
        add_lora(tiny_model(build_tiny_tokenizer()), TrainConfig(lora_target_modules=["nope"]))


def test_packed_forward_of_a_lora_model_equals_its_padded_forward(tiny_tokenizer):
    """Packing and the shared prefix run through the LoRA-injected backbone: same rewards and gradients."""
    from reward.fast.packed_forward import forward_counts, supports_packing
    from reward.fast.packing import pack_pairs, packed_rewards

    model = add_lora(tiny_model(tiny_tokenizer, seed=0), parse_config(["--use_peft"]))
    with torch.no_grad():  # B starts at 0: make the adapters matter
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    assert supports_packing(model)
    pad = tiny_tokenizer.pad_token_id
    rows = generate_pairs(6, seed=3)
    pairs = [
        {
            side + "_ids": tiny_tokenizer(format_text(r["prompt"] + r[side], tiny_tokenizer))["input_ids"]
            for side in ("chosen", "rejected")
        }
        for r in rows
    ]

    def rewards_and_grads(fn):
        model.zero_grad(set_to_none=True)
        rewards = torch.cat(fn())
        rewards.sum().backward()
        return rewards.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    def padded():
        batch = reward.collate.PairwiseCollator(pad)(pairs)
        return compute_rewards(model, batch.input_ids, batch.attention_mask).chunk(2)

    want, want_grads = rewards_and_grads(padded)
    got, grads = rewards_and_grads(lambda: packed_rewards(model, pack_pairs(pairs, pad)))
    assert (got - want).abs().max() <= 1e-5
    assert grads.keys() == want_grads.keys() and any("lora_A" in n for n in grads)
    assert max((grads[n] - want_grads[n]).abs().max().item() for n in grads) <= 1e-5
    assert forward_counts(model) == {"packed": 1, "padded": 0}  # the packed side ran packed
