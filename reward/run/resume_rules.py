"""What a resumed run may change, option by option, and the checks that hold a resume to it.

A checkpoint continues one run: its weights and AdamW state belong to one model, and its step counts
optimizer steps through one sequence of pairs (reward/batching.py: a function of the rows, their token
ids, the batch layout and the seed). `RULES` classifies every TrainConfig option once, with the reason
(tests/test_resume_refusals.py fails when a new option is left out):

    refused   a change would continue another run under this one's name: other rows, another order
              or other token ids (the step would skip or repeat pairs), another model, or a value the
              restored optimizer state would silently override. One line names the option with the
              checkpoint's value and the new one.
    allowed   applied from the resumed step on and recorded in the checkpoints after it; a change is
              reported (`--max_steps: 4 in the checkpoint, 6 given: using the given value`).
    per run   belongs to one invocation (where to write, what to resume, --debug, the token): never
              taken from the checkpoint, never compared.

The checks, earliest first: `refuse_changes` when train.py parses a resume's flags (before anything is
read but the checkpoint's training_config.json); `check_resume_options` in preflight, for the Python
API and for everything the command line cannot show (the number of processes); `same_rows` after
tokenizing, for what no option names: a data file edited between runs, another Dataset handed to
RewardTrainer. The rows' fingerprint (`rows_fingerprint`) is saved in every checkpoint's training_state.pt;
a checkpoint from before it was recorded resumes unchecked, as before.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from datasets import Dataset

from reward.errors import UserError
from reward.run.checkpoints import earlier_checkpoint_hint

NEW_RUN = "start a new run (--overwrite_output_dir / another --output_dir)"


@dataclass(frozen=True)
class Rule:
    kind: str  # "refused", "allowed" or "per run"
    why: str  # said after the values when a change is refused
    names: tuple[str, ...]


REFUSED, ALLOWED, PER_RUN = "refused", "allowed", "per run"


def rule(kind: str, why: str, names: str) -> Rule:
    return Rule(kind, why, tuple(names.split()))


RULES = (
    rule(
        REFUSED,
        "it decides which pairs the run trains on, so the checkpoint's step would point elsewhere in them",
        "dataset_name dataset_config dataset_train_split dataset_test_split eval_split_size skip_bad_rows "
        "synthetic_num_pairs rankings tie_handling",
    ),
    rule(
        REFUSED,
        "it decides each pair's weight or margin, which the checkpoint's rows fingerprint holds (a strength read "
        "as a weight is the pairs' pair_weight column, as a margin their margin column), or the units of the "
        "ratings' targets, which the saved reward_ratings describe for the whole run",
        "strength_as strength_weights rating_standardize",
    ),
    rule(
        REFUSED,
        "it decides the pairs' token ids and which are dropped as too long",
        "max_length append_eos add_special_tokens text_as_chat chat_template_path eos_token pad_token",
    ),
    rule(
        REFUSED,
        "the data position is counted in optimizer steps of this order and layout",
        "per_device_train_batch_size gradient_accumulation_steps seed group_by_length",
    ),
    rule(
        REFUSED,
        "it decides the model the checkpoint's weights and optimizer state belong to",
        "model_name_or_path model_revision model_init_kwargs dtype use_peft lora_r lora_alpha lora_dropout "
        "lora_target_modules",
    ),
    rule(
        REFUSED,
        "the optimizer state is saved by parameter name under --fsdp and by position without: one does not load "
        "into the other",
        "fsdp",
    ),
    rule(
        REFUSED,
        "the optimizer and schedule state the checkpoint restores hold the old value, so the new one would be "
        "ignored while training_config.json recorded it",
        "learning_rate weight_decay adam_beta1 adam_beta2 adam_epsilon optim",
    ),
    rule(
        ALLOWED,
        "the schedule is rebuilt from them: the first resumed step takes the checkpoint's last learning rate, "
        "the next ones follow the new curve",
        "max_steps num_train_epochs lr_scheduler_type warmup_ratio warmup_steps",
    ),
    rule(
        ALLOWED,
        "the objective and the update from the resumed step on; the rows and the model stay the same",
        "max_grad_norm center_rewards_coefficient label_smoothing ranking_loss ranking_normalization "
        "disable_dropout max_nonfinite_steps rating_pair_weight",
    ),
    rule(
        ALLOWED,
        "how the same steps are computed or loaded, not what they train on",
        "padding_free share_prefix pad_to_multiple_of attn_implementation torch_compile gradient_checkpointing "
        "bf16 fp16 use_cpu dataset_num_proc trust_remote_code",
    ),
    rule(
        ALLOWED,
        "what is evaluated, logged, saved and uploaded",
        "per_device_eval_batch_size eval_padding_free eval_strategy eval_steps logging_steps save_steps "
        "save_total_limit plot_curves report_to run_name project logging_dir push_to_hub "
        "hub_model_id hub_private_repo hub_strategy card_example_row",
    ),
    rule(
        PER_RUN,
        "one invocation's: where it writes, what it resumes, how errors and progress show, the Hub token",
        "output_dir resume_from_checkpoint overwrite_output_dir debug disable_tqdm hub_token",
    ),
)
RULE_OF = {name: rule for rule in RULES for name in rule.names}
PER_INVOCATION = RULES[-1].names  # a resume never takes these from the checkpoint
# an option missing from RULES (the test forbids it) is held as refused: safe until it is classified
UNCLASSIFIED = Rule(REFUSED, "reward/run/resume_rules.py does not classify it yet", ())


def rule_of(name: str) -> Rule:
    return RULE_OF.get(name, UNCLASSIFIED)


def changes(saved: dict[str, Any], cfg: Any) -> list[tuple[str, Any, Any]]:
    """(option, checkpoint's value, this run's) for every compared option whose value differs. Options the
    checkpoint did not record (added since it was saved) are not compared."""
    names = [f.name for f in fields(cfg) if f.name in saved and rule_of(f.name).kind != PER_RUN]
    return [(name, saved[name], getattr(cfg, name)) for name in names if saved[name] != getattr(cfg, name)]


def refuse_changes(saved: dict[str, Any], cfg: Any) -> None:
    """One UserError naming each refused option that `cfg` changes, with both values and why."""
    refused = [(name, old, new) for name, old, new in changes(saved, cfg) if rule_of(name).kind == REFUSED]
    if refused:
        said = [f"--{name}: the checkpoint was trained with {old!r}, this run asks for {new!r}; {rule_of(name).why}"
                for name, old, new in refused]  # fmt: skip
        same = "the same value" if len(refused) == 1 else "the same values"
        raise UserError(f"{'; '.join(said)}; resume with {same} or {NEW_RUN}")


def allowed_changes(saved: dict[str, Any], cfg: Any) -> list[str]:
    """A line per allowed option that `cfg` changes, to print (refused ones raise first: `refuse_changes`)."""
    return [
        f"--{name}: {old!r} in the checkpoint, {new!r} given: using the given value"
        for name, old, new in changes(saved, cfg)
        if rule_of(name).kind == ALLOWED
    ]


def saved_options(checkpoint: Path) -> dict[str, Any]:
    """The checkpoint's training_config.json ({} when it has none: a resume is then checked by its rows)."""
    path = Path(checkpoint) / "training_config.json"
    try:
        saved = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError) as exc:
        raise UserError(f"{path}: not valid JSON ({exc}); {earlier_checkpoint_hint(checkpoint)}") from exc
    if not isinstance(saved, dict):
        raise UserError(f"{path}: not a mapping of option: value; {earlier_checkpoint_hint(checkpoint)}")
    return saved


