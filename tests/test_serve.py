"""reward-serve over real HTTP (uvicorn on a loopback port, in a thread of this process): the rewards equal
score.py's, for text and messages, groups of 1-32, through /score and OpenRLHF's /get_reward; every bad
input and fault gets its status and the server stays up (docs/serving.md)."""

from __future__ import annotations

import json
import shutil
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

import score
from reward.eval.score_cli import parse_score_config

pytest.importorskip("fastapi", reason="needs the serve extra: pip install -e '.[serve]'")
from reward.errors import UserError  # noqa: E402
from reward.serve.cli import ServeConfig, start_in_thread  # noqa: E402

PROMPTS = ["Name a fruit.", "Which animal says moo?", "Say something kind about the weather today, please."]
ANSWERS = [" An apple.", " A cow says moo.", " It is a lovely sunny day.", " no", "", " A banana, ripe and sweet."]
USER = [{"role": "user", "content": "Name a fruit."}]
ANSWER = [{"role": "assistant", "content": "An apple."}]


@pytest.fixture(scope="module")
def model_dir(trained_tiny_dir) -> Path:
    return trained_tiny_dir


@pytest.fixture(scope="module")
def server(model_dir):
    running = start_in_thread(str(model_dir))
    yield running
    running.stop()


def post(url: str, body, headers: dict | None = None, timeout: float = 30) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) of a POST; `body` a dict (sent as JSON) or raw bytes."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null"), dict(response.headers)
    except urllib.error.HTTPError as error:
        text = error.read()
        return error.code, json.loads(text) if text else None, dict(error.headers)


