"""The tokenizer: loaded from the model source (a folder or a Hub id, checked first), then the tokenizer
options (`TokenizerOptions`) applied in TRL's order: `eos_token` / `pad_token`, `chat_template_path`,
and pad := eos when it has no pad token (reward/model.py explains where the head then reads the reward).

The source checks live here because the tokenizer is the first thing read from a model folder:
a path that is not a folder, or the first damaged file in it, is named in one line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import jinja2
from safetensors import SafetensorError, safe_open
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from reward.errors import UserError, first_line


def check_model_source(name: str) -> None:
    """A path-like name that is not a folder is a typo, not a Hub id: say so before any lookup."""
    if not os.path.isdir(name) and (name.startswith((".", "/", "~")) or os.path.exists(name)):
        raise UserError(f"{name}: no such model folder")


LOAD_ERRORS = (OSError, ValueError, SafetensorError)  # ValueError covers JSON and UTF-8 decoding errors
JSON_FILES = (
    "config.json",
    "tokenizer_config.json",
    "tokenizer.json",
    "special_tokens_map.json",
    "generation_config.json",
)


def folder_problem(folder: str | Path) -> str | None:
    """The first file of a model folder that cannot be read, and why: what a loading error should name
    (transformers' own message often names neither the file nor the folder)."""
    path = Path(folder)
    if not path.is_dir():
        return None
    for name in JSON_FILES:
        if (path / name).is_file():
            try:
                json.loads((path / name).read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                return f"{path / name}: not valid JSON ({first_line(exc)})"
    for weights in sorted(path.glob("*.safetensors")):
        try:
            with safe_open(weights, "pt"):
                pass
        except (OSError, SafetensorError) as exc:
            return f"{weights}: damaged safetensors file ({first_line(exc)})"
    return None


def load_tokenizer(name: str, trust_remote_code: bool = False, revision: str | None = None) -> PreTrainedTokenizerBase:
    """The tokenizer of a model folder or Hub id (the `tiny` preset builds its own: reward/presets/tiny.py)."""
    check_model_source(name)
    try:
        return AutoTokenizer.from_pretrained(name, trust_remote_code=trust_remote_code, revision=revision)
    except LOAD_ERRORS as exc:
        where = "" if os.path.isdir(name) else "no local folder of that name, and from the Hub: "
        raise UserError(
            folder_problem(name) or f"{name}: could not load a tokenizer ({where}{first_line(exc)})"
        ) from exc


TEMPLATE_SUFFIXES = (".jinja", ".j2")
# what every chat template must render: a template that fails on it would fail on the first conversation
TRIAL_CONVERSATION = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]


def take_chat_template(tokenizer: PreTrainedTokenizerBase, path: str, trust_remote_code: bool = False) -> int:
    """TRL's `chat_template_path`: a .jinja/.j2 file becomes the chat template; a tokenizer folder or Hub
    id gives its template, its added tokens and its EOS (trl/chat_template_utils.py
    `clone_chat_template`; reward/model.py `match_vocabulary` then grows the embeddings). Returns how
    many tokens it added. The path is checked, and the template rendered once, before any data loads."""
    flag, local = f"--chat_template_path {path}", os.path.expanduser(path)
    if os.path.isfile(local) and local.endswith(TEMPLATE_SUFFIXES):
        try:
            tokenizer.chat_template = Path(local).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{flag}: could not read the template ({first_line(exc)})") from exc
        check_chat_template(tokenizer, flag)
        return 0
    if os.path.isfile(local):
        raise UserError(f"{flag}: a template file must end in .jinja or .j2")
    if local.endswith(TEMPLATE_SUFFIXES):
        raise UserError(f"{flag}: no such file")
    if not os.path.isdir(local) and (path.startswith((".", "/", "~")) or os.path.exists(local)):
        raise UserError(f"{flag}: no such file or folder (a .jinja/.j2 file, a tokenizer folder or a Hub id)")
    try:
        source = load_tokenizer(local, trust_remote_code)
    except UserError as exc:  # its message names the source; say which option gave it
        raise UserError(f"--chat_template_path: {exc}") from exc
    if not source.chat_template:
        raise UserError(f"{flag}: that tokenizer has no chat template")
    tokenizer.chat_template = source.get_chat_template()
    new = [t for t in source.added_tokens_decoder.values() if t.content not in tokenizer.get_vocab()]
    tokenizer.add_tokens(new)
    if source.eos_token is not None:
        tokenizer.eos_token = source.eos_token
    check_chat_template(tokenizer, flag)
    return len(new)


def check_chat_template(tokenizer: PreTrainedTokenizerBase, flag: str) -> None:
    """Render the tokenizer's chat template on a user/assistant exchange, as tokenizing will (transformers
    compiles it with jinja2 in `apply_chat_template`): a syntax error or a failing template is one line
    naming `flag` and the template's line, not a jinja2 traceback once the data has loaded."""
    try:
        tokenizer.apply_chat_template(TRIAL_CONVERSATION, tokenize=False)
    except jinja2.TemplateSyntaxError as exc:
        where = f"line {exc.lineno}: {exc.message or type(exc).__name__}"
        raise UserError(f"{flag}: the chat template does not compile ({where})") from exc
    except (jinja2.TemplateError, TypeError) as exc:  # raise_exception(...), an undefined name, a bad operand
        raise UserError(f"{flag}: the chat template fails on a user/assistant exchange ({first_line(exc)})") from exc


# --- how much text a token can stand for: what a text too large to fit is known by, without tokenizing it ---
# A tokenizer run on a 50 MB row takes minutes and ~9 GB, or aborts the process with no error line
# (measured: reward/eval/lengths.py). Past this many characters a text that cannot fit is never tokenized.
HUGE_TEXT_CHARS = 1_000_000


def chars_per_token(tokenizer: PreTrainedTokenizerBase) -> int:
    """The most characters one token stands for: its longest vocabulary entry (a byte-level symbol is one
    byte, so never less than a character; added tokens included), or WordPiece's per-word limit, whose
    [UNK] stands for a whole word."""
    longest = max(map(len, tokenizer.get_vocab()), default=1)
    backend = getattr(getattr(tokenizer, "backend_tokenizer", None), "model", None)  # fast tokenizers
    slow = getattr(tokenizer, "wordpiece_tokenizer", None)  # BertTokenizer and its kin
    per_word = getattr(backend, "max_input_chars_per_word", None) or getattr(slow, "max_input_chars_per_word", 0)
    return max(longest, per_word or 0, 1)


def beyond_reach(tokenizer: PreTrainedTokenizerBase, tokens: int) -> int:
    """Characters past which a text has more than `tokens` tokens for certain, and is too large to tokenize
    safely: training drops such a pair untokenized (reward/formatting.py `encode_and_judge`). Never below
    HUGE_TEXT_CHARS, so every row a tokenizer handles at ease is still tokenized and judged exactly (only
    text a tokenizer mostly throws away could break the `chars_per_token` bound: reward/eval/lengths.py)."""
    return max(chars_per_token(tokenizer) * tokens, HUGE_TEXT_CHARS)


def text_chars(*texts: str | list | None) -> int:
    """Characters of the text in a prompt and a response: strings, or the content of message lists."""
    total = 0
    for text in texts:
        if isinstance(text, str):
            total += len(text)
        elif isinstance(text, list):
            total += sum(len(m["content"]) for m in text if isinstance(m, dict) and isinstance(m.get("content"), str))
    return total


def ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> bool:
    """Give the tokenizer a pad token if it has none (pad := eos). Returns True if it did."""
    if tokenizer.pad_token is not None:
        return False
    if tokenizer.eos_token is None:
        raise UserError(
            f"tokenizer {tokenizer.name_or_path!r} has neither a pad nor an eos token; "
            "set tokenizer.pad_token (and eos_token) before training"
        )
    tokenizer.pad_token = tokenizer.eos_token
    return True


@dataclass(frozen=True)
class TokenizerOptions:
    """The options `prepare_tokenizer` applies (TrainConfig's names)."""

    eos_token: str | None = None
    pad_token: str | None = None
    chat_template_path: str | None = None
    trust_remote_code: bool = False
    use_peft: bool = False  # LoRA cannot train the embedding rows of tokens a template adds


def prepare_tokenizer(
    tokenizer: PreTrainedTokenizerBase, options: TokenizerOptions, from_checkpoint: bool
) -> list[str]:
    """Apply the tokenizer options, in TRL's order; returns a line per change made. A resumed run's
    tokenizer (from its checkpoint) has its chat template already."""
    notes = []
    for role in ("eos_token", "pad_token"):  # TRL's RewardConfig options: a token the vocabulary has
        token = getattr(options, role)
        if token is not None and token != getattr(tokenizer, role):
            if token not in tokenizer.get_vocab():
                raise UserError(f"--{role} {token!r} is not in the tokenizer's vocabulary")
            setattr(tokenizer, role, token)
            notes.append(f"tokenizer {role}: {token!r}")
    if options.chat_template_path and not from_checkpoint:
        added = take_chat_template(tokenizer, options.chat_template_path, options.trust_remote_code)
        if added and options.use_peft:  # TRL trains them with peft's trainable_token_indices; we do not
            raise UserError(
                f"--chat_template_path added {added} token(s): under LoRA their embedding rows would stay untrained "
                "(train without --use_peft, or take a template whose tokens the vocabulary has)"
            )
        eos = tokenizer.eos_token
        notes.append(f"chat template from {options.chat_template_path} (EOS {eos!r}, {added} token(s) added)")
    if ensure_pad_token(tokenizer):
        notes.append(
            f"tokenizer has no pad token: using eos {tokenizer.eos_token!r} as pad (as TRL); "
            "the reward is read before a trailing EOS"
        )
    return notes


def pair_chars(row: dict) -> int:
    """Characters of a preference row's longer side, its prompt included."""
    return max(text_chars(row.get("prompt"), row[side]) for side in ("chosen", "rejected"))
