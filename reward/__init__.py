"""reward: Bradley–Terry reward-model training, written to be read.

The core path, in data-flow order (what TRL's RewardTrainer does), wired together by one module:

    recipe.py      one run as named stages: preflight, rows, tokenizer, model, tokens, fit, export, report
    config.py, options.py, errors.py   the flat options (TRL's names) and their groups, their checks, one-line errors
    sources.py     rows read from files / a folder / the Hub / a Dataset, each file checked first
    data.py        format detection; validation; the held-out split
    tokenizer.py   the model source's checks; the tokenizer and its options (EOS, pad, chat template)
    formatting.py  the text format; row -> token ids (prompt + response, EOS, chat template, max_length)
    collate.py     the pairwise collator: B pairs -> (2B, T) [chosen; rejected]; what any micro-batch offers
    batching.py    which rows form each micro-batch and optimizer step, in a seeded order
    model.py       load the sequence-classification model; pad-token policy; rewards; device and precision
    loss.py        the Bradley–Terry loss; what any objective offers
    loop.py        optimizer, schedule, exact accumulation, clipping, evaluation and saving on schedule
    evaluate.py    held-out evaluation; the trained rewards' statistics
    metrics.py     exact averages, read from the device once a step; metrics.jsonl; calibration, length bias
    export.py      the pipeline-ready folder with reward_format and reward_stats

The core imports no optional part (pyproject.toml's import-linter contracts). Each plugs into an
interface the core defines, and only the recipe wires them in:

    train.py, RewardTrainer ──> recipe.py ──> the optional parts below
                                   │              │ each implements a core interface:
                                   ▼              ▼
    core: config → data → tokenizer → formatting → collate → batching → model → loss → loop → evaluate → export

        collate.MicroBatch     a padded batch; fast/ PackedBatch; ranked/ RankedBatch
        batching.Order         Shuffled; fast/ LengthGrouped
        loss.Objective         PairObjective; ranked/ RankingObjective
        loop.Processes         OneProcess; parallel/ Plan (torchrun, FSDP2)
        loop.Progress          what run/ checkpoints save and a resume restores
        export.CardWriter, FolderWriter   eval/ model card; finetune/ LoRA merged

Optional parts, each behind its own folder (a learner may skip them):

    fast/       exact speed-ups: length grouping, padding-free packing, the shared prompt, segment attention
    ranked/     rankings of K responses: comparisons, per-prompt metrics, losses, one packed segment per prompt
    parallel/   torchrun data parallel and FSDP2
    finetune/   LoRA adapters and their merged export
    run/        how one run is driven: preflight, what the loop plugs in (parts.py), checkpoints, exact
                resume state, the output-dir lock, signals, the report, the train command
    eval/       scoring, the loss explained, plots, the consumers of a reward model, the model card
                (the exported folder's README, one tested snippet per consumer), RewardFunction
    presets/    the offline `tiny` model, the generated tasks, and the tour (python -m reward.presets.tour:
                one optimizer step of the default run, every stage printed)
    integrations/  TRL's Python API (RewardTrainer; RewardConfig in trl_options.py), --report_to, --push_to_hub
    serve/      reward-serve: the model over HTTP to RL loops (dynamic batching, a prompt computed once for all
                its completions, OpenRLHF's protocol), and RemoteRewardFunction, its TRL client

Importing `reward` imports nothing else; `from reward import RewardTrainer` (or RewardConfig,
RewardFunction, RemoteRewardFunction) loads it on first use.
"""

__version__ = "0.1.0"
__all__ = ["RemoteRewardFunction", "RewardConfig", "RewardFunction", "RewardTrainer"]

LAZY = {
    "RewardConfig": "reward.integrations.trl_options",
    "RewardTrainer": "reward.integrations.trainer",
    "RewardFunction": "reward.eval.reward_function",
    "RemoteRewardFunction": "reward.serve.client",
}


def __getattr__(name: str) -> type:
    """`from reward import RewardTrainer` without importing torch when only a submodule is needed."""
    if name in LAZY:
        import importlib

        return getattr(importlib.import_module(LAZY[name]), name)
    raise AttributeError(f"module 'reward' has no attribute {name!r}")
