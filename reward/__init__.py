"""reward: Bradley–Terry reward-model training, written to be read.

The core path, in data-flow order (what TRL's RewardTrainer does):

    config.py, options.py, errors.py   the typed options, their checks, one-line errors
    data.py        rows from files / the Hub / a Dataset; format detection; validation
    tokenizer.py   the model source's checks; the tokenizer and its options (EOS, pad, chat template)
    formatting.py  row -> token ids (prompt + response, EOS, chat template, max_length); the recorded format
    collate.py     the pairwise collator: B pairs -> (2B, T) [chosen; rejected]
    batching.py    which pairs form each micro-batch and optimizer step; the collator choice
    model.py       load the sequence-classification model; pad-token policy; rewards; device and precision
    loss.py        the Bradley–Terry loss and its metrics
    loop.py        optimizer, schedule, exact accumulation, clipping, evaluation, the loop
    metrics.py     exact averages, the step line, metrics.jsonl; calibration, length bias, subsets
    export.py      the pipeline-ready folder with reward_format and reward_stats

Optional parts, each behind its own folder (a learner may skip them):

    fast/       exact speed-ups: length grouping, padding-free packing, the shared prompt, segment attention
    parallel/   torchrun data parallel and FSDP2, behind `plan.Plan`
    finetune/   LoRA adapters and their merged export
    run/        one run: the recipe (preflight, data, model, train, export, report), the train command,
                checkpoints, exact resume state, the output-dir lock, signals
    ranked/     rankings of K responses: comparisons, per-prompt metrics, losses, one packed segment per prompt
    eval/       scoring, the loss explained, plots, the consumers of a reward model, the model card
                (the exported folder's README, one tested snippet per consumer), RewardFunction
    presets/    the offline `tiny` model, the generated tasks, and the tour (python -m reward.presets.tour:
                one optimizer step of the default run, every stage printed)
    integrations/  TRL's Python API (RewardTrainer; RewardConfig in trl_options.py), --report_to, --push_to_hub

Importing `reward` imports nothing else; `from reward import RewardTrainer` (or RewardConfig,
RewardFunction) loads it on first use.
"""

__version__ = "0.1.0"
__all__ = ["RewardConfig", "RewardFunction", "RewardTrainer"]

LAZY = {
    "RewardConfig": "reward.integrations.trl_options",
    "RewardTrainer": "reward.integrations.trainer",
    "RewardFunction": "reward.eval.reward_function",
}


def __getattr__(name: str) -> type:
    """`from reward import RewardTrainer` without importing torch when only a submodule is needed."""
    if name in LAZY:
        import importlib

        return getattr(importlib.import_module(LAZY[name]), name)
    raise AttributeError(f"module 'reward' has no attribute {name!r}")
