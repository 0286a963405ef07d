"""The `reward-serve` command as a process: its first line, SIGTERM (in-flight requests answered, exit 0),
one-line errors for a missing extra, a bad option and a port in use, and --help without torch."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_serve import post

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def run_cli(*code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "\n".join(code)], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def model_dir(trained_tiny_dir) -> Path:
    return trained_tiny_dir


def start(model_dir: Path, *options: str) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "reward.serve", "--model", str(model_dir), "--port", "0", *options],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    first = process.stdout.readline()
    found = re.search(r"listening on (http://\S+)", first)
    assert found, first + process.stdout.read()
    return process, found.group(1)


def test_sigterm_finishes_the_request_in_flight_and_exits_0(model_dir):
    process, url = start(model_dir, "--max_wait_ms", "1500")
    result = {}
    request = threading.Thread(
        target=lambda: result.update(reply=post(url + "/score", {"prompt": "Q:", "completions": [" a", " b"]}))
    )
    request.start()
    time.sleep(0.5)  # the request is in flight: it waits up to 1.5 s for others to share its micro-batch
    process.send_signal(signal.SIGTERM)
    request.join(30)
    code = process.wait(30)
    out = process.stdout.read()
    status, reply, _ = result["reply"]
    assert status == 200 and len(reply["rewards"]) == 2, reply
    assert code == 0 and "stopped (SIGTERM)" in out, out
    host, port = url.removeprefix("http://").split(":")
    with pytest.raises(OSError):
        socket.create_connection((host, int(port)), timeout=2)  # no longer accepting


def test_the_first_line_says_where_and_how(model_dir):
    process, url = start(model_dir)
    try:
        status, reply, _ = post(url + "/score", {"prompt": "Q:", "completions": [" a"]})
        assert status == 200
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0
    rest = process.stdout.read()
    assert "formatting: EOS '</s>' appended" in rest and "lengths:" in rest and "stopped (SIGINT)" in rest


def test_a_missing_extra_is_one_line(model_dir):
    result = run_cli(
        "import sys",
        "sys.modules['fastapi'] = None  # as if not installed",
        "from reward.serve.cli import cli",
        f"sys.exit(cli(['--model', {str(model_dir)!r}]))",
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == 'error: reward-serve needs the serve extra: pip install -e ".[serve]" (missing: fastapi)'
    )


@pytest.mark.parametrize(
    "options, said",
    [
        (["--port", "70000"], "--port must be 0..65535"),
        (["--truncation", "middle"], "--truncation must be 'left', 'skip' or 'error'"),
        (["--dtype", "int8"], "--dtype must be one of float32, bfloat16, float16"),
        (["--max_wait_ms", "-1"], "--max_wait_ms must be >= 0"),
    ],
)
def test_bad_options_are_one_line(model_dir, options, said):
    result = subprocess.run(
        [sys.executable, "-m", "reward.serve", "--model", str(model_dir), *options],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2 and said in result.stderr and "Traceback" not in result.stderr, result.stderr


def test_a_port_in_use_is_one_line(model_dir):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "reward.serve", "--model", str(model_dir), "--port", str(port)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 2 and f"cannot listen on 127.0.0.1:{port}" in result.stderr, result.stderr


def test_help_answers_without_torch():
    result = run_cli(
        "import json, sys",
        "from reward.serve.cli import parse_serve_config",
        "try:",
        "    parse_serve_config(['--help'])",
        "except SystemExit:",
        "    pass",
        "print(json.dumps(['torch' in sys.modules, 'fastapi' in sys.modules]))",
    )
    assert result.returncode == 0, result.stderr
    assert "--max_batch_tokens" in result.stdout and "batching and limits" in result.stdout
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [False, False]
