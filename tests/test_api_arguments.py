"""Every argument of RewardTrainer's API is checked where it is given (issue #28, item 5): a wrong type or value
is one UserError naming the argument, what it accepts and what it got, raised before anything loads or is
written; nothing is silently ignored (a list eval_dataset was never evaluated), streaming datasets are
refused plainly, and a model without a one-score head (a causal LM, a base model) is refused before training,
by the trainer and by the recipe's own check (reward/model.py `trainable_problem`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import Dataset, DatasetDict, IterableDatasetDict
from transformers import (
    GPT2Config,
    GPT2ForSequenceClassification,
    LlamaForCausalLM,
    LlamaForSequenceClassification,
    LlamaModel,
    TrainingArguments,
)

from reward.errors import UserError
from reward.integrations.trainer import RewardTrainer
from reward.integrations.trl_options import RewardConfig
from reward.model import trainable_problem
from reward.presets.synthetic import generate_pairs
from reward.presets.tiny import build_tiny_tokenizer, tiny_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def rows(n: int = 8) -> Dataset:
    return Dataset.from_list(generate_pairs(n, seed=0))


def trl_config():
    trl = pytest.importorskip("trl")
    return trl.RewardConfig(output_dir="o", bf16=False, use_cpu=True)


def processor():
    from transformers import CLIPImageProcessor, LlavaProcessor

    return LlavaProcessor(image_processor=CLIPImageProcessor(), tokenizer=build_tiny_tokenizer())


def lora_dict():
    pytest.importorskip("peft")
    return {"r": 8}


def sgd():
    return (torch.optim.SGD(torch.nn.Linear(2, 1).parameters(), lr=0.1), None)


# (argument, a hostile value (built lazily: some need an optional package), what the message must say)
HOSTILE = [
    ("model", lambda: torch.nn.Linear(2, 1), r"model=\.\.\.\): a PreTrainedModel .* got torch\.Linear"),
    ("model", lambda: 42, r"model=\.\.\.\): a PreTrainedModel .* got int"),
    ("model", lambda: "", r"model=\.\.\.\): an empty name"),
    ("args", lambda: {"output_dir": "o"}, r"args=\.\.\.\): a reward\.RewardConfig .* got dict \(build one with"),
    ("args", lambda: TrainingArguments("o"), r"args=\.\.\.\): .* got transformers\.TrainingArguments .*from reward"),
    ("args", trl_config, r"args=\.\.\.\): a reward\.RewardConfig .* got trl\.RewardConfig \(from reward import"),
    ("processing_class", lambda: "tiny", r"processing_class=\.\.\.\): a transformers tokenizer .* got str"),
    ("processing_class", processor, r"processing_class=\.\.\.\): .* got transformers\.LlavaProcessor .* its tokenizer"),
    ("processing_class", lambda: build_tiny_tokenizer().backend_tokenizer, r"got tokenizers\.Tokenizer .*wrap it"),
    ("train_dataset", lambda: generate_pairs(8), r"train_dataset=\.\.\.\): a datasets\.Dataset.* got list .*from_list"),
    ("train_dataset", lambda: rows().to_pandas(), r"train_dataset=\.\.\.\): .* got pandas\.DataFrame .*from_pandas"),
    ("train_dataset", lambda: "pairs.jsonl", r"train_dataset=\.\.\.\): .* got str .*args\.dataset_name"),
    ("train_dataset", lambda: rows().to_iterable_dataset(), r"train_dataset=\.\.\.\): streaming datasets are not"),
    ("train_dataset", lambda: DatasetDict({"other": rows()}), r"train_dataset=\.\.\.\): .* no 'train' split .*'other'"),
    ("train_dataset", lambda: Dataset.from_list([]), r"train_dataset=\.\.\.\): the Dataset has no rows"),
    ("eval_dataset", lambda: generate_pairs(8), r"eval_dataset=\.\.\.\): a datasets\.Dataset.* got list .*from_list"),
    ("eval_dataset", lambda: [rows()], r"eval_dataset=\.\.\.\): a datasets\.Dataset, or a dict .* got list"),
    ("eval_dataset", lambda: {}, r"eval_dataset=\.\.\.\): an empty dict"),
    ("eval_dataset", lambda: {"": rows()}, r"eval_dataset=\.\.\.\): the name '' is not a non-empty str"),
    ("eval_dataset", lambda: {1: rows()}, r"eval_dataset=\.\.\.\): the name 1 is not"),
    ("eval_dataset", lambda: {"a": generate_pairs(4)}, r"eval_dataset=\.\.\.\)\['a'\]: a datasets\.Dataset; got list"),
    ("eval_dataset", lambda: {"a": rows().to_iterable_dataset()}, r"eval_dataset=\.\.\.\)\['a'\]: streaming"),
    ("eval_dataset", lambda: IterableDatasetDict({"a": rows().to_iterable_dataset()}), r"eval_dataset=.*streaming"),
    ("eval_dataset", lambda: {"a": rows(), "b": Dataset.from_list([])}, r"eval_dataset=\.\.\.\)\['b'\]: .* no rows"),
    ("peft_config", lora_dict, r"peft_config must be a peft\.LoraConfig .* got dict"),
    ("optimizers", sgd, r"does not take optimizers: AdamW"),
    ("compute_metrics", lambda: lambda prediction: {}, r"does not take compute_metrics"),
    ("callbacks", lambda: [object()], r"does not take callbacks"),
]


@pytest.mark.parametrize("name, value, says", HOSTILE, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(HOSTILE)])
def test_every_hostile_constructor_argument_is_one_line_naming_it(name, value, says, tmp_path):
    out = tmp_path / "run"
    given = {"model": "tiny", "args": RewardConfig(output_dir=str(out)), "train_dataset": rows(), name: value()}
    with pytest.raises(UserError, match=says) as caught:
        RewardTrainer(**given)
    assert "\n" not in str(caught.value)
    assert not out.exists()  # refused before anything was loaded or written


def trainer(tmp_path: Path) -> RewardTrainer:
    return RewardTrainer(model="tiny", args=RewardConfig(output_dir=str(tmp_path / "run"), disable_tqdm=True))


METHODS = [
    ("train", {"resume_from_checkpoint": 1}, r"train\(resume_from_checkpoint=\.\.\.\): a checkpoint folder .* got int"),
    ("train", {"resume_from_checkpoint": ""}, r"train\(resume_from_checkpoint=\.\.\.\): an empty str"),
    ("train", {"resume_from_checkpoint": ["ck"]}, r"train\(resume_from_checkpoint=\.\.\.\): .* got list"),
    ("evaluate", {"eval_dataset": generate_pairs(4)}, r"evaluate\(eval_dataset=\.\.\.\): .* got list .*from_list"),
    ("evaluate", {"eval_dataset": {"a": "x.jsonl"}}, r"evaluate\(eval_dataset=\.\.\.\)\['a'\]: .* got str"),
    ("evaluate", {"eval_dataset": Dataset.from_list([])}, r"evaluate\(eval_dataset=\.\.\.\): the Dataset has no rows"),
    ("evaluate", {"eval_dataset": rows(), "metric_key_prefix": ""}, r"metric_key_prefix=\.\.\.\): .* got an empty str"),
    ("evaluate", {"eval_dataset": rows(), "metric_key_prefix": None}, r"metric_key_prefix=\.\.\.\): .* got NoneType"),
    ("save_model", {"output_dir": 3}, r"save_model\(output_dir=\.\.\.\): a folder \(str or Path\).* got int"),
    ("save_model", {"output_dir": ""}, r"save_model\(output_dir=\.\.\.\): an empty path"),
    ("push_to_hub", {"commit_message": None}, r"push_to_hub\(commit_message=\.\.\.\): a non-empty str; got NoneType"),
    ("push_to_hub", {"commit_message": " "}, r"push_to_hub\(commit_message=\.\.\.\): a non-empty str; got an empty"),
]


@pytest.mark.parametrize("method, kwargs, says", METHODS, ids=[f"{m}-{i}" for i, (m, _, _) in enumerate(METHODS)])
def test_every_hostile_method_argument_is_one_line_naming_it(method, kwargs, says, tmp_path):
    api = trainer(tmp_path)
    with pytest.raises(UserError, match=says):
        getattr(api, method)(**kwargs)
    assert api.model is None and not (tmp_path / "run").exists()  # refused before the model loaded


def test_what_is_unset_or_a_path_is_accepted(tiny_model_dir, tmp_path):
    api = RewardTrainer(
        model=tiny_model_dir, args=RewardConfig(output_dir=str(tmp_path)), optimizers=None, callbacks=[]
    )
    assert api.args.model_name_or_path == str(tiny_model_dir)  # a Path is read as its str
    split = RewardConfig(output_dir=str(tmp_path), dataset_train_split="mine")
    assert RewardTrainer(model="tiny", args=split, train_dataset=DatasetDict({"mine": rows()})).train_dataset


def test_a_list_eval_dataset_is_refused_and_the_dataset_it_points_to_is_evaluated(tmp_path):
    pairs = generate_pairs(16, seed=5)
    args = RewardConfig(output_dir=str(tmp_path / "run"), max_steps=2, disable_tqdm=True, eval_strategy="steps")
    with pytest.raises(UserError, match=r"eval_dataset=.*got list \(rows in a list: datasets\.Dataset\.from_list"):
        RewardTrainer(model="tiny", args=args, train_dataset=rows(40), eval_dataset=pairs)
    assert not (tmp_path / "run").exists()
    # what the message says to do: its metrics appear, in the result and in metrics.jsonl
    output = RewardTrainer(
        model="tiny", args=args, train_dataset=rows(40), eval_dataset=Dataset.from_list(pairs)
    ).train()
    assert output.metrics["eval_pairs"] == 16
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any(r.get("eval_pairs") == 16 for r in records)


def test_an_eval_dataset_not_evaluated_during_training_is_said(tmp_path, capsys):
    """TRL's default eval_strategy 'no' evaluates nothing while training: with an eval_dataset given, that is said."""
    args = RewardConfig(output_dir=str(tmp_path / "run"), max_steps=1, disable_tqdm=True)
    assert args.eval_strategy == "no"
    output = RewardTrainer(model="tiny", args=args, train_dataset=rows(40), eval_dataset=rows(8)).train()
    printed = capsys.readouterr().out
    assert "eval_dataset: not evaluated during training (eval_strategy 'no'" in printed
    assert "data: <Dataset: 40 rows, columns prompt, chosen, rejected; fingerprint " in printed  # not "<Dataset>"
    assert "eval_pairs" not in output.metrics


