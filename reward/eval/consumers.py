"""The consumer check: score the same rows the way each user of a reward model does, and compare.

Training optimises the reward of the token ids *training* built. Every consumer builds its own ids
from text: TRL's GRPO drops BOS and EOS, RewardBench wraps a chat template around plain text, a
PPO loop reads the reward on the policy's token ids wherever the rollout stopped. Each consumer is
reproduced here from its source (cited at its function), run on the same rows with the same
weights, and compared with the training-time reward:

    max |reward - training reward| over all sequences, pairwise accuracy (pairs), and, where they
    differ by more than TOLERANCE, one line on what to change.

`score.py --check_consumers` prints the table; tests/test_consumers.py checks that it reports ~0
where formats agree and a large gap where they do not, and tests/test_grpo.py that our GRPO
reproduction gives what a real `trl.GRPOTrainer` computes.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import dataclass, replace

import torch
from transformers import pipeline

from reward.eval.reward_function import RewardFunction
from reward.eval.scoring import RewardScorer
from reward.fast.layout import common_prefix_length
from reward.fast.packed_forward import supports_packing
from reward.fast.packing import pack_pairs, packed_rewards
from reward.formatting import as_messages, encode_messages, encode_text, format_text
from reward.model import is_encoder, position_limit, unwrap

TOLERANCE = 1e-4  # max |Δr| below which a consumer "sees the trained reward"
REWARDBENCH = "allenai/reward-bench 05a9005"  # the source the RewardBench consumers follow
REWARDBENCH_MAX_LENGTH = 2048  # run_rm.py --max_length default


@dataclass
class Sequences:
    """What to score: (prompt, response) per sequence; with `pairs` = n, the first n are the chosen
    sides and the next n the rejected sides of n preference pairs."""

    prompts: list
    responses: list
    pairs: int | None = None

    @property
    def conversational(self) -> bool:
        return isinstance(self.responses[0], list)


@dataclass
class ConsumerResult:
    name: str
    rewards: list[float] | None = None  # one per sequence; None when skipped
    skipped: str | None = None  # why it was not run
    max_diff: float | None = None  # vs the training-time reward
    accuracy: float | None = None  # pairs only: r_chosen > r_rejected
    fix: str | None = None  # what to change, when max_diff > TOLERANCE

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "rewards"}


def installed_version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


class Skip(Exception):
    """A consumer that cannot run here (library missing, model or rows it cannot take): the reason."""


def within_positions(scorer: RewardScorer, lengths: list[int]) -> None:
    """Skip a consumer whose own token ids run past the model's learned positions (its forward would fail in
    the embedding): the check leaves out rows over the limit in training's format, but a consumer's format
    may add tokens (a chat template's headers) that training's does not."""
    limit, longest = position_limit(unwrap(scorer.model)), max(lengths, default=0)
    if limit is not None and longest > limit:
        raise Skip(f"in its format a sequence has {longest} tokens, more than the model's {limit} positions")


# --- the consumers ----------------------------------------------------------------------------------
def training_padded(scorer: RewardScorer, seqs: Sequences) -> list[float]:
    """The reference: the model's own forward on the ids training built (right-padded batches)."""
    return scorer.score_ids([scorer.encode(p, r) for p, r in zip(seqs.prompts, seqs.responses)])


def training_packed(scorer: RewardScorer, seqs: Sequences) -> list[float]:
    """What train.py's default forward computes: the pairs packed into one row, prompt shared."""
    if seqs.pairs is None:
        raise Skip("needs pairs (chosen/rejected rows)")
    if not supports_packing(scorer.model):
        raise Skip("this model trains on the padded forward (packing does not apply to it)")
    n = seqs.pairs
    ids = [scorer.encode(p, r) for p, r in zip(seqs.prompts, seqs.responses)]
    chosen, rejected = [], []
    with torch.no_grad():
        for start in range(0, n, scorer.batch_size):
            rows = [
                {"chosen_ids": ids[i], "rejected_ids": ids[n + i]}
                for i in range(start, min(start + scorer.batch_size, n))
            ]
            r_c, r_r = packed_rewards(scorer.model, pack_pairs(rows, scorer.tokenizer.pad_token_id))  # (B,), (B,)
            chosen += r_c.tolist()
            rejected += r_r.tolist()
    return chosen + rejected


def card_input(scorer: RewardScorer, prompt, response) -> tuple[str, bool]:
    """(text, add_special_tokens) that the model card tells a pipeline user to pass (reward/eval/model_card.py)."""
    if isinstance(response, list) or scorer.format.text_as_chat:
        messages = list(prompt or []) + response if isinstance(response, list) else as_messages(prompt, response)
        return scorer.tokenizer.apply_chat_template(messages, tokenize=False), False
    return format_text((prompt or "") + response, scorer.tokenizer, scorer.format), scorer.format.add_special_tokens


def model_card_pipeline(scorer: RewardScorer, seqs: Sequences) -> list[float]:
    """`pipeline("text-classification", model=DIR)` called as the model card says (default function)."""
    rm = pipeline("text-classification", model=scorer.model, tokenizer=scorer.tokenizer, device=scorer.device)
    inputs = [card_input(scorer, p, r) for p, r in zip(seqs.prompts, seqs.responses)]
    special = inputs[0][1]  # one format for every row: the same tokenizer call for all
    within_positions(
        scorer, [len(ids) for ids in scorer.tokenizer([t for t, _ in inputs], add_special_tokens=special)["input_ids"]]
    )
    results = rm([text for text, _ in inputs], batch_size=scorer.batch_size, add_special_tokens=special)
    return [r["score"] for r in results]


def our_reward_function(scorer: RewardScorer, seqs: Sequences) -> list[float]:
    """`reward.RewardFunction`, called as GRPO calls a `reward_funcs` callable."""
    rule = scorer.rule  # the scorer's length rule: the same limit and policy
    fn = RewardFunction(
        scorer.model,
        scorer.tokenizer,
        batch_size=scorer.batch_size,
        device=scorer.device,
        max_length=rule.tokens,
        truncation=rule.policy,
    )
    return fn(prompts=seqs.prompts, completions=seqs.responses)


def trl_grpo_path(scorer: RewardScorer, seqs: Sequences) -> list[float]:
    """TRL GRPOTrainer with `reward_funcs="DIR"`, as trl/trainer/grpo_trainer.py `_calculate_rewards`
    scores a model (trl 1.16): conversational rows rendered as text by trl.data_utils `apply_chat_template`
    (for a "messages" row: `tokenizer.apply_chat_template(messages, tools=None, tokenize=False)`), plain
    rows as `prompt + completion`; then `tokenizer(texts, padding=True, padding_side="right",
    add_special_tokens=False)` and `logits[:, 0]`. Completions reach it decoded with
    `skip_special_tokens=True`, so a trailing EOS in the text is gone. (GRPO's `__init__` also sets
    the model's pad_token_id from the tokenizer, pad := eos if none: RewardScorer has done the same.)
    Reproduced, not imported (TRL is never needed to use this project); run only where trl is
    installed, so the row stands for a GRPO the user has, and tests/test_grpo.py checks it against a
    real GRPOTrainer."""
    if installed_version("trl") is None:
        raise Skip("trl is not installed (pip install trl)")
    tok = scorer.tokenizer
    eos = tok.eos_token
    if seqs.conversational:
        texts = [
            tok.apply_chat_template(list(p or []) + r, tools=None, tokenize=False)
            for p, r in zip(seqs.prompts, seqs.responses)
        ]
    else:
        texts = [
            (p or "") + (r[: -len(eos)] if eos and r.endswith(eos) else r) for p, r in zip(seqs.prompts, seqs.responses)
        ]
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), scorer.batch_size):
            inputs = tok(
                text=texts[start : start + scorer.batch_size],
                return_tensors="pt",
                padding=True,
                padding_side="right",
                add_special_tokens=False,
            ).to(scorer.device)
            within_positions(scorer, inputs["attention_mask"].sum(1).tolist())
            out += scorer.model(**inputs).logits[:, 0].float().tolist()  # (N, 1) -> N rewards
    return out


