"""The serve command (`reward-serve --model DIR` = `python -m reward.serve`): a saved reward model behind
HTTP for RL loops on other machines (docs/serving.md).

    reward-serve --model runs/tiny-synthetic                      # http://127.0.0.1:8000, no key
    REWARD_SERVE_API_KEY=s3cret reward-serve --model DIR --host 0.0.0.0 --port 8000 --device cuda

It prints one line that says where it listens and how it formats text, then serves until SIGTERM or
Ctrl-C: it stops accepting, answers the requests in flight, and exits 0. fastapi, uvicorn and
prometheus_client are the `serve` extra (`pip install -e ".[serve]"`), imported after the options are
parsed; without them the command says so in one line. `start_in_thread` runs the same server inside a
Python process (a notebook, the tests, benchmarks/serve_bench.py).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from reward.config import make_parser, option, parse_into
from reward.errors import UserError, first_line, run_cli
from reward.options import type_problems

KEY_ENV = "REWARD_SERVE_API_KEY"
DTYPES = ("float32", "bfloat16", "float16")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class ServeConfig:
    model: str = option(None, "Saved reward model folder (or Hub id); required.")
    host: str = option(
        "127.0.0.1", "Address to listen on: loopback by default; 0.0.0.0 for other machines (set a key)."
    )
    port: int = option(8000, "Port to listen on (0: any free port, said on the first line).")
    device: str | None = option(None, "cpu, cuda, cuda:1, ... (default: cuda if available).")
    dtype: str = option("float32", "Weights in float32, bfloat16 or float16 (the rewards equal score.py's in float32).")
    max_batch_tokens: int = option(16384, "Tokens computed per micro-batch, at most (a shared prompt counted once).")
    max_wait_ms: float = option(5.0, "How long the first waiting request waits for others to share its micro-batch.")
    max_queue: int = option(4096, "Completions that may wait for the model; past it a request gets 503 + Retry-After.")
    max_body_mb: float = option(32.0, "Largest request body, in MiB (413 past it).")
    max_group: int = option(1024, "Most completions in one group (413 past it).")
    max_request_completions: int = option(4096, "Most completions in one request (413 past it).")
    normalize: bool = option(
        False, "Reply (reward - mean) / std with the held-out statistics the model's config.json saved."
    )
    api_key: str | None = option(
        None, f"Bearer key every request but /health must carry (default: ${KEY_ENV}; none: no key).", repr=False
    )
    max_length: int | None = option(None, "Hold every sequence to this many tokens (default: the model's positions).")
    truncation: str = option(
        "left",
        "A completion over the limit (left/skip/error): left keeps its last tokens, skip replies null, error 413.",
    )
    padding_free: bool = option(True, "Pack each micro-batch into one row, a prompt computed once (off: padded).")
    graceful_timeout: float = option(30.0, "On SIGTERM, seconds to let in-flight requests finish.")
    access_log: bool = option(False, "Log every request (uvicorn's access log).")
    debug: bool = option(False, "Show the full traceback for start-up errors.")

    def __post_init__(self) -> None:
        from reward.eval.lengths import policy_problem

        if not self.model:
            raise UserError("--model is required: a saved reward model folder (or Hub id)")
        if problems := type_problems(self):
            raise UserError("; ".join(problems))
        problems = [policy_problem("--truncation", self.truncation)]
        problems.append(
            None if self.dtype in DTYPES else f"--dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}"
        )
        problems.append(None if 0 <= self.port <= 65535 else f"--port must be 0..65535, got {self.port}")
        for name in ("max_batch_tokens", "max_queue", "max_group", "max_request_completions"):
            value = getattr(self, name)
            problems.append(None if value >= 1 else f"--{name} must be >= 1, got {value}")
        for name in ("max_wait_ms", "max_body_mb", "graceful_timeout"):
            value = getattr(self, name)
            problems.append(None if value >= 0 else f"--{name} must be >= 0, got {value}")
        if self.max_length is not None and self.max_length < 2:
            problems.append(f"--max_length must be >= 2, got {self.max_length}")
        if problems := [p for p in problems if p]:
            raise UserError("; ".join(problems))
        if self.api_key == "":  # e.g. --api_key "$UNSET": a key nobody can send would lock every client out
            raise UserError(f"--api_key is empty: give the key, or leave the option out (then ${KEY_ENV}, if set)")
        if self.api_key is None:
            self.api_key = os.environ.get(KEY_ENV) or None


SERVE_GROUPS = {
    "model": "model device dtype normalize max_length truncation padding_free",
    "listening": "host port api_key access_log graceful_timeout debug",
    "batching and limits": "max_batch_tokens max_wait_ms max_queue max_body_mb max_group max_request_completions",
}


def parse_serve_config(argv: list[str] | None = None) -> ServeConfig:
    usage = "%(prog)s --model DIR [--host 127.0.0.1] [--port 8000] [--OPTION VALUE ...]"
    parser = make_parser(ServeConfig, "Serve a reward model over HTTP to RL loops.", SERVE_GROUPS, usage)
    return parse_into(parser, list(sys.argv[1:] if argv is None else argv))


def require_serve_extra() -> None:
    """One line when the `serve` extra is missing, before the model loads."""
    missing = []
    for name in ("fastapi", "uvicorn", "prometheus_client"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UserError(
            f'reward-serve needs the serve extra: pip install -e ".[serve]" (missing: {", ".join(missing)})'
        )


@dataclass
class Service:
    """A loaded model behind its app: what `serve` and `start_in_thread` run."""

    app: Any
    engine: Any
    batcher: Any
    telemetry: Any
    info: dict
    lines: list[str]  # what the start-up says after its first line


def build_service(cfg: ServeConfig) -> Service:
    """Load the model once and wire the engine, the batcher, the metrics and the app."""
    require_serve_extra()
    import torch

    import reward
    from reward.eval.scoring import RewardScorer
    from reward.formatting import describe_format
    from reward.serve.app import build_app
    from reward.serve.batcher import Batcher
    from reward.serve.engine import Engine
    from reward.serve.protocol import Limits
    from reward.serve.telemetry import Telemetry

    scorer = RewardScorer(
        cfg.model,
        device=cfg.device,
        normalize=cfg.normalize,
        padding_free=cfg.padding_free,
        max_length=cfg.max_length,
        truncation=cfg.truncation,
        show_progress=False,
    )
    if cfg.dtype != "float32":
        scorer.model.to(getattr(torch, cfg.dtype))
    limits = Limits(int(cfg.max_body_mb * 2**20), cfg.max_group, cfg.max_request_completions)
    engine = Engine(scorer, limits, cfg.max_batch_tokens)
    batcher = Batcher(
        scorer.model,
        scorer.tokenizer.pad_token_id,
        cfg.max_batch_tokens,
        cfg.max_wait_ms / 1000,
        cfg.max_queue,
        cfg.padding_free,
    )
    telemetry = Telemetry(queue_depth=lambda: batcher.waiting)
    batcher.observe = telemetry.observe_batch
    described = describe_format(scorer.format, scorer.format_record)
    info = {
        "model": scorer.source,
        "weights": weights_fingerprint(scorer.model),
        "reward_format": scorer.format_record,
        "format_recorded": scorer.format_record is not None,
        "format": described,
        "reward_stats": scorer.stats,
        "normalize": scorer.normalize,
        "device": str(scorer.device),
        "dtype": cfg.dtype,
        "packed": batcher.packed,
        "limits": {
            "max_tokens": scorer.rule.tokens,
            "why": scorer.rule.why,
            "truncation": scorer.rule.policy,
            "max_batch_tokens": cfg.max_batch_tokens,
            "max_wait_ms": cfg.max_wait_ms,
            "max_queue": cfg.max_queue,
            "max_body_bytes": limits.max_body_bytes,
            "max_group": cfg.max_group,
            "max_request_completions": cfg.max_request_completions,
        },
        "auth": cfg.api_key is not None,
        "version": reward.__version__,
    }
    lines = [f"formatting: {described}", scorer.rule.describe()]
    if cfg.api_key is None and cfg.host not in LOOPBACK:
        lines.append(f"warning: no key on {cfg.host}: anyone who can reach it can score (set ${KEY_ENV} or --api_key)")
    app = build_app(engine, batcher, telemetry, info, cfg.api_key)
    return Service(app, engine, batcher, telemetry, info, lines)


def weights_fingerprint(model: Any) -> str:
    """A short hash of the weights as loaded (each tensor's name, dtype, shape and first values): two servers
    with equal fingerprints score alike, whatever path each was given (RemoteRewardFunction compares them)."""
    import hashlib

    digest = hashlib.blake2b(digest_size=8)
    for name, tensor in model.state_dict().items():
        head = tensor.detach().reshape(-1)[:16].float().cpu().numpy().tobytes()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode() + head)
    return digest.hexdigest()


def listen(host: str, port: int) -> socket.socket:
    """The listening socket (bound here so that port 0's real port can be said before serving)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        return socket.create_server((host, port), family=family, backlog=2048)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or first_line(exc)}") from None


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def uvicorn_server(cfg: ServeConfig, app: Any):
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=cfg.access_log,
        timeout_graceful_shutdown=cfg.graceful_timeout,
        lifespan="on",
    )
    return uvicorn.Server(config)


def serve(cfg: ServeConfig) -> int:
    """Run until SIGTERM / SIGINT, then answer what is in flight and return 0."""
    from reward.run.console import quiet_libraries_unless_tty

    quiet_libraries_unless_tty()  # a server's log is a file: no "Loading weights" bar frames in it
    service = build_service(cfg)
    sock = listen(cfg.host, cfg.port)
    print(
        f"reward-serve: listening on {url_of(sock)} — {service.info['model']} on {service.info['device']} "
        f"({cfg.dtype}{', packed' if service.info['packed'] else ''}); POST /score, POST /get_reward (OpenRLHF), "
        "GET /health /info /metrics",
        flush=True,
    )
    for line in service.lines:
        print(line, flush=True)
    server = uvicorn_server(cfg, service.app)
    heard: list[int] = []
    # uvicorn handles SIGTERM / SIGINT (stop accepting, finish in-flight requests), then raises the signal
    # again once done (uvicorn/server.py `capture_signals`) so that the previous handler runs: ours, which
    # notes it, so that a graceful stop exits 0 instead of dying of the re-raised signal.
    previous = {
        sig: signal.signal(sig, lambda number, frame: heard.append(number)) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        server.run(sockets=[sock])
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        sock.close()
    said = f" ({signal.Signals(heard[0]).name})" if heard else ""
    cut = service.app.state.requests_cut
    after = (
        f"{cut} request(s) in flight cut after --graceful_timeout {cfg.graceful_timeout:g} s"
        if cut
        else ("the requests in flight were answered")
    )
    print(f"reward-serve: stopped{said}; {after}", flush=True)
    return 0


@dataclass
class Running:
    """A server started by `start_in_thread`: its URL, and `stop()` (graceful, as on SIGTERM)."""

    url: str
    service: Service
    server: Any
    thread: threading.Thread

    def stop(self, timeout: float = 30.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)


def start_in_thread(model: str, **options: Any) -> Running:
    """Serve `model` from a background thread of this process (port 0 by default: any free one); returns
    once it accepts requests. Options are ServeConfig's: `start_in_thread("runs/tiny-synthetic", max_wait_ms=2)`."""
    cfg = ServeConfig(model=model, **{"port": 0, **options})
    service = build_service(cfg)
    sock = listen(cfg.host, cfg.port)
    server = uvicorn_server(cfg, service.app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="reward-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("reward-serve did not start (see the log above)")
        time.sleep(0.01)
    return Running(url_of(sock), service, server, thread)


def cli(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_cli(argv, parse=parse_serve_config, run=serve)