def test_streaming_datasets_are_refused_plainly_everywhere(tmp_path):
    stream = rows().to_iterable_dataset()
    plainly = "streaming datasets are not supported: the data order and exact resume need the row count"
    for given in ({"train_dataset": stream}, {"train_dataset": rows(), "eval_dataset": stream}):
        with pytest.raises(UserError, match=plainly):
            RewardTrainer(model="tiny", args=RewardConfig(output_dir=str(tmp_path / "run")), **given)
    with pytest.raises(UserError, match="evaluate\\(eval_dataset=...\\): " + plainly):
        trainer(tmp_path).evaluate(stream)


# --- the model: one score per sequence ------------------------------------------------------------------
class RemoteCodeForSequenceClassification(LlamaForSequenceClassification):
    """What a trust_remote_code model looks like: its own class, named as transformers names them."""


class MyRewardModel(LlamaForSequenceClassification):
    """A user's subclass of a sequence-classification model: its head is the parent's."""


@pytest.fixture(scope="module")
def tokenizer():
    return build_tiny_tokenizer()


def test_models_without_a_one_score_head_are_refused_with_the_loading_line(tokenizer):
    config = tiny_config(tokenizer)  # num_labels=1: only the head is wrong
    load = "load it with AutoModelForSequenceClassification.from_pretrained(name, num_labels=1)"
    for model in (LlamaForCausalLM(config), LlamaModel(config)):
        assert trainable_problem(model) == (
            f"{type(model).__name__} is not a sequence-classification model (a reward model reads one score per "
            f"sequence): {load}"
        )
        with pytest.raises(UserError, match=f"model=...\\): {type(model).__name__} is not a sequence-class"):
            RewardTrainer(model=model)
    two = GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=16, n_head=2, num_labels=2))
    assert "num_labels=2: a reward model has one output" in trainable_problem(two)
    for fine in (RemoteCodeForSequenceClassification(config), MyRewardModel(config)):
        assert trainable_problem(fine) is None


def test_the_recipe_refuses_a_causal_lm_before_any_training_step(tokenizer, tmp_path):
    from reward.recipe import main

    causal = LlamaForCausalLM(tiny_config(tokenizer))  # its num_labels is 1: it used to fail in the loss
    out = tmp_path / "run"
    cfg = RewardConfig(output_dir=str(out), max_steps=2, disable_tqdm=True)
    with pytest.raises(UserError, match="LlamaForCausalLM is not a sequence-classification model"):
        main(cfg, rows(16), model=causal, tokenizer=tokenizer)
    assert not (out / "metrics.jsonl").exists() and not list(out.glob("checkpoint-*"))