def rewardbench_texts(scorer: RewardScorer, seqs: Sequences) -> list[str]:
    """Each sequence as RewardBench renders it (rewardbench/utils.py `prepare_dialogue_from_tokenizer`),
    then `tokenizer.apply_chat_template(messages, tokenize=False)`: a plain-text pair as [user: prompt,
    assistant: response]; a conversation as its earlier turns re-labelled user/assistant by position
    (RewardBench asserts the last of them is a user turn) + its final message as the assistant turn."""
    if not scorer.tokenizer.chat_template:
        raise Skip("the tokenizer has no chat template: RewardBench would use a FastChat template (not reproduced)")
    texts = []
    for prompt, response in zip(seqs.prompts, seqs.responses):
        if isinstance(response, list):
            full = list(prompt or []) + response
            turns = [
                {"role": "user" if i % 2 == 0 else "assistant", "content": m["content"]}
                for i, m in enumerate(full[:-1])
            ]
            if not turns or turns[-1]["role"] != "user":
                raise Skip("RewardBench needs an odd number of turns before the answer (it asserts a user turn last)")
            messages = [*turns, {"role": "assistant", "content": full[-1]["content"]}]
        elif prompt:
            messages = as_messages(prompt, response)
        else:
            raise Skip("plain-text rows without a prompt cannot be rendered as RewardBench's user/assistant turns")
        texts.append(scorer.tokenizer.apply_chat_template(messages, tokenize=False))
    return texts


