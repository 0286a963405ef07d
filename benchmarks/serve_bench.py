"""reward-serve vs OpenRLHF's reward server under the same GRPO-shaped load: completions/s, latency, tokens.

    python benchmarks/serve_bench.py                      # ~20M model, prompts ~512 tokens, G = 4, 8, 16
    python benchmarks/serve_bench.py --quick --servers baseline    # or --device cuda --requests 300

Each server is a subprocess on the same model folder, one at a time: ours (`python -m reward.serve`), and
OpenRLHF's reward server (benchmarks/serve_rm_baseline.py: openrlhf/cli/serve_rm.py's behaviour). Its URL
comes from its first stdout line; once GET /health answers, for each G of `--group_sizes`: one warm-up
request, then `--requests` groups sent by `--clients` threads on keep-alive http.client connections. A
request is one GRPO group, {"query": [prompt + c for c in group], "prompts": [prompt] * G}, to POST
/get_reward (OpenRLHF's remote-RM protocol: openrlhf/utils/remote_rm_utils.py), for both servers.

`tiny` / `small` folders record "no EOS appended, no special tokens added" (reward/formatting.py
`SequenceFormat`), the text the baseline tokenizes: both score the same ids, and the largest |ours -
baseline| reward is reported. Tokens computed per completion: the baseline runs each query's whole
left-padded row (counted here with the folder's tokenizer), prompt included; ours, from its /metrics
counters before and after each G, its prompt share being that minus the completions' own tokens.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import math
import os
import platform
import random
import re
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.inits import build_init  # noqa: E402
from benchmarks.measure import busy_warning, matmul_flops  # noqa: E402
from reward.data import EXPLICIT  # noqa: E402
from reward.export import record_format  # noqa: E402
from reward.formatting import SequenceFormat  # noqa: E402
from reward.presets.synthetic import CATEGORIES, FILLER, PROMPTS, RESPONSES  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
LISTENING = re.compile(r"listening on (http://\S+)")  # the first stdout line of both servers
COUNTERS = ("reward_tokens_computed_total", "reward_tokens_requested_total", "reward_completions_total")
FULL = dict(model="small", prompt_tokens=512, completion_tokens=32, requests=80, clients=8, group_sizes="4,8,16")
QUICK = dict(model="tiny", prompt_tokens=64, completion_tokens=8, requests=8, clients=4, group_sizes="4,8")
COLUMNS = {"completions_per_s": "completions/s", "p50_ms": "p50 ms", "p99_ms": "p99 ms"}
COLUMNS |= {"tokens_computed_per_completion": "tokens computed / completion"}
COLUMNS |= {"prompt_tokens_per_completion": "prompt tokens / completion"}


def model_folder(model: str, workdir: Path, seed: int) -> Path:
    """`tiny` / `small` built once into the work dir with the plain-text format recorded; else the folder given."""
    if model not in ("tiny", "small"):
        return Path(model)
    out = workdir / f"serve-{model}-seed{seed}"
    if (out / "model.safetensors").exists():
        return out
    build_init(model, out, seed)
    net, tokenizer = AutoModelForSequenceClassification.from_pretrained(out), AutoTokenizer.from_pretrained(out)
    record_format(net, tokenizer, SequenceFormat(append_eos=False, add_special_tokens=False), EXPLICIT)
    net.save_pretrained(out)
    return out


def sentence(rng: random.Random, low: int, high: int) -> str:
    text = " ".join(rng.choice(FILLER) for _ in range(rng.randint(low, high)))
    return text[0].upper() + text[1:] + "."


def workload(tokenizer, count: int, sizes: argparse.Namespace, group: int) -> list[dict]:
    """`count` deterministic requests: a multi-turn prompt of >= sizes.prompt_tokens tokens ending in the
    synthetic task's question, and `group` completions of varied length (>= completion_tokens / 2 to 3 / 2)."""
    prompt_tokens, completion_tokens, seed = sizes.prompt_tokens, sizes.completion_tokens, sizes.seed

    def size(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    requests = []
    for i in range(count):
        rng = random.Random(seed * 1_000_003 + i)
        question = "\nUser: " + rng.choice(PROMPTS).format(cat=rng.choice(sorted(CATEGORIES))) + "\nAssistant:"
        speaker, history = "User", "User: " + sentence(rng, 3, 10)
        while size(history + question) < prompt_tokens:  # a sentence at a time: overshoots by < 1 sentence
            if rng.random() < 0.3:  # the other one speaks
                speaker = "Assistant" if speaker == "User" else "User"
                history += f"\n{speaker}:"
            history += " " + sentence(rng, 3, 10)
        completions = []
        for _ in range(group):
            target = rng.randint(max(1, completion_tokens // 2), max(1, completion_tokens * 3 // 2))
            text = rng.choice(RESPONSES).format(item=rng.choice(rng.choice(list(CATEGORIES.values()))))
            while size(text) < target:
                text += " " + sentence(rng, 1, 5)
            completions.append(text)
        requests.append({"prompt": history + question, "completions": completions})
    return requests


def queries(request: dict, group: int) -> list[str]:
    """OpenRLHF's queries: prompt + response as one text each (what remote_rm_utils.py sends)."""
    return [request["prompt"] + c for c in request["completions"][:group]]


def body(request: dict, group: int) -> bytes:
    return json.dumps({"query": queries(request, group), "prompts": [request["prompt"]] * group}).encode()


def token_counts(tokenizer, requests: list[dict], group: int) -> dict:
    """Per completion: real tokens, the prompt's, the completion's own, and positions a left-padded batch runs."""
    real = padded = prompt = 0
    for r in requests:
        lengths = [len(ids) for ids in tokenizer(queries(r, group), add_special_tokens=False)["input_ids"]]
        real, padded = real + sum(lengths), padded + group * max(lengths)
        prompt += group * len(tokenizer(r["prompt"], add_special_tokens=False)["input_ids"])
    n = group * len(requests)
    return {"real": real / n, "padded": padded / n, "prompt": prompt / n, "completion": (real - prompt) / n}


class ServerProcess:
    """One server as a subprocess: its URL from the first stdout line, ready once GET /health answers."""

    def __init__(self, name: str, cmd: list[str], log: Path, start_timeout: float = 300) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=log.open("w"), text=True, env=env)
        self.first_line, started = "", threading.Event()
        threading.Thread(target=self.drain, args=(started,), daemon=True).start()
        found = LISTENING.search(self.first_line) if started.wait(start_timeout) else None
        deadline = time.monotonic() + start_timeout
        while found and time.monotonic() < deadline:
            self.url = found.group(1)
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=5) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise SystemExit(f"{name} did not start ({shlex.join(cmd)}):\n{log.read_text()[-3000:]}")

    def drain(self, started: threading.Event) -> None:
        """Keep the first stdout line; read and drop the rest, so that the pipe never fills."""
        for line in self.proc.stdout:
            self.first_line = self.first_line or line.strip()
            started.set()
        started.set()  # stdout closed: the server exited

    def counters(self) -> dict[str, float] | None:
        """reward-serve's COUNTERS (each summed over its labels), or None where /metrics lacks one."""
        try:
            with urllib.request.urlopen(self.url + "/metrics", timeout=30) as answer:
                text = answer.read().decode()
        except OSError:
            return None
        sums: dict[str, float] = {}
        for line in text.splitlines():
            if (name := re.split(r"[{\s]", line, maxsplit=1)[0]) in COUNTERS:
                sums[name] = sums.get(name, 0.0) + float(line.rsplit(maxsplit=1)[1])
        return sums if len(sums) == len(COUNTERS) else None

    def stop(self) -> int | None:
        """SIGTERM (both servers finish what is in flight and exit 0); the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


def send_load(url: str, bodies: list[bytes], clients: int) -> dict:
    """`clients` threads, each on one keep-alive connection, take the next body until none is left."""
    host, port, order, lock = urlsplit(url).hostname, urlsplit(url).port, itertools.count(), threading.Lock()
    latencies, rewards, errors = [None] * len(bodies), [None] * len(bodies), []

    def take() -> int:
        with lock:
            return next(order)

    def client() -> None:
        conn = http.client.HTTPConnection(host, port, timeout=600)
        while (i := take()) < len(bodies):
            started = time.perf_counter()
            try:
                conn.request("POST", "/get_reward", bodies[i], {"Content-Type": "application/json"})
                answer = conn.getresponse()
                data, latencies[i] = answer.read(), time.perf_counter() - started
                if answer.status != 200:
                    raise ValueError(f"HTTP {answer.status}: {data[:200]!r}")
                rewards[i] = json.loads(data)["rewards"]
            except (OSError, ValueError, KeyError, http.client.HTTPException) as e:
                errors.append(f"request {i}: {type(e).__name__}: {e}")  # list.append: thread-safe
                conn.close()  # http.client reconnects on the next request
        conn.close()

    threads, started = [threading.Thread(target=client) for _ in range(clients)], time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return {"seconds": time.perf_counter() - started, "latencies": latencies, "rewards": rewards, "errors": errors}


def load_row(name: str, group: int, run: dict, count: dict, before: dict | None, after: dict | None) -> dict:
    """One (server, G): completions/s over the load's wall time, latency percentiles, tokens per completion."""
    ok = [r for r in run["rewards"] if isinstance(r, list) and len(r) == group]
    ok = [r for r in ok if all(isinstance(x, float) and math.isfinite(x) for x in r)]
    done = sorted(t for t in run["latencies"] if t is not None)  # p99 by nearest rank: the max below 100 requests
    row = {"server": name, "G": group, "requests": len(run["rewards"]), "completions": group * len(ok)}
    row |= {"seconds": run["seconds"], "completions_per_s": group * len(ok) / run["seconds"]}
    row |= {"p50_ms": 1e3 * statistics.median(done), "p99_ms": 1e3 * done[math.ceil(0.99 * len(done)) - 1]}
    row |= {"all_got_G_rewards": len(ok) == len(run["rewards"]), "errors": run["errors"][:5]}
    row |= {"real_tokens_per_completion": count["real"], "prompt_tokens_mean": count["prompt"]}
    if name == "baseline":  # every query's row runs whole: its padding and its whole prompt
        row |= {"tokens_computed_per_completion": count["padded"], "prompt_tokens_per_completion": count["prompt"]}
    elif before and after:  # what ours says it ran; beyond the completions' own tokens: the prompt's share
        delta = {k: after[k] - before[k] for k in COUNTERS}
        computed = delta["reward_tokens_computed_total"] / max(delta["reward_completions_total"], 1)
        row |= {"metrics_delta": delta, "tokens_computed_per_completion": computed}
        row["prompt_tokens_per_completion"] = computed - count["completion"]
    return row


def bench_server(name: str, folder: Path, loads: dict, tokens: dict, args: argparse.Namespace) -> tuple[list, dict]:
    """One server through every G: a row per G, and the rewards it returned (by G) for the comparison."""
    ours = ["-m", "reward.serve", *shlex.split(args.serve_args)]
    program = ["benchmarks/serve_rm_baseline.py"] if name == "baseline" else ours
    cmd = [sys.executable, *program, "--model", str(folder), "--port", "0", "--device", args.device]
    server = ServerProcess(name, cmd, args.workdir / f"serve-{name}.log")
    rows, rewards = [], {}
    try:
        for group, (warmup, bodies) in loads.items():
            send_load(server.url, [warmup], 1)
            before = server.counters() if name == "ours" else None
            run = send_load(server.url, bodies, args.clients)
            after = server.counters() if name == "ours" else None
            rows.append(load_row(name, group, run, tokens[group], before, after) | {"clients": args.clients})
            print(f"{name} G={group}: {rows[-1]['completions_per_s']:.1f} completions/s", file=sys.stderr, flush=True)
            rewards[group] = run["rewards"]
    finally:
        code = server.stop()
    return [row | {"exit_code": code, "first_line": server.first_line} for row in rows], rewards


def compare(rows: list[dict], rewards: dict) -> list[dict]:
    """Per G: ours / baseline in completions/s and p99, and the largest reward difference over the requests."""
    by = {(r["server"], r["G"]): r for r in rows}
    out = []
    for group in sorted({g for server, g in by if server == "ours" and ("baseline", g) in by}):
        ours, base = by["ours", group], by["baseline", group]
        pairs = zip(rewards["ours"][group], rewards["baseline"][group])
        diffs = [abs(a - b) for x, y in pairs if x and y for a, b in zip(x, y) if a is not None and b is not None]
        out.append({"G": group, "speedup": ours["completions_per_s"] / base["completions_per_s"]})
        out[-1] |= {"p99_ratio": ours["p99_ms"] / base["p99_ms"], "max_abs_reward_difference": max(diffs, default=None)}
    return out


def table(rows: list[dict], comparison: list[dict]) -> str:
    ratios = {c["G"]: c for c in comparison}
    lines = ["| " + " | ".join(["server", "G", *COLUMNS.values(), "speed-up", "p99 ratio", "max abs reward diff"])]
    lines = [lines[0] + " |", "|---" * (len(COLUMNS) + 5) + "|"]
    for r in rows:
        cells = [r["server"], r["G"], *(f"{r[k]:.{0 if 'ms' in k else 1}f}" if k in r else "n/a" for k in COLUMNS)]
        c = ratios.get(r["G"], {}) if r["server"] == "ours" else {}
        diff = f"{c['max_abs_reward_difference']:.1e}" if c.get("max_abs_reward_difference") is not None else "n/a"
        cells += [f"{c['speedup']:.2f}x", f"{c['p99_ratio']:.2f}", diff] if c else ["", "", ""]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


def machine(device: str) -> dict:
    cpu, info = platform.processor(), Path("/proc/cpuinfo")
    for line in info.read_text().splitlines() if info.exists() else []:
        cpu = line.split(":", 1)[1].strip() if line.startswith("model name") else cpu
    return dict(cpu=cpu, cpu_count=os.cpu_count(), torch=torch.__version__, device=device)


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"smoke-test sizes: {QUICK}")
    p.add_argument("--model", help="tiny | small (~20M) | a reward model folder (default small)")
    p.add_argument("--servers", default="baseline,ours", help="which to run, in this order")
    p.add_argument("--group_sizes", help="G values, comma-separated (default 4,8,16)")
    p.add_argument("--requests", type=int, help="groups per G, over all clients (default 80)")
    p.add_argument("--clients", type=int, help="concurrent client threads (default 8)")
    p.add_argument("--prompt_tokens", type=int, help="each prompt at least this long (default 512)")
    p.add_argument("--completion_tokens", type=int, help="completion lengths around this (default 32)")
    p.add_argument("--device", default="cpu", help="passed to both servers")
    p.add_argument("--serve_args", default="", help='more options for ours, one string: "--max_wait_ms 5"')
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", type=Path, default=RESULTS / "work-serve")
    p.add_argument("--out", type=Path, help="results JSON (default benchmarks/results/serve_bench-<date>.json)")
    args = p.parse_args(argv)
    for key, value in (QUICK if args.quick else FULL).items():  # an option given wins over either set of sizes
        setattr(args, key, value if getattr(args, key) is None else getattr(args, key))
    return args


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    servers, groups = args.servers.split(","), [int(g) for g in args.group_sizes.split(",")]
    if "ours" in servers and not (ROOT / "reward" / "serve" / "__main__.py").exists():
        raise SystemExit("reward/serve has no __main__.py yet: run with --servers baseline")
    args.workdir.mkdir(parents=True, exist_ok=True)
    date, command = time.strftime("%Y%m%d-%H%M%S"), "python benchmarks/serve_bench.py " + shlex.join(argv)
    folder = model_folder(args.model, args.workdir, args.seed)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    requests = workload(tokenizer, args.requests + 1, args, max(groups))
    bodies = {g: [body(r, g) for r in requests] for g in groups}
    loads = {g: (bodies[g][-1], bodies[g][:-1]) for g in groups}  # the last request is the warm-up
    tokens = {g: token_counts(tokenizer, requests[:-1], g) for g in groups}

    info = machine(args.device) | {"load_average_before": os.getloadavg()}
    flops_before, rows, rewards = matmul_flops(os.cpu_count() or 1), [], {}
    for name in servers:
        server_rows, rewards[name] = bench_server(name, folder, loads, tokens, args)
        rows += server_rows
    info |= {"matmul_flops": [flops_before, matmul_flops(os.cpu_count() or 1)], "load_average_after": os.getloadavg()}
    comparison, warning = compare(rows, rewards), busy_warning(*info["matmul_flops"], {}, "completions_per_s")
    result = {"command": command, "date": date, "machine": info, "model": args.model, "folder": str(folder)}
    result |= {"prompt_tokens": args.prompt_tokens, "completion_tokens": args.completion_tokens, "rows": rows}
    result |= {"comparison": comparison, "busy_warning": warning}
    if target := next((c for c in comparison if c["G"] == 8), None):  # issue #30: >= 3x at G = 8, p99 no worse
        result["target_G8_met"] = target["speedup"] >= 3 and target["p99_ratio"] <= 1
    print(
        f"serve_bench: model {args.model}, prompts >= {args.prompt_tokens} tokens, completions ~"
        f"{args.completion_tokens}, {args.requests} requests x {args.clients} clients, device {args.device} | "
        f"{info['cpu']}, {info['cpu_count']} CPUs, torch {info['torch']} | load average "
        f"{info['load_average_before'][0]:.2f} before\ncommand: {command}\n\n{table(rows, comparison)}"
        + (f"\n\n**{warning}**" if warning else "")
    )
    out = args.out or RESULTS / f"serve_bench-{date}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"results: {out}")
    return result | {"rewards": rewards}


if __name__ == "__main__":
    main()