def check_resume_options(checkpoint: Path, cfg: Any, world_size: int, state: dict[str, Any]) -> None:
    """Preflight's check (the Python API's only one; train.py refused given flags when it parsed them):
    every refused option as the checkpoint recorded it, and the number of processes."""
    refuse_changes(saved_options(checkpoint), cfg)
    saved_world = state.get("world_size")
    if saved_world is not None and saved_world != world_size:
        raise UserError(
            f"the checkpoint was saved by {saved_world} process(es), this run has {world_size}: the data position "
            "is counted in global steps of processes x batch x accumulation pairs; resume with the same number"
        )


# --- the rows themselves -------------------------------------------------------------------------
FINGERPRINT_BATCH = 8192  # rows read at a time: memory stays a batch's, whatever the dataset's size


def rows_fingerprint(pairs: Dataset) -> dict[str, Any]:
    """{"pairs": N, "blake2b": hex} of the tokenized training pairs: every numeric column (token ids, margin,
    the rankings' bookkeeping), in dataset order. String columns (a subset's name) only label evaluation.

    Read as Arrow a batch at a time, in the order trained (`iter` applies an indices mapping: a filter's, a
    split's). Each list column hashes its lengths and its values, each in its own stream and at one width
    (int64 / float64), so neither the batching, Arrow's chunks nor int32-vs-int64 storage changes the result.

    >>> a = Dataset.from_dict({"chosen_ids": [[1, 2], [3]], "subset": ["x", "y"]})
    >>> same, reversed_ = a.select([0, 1]), a.select([1, 0])  # indices mappings over the same table
    >>> rows_fingerprint(same) == rows_fingerprint(a), rows_fingerprint(reversed_) == rows_fingerprint(a)
    (True, False)
    """
    streams: dict[str, Any] = {}
    for batch in pairs.with_format("arrow").iter(batch_size=FINGERPRINT_BATCH):
        for name in batch.column_names:
            column = batch.column(name)
            if not numeric(column.type):
                continue
            # one array a batch: an indices mapping's take leaves a chunk per run of rows (thousands a batch)
            for level, part in enumerate(leaves(column.combine_chunks())):
                stream = streams.setdefault(f"{name}/{level}", hashlib.blake2b(digest_size=16))
                stream.update(one_width(part))
    digest = hashlib.blake2b(digest_size=16)
    for key in sorted(streams):
        digest.update(key.encode() + streams[key].digest())
    return {"pairs": len(pairs), "blake2b": digest.hexdigest()}