def rewardbench_default(scorer: RewardScorer, seqs: Sequences) -> list[float]:
    """RewardBench's default `RewardBenchPipeline` (rewardbench/models/pipeline.py): the rendered text
    tokenized with special tokens, truncated from the left at 2048, padded on the tokenizer's side;
    when a sequence starts with two BOS the first is masked out of attention (its position stays).
    RewardBench runs it in 8-bit (bitsandbytes, CUDA) unless told otherwise; this runs the weights as
    loaded, so it measures the formatting, not quantization."""
    texts = rewardbench_texts(scorer, seqs)
    tok = scorer.tokenizer
    side, tok.truncation_side = tok.truncation_side, "left"  # run_rm.py sets it on the shared tokenizer
    out = []
    try:
        with torch.no_grad():
            for start in range(0, len(texts), scorer.batch_size):
                inputs = tok(
                    texts[start : start + scorer.batch_size],
                    truncation=True,
                    max_length=REWARDBENCH_MAX_LENGTH,
                    padding=True,
                    return_tensors="pt",
                ).to(scorer.device)
                within_positions(scorer, inputs["attention_mask"].sum(1).tolist())
                if tok.bos_token_id is not None:
                    ids, mask = inputs["input_ids"], inputs["attention_mask"]  # (N, T)
                    first = mask.argmax(dim=1)  # (N,) first real token
                    second = torch.clamp(first + 1, max=ids.shape[1] - 1)  # (N,)
                    rows = torch.arange(ids.shape[0], device=ids.device)  # (N,)
                    double = (ids[rows, first] == tok.bos_token_id) & (ids[rows, second] == tok.bos_token_id)  # (N,)
                    mask[rows[double], first[double]] = 0
                out += scorer.model(**inputs).logits[:, 0].float().tolist()  # (N, 1) -> N rewards
    finally:
        tok.truncation_side = side
    return out


def rewardbench_hf_pipeline(scorer: RewardScorer, seqs: Sequences) -> list[float]:
    """RewardBench's `pipeline_builder: pipeline` path (scripts/run_rm.py): transformers' text-classification
    pipeline with truncation (left, 2048), padding, `function_to_apply="none"`, no token type ids."""
    texts = rewardbench_texts(scorer, seqs)
    tok = scorer.tokenizer
    side, tok.truncation_side = tok.truncation_side, "left"
    try:
        kept = tok(texts, truncation=True, max_length=REWARDBENCH_MAX_LENGTH)["input_ids"]  # as the pipeline will
        within_positions(scorer, [len(ids) for ids in kept])
        rm = pipeline("text-classification", model=scorer.model, tokenizer=tok, device=scorer.device)
        results = rm(
            texts,
            batch_size=scorer.batch_size,
            truncation=True,
            padding=True,
            max_length=REWARDBENCH_MAX_LENGTH,
            function_to_apply="none",
            return_token_type_ids=False,
        )
    finally:
        tok.truncation_side = side
    return [r["score"] for r in results]


