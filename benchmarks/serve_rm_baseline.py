"""The baseline of benchmarks/serve_bench.py: OpenRLHF's reward server, as it serves, on our model folder.

    python benchmarks/serve_rm_baseline.py --model DIR [--port 0] [--device cpu] [--max_len 2048]

What it reproduces (OpenRLHF openrlhf/cli/serve_rm.py, `RewardModelProxy` and its FastAPI app; our
own code, the behaviour theirs has):
- `POST /get_reward` reads {"query": [...], "prompts": [...]} and answers
  {"rewards": r, "scores": r, "extra_logs": {"dummy_scores": r}}. The handler is `async def` and runs
  the model synchronously inside it, so the event loop is blocked while a request is scored: requests
  are served one at a time, with no batching across requests and no prefix sharing.
- All of a request's queries go through one forward (their `--batch_size` default None), tokenized
  with padding on the LEFT, `add_special_tokens=False`, `truncation=True, max_length=max_len` (2048).
  (Older serve_rm.py versions stripped pad/EOS and appended EOS; the current one scores the text as sent.)
- The reward model (openrlhf/models/model.py `get_llm_for_sequence_regression`) runs its base model with
  position_ids = attention_mask.cumsum(-1) - 1 (1 at the pads) and reads the value head at each row's
  last real token, which with left padding is the last position. Here the folder's own
  AutoModelForSequenceClassification does the same: its base model, then its `score` head at position -1.
Added for the benchmark only: `GET /health` and the first stdout line that reward-serve prints (with
the real port when `--port 0`); SIGTERM ends it with exit 0. OpenRLHF logs every request at info level;
here uvicorn's access log is off, which can only make the baseline faster.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys

import torch
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from transformers import AutoModelForSequenceClassification, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase


class OpenRLHFRewardModel:
    """One request's queries -> rewards, the way OpenRLHF's RewardModelProxy.get_reward computes them."""

    def __init__(self, folder: str, device: str, max_len: int) -> None:
        self.device = torch.device(device)
        self.model: PreTrainedModel = AutoModelForSequenceClassification.from_pretrained(folder).to(self.device)
        self.model.eval()
        if not hasattr(self.model, "score"):  # OpenRLHF's value head sits on a decoder's hidden states
            raise SystemExit(f"{folder}: the baseline needs a decoder model with a `score` head")
        self.tokenizer: PreTrainedTokenizerBase = AutoTokenizer.from_pretrained(folder)
        self.tokenizer.padding_side = "left"  # openrlhf/utils get_tokenizer(..., padding_side="left")
        if self.tokenizer.pad_token is None:  # as their get_tokenizer: pad := eos
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_len = max_len

    @torch.no_grad()
    def get_reward(self, queries: list[str]) -> list[float]:
        batch = self.tokenizer(
            queries,
            return_tensors="pt",
            add_special_tokens=False,
            max_length=self.max_len,
            padding=True,
            truncation=True,
        ).to(self.device)
        mask = batch["attention_mask"]
        # get_llm_for_sequence_regression: positions count real tokens only; pads get 1 (never read)
        position_ids = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
        base = getattr(self.model, self.model.base_model_prefix)
        hidden = base(input_ids=batch["input_ids"], attention_mask=mask, position_ids=position_ids).last_hidden_state
        return self.model.score(hidden[:, -1]).squeeze(-1).float().tolist()  # left padding: the last real token


def build_app(reward_model: OpenRLHFRewardModel) -> FastAPI:
    """serve_rm.py's app (plus /health): the model runs inside the async handler, blocking the loop."""
    app = FastAPI()

    @app.post("/get_reward")
    async def get_reward(request: Request) -> JSONResponse:
        data = await request.json()
        rewards = reward_model.get_reward(data.get("query"))  # prompts are read but unused, as theirs
        return JSONResponse({"rewards": rewards, "scores": rewards, "extra_logs": {"dummy_scores": rewards}})

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    return app


def exit_cleanly(signum: int, frame: object) -> None:
    """SIGTERM before the server runs, or re-raised by uvicorn after its graceful shutdown: exit 0."""
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="OpenRLHF's serve_rm.py behaviour on a reward model folder")
    p.add_argument("--model", required=True, help="a model folder (AutoModelForSequenceClassification + tokenizer)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000, help="0: a free port (printed on the first line)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--max_len", type=int, default=2048)
    args = p.parse_args(argv)

    signal.signal(signal.SIGTERM, exit_cleanly)
    reward_model = OpenRLHFRewardModel(args.model, args.device, args.max_len)
    # bind first, so that --port 0 is resolved before the line that announces it
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    host, port = sock.getsockname()[:2]
    print(f"reward-serve-baseline: listening on http://{host}:{port} (model {args.model}, device {args.device})")
    sys.stdout.flush()
    config = uvicorn.Config(build_app(reward_model), log_level="warning", access_log=False)
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
