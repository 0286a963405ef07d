"""What the training loop plugs in, chosen from the run's flat options: the recipe's `fit` takes them from here.

    training_collator   pairs packed (reward/fast) or padded (reward/collate.py); grouped prompts (reward/ranked)
    batch_order         TRL's shuffled batches, or length-grouped ones (reward/fast/grouping.py)
    training_objective  the pair loss (reward/loss.py), a ranking loss (reward/ranked/loss.py), or regression on
                        ratings (reward/labels/loss.py)
    evaluation          how held-out rows are evaluated (reward/evaluate.py; ratings: reward/labels/evaluation.py)
    loading_options     reward/model.py `load_model`'s arguments
    model_writer        how the model's folder is written: its card; LoRA merged (reward/finetune/lora.py)
    train_with          reward/loop.py `train` with all of them: what `fit` runs, and what the tests and
                        benchmarks run on their own rows and collators

Each reads the flat TrainConfig and hands the core only the small option groups it needs (`pick`).
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from datasets import Dataset
from torch import nn
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reward.batching import BatchPlan, Order, Shuffled, pair_lengths
from reward.config import TrainConfig, pick
from reward.eval.model_card import render_model_card
from reward.evaluate import Evaluation, Evaluator, HeldOut
from reward.export import FolderWriter
from reward.fast.grouping import LengthGrouped
from reward.fast.packing import evaluation_collator, pair_collator
from reward.finetune.lora import folder_writer
from reward.labels.evaluation import RatedEvaluation
from reward.labels.loss import RegressionObjective
from reward.labels.rated import RatingScale
from reward.labels.strength import held_out_strength_metrics
from reward.loop import Cadence, OptimizerOptions, TrainResult, train
from reward.loss import Objective, PairObjective
from reward.metrics import MetricsWriter
from reward.model import Precision
from reward.ranked.collate import prompt_lengths, ranked_collator
from reward.ranked.loss import RankingObjective
from reward.ranked.rows import GROUPED, held_out_ranking_metrics

# TrainConfig's options that only loading a model applies (a model handed over ignores them, and says so)
LOADING = ("dtype", "attn_implementation", "model_revision", "model_init_kwargs")


def loading_options(cfg: TrainConfig) -> dict[str, Any]:
    """reward/model.py `load_model`'s keyword arguments from the options (the recipe and RewardTrainer alike)."""
    names = ("seed", "disable_dropout", "trust_remote_code", "dtype", "attn_implementation")
    return {**{name: getattr(cfg, name) for name in names}, "init_kwargs": cfg.model_init_kwargs}


def training_collator(cfg: TrainConfig, pad_token_id: int, model: nn.Module | None = None, grouped: bool = False):
    """Pairs packed (--padding_free: one row; --share_prefix: the prompt once) or padded; for grouped
    rankings, prompts with their K responses, laid out the same way. An encoder always gets padding."""
    if grouped:
        return ranked_collator(pad_token_id, cfg.padding_free, cfg.share_prefix, model)
    return pair_collator(pad_token_id, cfg.padding_free, cfg.share_prefix, cfg.pad_to_multiple_of, model)


def batch_order(cfg: TrainConfig, rows: Dataset, grouped: bool = False) -> Order:
    """TRL's shuffled batches, or length-grouped ones (--group_by_length: reward/fast/grouping.py)."""
    if not cfg.group_by_length:
        return Shuffled(len(rows), cfg.seed)
    return LengthGrouped(prompt_lengths(rows) if grouped else pair_lengths(rows), cfg.seed)


def training_objective(cfg: TrainConfig, grouped: bool = False, scale: RatingScale | None = None) -> Objective:
    """The pair loss (reward/loss.py), for grouped rankings all-pairs / Plackett–Luce (reward/ranked/loss.py), or
    for rated rows (`scale`: their standardisation, reward/labels/rated.py) the regression (reward/labels/loss.py)."""
    if scale is not None:
        return RegressionObjective(scale.mean, scale.std, cfg.rating_pair_weight)
    if grouped:
        options = (cfg.center_rewards_coefficient, cfg.label_smoothing)
        return RankingObjective(cfg.ranking_loss, cfg.ranking_normalization, *options)
    return PairObjective(cfg.center_rewards_coefficient, cfg.label_smoothing)


def evaluation(
    cfg: TrainConfig, precision: Precision, model: nn.Module | None, pad_token_id: int, scale: RatingScale | None = None
) -> Evaluator:
    """How held-out pairs are evaluated: packed unless --eval_padding_free false, with the pair loss and the
    run's options (grouped rankings too are evaluated as their pairs); a set of pairs made of rankings also
    reports best-of-K accuracy and Kendall's τ per prompt (nothing for other pairs). Rated rows (`scale`) are
    evaluated as training reads them: prompts packed with their completions, the regression, RMSE, r and ρ."""
    if scale is not None:
        collate = ranked_collator(pad_token_id, cfg.eval_padding_free, cfg.eval_padding_free, model)
        objective = training_objective(cfg, scale=scale)
        return RatedEvaluation(collate, objective, cfg.per_device_eval_batch_size, precision)
    collate = evaluation_collator(pad_token_id, cfg.eval_padding_free, model)
    objective = PairObjective(cfg.center_rewards_coefficient, cfg.label_smoothing)
    extras = (held_out_ranking_metrics, held_out_strength_metrics)  # each {} unless the pairs have its columns
    return Evaluation(collate, objective, cfg.per_device_eval_batch_size, precision, extras)


def model_writer(
    cfg: TrainConfig, model: nn.Module, tokenizer: PreTrainedTokenizerBase, facts: dict | None
) -> FolderWriter:
    """How the model's folder is written: this run's options, and a model card of `facts` (if any)."""
    card = partial(render_model_card, cfg=cfg.to_dict(), card=facts) if facts is not None else None
    return folder_writer(model, tokenizer, cfg.to_dict(), card)


def train_with(
    cfg: TrainConfig,
    model: PreTrainedModel,
    rows: Dataset,
    *,
    collate: Callable,
    precision: Precision,
    writer: MetricsWriter,
    eval_sets: dict[str, Dataset] | None = None,
    order: Order | None = None,
    scale: RatingScale | None = None,
    **hooks: Any,
) -> TrainResult:
    """reward/loop.py `train` with its parts chosen from `cfg`: the batch order, the objective (a ranking loss
    for rows that are prompts grouped with their responses), the option groups, the evaluation of the
    non-empty `eval_sets` ({"": held-out split} or named sets); rated rows (grouped like rankings) with their
    `scale` train the regression. `hooks` are the loop's processes, restore, save and should_stop."""
    grouped = GROUPED in rows.column_names  # reward/ranked/rows.py `group_rankings`
    sets = eval_sets if eval_sets and any(len(ds) for ds in eval_sets.values()) else {}
    check = evaluation(cfg, precision, model, collate.pad_token_id, scale)
    return train(
        model,
        rows,
        collate=collate,
        order=order or batch_order(cfg, rows, grouped),
        objective=training_objective(cfg, grouped, scale),
        precision=precision,
        batches=pick(BatchPlan, cfg),
        optim=pick(OptimizerOptions, cfg),
        cadence=pick(Cadence, cfg),
        writer=writer,
        evaluator=HeldOut(sets, check) if sets else None,
        **hooks,
    )
