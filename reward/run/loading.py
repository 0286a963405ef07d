"""What a run will load, checked before any of it loads: the data source (its files readable, each holding
a row) and the model's loading options (the config is read, cheap; the weights are not), one line each.

    check_sources           the recipe's stage right after preflight (reward/recipe.py)
    check_model_options     --model_name_or_path / --model_revision / --trust_remote_code: the config loads;
                            the model type has a sequence-classification class; every --model_init_kwargs key
                            is one from_pretrained, the model's config or the model class takes

--dtype and --attn_implementation are checked with the other options (reward/options.py); the tokenizer's
options (--eos_token, --pad_token, --chat_template_path) as the tokenizer loads, before the rows
(reward/tokenizer.py `prepare_tokenizer`). reward/model.py `load_model` keeps a backstop for each.
"""

from __future__ import annotations

import ast
import difflib
import inspect
import os
import textwrap
from functools import cache
from pathlib import Path

from transformers import AutoConfig, AutoModelForSequenceClassification, PretrainedConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING

from reward.config import TrainConfig
from reward.errors import UserError, first_line
from reward.presets.synthetic import GENERATED
from reward.presets.tiny import TINY
from reward.run.checkpoints import load_from_checkpoint
from reward.sources import data_files
from reward.tokenizer import LOAD_ERRORS, check_model_source, folder_problem

# what reward/model.py `load_model` passes to from_pretrained itself (the others move onto options of their own:
# reward/config.py `take_own_options_from_init_kwargs`)
SET_BY_LOAD_MODEL = {"use_safetensors": "always true here: weights load from .safetensors files only"}


def check_sources(cfg: TrainConfig, checkpoint: Path | None, rows_given: bool, model_given: bool) -> None:
    """The data source and the model's loading options, as reward/recipe.py will use them: rows handed over
    (Python API) replace --dataset_name; a model handed over ignores the loading options, unless a
    (full) checkpoint is resumed, whose folder is then what loads."""
    if not rows_given and cfg.dataset_name not in GENERATED:  # a generated task is built, not read
        data_files(cfg.dataset_name)
    if model_given and (cfg.use_peft or not checkpoint):
        return
    name = str(checkpoint) if checkpoint and not cfg.use_peft else cfg.model_name_or_path
    if name == TINY:  # built from a config (reward/presets/tiny.py): nothing from_pretrained would take
        if cfg.model_init_kwargs:
            raise UserError(f"--model_init_kwargs go to from_pretrained; {TINY} is built from a config, not loaded")
        return
    revision = cfg.model_revision if name == cfg.model_name_or_path else None
    options = (name, revision, cfg.trust_remote_code, cfg.model_init_kwargs or {})
    read = checkpoint if name == str(checkpoint) else None  # a damaged one: its error names the one before it
    for note in load_from_checkpoint(read, check_model_options, *options):
        print(note)


def check_model_options(name: str, revision: str | None, trust_remote_code: bool, init_kwargs: dict) -> list[str]:
    """Load `name`'s config as from_pretrained will (with `init_kwargs`: it takes the config's own keys), and
    refuse a model type without a sequence-classification class or a key nothing takes (did you mean ...?).
    Returns a line for each key this transformers accepts and ignores."""
    check_model_source(name)
    try:
        config, unused = AutoConfig.from_pretrained(
            name, revision=revision, trust_remote_code=trust_remote_code, return_unused_kwargs=True, **init_kwargs
        )
    except (TypeError, *LOAD_ERRORS) as exc:
        folder = os.path.join(name, str(init_kwargs["subfolder"])) if init_kwargs.get("subfolder") else name
        if os.path.isdir(folder) and not os.path.isfile(os.path.join(folder, "config.json")):
            raise UserError(f"{folder}: no config.json in the folder (not a saved model)") from exc
        where = "" if os.path.isdir(name) else "no local folder of that name, and from the Hub: "
        problem = folder_problem(name) or f"{name}: could not load the model's config ({where}{first_line(exc)})"
        raise UserError(problem) from exc
    model_class = sequence_classifier(name, config)
    for key, why in SET_BY_LOAD_MODEL.items():
        if key in init_kwargs:
            raise UserError(f"--model_init_kwargs {key}: {why}")
    taken, ignored = from_pretrained_keys() or (None, frozenset())
    takes = init_keys(model_class) if model_class is not None else None  # None: anything (**kwargs, remote code)
    if taken is not None and takes is not None and (unknown := [k for k in unused if k not in taken | takes]):
        known = {k for k in taken | set(config.to_dict()) | set(config.attribute_map) | takes if k[0] != "_"}
        hint = difflib.get_close_matches(unknown[0], sorted(known), n=1)
        why = f"did you mean {hint[0]!r}?" if hint else "no from_pretrained argument, config field or model argument"
        raise UserError(f"--model_init_kwargs: unknown key {unknown[0]!r} ({why})")
    dropped = [key for key in init_kwargs if key in ignored]
    return [f"--model_init_kwargs {key}: transformers no longer uses it (ignored)" for key in dropped]


def sequence_classifier(name: str, config: PretrainedConfig) -> type[PreTrainedModel] | None:
    """The class AutoModelForSequenceClassification will build for `config`; None for the model's own code."""
    if type(config) in MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING:
        return MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING[type(config)]
    if AutoModelForSequenceClassification.__name__ in (getattr(config, "auto_map", None) or {}):
        return None  # remote code (--trust_remote_code): its class is only known once imported
    raise UserError(
        f"{name}: transformers has no sequence-classification model for model type {config.model_type!r} "
        "(a reward model reads one score per sequence)"
    )


def init_keys(model_class: type[PreTrainedModel]) -> set[str] | None:
    """The keyword arguments a model class's __init__ takes besides its config; None if it takes any."""
    parameters = inspect.signature(model_class.__init__).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return None
    return {p.name for p in parameters if p.name not in ("self", "config") and p.kind is not p.VAR_POSITIONAL}


@cache
def from_pretrained_keys() -> tuple[frozenset[str], frozenset[str]] | None:
    """The keyword arguments from_pretrained takes itself (the Auto class's and PreTrainedModel's), and those
    it takes only to drop (transformers 5 pops low_cpu_mem_usage, from_tf, ... unused). Read from its code:
    its parameters, the `kwargs.pop("name")` / `kwargs.get("name")` it takes out of **kwargs, and the names
    a `for name in [...]` loop pops, as no public list of them exists; a key found nowhere goes on to the
    model's config and then to the model's __init__, which the caller checks. None if the code cannot be read
    (then no key is refused here: reward/model.py `load_model` names one the model does not take)."""
    taken, ignored = set(), set()
    for function in (AutoModelForSequenceClassification.from_pretrained, PreTrainedModel.from_pretrained):
        parameters = inspect.signature(function).parameters.values()
        taken |= {p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
        except (OSError, TypeError, SyntaxError):  # an install without sources
            return None
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and popped_from_kwargs(node):
                taken.add(node.args[0].value)
            elif isinstance(node, ast.For) and isinstance(node.iter, (ast.List, ast.Tuple)):
                ignored |= {e.value for e in node.iter.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return frozenset(taken | ignored), frozenset(ignored)


def popped_from_kwargs(call: ast.Call) -> bool:
    """`kwargs.pop("name", ...)` or `kwargs.get("name")`."""
    func, args = call.func, call.args
    return (
        isinstance(func, ast.Attribute)
        and func.attr in ("pop", "get")
        and isinstance(func.value, ast.Name)
        and func.value.id == "kwargs"
        and bool(args)
        and isinstance(args[0], ast.Constant)
        and isinstance(args[0].value, str)
    )