def one_width(values: pa.Array) -> bytes:
    """The values' bytes as int64 (float64 for floats), however Arrow stored them."""
    wide = pa.float64() if pa.types.is_floating(values.type) else pa.int64()
    return values.cast(wide).fill_null(0).to_numpy(zero_copy_only=False).tobytes()


def numeric(kind: pa.DataType) -> bool:
    while pa.types.is_list(kind) or pa.types.is_large_list(kind):
        kind = kind.value_type
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)


def leaves(array: pa.Array) -> list[pa.Array]:
    """A (nested) list array as its lengths at each level and its values: what makes two of them equal."""
    parts = []
    while pa.types.is_list(array.type) or pa.types.is_large_list(array.type):
        parts.append(pc.list_value_length(array).fill_null(-1))
        array = array.flatten()  # the values of this slice only
    return [*parts, array]


def same_rows(pairs: Dataset, state: dict[str, Any] | None, source: str) -> dict[str, Any]:
    """The training pairs' fingerprint, to save in every checkpoint; when resuming (`state`, the checkpoint's
    training_state.pt), checked against the one the checkpoint saved."""
    fingerprint = rows_fingerprint(pairs)
    if state is not None:
        check_same_rows(state, fingerprint, source)
    return fingerprint


def check_same_rows(state: dict[str, Any], fingerprint: dict[str, Any], source: str) -> None:
    """Refuse a resume whose training pairs, as tokenized, are not the ones the checkpoint trained on."""
    saved = state.get("data")
    if saved is None or saved == fingerprint:  # a checkpoint from before fingerprints: unchecked, as then
        return
    now, then = fingerprint["pairs"], saved["pairs"]
    if now != then:
        what = f"{source} gives {now} training pairs after tokenizing, the checkpoint's had {then}"
    else:
        what = f"{source} gives as many training pairs ({now}) but other token ids or another order"
    raise UserError(
        f"the training data differs from the checkpoint's: {what}; resume with the data, tokenizer and options "
        f"the run started with, or {NEW_RUN}"
    )
