"""The recipe's rows stage: every source of rows read as training reads it, with what each kind of label
adds to the core's pairs (the recipe's `read_rows` and the rated half of its `tokenize` stage).

    read_preferences   a generated task, a file, a folder, a Hub id or a Dataset -> validated rows: pairs
                       (a `strength` read as a weight or a margin: reward/labels/strength.py), rankings as the
                       pairs they hold (reward/ranked/rows.py), or rated completions grouped by prompt
                       (reward/labels/rated.py, a format added to reward/data.py through `RowFormat`)
    read_eval_set      named evaluation rows (RewardTrainer's dict eval_dataset), checked as training's
    tokenize_rated     rated rows -> the rows the loop reads (one per prompt) and the ratings' scale
"""

from __future__ import annotations

from datasets import Dataset, DatasetDict
from transformers import PreTrainedTokenizerBase

from reward.config import TrainConfig
from reward.data import RANKED, PreferenceData, load_preferences
from reward.errors import UserError
from reward.formatting import SequenceFormat
from reward.labels.rated import RATED_ROWS, RatingScale, describe_ratings, rating_scale, tokenize_ratings
from reward.labels.rows import RATED, label_kind
from reward.labels.strength import apply_strength
from reward.presets.synthetic import synthetic_dataset
from reward.ranked.rows import describe_rankings, expand_preferences

ADDED_FORMATS = (RATED_ROWS,)  # the formats optional parts add to reward/data.py's detection


def read_rows(
    cfg: TrainConfig, dataset: Dataset | DatasetDict | None, eval_sets: dict[str, Dataset] | None
) -> tuple[PreferenceData, dict[str, PreferenceData]]:
    """The training rows and any named evaluation sets (RewardTrainer's dict eval_dataset), validated."""
    data = read_preferences(cfg, dataset if dataset is not None else cfg.dataset_name)
    check_label_options(cfg, data.format)
    if note := label_kind(set(data.train.column_names))[1]:  # a file that could be read two ways says which
        print(note)
    if data.format == RATED:
        print(describe_ratings(data))
    else:
        print(data.describe() + (f"\n{describe_rankings(data.rankings)}" if data.rankings else ""))
    named = {name: read_eval_set(cfg, rows) for name, rows in (eval_sets or {}).items()}
    if wrong := next((d.format for d in named.values() if d.format != data.format), None):
        raise UserError(f"an evaluation set is in the {wrong} format, the training data in {data.format}")
    return data, named


# options of one label kind only: given for another, they would change nothing, so they are refused (a pair
# loss option on ratings) or said to be unused (a rating option on pairs), never silently ignored
PAIR_ONLY = (
    "center_rewards_coefficient", "label_smoothing", "strength_as", "strength_weights", "rankings", "ranking_loss",
    "ranking_normalization", "tie_handling",
)  # fmt: skip
RATING_ONLY = ("rating_standardize", "rating_pair_weight")


def check_label_options(cfg: TrainConfig, data_format: str) -> None:
    """Refuse the pair and ranking loss options on rated rows (trained by regression); name the rating options
    that pairs and rankings do not use."""
    changed = lambda names: [f"--{n}" for n in names if getattr(cfg, n) != TrainConfig.default(n)]  # noqa: E731
    if data_format == RATED and (given := changed(PAIR_ONLY)):
        raise UserError(
            f"{', '.join(given)}: an option of the pair and ranking losses, but these rows are rated completions, "
            "trained by regression (docs/loss.md §11: --rating_standardize, --rating_pair_weight)"
        )
    if data_format != RATED and (given := changed(RATING_ONLY)):
        print(f"{', '.join(given)}: not used, the rows are {data_format}, not rated completions")


def read_preferences(cfg: TrainConfig, source: str | Dataset | DatasetDict) -> PreferenceData:
    """The rows of `source` (a Dataset, or a name: a generated task (reward/presets/synthetic.py), a file, a
    folder, a Hub id) loaded with the run's options; ranked rows as the pairs they hold (reward/ranked)."""
    generated = synthetic_dataset(source, cfg.synthetic_num_pairs) if isinstance(source, str) else None
    splits = dict(train_split=cfg.dataset_train_split, test_split=cfg.dataset_test_split, seed=cfg.seed)
    given = not isinstance(source, str) and cfg.dataset_name != TrainConfig.default("dataset_name")  # RewardTrainer's
    rows, name = (source, cfg.dataset_name if given else None) if generated is None else (generated, source)
    data = load_preferences(rows, config=cfg.dataset_config, eval_split_size=cfg.eval_split_size, source=name,
                            skip_bad_rows=cfg.skip_bad_rows, formats=ADDED_FORMATS, **splits)  # fmt: skip
    data = apply_strength(data, cfg.strength_as, cfg.strength_weights)  # a weight or margin per pair (labels/)
    return expand_preferences(data, cfg.tie_handling) if data.format == RANKED else data


def read_eval_set(cfg: TrainConfig, rows: Dataset | DatasetDict) -> PreferenceData:
    """Rows evaluated whole (RewardTrainer's eval_dataset, evaluate()'s), checked as training's; rankings as pairs."""
    split = cfg.dataset_train_split if isinstance(rows, DatasetDict) else "train"  # a Dataset is its own "train"
    data = load_preferences(rows, train_split=split, eval_split_size=0, skip_bad_rows=cfg.skip_bad_rows,
                            formats=ADDED_FORMATS)  # fmt: skip
    data = apply_strength(data, cfg.strength_as, cfg.strength_weights)
    return expand_preferences(data, evaluation=True) if data.format == RANKED else data


def tokenize_rated(
    cfg: TrainConfig,
    data: PreferenceData,
    named: dict[str, PreferenceData],
    tokenizer: PreTrainedTokenizerBase,
    text_format: SequenceFormat,
    limit: int | None,
) -> tuple[Dataset, dict[str, Dataset], RatingScale]:
    """Rated rows as the loop reads them (reward/labels/rated.py `tokenize_ratings`): the training prompts,
    the evaluation sets ({"": held-out split} or the named ones), and the scale of the kept training ratings."""
    held = data.test if data.test is not None and len(data.test) and not named else None  # named sets replace it
    sources = {"train": data.train, **({"eval": held} if held is not None else {})}
    sources |= {f"eval[{name}]": d.train for name, d in named.items()}
    options = (cfg.max_length, cfg.dataset_num_proc)
    done = {split: tokenize_ratings(rows, tokenizer, text_format, *options, split, limit)
            for split, rows in sources.items()}  # fmt: skip
    print(f"kept: {' | '.join(f'{split} {s.describe(cfg.max_length)}' for split, (_, s) in done.items())}")
    train, kept = done["train"]
    if not kept.completions:
        raise UserError(f"no rated completion left to train on: {kept.describe(cfg.max_length)}")
    sets = {name: done[f"eval[{name}]"][0] for name in named} or ({"": done["eval"][0]} if held is not None else {})
    sets = drop_emptied(sets)
    scale = rating_scale(train, cfg.rating_standardize)
    print(f"ratings: {scale.describe()}; + {cfg.rating_pair_weight:g} x the implied pairs' Bradley–Terry loss")
    return train, sets, scale


def drop_emptied(sets: dict[str, Dataset]) -> dict[str, Dataset]:
    """The evaluation sets that kept a row after tokenizing; one emptied by the length rules is said and skipped
    (an evaluation of nothing has no metric to report)."""
    for name in [name for name, rows in sets.items() if not len(rows)]:
        print(f"eval[{name or 'held-out'}]: nothing left after the length rules: not evaluated")
    return {name: rows for name, rows in sets.items() if len(rows)}