def ppo_get_reward(scorer: RewardScorer, seqs: Sequences, with_eos: bool) -> list[float]:
    """TRL's PPO reward (trl <= 1.12, trl/experimental/utils.py `get_reward`) on the policy's token ids:
    left-padded queries + right-padded responses, attention mask = ids != pad, position ids = exclusive
    cumsum of the mask, `model.<base_model_prefix>` then `model.score`, read at the token before the
    first pad of the response. A finished rollout keeps its EOS (`truncate_response` pads after it);
    one cut off by the length limit has none. Queries are the ids of the prompt as training built them."""
    model = scorer.model
    if is_encoder(model) or not isinstance(getattr(model, "score", None), torch.nn.Module):
        raise Skip(f"{type(model).__name__} has no `score` head on a decoder: TRL's PPO cannot call it")
    pad, eos = scorer.tokenizer.pad_token_id, scorer.tokenizer.eos_token_id
    backbone = getattr(model, model.base_model_prefix)
    ids = [scorer.encode(p, r) for p, r in zip(seqs.prompts, seqs.responses)]
    split = [query_length(scorer, p, full) for p, full in zip(seqs.prompts, ids)]
    within_positions(scorer, [len(rollout(full[n:], eos, with_eos)) + n for full, n in zip(ids, split)])
    out = []
    with torch.no_grad():
        for start in range(0, len(ids), scorer.batch_size):
            batch = range(start, min(start + scorer.batch_size, len(ids)))
            queries = [ids[i][: split[i]] for i in batch]
            responses = [rollout(ids[i][split[i] :], eos, with_eos) for i in batch]
            lq, lr = max(map(len, queries)), max(1, *map(len, responses))
            query_responses = torch.tensor(
                [[pad] * (lq - len(q)) + q + r + [pad] * (lr - len(r)) for q, r in zip(queries, responses)],
                dtype=torch.long,
                device=scorer.device,
            )  # (N, Lq + Lr): queries left-padded, responses right-padded
            mask = query_responses != pad  # (N, T)
            hidden = backbone(
                input_ids=torch.masked_fill(query_responses, ~mask, 0),
                attention_mask=mask,
                position_ids=mask.cumsum(1) - mask.long(),  # exclusive cumsum: 0 at the first real token
                return_dict=True,
                output_hidden_states=True,
                use_cache=False,
            ).hidden_states[-1]  # (N, T, H)
            logits = model.score(hidden).squeeze(-1)  # (N, T)
            is_pad = query_responses[:, lq:] == pad  # (N, Lr)
            first_pad = torch.where(is_pad.any(1), is_pad.float().argmax(1), lr)  # (N,) as first_true_indices
            out += logits[torch.arange(len(batch)), first_pad - 1 + lq].float().tolist()
    return out


def query_length(scorer: RewardScorer, prompt, full: list[int]) -> int:
    """How many leading ids of `full` are the prompt: its common prefix with the prompt encoded alone
    (kept within 1 .. len(full) - 1, so query and response are never empty)."""
    if not prompt:
        alone = full[:1]
    elif isinstance(prompt, list):
        alone = encode_messages(prompt, scorer.tokenizer)
    elif scorer.format.text_as_chat:
        alone = encode_messages(as_messages(prompt, "")[:1], scorer.tokenizer)
    else:
        alone = encode_text(prompt, scorer.tokenizer, replace(scorer.format, append_eos=False))
    n = common_prefix_length(alone, full)
    return max(1, min(n, len(full) - 1))


def rollout(response: list[int], eos: int | None, with_eos: bool) -> list[int]:
    """The response as a PPO rollout ends: generation stops at the first EOS, and `truncate_response`
    keeps it and pads after it (finished), or the length limit stops it before any EOS (cut off).
    Tokens a chat template writes after its EOS (ChatML's newline) are in neither.

    >>> rollout([5, 6, 2, 9], eos=2, with_eos=True), rollout([5, 6, 2, 9], eos=2, with_eos=False)
    ([5, 6, 2], [5, 6])
    >>> rollout([5, 6], eos=2, with_eos=True), rollout([5, 6], eos=2, with_eos=False)
    ([5, 6, 2], [5, 6])
    """
    if eos is None:
        return response
    end = response.index(eos) if eos in response else len(response)
    return [*response[:end], eos] if with_eos else response[:end]
