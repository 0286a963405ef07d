"""reward: Bradley–Terry reward-model training, written to be read.

The modules follow the data flow:

    data.py        rows from files / the Hub / a Dataset; format detection; validation
    synthetic.py   the generated preference task (the embedded default)
    formatting.py  row -> token ids (prompt joining, EOS, chat template, max_length policy)
    collate.py     the pairwise collator: B pairs -> (2B, T) [chosen; rejected]
    grouping.py    length-grouped batch order
    packing.py     padding-free packing and the shared prompt prefix: the row layout
    packed_forward.py  rewards from packed rows (same as the padded forward), support detection
    batching.py    which pairs form each micro-batch and optimizer step; the collator choice
    tiny.py        the offline `tiny` preset (random Llama + tokenizer trained in a second)
    model.py       load the sequence-classification model; pad-token policy; rewards
    loss.py        the Bradley–Terry loss and its metrics
    precision.py   device, fp32 / bf16 / fp16 + GradScaler
    loop.py        optimizer, schedule, exact accumulation, clipping, eval, the loop
    metrics.py     exact metric averages, step log line, metrics.jsonl
    checkpoint.py  pipeline-ready Hugging Face folder
    model_card.py  the folder's README: format, statistics, one tested snippet per consumer
    scoring.py     batched scoring of texts, pairs and ranked completions, in the recorded format
    reward_function.py  RewardFunction: the model as a TRL `reward_funcs` callable (GRPO, RLOO, ...)
    consumers.py   each consumer's way of scoring (GRPO, RewardBench, PPO, pipeline), reproduced
    consumer_check.py  score.py --check_consumers: every consumer vs the training-time reward
    explain.py     the loss term by term (score.py --explain)
    diagnostics.py calibration (ECE), length bias, per-subset accuracy
    plotting.py    optional plots (matplotlib, imported lazily)
    resume.py      resumable checkpoints written atomically; the output-dir policy
    signals.py     SIGINT/SIGTERM: finish the step, save, exit
    distributed.py torchrun data parallel: rank slices, one gradient sum per step, global metrics
"""

__version__ = "0.1.0"
__all__ = ["RewardFunction"]


def __getattr__(name: str):
    """`from reward import RewardFunction` without importing torch when only a submodule is needed."""
    if name == "RewardFunction":
        from reward.eval.reward_function import RewardFunction

        return RewardFunction
    raise AttributeError(f"module 'reward' has no attribute {name!r}")
