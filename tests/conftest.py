"""Shared fixtures: small models and tokenizers built offline (no Hub access anywhere in the tests)."""

from __future__ import annotations

import json
import os
import sys
from functools import partial
from pathlib import Path

# offline before huggingface_hub is imported: it reads these once, at import
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import (  # noqa: E402
    GPT2Config,
    GPT2ForSequenceClassification,
    LlamaConfig,
    LlamaForSequenceClassification,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForSequenceClassification,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # train.py / score.py are importable as modules in tests
torch.set_num_threads(2)

from reward.eval.model_card import render_model_card  # noqa: E402
from reward.export import save_reward_model  # noqa: E402
from reward.model import configure_for_reward, turn_off_dropout  # noqa: E402
from reward.presets.synthetic import generate_pairs  # noqa: E402
from reward.presets.tiny import build_tiny_tokenizer, tiny_model  # noqa: E402
from reward.tokenizer import ensure_pad_token  # noqa: E402


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tiny_tokenizer()


def build_gpt2_style_tokenizer() -> PreTrainedTokenizerFast:
    """A GPT-2-style tokenizer: byte-level BPE, EOS `<|endoftext|>`, **no pad token**, no BOS added."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([r["prompt"] + r["chosen"] + r["rejected"] for r in generate_pairs(500, seed=7)], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", bos_token="<|endoftext|>")


@pytest.fixture()
def gpt2_tokenizer():
    return build_gpt2_style_tokenizer()


def build_gpt2_model(tokenizer: PreTrainedTokenizerFast, seed: int = 0) -> GPT2ForSequenceClassification:
    """A 2-layer random GPT-2 reward model; the tokenizer gets pad := eos (the policy under test)."""
    ensure_pad_token(tokenizer)
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_positions=256,
        num_labels=1,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    model = GPT2ForSequenceClassification(config)
    configure_for_reward(model, tokenizer)
    turn_off_dropout(model)  # as reward.model.load_model does (GPT-2 ships with dropout 0.1)
    return model.eval()


def build_arch_model(
    arch: str, vocab: int, seed: int = 0, attn: str = "sdpa", positions: int = 256
) -> tuple[torch.nn.Module, int, int]:
    """(model, pad, eos): a 2-layer random Llama or Qwen2 (grouped-query heads, their own pad id) or
    GPT-2 (pad == eos), fp32, dropout off: the three layouts every packed-path test runs on."""
    torch.manual_seed(seed)
    small = dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_labels=1)
    heads = dict(num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=positions)
    if arch == "llama":
        pad, eos = 0, 2
        model = LlamaForSequenceClassification(
            LlamaConfig(**small, **heads, pad_token_id=pad, bos_token_id=1, eos_token_id=eos)
        )
    elif arch == "qwen2":
        pad, eos = 0, 2
        model = Qwen2ForSequenceClassification(Qwen2Config(**small, **heads, pad_token_id=pad, eos_token_id=eos))
    else:
        pad = eos = vocab - 1
        config = GPT2Config(
            vocab_size=vocab, n_embd=64, n_layer=2, n_head=4, n_positions=positions, num_labels=1,
            bos_token_id=eos, eos_token_id=eos, pad_token_id=eos,
        )  # fmt: skip
        model = GPT2ForSequenceClassification(config)
    if attn != "sdpa":
        model.set_attn_implementation(attn)
    turn_off_dropout(model)
    return model.float().eval(), pad, eos


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """An untrained `tiny` reward model saved as a pipeline-ready folder (read-only for tests)."""
    tokenizer = build_tiny_tokenizer()
    model = tiny_model(tokenizer, seed=0)
    out = tmp_path_factory.mktemp("tiny_model")
    options = {"model_name_or_path": "tiny"}
    card = partial(render_model_card, cfg=options, card={"format": "explicit prompt"})
    save_reward_model(model, tokenizer, out, options, card=card)
    return out


@pytest.fixture()
def quiet_datasets():
    """No "Generating train split" bars on stderr, so stderr holds only what a CLI prints."""
    import datasets

    was_enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    yield
    if was_enabled:
        datasets.enable_progress_bars()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module: micro-batches of a few tiny sequences run as fast on one, and two
    threads slow down ~10x as soon as another process is busy on the 2 cores (measured: 1 s vs 8-20 s
    for one 6-step run). Use with `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_run(out: Path, *extra: str) -> list[str]:
    """CLI options of a tiny, fast run (50 generated pairs, batch 8, a record every step)."""
    return [
        "--output_dir",
        str(out),
        "--synthetic_num_pairs",
        "50",
        "--per_device_train_batch_size",
        "8",
        "--logging_steps",
        "1",
        "--disable_tqdm",
        *extra,
    ]


def read_metrics(out: Path) -> list[dict]:
    """The records of a run's metrics.jsonl."""
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def checkpoint_steps(out: Path) -> list[int]:
    """The steps of a run's checkpoint-N folders, sorted."""
    return sorted(int(p.name.split("-")[1]) for p in out.glob("checkpoint-*"))


TIMING_FIELDS = {"pairs_per_s", "tokens_per_s"}  # wall-clock rates: the only fields allowed to differ


def without_timing(records: list[dict]) -> list[dict]:
    """Metrics records without their wall-clock rates: what two runs of the same steps must share."""
    return [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in records]


def latest(out: Path) -> str:
    """The checkpoint a run's LATEST file names."""
    from reward.run.checkpoints import LATEST_FILE

    return (out / LATEST_FILE).read_text().strip()


def weights(folder: Path) -> dict[str, torch.Tensor]:
    """The tensors of a model folder's model.safetensors."""
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def all_finite(tensors: dict[str, torch.Tensor]) -> bool:
    """True if no tensor holds a NaN or inf."""
    return all(torch.isfinite(t).all() for t in tensors.values())


@pytest.fixture(scope="session")
def trained_tiny_dir(tmp_path_factory) -> Path:
    """`train_tiny` with its defaults, once per session: a folder with reward_format and reward_stats that
    the serving tests share (read-only: copy it to change it)."""
    return train_tiny(tmp_path_factory.mktemp("trained_tiny") / "rm")


def train_tiny(out: Path, dataset=None, **options) -> Path:
    """A few optimizer steps of `train.main` on the tiny model, saved to `out` (the options under test win)."""
    import train
    from reward.config import TrainConfig

    settings = {
        "output_dir": str(out),
        "synthetic_num_pairs": 240,
        "max_steps": 6,
        "per_device_train_batch_size": 16,
        "learning_rate": 1e-3,
        "eval_steps": 6,
        "logging_steps": 6,
        "disable_tqdm": True,
        **options,
    }
    train.main(TrainConfig(**settings), dataset=dataset)
    return out


def build_wordpiece_tokenizer(**special: str) -> PreTrainedTokenizerFast:
    """A BERT-style WordPiece tokenizer trained offline: [CLS] text [SEP], a [PAD] token, no EOS unless
    `special` names one (DeBERTa-v2's tokenizer declares bos [CLS] and eos [SEP], RoBERTa's eos </s>)."""
    from tokenizers import normalizers, processors

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    trainer = trainers.WordPieceTrainer(vocab_size=600, special_tokens=specials, show_progress=False)
    tok.train_from_iterator([r["prompt"] + r["chosen"] + r["rejected"] for r in generate_pairs(500, seed=5)], trainer)
    tok.post_processor = processors.BertProcessing(
        ("[SEP]", tok.token_to_id("[SEP]")), ("[CLS]", tok.token_to_id("[CLS]"))
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        **special,
    )


def save_encoder(out: Path, kind: str, seed: int = 0, max_positions: int = 256) -> Path:
    """A random 2-layer BERT or DeBERTa-v2 reward model + WordPiece tokenizer, saved as a model folder.
    The DeBERTa-v2 tokenizer declares eos [SEP] (as transformers' DebertaV2Tokenizer does) and so
    appends its own EOS; the BERT one has none."""
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DebertaV2Config,
        DebertaV2ForSequenceClassification,
    )

    special = {"bos_token": "[CLS]", "eos_token": "[SEP]"} if kind != "bert" else {}
    tokenizer = build_wordpiece_tokenizer(**special)
    size = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "max_position_embeddings": max_positions,
        "num_labels": 1,
        "pad_token_id": tokenizer.pad_token_id,
        "initializer_range": 0.2,
    }
    torch.manual_seed(seed)
    if kind == "bert":
        model = BertForSequenceClassification(BertConfig(**size))
    else:
        model = DebertaV2ForSequenceClassification(DebertaV2Config(**size, pooler_hidden_size=64))
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def save_tiny_policy(out: Path) -> Path:
    """A random 2-layer Llama causal LM with the tiny tokenizer (and its chat template): a GRPO policy."""
    from reward.presets.tiny import save_tiny_policy as save

    return save(out)


def steps_of(ds, collate, cfg):
    """The optimizer steps a TrainConfig asks for: its batch order (reward/run/parts.py) and plan, one process."""
    from reward.batching import BatchPlan, optimizer_steps
    from reward.config import pick
    from reward.run.parts import batch_order

    return optimizer_steps(ds, collate, batch_order(cfg, ds), pick(BatchPlan, cfg))