def get(url: str, headers: dict | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def score_py(model_dir: Path, rows: list[dict], tmp_path: Path, *options: str) -> list[float | None]:
    """score.py's reward for each row ({prompt, response} or {text})."""
    path, out = tmp_path / "rows.jsonl", tmp_path / "scored.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    score.main(parse_score_config(["--model", str(model_dir), "--input", str(path), "--output", str(out), *options]))
    return [json.loads(line)["reward"] for line in out.read_text().splitlines()]


def metric(url: str, name: str) -> float:
    """A metric's value from GET /metrics (the sum over its labels)."""
    _, text = get(url + "/metrics")
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


def test_score_groups_of_1_to_32_equal_score_py(server, model_dir, tmp_path):
    groups = [
        {"prompt": PROMPTS[g % 3], "completions": [ANSWERS[(g + k) % len(ANSWERS)] + " x" * k for k in range(size)]}
        for g, size in enumerate([1, 2, 5, 8, 32])
    ]
    status, reply, _ = post(server.url + "/score", {"groups": groups})
    assert status == 200, reply
    rows = [{"prompt": group["prompt"], "response": c} for group in groups for c in group["completions"]]
    expected = score_py(model_dir, rows, tmp_path)
    got = [r for rewards in reply["rewards"] for r in rewards]
    assert [len(r) for r in reply["rewards"]] == [1, 2, 5, 8, 32]
    assert max(abs(a - b) for a, b in zip(got, expected)) <= 1e-5
    assert reply["lengths"] == [] and reply["normalized"] is False


def test_messages_and_pairs_equal_score_py(server, model_dir, tmp_path):
    answers = [[{"role": "assistant", "content": text}] for text in ("An apple.", "A brick.")]
    status, reply, _ = post(server.url + "/score", {"prompt": USER, "completions": answers})
    assert status == 200, reply
    expected = score_py(model_dir, [{"prompt": USER, "response": a} for a in answers], tmp_path)
    assert len(reply["rewards"]) == 2 and max(abs(a - b) for a, b in zip(reply["rewards"], expected)) <= 1e-5


def test_get_reward_equals_score_py_on_the_query_text_and_ignores_openrlhf_padding(server, model_dir, tmp_path):
    """OpenRLHF decodes the policy's ids with skip_special_tokens=False: pads and a BOS come with the text."""
    prompt = PROMPTS[2]
    texts = [prompt + answer for answer in ANSWERS[:4]]
    tokenizer = server.service.engine.scorer.tokenizer
    decorated = [
        tokenizer.pad_token * 2 + tokenizer.bos_token + text + tokenizer.eos_token + tokenizer.pad_token
        for text in texts
    ]
    for queries in (texts, decorated):
        status, reply, _ = post(server.url + "/get_reward", {"query": queries, "prompts": [prompt] * 4, "labels": None})
        assert status == 200, reply
        expected = score_py(model_dir, [{"text": t} for t in texts], tmp_path)
        assert max(abs(a - b) for a, b in zip(reply["rewards"], expected)) <= 1e-5
        assert reply["scores"] == reply["rewards"] and reply["extra_logs"]["reward_cut_or_skipped"] == [0.0] * 4


def test_a_prompt_is_computed_once_for_its_completions(server):
    before = (metric(server.url, "reward_tokens_requested_total"), metric(server.url, "reward_tokens_computed_total"))
    long_prompt = "Tell me about apples. " * 20
    status, _, _ = post(server.url + "/score", {"prompt": long_prompt, "completions": [" Red.", " Green.", " Sweet."]})
    assert status == 200
    requested = metric(server.url, "reward_tokens_requested_total") - before[0]
    computed = metric(server.url, "reward_tokens_computed_total") - before[1]
    prompt_tokens = len(server.service.engine.scorer.encode(None, long_prompt)) - 2  # less BOS and EOS
    assert requested - computed >= 2 * (prompt_tokens - 1)  # two of the three prompt copies were not computed


@pytest.mark.parametrize(
    "body, status, field",
    [
        (b"{not json", 400, None),
        ({"groups": [{"prompt": "Q", "completions": [3]}]}, 422, "groups[0].completions[0]"),
        ({"completion": ["a"]}, 422, None),
        ({"query": "one string"}, 422, "query"),
    ],
)
def test_bad_input_gets_its_status_and_the_server_stays_up(server, body, status, field):
    endpoint = "/get_reward" if isinstance(body, dict) and "query" in body else "/score"
    got, reply, _ = post(server.url + endpoint, body)
    assert got == status and "error" in reply and reply.get("field") == field, reply
    assert post(server.url + "/score", {"prompt": "Q", "completions": ["a"]})[0] == 200


def test_health_info_and_metrics(server, model_dir):
    assert get(server.url + "/health") == (200, '{"status":"ok"}')
    status, text = get(server.url + "/info")
    info = json.loads(text)
    recorded = json.loads((model_dir / "config.json").read_text())
    assert status == 200 and info["reward_format"] == recorded["reward_format"] and info["format_recorded"] is True
    assert info["reward_stats"] == recorded["reward_stats"] and info["limits"]["truncation"] == "left"
    status, text = get(server.url + "/metrics")
    assert status == 200 and "reward_queue_depth" in text and "reward_batch_sequences_bucket" in text


def test_normalize_replies_with_the_saved_statistics(server, model_dir):
    stats = json.loads((model_dir / "config.json").read_text())["reward_stats"]
    body = {"prompt": "Q:", "completions": [" yes", " no"]}
    raw = post(server.url + "/score", body)[1]["rewards"]
    normalized = start_in_thread(str(model_dir), normalize=True)
    try:
        status, reply, _ = post(normalized.url + "/score", body)
    finally:
        normalized.stop()
    assert status == 200 and reply["normalized"] is True
    assert reply["rewards"] == pytest.approx([(r - stats["mean"]) / stats["std"] for r in raw], abs=1e-5)


def test_too_large_bodies_and_groups_are_413(model_dir):
    running = start_in_thread(str(model_dir), max_body_mb=0.001, max_group=3, max_request_completions=4)
    try:
        status, reply, _ = post(running.url + "/score", {"prompt": "Q", "completions": ["a" * 2000]})
        assert status == 413 and "bytes" in reply["error"]
        status, reply, _ = post(running.url + "/score", {"prompt": "Q", "completions": ["a"] * 4})
        assert status == 413 and reply["field"] == "completions" and "--max_group" in reply["error"]
        status, reply, _ = post(running.url + "/get_reward", {"query": ["a"] * 5})
        assert status == 413 and "--max_request_completions" in reply["error"]
        assert post(running.url + "/score", {"prompt": "Q", "completions": ["a"]})[0] == 200
    finally:
        running.stop()


@pytest.mark.parametrize("policy", ["left", "skip", "error"])
def test_a_completion_over_max_length_is_said_in_the_reply(model_dir, tmp_path, policy):
    running = start_in_thread(str(model_dir), max_length=12, truncation=policy)
    long_answer = " and then it rained" * 6
    try:
        status, reply, _ = post(running.url + "/score", {"prompt": "Q:", "completions": [" short", long_answer]})
    finally:
        running.stop()
    if policy == "error":
        assert status == 413 and "completions[1]" in reply["error"]
        return
    assert status == 200 and reply["lengths"] == [
        {"completion": 1, "action": "truncated" if policy == "left" else "skipped", "limit": 12}
    ]
    rows = [{"prompt": "Q:", "response": r} for r in (" short", long_answer)]
    expected = score_py(model_dir, rows, tmp_path, "--max_length", "12", "--truncation", policy)
    if policy == "skip":
        assert reply["rewards"][1] is None and expected[1] is None
    assert all(a == b or abs(a - b) <= 1e-5 for a, b in zip(reply["rewards"], expected))


def test_the_key_guards_every_route_but_health(model_dir):
    running = start_in_thread(str(model_dir), api_key="s3cret")
    body = {"prompt": "Q", "completions": ["a"]}
    try:
        for headers in (
            {},
            {"Authorization": "Bearer wrong"},
            {"Authorization": "s3cret"},
            {"Authorization": "Bearer "},
        ):
            status, reply, got = post(running.url + "/score", body, headers)
            assert status == 401 and got.get("www-authenticate") == "Bearer", reply
        assert get(running.url + "/info")[0] == 401 and get(running.url + "/metrics")[0] == 401
        assert get(running.url + "/health")[0] == 200
        assert post(running.url + "/score", body, {"Authorization": "Bearer s3cret"})[0] == 200
        assert post(running.url + "/score", body, {"Authorization": "bearer s3cret"})[0] == 200  # RFC 7235
    finally:
        running.stop()
    with pytest.raises(UserError, match="--api_key is empty"):
        ServeConfig(model=str(model_dir), api_key="")


def test_a_full_queue_is_503_with_retry_after(model_dir):
    running = start_in_thread(str(model_dir), max_queue=4, max_wait_ms=1500)
    try:
        first = threading.Thread(target=post, args=(running.url + "/score", {"prompt": "Q", "completions": ["a"] * 4}))
        first.start()
        time.sleep(0.5)  # the first request's 4 completions wait 1.5 s for company
        status, reply, headers = post(running.url + "/score", {"prompt": "Q", "completions": ["b"]})
        first.join()
        assert status == 503 and headers.get("retry-after") == "1" and "--max_queue 4" in reply["error"]
        assert post(running.url + "/score", {"prompt": "Q", "completions": ["b"]})[0] == 200
        status, reply, _ = post(running.url + "/score", {"prompt": "Q", "completions": ["c"] * 5})
        assert status == 413 and "queues at most 4 (--max_queue)" in reply["error"]  # never fits: not "busy"
    finally:
        running.stop()


def test_a_client_that_goes_away_has_its_work_dropped_and_others_are_answered(model_dir):
    running = start_in_thread(str(model_dir), max_wait_ms=1500)
    host, port = running.url.removeprefix("http://").split(":")
    try:
        body = json.dumps({"prompt": "Q", "completions": ["gone"] * 5}).encode()
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(
                b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body
            )
            time.sleep(0.3)  # queued, waiting for company; then the client closes the connection
        status, reply, _ = post(running.url + "/score", {"prompt": "Q", "completions": ["stays", "too"]})
        assert status == 200 and len(reply["rewards"]) == 2
        assert metric(running.url, "reward_dropped_completions_total") == 5
        assert metric(running.url, "reward_completions_total") == 2
    finally:
        running.stop()


def test_a_folder_without_reward_format_is_scored_in_trls_format_and_says_so(model_dir, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(model_dir, bare)
    config = json.loads((bare / "config.json").read_text())
    del config["reward_format"]
    (bare / "config.json").write_text(json.dumps(config))
    running = start_in_thread(str(bare))
    try:
        info = json.loads(get(running.url + "/info")[1])
        status, reply, _ = post(running.url + "/score", {"prompt": "Q:", "completions": [" yes"]})
    finally:
        running.stop()
    assert info["format_recorded"] is False and info["reward_format"] is None
    assert "TRL's RewardTrainer format assumed" in info["format"]
    assert any("TRL's RewardTrainer format assumed" in line for line in running.service.lines)
    assert status == 200
    assert reply["rewards"][0] == pytest.approx(
        score_py(bare, [{"prompt": "Q:", "response": " yes"}], tmp_path)[0], abs=1e-5
    )


def test_messages_the_chat_template_refuses_are_422_naming_the_completion(model_dir, tmp_path):
    """Many templates raise on a role they do not take (Gemma's on 'system'): a bad request, not a crash."""
    strict = tmp_path / "strict"
    shutil.copytree(model_dir, strict)
    template = strict / "chat_template.jinja"
    refuse = "{% for m in messages %}{% if m['role'] == 'system' %}{{ raise_exception('no system role') }}"
    refuse += "{% endif %}{% endfor %}"
    template.write_text(refuse + template.read_text())
    with pytest.warns(UserWarning, match="not the one training used"):
        running = start_in_thread(str(strict))
    system = [{"role": "system", "content": "Be brief."}, *USER]
    try:
        status, reply, _ = post(running.url + "/score", {"groups": [{"prompt": system, "completions": [ANSWER]}]})
        assert status == 422 and reply["field"] == "groups[0].completions[0]" and "no system role" in reply["error"]
        assert post(running.url + "/score", {"prompt": USER, "completions": [ANSWER]})[0] == 200
    finally:
        running.stop()


@pytest.mark.filterwarnings("ignore:packing / shared prefix off")  # NaN fails packing's self-check: padded
def test_a_model_that_gives_nan_is_a_500_that_says_so(model_dir, tmp_path):
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    model = AutoModelForSequenceClassification.from_pretrained(broken)
    with torch.no_grad():
        model.score.weight.fill_(float("nan"))
    model.save_pretrained(broken)
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(broken)
    running = start_in_thread(str(broken))
    try:
        status, reply, _ = post(running.url + "/score", {"prompt": "Q:", "completions": [" a"]})
        assert status == 500 and "non-finite reward (nan) for completions[0]" in reply["error"]
        assert get(running.url + "/health")[0] == 200
    finally:
        running.stop()


def test_servers_of_the_same_weights_agree_whatever_their_path(server, model_dir, tmp_path):
    """RemoteRewardFunction warns when the servers it spreads a step over score differently: it compares
    the weights' fingerprint, the format and normalize from /info, not the path each server was given."""
    import warnings

    from reward import RemoteRewardFunction

    copy = tmp_path / "copy"
    shutil.copytree(model_dir, copy)
    same = start_in_thread(str(copy))
    other = start_in_thread(str(model_dir), normalize=True)
    try:
        assert json.loads(get(same.url + "/info")[1])["weights"] == json.loads(get(server.url + "/info")[1])["weights"]
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no warning for the same weights under another path
            assert len(RemoteRewardFunction([server.url, same.url])(["Q:"] * 2, [" a", " b"])) == 2
        with pytest.warns(UserWarning, match="the servers score differently"):
            RemoteRewardFunction([server.url, other.url])(["Q:"], [" a"])
    finally:
        same.stop()
        other.stop()


def test_an_empty_text_in_a_format_that_adds_no_token_is_422_and_hurts_no_one_else(model_dir, tmp_path):
    """In GRPO's format (no EOS, no special tokens) an OpenRLHF query of pads only cleans to "": no token."""
    bare = tmp_path / "grpo_format"
    shutil.copytree(model_dir, bare)
    config = json.loads((bare / "config.json").read_text())
    config["reward_format"] |= {"append_eos": False, "add_special_tokens": False}
    (bare / "config.json").write_text(json.dumps(config))
    running = start_in_thread(str(bare))
    pad = running.service.engine.scorer.tokenizer.pad_token
    try:
        status, reply, _ = post(running.url + "/get_reward", {"query": ["Q: hi A: yo", pad * 2]})
        assert status == 422 and reply["field"] == "query[1]" and "no token to score" in reply["error"]
        assert post(running.url + "/get_reward", {"query": ["Q: hi A: yo"]})[0] == 200
    finally:
        running.stop()


def test_requests_cut_by_the_graceful_timeout_are_counted(model_dir):
    running = start_in_thread(str(model_dir), max_wait_ms=3000, graceful_timeout=0.2)
    result = {}
    body = {"prompt": "Q", "completions": ["slow"]}

    def send() -> None:
        try:
            result["reply"] = post(running.url + "/score", body)
        except (OSError, ValueError) as exc:  # the cut request gets no JSON reply (or none at all)
            result["error"] = exc

    request = threading.Thread(target=send)
    request.start()
    time.sleep(0.5)  # in flight: waiting 3 s for company
    running.stop()
    request.join(30)
    assert running.service.app.state.requests_cut == 1
    assert "reply" not in result or result["reply"][0] != 200
