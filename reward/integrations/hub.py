"""`--push_to_hub`: the saved folder (the one `pipeline` loads, model card included) uploaded with
huggingface_hub, and every check that can fail done before training starts.

`check_hub` runs in preflight: a token (`--hub_token`, HF_TOKEN or the cached login), a Hub that
answers, an account that token belongs to with write access, and the repo (created if missing, as
the HF Trainer does when it starts). A run that could not push stops there with one line, instead
of after hours of training. `--hub_strategy every_save` also pushes each checkpoint's model
(not its optimizer state) as "Training in progress, step N", as the HF Trainer's every_save does,
but synchronously; `end` pushes the final folder only.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reward.errors import UserError, first_line
from reward.run.checkpoints import STATE_FILE

# never uploaded: a checkpoint's resume state, the lock, temp folders and any dotfile, tracker files,
# and the held-out rows written for score.py (the user's data); adapter/ goes (small, and useful)
IGNORE = [
    "checkpoint-*",
    STATE_FILE,
    "latest",
    ".*",
    "*/.*",
    "runs/*",
    "*events.out.tfevents*",
    "wandb/*",
    "heldout_pairs.jsonl",
]


@dataclass
class HubTarget:
    repo_id: str
    token: str = field(repr=False)
    strategy: str = "end"


def check_hub(cfg: Any) -> HubTarget | None:
    """The repo a run will push to, with every reason it could not, checked now (None: no push)."""
    if not cfg.push_to_hub:
        return None
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    token = cfg.hub_token or get_token()
    if not token:
        raise UserError("--push_to_hub: no Hub token (run `hf auth login`, set HF_TOKEN, or pass --hub_token)")
    api = HfApi(token=token)
    try:
        who = api.whoami()
    except OfflineModeIsEnabled as exc:
        raise UserError("--push_to_hub: HF_HUB_OFFLINE is set, so nothing can be uploaded") from exc
    except HfHubHTTPError as exc:
        raise UserError(f"--push_to_hub: the Hub refused the token ({first_line(exc)})") from exc
    except Exception as exc:  # httpx / OS errors: no network, DNS, proxy
        raise UserError(f"--push_to_hub: the Hub cannot be reached ({type(exc).__name__}: {first_line(exc)})") from exc
    role = who.get("auth", {}).get("accessToken", {}).get("role")
    if role == "read":
        raise UserError(f"--push_to_hub: the token of {who.get('name')!r} is read-only; a write token is needed")
    repo_id = cfg.hub_model_id or Path(cfg.output_dir).resolve().name
    if "/" not in repo_id:
        repo_id = f"{who['name']}/{repo_id}"
    try:
        api.create_repo(repo_id, private=cfg.hub_private_repo, exist_ok=True)
    except Exception as exc:
        raise UserError(f"--push_to_hub: could not create or open {repo_id} ({first_line(exc)})") from exc
    print(f"push to hub: {repo_id} ({cfg.hub_strategy})")
    return HubTarget(repo_id, token, cfg.hub_strategy)


def files_to_upload(folder: Path) -> list[str]:
    """What `push` uploads from `folder`, relative to it: everything the pipeline and the model card
    need, nothing of the resume state or of the user's held-out rows. `push` passes exactly this list."""
    files = sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*") if p.is_file())
    return [f for f in files if not any(fnmatch.fnmatch(f, pattern) for pattern in IGNORE)]


def push(target: HubTarget, folder: Path, message: str) -> None:
    from huggingface_hub import HfApi

    HfApi(token=target.token).upload_folder(
        repo_id=target.repo_id, folder_path=str(folder), commit_message=message, allow_patterns=files_to_upload(folder)
    )
    print(f"pushed {folder} to https://huggingface.co/{target.repo_id}")


class PushEverySave:
    """A checkpoint writer that also pushes each checkpoint's model (`--hub_strategy every_save`)."""

    def __init__(self, save: Any, target: HubTarget, out_dir: Path, is_main: bool) -> None:
        self.save, self.target, self.out_dir, self.is_main = save, target, out_dir, is_main

    def __call__(self, progress: Any) -> None:  # the loop's Progress (reward/loop.py)
        self.save(progress)
        if self.is_main:
            step = progress.step
            push(self.target, self.out_dir / f"checkpoint-{step}", f"Training in progress, step {step}")
