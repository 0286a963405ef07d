"""reward.RewardConfig / reward.RewardTrainer: TRL's reward-modeling recipe runs here as written (only the
import line and the local paths changed), on CPU where TRL's own config stops; the config takes every
field of the installed trl's RewardConfig, with TRL's defaults where we share the option, and each
TRL-only field does what docs/trl.md says (mapped, ignored, or refused with one line)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset

from reward.errors import UserError
from reward.integrations.trainer import RewardTrainer
from reward.integrations.trl_options import (
    DIFFERENT_BEHAVIOUR,
    DIFFERENT_DEFAULTS,
    IGNORED,
    MAPPED,
    REFUSED,
    RewardConfig,
    from_trl_names,
    table,
)
from reward.presets.synthetic import generate_pairs

trl = pytest.importorskip("trl")  # the bench extra, installed by the README's install line
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def base_model_dir(tmp_path_factory) -> Path:
    """A random tiny Llama reward model + tokenizer saved with plain save_pretrained: a 'hub model'."""
    from reward.presets.tiny import build_tiny_tokenizer, tiny_model

    out = tmp_path_factory.mktemp("base")
    tokenizer = build_tiny_tokenizer()
    tiny_model(tokenizer, seed=0).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def pairs_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "pairs.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in generate_pairs(120, seed=0)))
    return path


# --- the guide's snippet ----------------------------------------------------------------------------
def test_trl_guide_snippet_runs_verbatim_and_its_folder_scores_in_the_pipeline(base_model_dir, pairs_file, tmp_path):
    output_dir = str(tmp_path / "Qwen2.5-Reward")
    # ---- TRL's guide, with `from trl import ...` -> `from reward import ...` and local paths ----
    from datasets import load_dataset
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from reward import RewardConfig, RewardTrainer

    model = AutoModelForSequenceClassification.from_pretrained(str(base_model_dir), num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(str(base_model_dir))
    dataset = load_dataset("json", data_files=str(pairs_file), split="train")
    config = RewardConfig(output_dir=output_dir, per_device_train_batch_size=2, num_train_epochs=1, learning_rate=1e-5)
    trainer = RewardTrainer(model=model, args=config, processing_class=tokenizer, train_dataset=dataset)
    trainer.train()
    # ---- end of the snippet ----
    assert trainer.state.global_step == 60  # 120 pairs / 2 per step, one epoch
    records = [json.loads(line) for line in (Path(output_dir) / "metrics.jsonl").read_text().splitlines()]
    assert trainer.state.log_history == records

    from transformers import pipeline

    text = "Name a fruit. Happy to help: mango."
    score = pipeline("text-classification", model=output_dir)(text)[0]["score"]
    trained = trainer.model.eval()  # still on the device it trained on (the GPU, where there is one)
    with torch.no_grad():
        direct = trained(**tokenizer(text, return_tensors="pt").to(trained.device)).logits[0, 0].item()
    assert score == pytest.approx(direct, abs=1e-5)  # the folder is the model that trained

    # TRL's own config stops right there on a CPU machine (bf16 defaults to True)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="bf16"):
            trl.RewardConfig(output_dir=output_dir, per_device_train_batch_size=2, num_train_epochs=1)


# --- RewardConfig against trl's RewardConfig --------------------------------------------------------
def trl_fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(trl.RewardConfig)}


def default_of(f: dataclasses.Field):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


def test_every_trl_field_is_ours_or_mapped_ignored_or_refused_exactly_once():
    ours = {f.name for f in dataclasses.fields(RewardConfig)}
    trl_names = set(trl_fields())
    shared = trl_names & ours
    groups = [set(MAPPED), set(IGNORED), set(REFUSED)]
    assert not any(g & ours for g in groups)  # a TRL-only list never names a field we have
    assert sum(len(g) for g in groups) == len(set().union(*groups))  # each name in one list
    assert set().union(*groups) == trl_names - shared  # and the lists name every TRL-only field
    assert set(DIFFERENT_DEFAULTS) <= shared


def test_shared_fields_have_trls_defaults_unless_listed():
    ours = {f.name: f for f in dataclasses.fields(RewardConfig)}
    same = {name: f for name, f in trl_fields().items() if name in ours and name not in DIFFERENT_DEFAULTS}
    # DIFFERENT_BEHAVIOUR fields are in `same`: their default is TRL's, what it means differs
    differ = {n: (default_of(f), default_of(ours[n])) for n, f in same.items() if default_of(f) != default_of(ours[n])}
    assert differ == {}
    listed = {n: (default_of(trl_fields()[n]), default_of(ours[n])) for n in DIFFERENT_DEFAULTS}
    assert all(a != b for a, b in listed.values()), listed  # each listed one really differs
    assert set(DIFFERENT_BEHAVIOUR) <= set(same)  # those keep TRL's default value
    # bf16: None in both, but TRL's None becomes True (and stops on CPU), ours "where a GPU supports it"
    assert RewardConfig(use_cpu=True).bf16 is False


def test_trl_page_shows_the_table_the_code_prints():
    page = (ROOT / "docs" / "trl.md").read_text()
    printed = table(list(trl_fields()))  # what benchmarks/trl_fields.py prints
    assert printed in page
    assert printed.count("\n") - 1 == len(trl_fields())  # one row per TRL field


def test_trl_unset_spellings_give_our_defaults_and_cpu_gets_fp32():
    cfg = RewardConfig(output_dir="o", debug="", fsdp=None, disable_tqdm=None, pad_to_multiple_of="auto", bf16=None)
    assert (cfg.debug, cfg.fsdp, cfg.disable_tqdm, cfg.pad_to_multiple_of) == (False, False, False, None)
    assert cfg.bf16 is (torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    assert cfg.eval_steps == cfg.logging_steps  # HF: eval_steps None -> logging_steps
    assert RewardConfig("positional").output_dir == "positional"  # HF takes output_dir first


def test_mapped_fields_set_our_options():
    assert RewardConfig(activation_checkpointing=False).gradient_checkpointing is False
    assert RewardConfig(save_strategy="no").save_steps == 0
    assert RewardConfig(save_strategy="steps", save_steps=7).save_steps == 7
    assert RewardConfig(train_sampling_strategy="random").group_by_length is False
    cfg = RewardConfig(warmup_steps=0.25)  # transformers 5: a float in (0, 1) is a ratio
    assert (cfg.warmup_ratio, cfg.warmup_steps) == (0.25, 0)
    assert RewardConfig(warmup_steps=5.0).warmup_steps == 5


def test_ignored_fields_are_accepted_with_any_value():
    cfg = RewardConfig(do_train=True, remove_unused_columns=False, dataloader_num_workers=4, ddp_timeout=60)
    assert cfg == RewardConfig()


@pytest.mark.parametrize(
    "name, value",
    [
        ("deepspeed", "ds.json"),
        ("load_best_model_at_end", True),
        ("save_strategy", "epoch"),
        ("logging_strategy", "epoch"),
        ("label_smoothing_factor", 0.1),
        ("train_sampling_strategy", "sequential"),
    ],
)
def test_refused_fields_are_one_line_errors_naming_the_field(name, value):
    with pytest.raises(UserError, match=f"{name}={value!r} is not supported"):
        RewardConfig(**{name: value})


def test_optim_is_shared_adamw_fused_or_not_and_others_are_one_line_errors():
    assert RewardConfig().optim == default_of(trl_fields()["optim"]) == "adamw_torch_fused"  # HF's default
    assert RewardConfig(optim="adamw_torch").optim == "adamw_torch"
    with pytest.raises(UserError, match="--optim must be one of adamw_torch_fused, adamw_torch"):
        RewardConfig(optim="adafactor")


def test_refused_fields_at_trls_default_are_accepted():
    defaults = {name: default_of(trl_fields()[name]) for name in REFUSED}
    assert from_trl_names(defaults) == {}


def test_unknown_names_and_bad_values_are_one_line_errors():
    with pytest.raises(UserError, match="unknown option 'learning_rat'"):
        RewardConfig(learning_rat=1e-5)
    with pytest.raises(UserError, match="--learning_rate"):
        RewardConfig(learning_rate=5.0)


# --- RewardTrainer ----------------------------------------------------------------------------------
def test_trainer_refuses_what_it_does_not_run():
    with pytest.raises(UserError, match="data_collator: the pairwise collator is ours"):
        RewardTrainer(model="tiny", data_collator=lambda rows: rows)
    with pytest.raises(UserError, match="callbacks"):
        RewardTrainer(model="tiny", callbacks=[object()])


def test_trainer_refuses_models_it_cannot_train(base_model_dir):
    from transformers import AutoConfig, AutoModelForSequenceClassification

    two = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(base_model_dir, num_labels=2))
    with pytest.raises(UserError, match="num_labels=2: a reward model has one output"):
        RewardTrainer(model=two)
    half = AutoModelForSequenceClassification.from_pretrained(str(base_model_dir), num_labels=1, dtype=torch.float16)
    with pytest.raises(UserError, match="float16 weights"):
        RewardTrainer(model=half)
    peft = pytest.importorskip("peft")
    one = AutoModelForSequenceClassification.from_pretrained(str(base_model_dir), num_labels=1)
    wrapped = peft.get_peft_model(one, peft.LoraConfig(task_type=peft.TaskType.SEQ_CLS, target_modules=["q_proj"]))
    with pytest.raises(UserError, match="a peft model: pass the base model with peft_config="):
        RewardTrainer(model=wrapped)
    with pytest.raises(UserError, match="eval_dataset needs a train_dataset"):
        RewardTrainer(model="tiny", eval_dataset=Dataset.from_list(generate_pairs(4, seed=0)))


def test_a_handed_over_model_says_which_loading_options_it_ignores(base_model_dir, tmp_path, capsys):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(str(base_model_dir), num_labels=1)
    args = RewardConfig(output_dir=str(tmp_path / "run"), max_steps=2, disable_tqdm=True, dtype="bfloat16")
    RewardTrainer(model=model, args=args, train_dataset=Dataset.from_list(generate_pairs(40, seed=0))).train()
    assert "--dtype: not applied, the model is already loaded" in capsys.readouterr().out


def test_peft_config_becomes_our_lora_options():
    peft = pytest.importorskip("peft")
    config = peft.LoraConfig(task_type=peft.TaskType.SEQ_CLS, r=8, lora_alpha=32, lora_dropout=0.1)
    args = RewardTrainer(model="tiny", args=RewardConfig(output_dir="o"), peft_config=config).args
    assert (args.use_peft, args.lora_r, args.lora_alpha, args.lora_target_modules) == (True, 8, 32, ["default"])
    assert args.lora_dropout == 0.0  # TRL's disable_dropout zeroes the adapters' dropout too
    with pytest.raises(UserError, match="use_dora"):
        RewardTrainer(model="tiny", peft_config=peft.LoraConfig(use_dora=True))
    with pytest.raises(UserError, match="rank_pattern"):
        RewardTrainer(model="tiny", peft_config=peft.LoraConfig(rank_pattern={"q_proj": 4}))
    with pytest.raises(UserError, match="a regular expression"):
        RewardTrainer(model="tiny", peft_config=peft.LoraConfig(target_modules=".*q_proj"))


def test_evaluate_before_and_after_training_with_one_or_many_eval_sets(tmp_path):
    rows = Dataset.from_list(generate_pairs(160, seed=1))
    held = Dataset.from_list(generate_pairs(40, seed=2))
    other = Dataset.from_list(generate_pairs(24, seed=3))
    args = RewardConfig(
        output_dir=str(tmp_path / "run"), max_steps=12, learning_rate=1e-3, disable_tqdm=True, eval_strategy="steps"
    )
    trainer = RewardTrainer(model="tiny", args=args, train_dataset=rows, eval_dataset={"a": held, "b": other})
    before = trainer.evaluate()
    assert (before["eval_a_pairs"], before["eval_b_pairs"]) == (40, 24)
    output = trainer.train()
    assert output.global_step == 12 and output.training_loss == pytest.approx(output.metrics["train_loss"])
    after = trainer.evaluate()
    assert after["eval_a_loss"] != pytest.approx(before["eval_a_loss"], abs=1e-4)  # the trained model is evaluated
    # during training every set is evaluated on the schedule, under TRL's names; at the last step the
    # numbers are evaluate()'s
    final = [r for r in trainer.state.log_history if r.get("step") == 12 and "eval_a_loss" in r][0]
    assert final["eval_a_loss"] == pytest.approx(after["eval_a_loss"], abs=1e-6)
    assert final["eval_b_loss"] == pytest.approx(after["eval_b_loss"], abs=1e-6)
    assert "eval_loss" not in final
    assert output.metrics["eval_loss"] == pytest.approx(after["eval_a_loss"], abs=1e-6)  # the first set's
    single = RewardTrainer(model=trainer.model, args=args, processing_class=trainer.processing_class)
    assert single.evaluate(other)["eval_loss"] == pytest.approx(after["eval_b_loss"], abs=1e-6)
    # a Dataset is its own split, whatever --dataset_train_split names in the training data
    args = RewardConfig(output_dir=str(tmp_path / "other"), dataset_train_split="mine", disable_tqdm=True)
    renamed = RewardTrainer(model=trainer.model, args=args, processing_class=trainer.processing_class)
    assert renamed.evaluate(other)["eval_loss"] == pytest.approx(after["eval_b_loss"], abs=1e-6)


def test_save_model_writes_a_folder_the_pipeline_scores_like_the_run_folder(tmp_path):
    from transformers import pipeline

    args = RewardConfig(output_dir=str(tmp_path / "run"), max_steps=4, disable_tqdm=True, synthetic_num_pairs=200)
    trainer = RewardTrainer(model="tiny", args=args)  # no train_dataset: args.dataset_name (the generated task)
    trainer.train()
    copy = trainer.save_model(str(tmp_path / "copy"))
    text = "Name a fruit. Happy to help: mango."
    run_score = pipeline("text-classification", model=str(tmp_path / "run"))(text)[0]["score"]
    copy_score = pipeline("text-classification", model=str(copy))(text)[0]["score"]
    assert copy_score == pytest.approx(run_score, abs=1e-6)
    saved = json.loads((copy / "config.json").read_text())
    assert "reward_format" in saved and "reward_stats" in saved and (copy / "README.md").exists()


def test_evaluate_drops_pairs_past_the_models_positions_as_training_does(tmp_path, capsys):
    """evaluate() is a scoring path too: a pair longer than a BERT's positions is dropped and counted (training's
    rule), not an embedding crash ("expanded size ... must match")."""
    from conftest import save_encoder

    folder = save_encoder(tmp_path / "bert", "bert", max_positions=16)
    short = [{"prompt": f"Q{i}:", "chosen": " yes", "rejected": " no"} for i in range(4)]
    long = [{"prompt": "Q: " + "word " * 30, "chosen": " yes", "rejected": " no"}]
    trainer = RewardTrainer(model=str(folder), args=RewardConfig(output_dir=str(tmp_path / "run"), use_cpu=True))
    metrics = trainer.evaluate(Dataset.from_list(short + long))
    assert metrics["eval_pairs"] == 4
    assert "evaluate(): dropped 1 pairs longer than the 16 positions the model has" in capsys.readouterr().out
