"""Evaluate a dataset of pairs exactly as training's evaluation does (RewardTrainer.evaluate).

The rows go through the same stages as training's held-out split: load and validate
(reward/data.py), format as the model records it was trained (`reward_format`; before training,
as the options say), tokenize, then reward/evaluate.py `evaluate` (packed rows by default, as training's evaluation).
"""

from __future__ import annotations

from datasets import Dataset, DatasetDict
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from reward.batching import eval_collator
from reward.config import TrainConfig
from reward.data import load_preferences
from reward.errors import UserError
from reward.evaluate import evaluate
from reward.export import choose_format
from reward.formatting import read_format, tokenize_pairs
from reward.model import resolve_precision


def evaluate_rows(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, rows: Dataset | DatasetDict, cfg: TrainConfig
) -> dict:
    data = load_preferences(
        rows, train_split=cfg.dataset_train_split, eval_split_size=0, skip_bad_rows=cfg.skip_bad_rows
    )
    recorded, record = read_format(model.config)
    sequence_format = recorded if record is not None else choose_format(cfg, tokenizer, data.format, None)
    pairs, stats = tokenize_pairs(
        data.train, tokenizer, data.format, cfg.max_length, cfg.dataset_num_proc, "eval", sequence_format
    )
    if stats.kept == 0:
        raise UserError(f"evaluate(): no pair left ({stats.describe(cfg.max_length)})")
    device = next(model.parameters()).device
    precision = resolve_precision(cfg.bf16, cfg.fp16, device)
    return evaluate(model, pairs, eval_collator(cfg, tokenizer.pad_token_id, model), cfg, precision)
