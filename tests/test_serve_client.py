"""RemoteRewardFunction (reward/serve/client.py) against stand-in servers built on the standard library.

Each `FakeServer` speaks reward-serve's /score and /info (docs/serving.md) with a reward one can check by
hand, reward = len(prompt text) + len(completion text) / 100, and records every request it got, so the
tests see what the client sent (groups, sizes, headers) as well as what it returned.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import warnings
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from reward.errors import UserError
from reward.eval.arguments import check_sequences
from reward.serve.client import RemoteRewardError, RemoteRewardFunction

ROOT = Path(__file__).resolve().parents[1]
INFO = {"model": "runs/tiny", "reward_format": {"eos": True}, "normalize": False, "format_recorded": True}


def text(value: str | list | None) -> str:
    return value if isinstance(value, str) else "".join(message["content"] for message in value or [])


def reward(prompt: str | list | None, completion: str | list) -> float:
    return len(text(prompt)) + len(text(completion)) / 100


class FakeServer:
    """/score and /info on 127.0.0.1 in a daemon thread. `faults`: what the next /score requests get instead
    of an answer, in order: ("status", code, headers, body) or ("sleep", seconds: then the normal answer).
    A completion containing LONG is reported truncated; HUGE skipped and BIG too_large (reward None)."""

    def __init__(self, info: dict | None = None, faults: list | None = None):
        self.info, self.faults, self.requests = info or INFO, list(faults or []), []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.record(self, None)
                self.reply(200, server.info) if self.path == "/info" else self.reply(404, {"error": "no such path"})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                fault = server.record(self, body)
                if fault and fault[0] == "status":
                    return self.reply(fault[1], fault[3], fault[2])
                if fault and fault[0] == "sleep":
                    time.sleep(fault[1])
                self.reply(200, server.answer(body))

            def reply(self, status: int, body: dict | bytes, headers: dict | None = None) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.handle_error = lambda request, address: None  # a client that timed out and left
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def record(self, handler: BaseHTTPRequestHandler, body: dict | None) -> tuple | None:
        with self.lock:
            self.requests.append({"path": handler.path, "headers": dict(handler.headers), "body": body})
            return self.faults.pop(0) if body is not None and self.faults else None

    def answer(self, body: dict) -> dict:
        rewards, lengths = [], []
        for g, group in enumerate(body["groups"]):
            rewards.append([])
            for k, completion in enumerate(group["completions"]):
                action = next((a for word, a in ACTIONS.items() if word in text(completion)), None)
                rewards[-1].append(None if action in ("skipped", "too_large") else reward(group["prompt"], completion))
                if action:
                    lengths.append({"group": g, "completion": k, "action": action, "limit": 16})
        return {"rewards": rewards, "normalized": False, "model": self.info["model"], "lengths": lengths}

    def scores(self) -> list[dict]:
        """The /score bodies received, in order."""
        return [r["body"] for r in self.requests if r["path"] == "/score"]


ACTIONS = {"LONG": "truncated", "HUGE": "skipped", "BIG": "too_large"}


@pytest.fixture
def servers():
    """A factory of FakeServers, all shut down after the test."""
    made: list[FakeServer] = []

    def make(**kwargs: object) -> FakeServer:
        made.append(FakeServer(**kwargs))
        return made[-1]

    yield make
    for server in made:
        server.httpd.shutdown()
        server.httpd.server_close()


@pytest.fixture
def dead_url():
    """URLs nothing listens on: ports held by bound, non-listening sockets (a connect there is refused)."""
    held: list[socket.socket] = []

    def make() -> str:
        held.append(socket.socket())
        held[-1].bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{held[-1].getsockname()[1]}"

    yield make
    for sock in held:
        sock.close()


@pytest.fixture(autouse=True)
def no_rank_no_key(monkeypatch):
    """The first call's offset is 0 (RANK unset) and no key comes from the environment unless a test sets it."""
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("REWARD_SERVE_API_KEY", raising=False)


def test_interleaved_prompts_come_back_in_input_order_from_one_group_per_prompt(servers):
    server = servers()
    prompts = ["Q: a? ", "Q: bb? ", "Q: a? ", "Q: bb? ", "Q: a? ", "Q: bb? "]
    completions = ["x", "yy", "zzz", "w", "vvvvv", "uuuu"]
    rewards = RemoteRewardFunction(server.url)(prompts, completions)
    assert rewards == [6.01, 7.02, 6.03, 7.01, 6.05, 7.04]  # len("Q: a? ") = 6, len("Q: bb? ") = 7
    assert server.scores() == [
        {
            "groups": [
                {"prompt": "Q: a? ", "completions": ["x", "zzz", "vvvvv"]},
                {"prompt": "Q: bb? ", "completions": ["yy", "w", "uuuu"]},
            ]
        }
    ]


def test_message_lists_are_sent_as_messages_and_scored_in_order(servers):
    server = servers()
    ask = [{"role": "user", "content": "hi?"}]
    other = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi?"}]
    completions = [[{"role": "assistant", "content": "yes" * n}] for n in (1, 2, 3)]
    rewards = RemoteRewardFunction(server.url + "/")([ask, other, ask], completions)  # a trailing slash is fine
    assert rewards == [3.03, 11.06, 3.09]
    assert [g["prompt"] for g in server.scores()[0]["groups"]] == [ask, other]
    assert server.scores()[0]["groups"][0]["completions"] == [completions[0], completions[2]]


def test_requests_hold_whole_groups_and_at_most_the_limit(servers):
    server = servers()
    prompts = [f"prompt {p} " for _ in range(3) for p in "abcde"]  # 5 prompts x 3, interleaved
    completions = [f"c{i}" for i in range(15)]
    rewards = RemoteRewardFunction(server.url, max_completions_per_request=7)(prompts, completions)
    assert rewards == [reward(p, c) for p, c in zip(prompts, completions)]
    sent = server.scores()  # the requests of a call go out concurrently: in any order
    assert sorted([len(g["completions"]) for g in body["groups"]] for body in sent) == [[3], [3, 3], [3, 3]]
    seen = [g["prompt"] for body in sent for g in body["groups"]]
    assert sorted(seen) == sorted(set(prompts))  # each prompt in exactly one group of one request


def test_a_group_over_the_limit_goes_as_pieces_of_the_limit(servers):
    server = servers()
    completions = [str(i) for i in range(1000)]
    rewards = RemoteRewardFunction(server.url, max_completions_per_request=512)(["p"] * 1000, completions)
    assert rewards == [1 + len(str(i)) / 100 for i in range(1000)]
    pieces = sorted((g["completions"] for body in server.scores() for g in body["groups"]), key=len, reverse=True)
    assert [len(piece) for piece in pieces] == [512, 488] and pieces[1][0] == "512"


def test_two_servers_share_each_call_and_the_first_server_rotates(servers):
    a, b = servers(), servers()
    score = RemoteRewardFunction([a.url, b.url])
    prompts = [p for p in ("A ", "BB ", "CCC ", "DDDD ") for _ in range(3)]
    completions = [f"c{i}" for i in range(12)]
    assert score(prompts, completions) == [reward(p, c) for p, c in zip(prompts, completions)]
    firsts = [[g["prompt"] for g in body["groups"]] for body in a.scores() + b.scores()]
    assert firsts == [["A ", "BB "], ["CCC ", "DDDD "]]  # request 0 -> a, request 1 -> b
    assert score(prompts, completions) == [reward(p, c) for p, c in zip(prompts, completions)]
    assert [g["prompt"] for g in b.scores()[1]["groups"]] == ["A ", "BB "]  # next call: request 0 -> b


def test_503_waits_for_retry_after_and_retries_on_the_next_server(servers):
    busy = servers(faults=[("status", 503, {"Retry-After": "1"}, {"error": "queue full"})])
    spare = servers()
    score = RemoteRewardFunction([busy.url, spare.url], backoff=0.01)
    score.servers_checked = True  # time the retry alone, not the first call's /info check
    start = time.monotonic()
    assert score(["p "], ["abc"]) == [2.03]
    assert time.monotonic() - start >= 0.95
    assert len(busy.scores()) == 1 and len(spare.scores()) == 1


def test_a_dead_server_next_to_a_live_one_is_passed_over(servers, dead_url):
    live = servers()
    assert RemoteRewardFunction([dead_url(), live.url], backoff=0.01)(["p ", "q "], ["a", "b"]) == [2.01, 2.01]
    assert sorted(g["prompt"] for body in live.scores() for g in body["groups"]) == ["p ", "q "]  # both requests


def test_all_servers_dead_is_one_line_naming_each_after_the_tries(dead_url):
    first, second = dead_url(), dead_url()
    with pytest.raises(RemoteRewardError) as caught:
        RemoteRewardFunction([first, second], retries=3, backoff=0.01)(["p"], ["a"])
    said = str(caught.value)
    assert isinstance(caught.value, RuntimeError) and "\n" not in said
    assert "3 time(s)" in said and f"{first}: ConnectionRefusedError" in said and f"{second}: Connection" in said


def test_a_refused_request_is_a_user_error_naming_the_field_and_is_not_retried(servers):
    error = {"error": "groups[0].completions[1] must be a string", "field": "groups[0].completions[1]"}
    server = servers(faults=[("status", 422, {}, error)] * 5)
    with pytest.raises(UserError) as caught:
        RemoteRewardFunction(server.url)(["a", "b", "a"], ["x", "y", "z"])
    assert str(caught.value) == (
        f"{server.url}/score: server refused the request (422): groups[0].completions[1] must be a string "
        "[field groups[0].completions[1] = completions[2]]"  # group "a" holds completions 0 and 2
    )
    assert len(server.scores()) == 1


def test_a_timeout_is_retried(servers):
    server = servers(faults=[("sleep", 1.5)])
    score = RemoteRewardFunction(server.url, timeout=0.5, retries=2, backoff=0.01)
    assert score(["p"], ["ab"]) == [1.02]
    assert len(server.scores()) == 2


def test_a_200_that_is_not_json_is_an_error_not_a_reward(servers):
    server = servers(faults=[("status", 200, {"Content-Type": "text/html"}, b"<html>proxy</html>")])
    with pytest.raises(RemoteRewardError, match="answered 200 without a JSON object"):
        RemoteRewardFunction(server.url)(["p"], ["a"])


def test_the_key_is_sent_as_a_bearer_token_when_given_or_in_the_environment(servers, monkeypatch):
    server = servers()
    RemoteRewardFunction(server.url, api_key="s3cret")(["p"], ["a"])
    monkeypatch.setenv("REWARD_SERVE_API_KEY", "from-env")
    RemoteRewardFunction(server.url)(["p"], ["a"])
    monkeypatch.delenv("REWARD_SERVE_API_KEY")
    RemoteRewardFunction(server.url)(["p"], ["a"])
    assert [r["headers"].get("Authorization") for r in server.requests] == ["Bearer s3cret", "Bearer from-env", None]


@pytest.mark.parametrize(
    ("prompts", "completions"),
    [("Q: hi? ", ["A: yes."]), (["a", "b"], ["x"]), (["a"], [None]), (["a"], [[{"role": "wizard", "content": "x"}]])],
)
def test_bad_calls_are_refused_as_reward_function_refuses_them_before_any_request(servers, prompts, completions):
    server = servers()
    with pytest.raises(UserError) as ours:
        RemoteRewardFunction(server.url)(prompts, completions)
    with pytest.raises(UserError) as local:
        check_sequences(prompts, completions)  # what RewardFunction raises
    assert str(ours.value) == str(local.value)
    assert server.requests == []


@pytest.mark.parametrize(
    ("kwargs", "said"),
    [
        ({"url": "ftp://rm:8000"}, "url 'ftp://rm:8000' is not an http:// or https:// server URL"),
        ({"url": "127.0.0.1:8000"}, "is not an http:// or https:// server URL"),
        ({"url": []}, "url must be a server's URL or a non-empty list of them"),
        ({"url": ["http://a:1", 5]}, "url[1] must be a string"),
        ({"url": "http://a:1?x=1"}, "without ?query"),
        ({"url": "http://rm:http"}, "has an invalid port"),
        ({"url": ["http://rm:99999"]}, "url 'http://rm:99999' has an invalid port"),
        ({"retries": 0}, "retries must be an integer >= 1"),
        ({"timeout": 0}, "timeout must be a number of seconds > 0"),
        ({"backoff": -1}, "backoff must be a number of seconds in [0, 30]"),
        ({"max_completions_per_request": 0}, "max_completions_per_request must be an integer >= 1"),
        ({"api_key": "two words"}, "api_key must be a non-empty string without spaces"),
        ({"name": ""}, "name must be a non-empty string"),
    ],
)
def test_bad_constructor_arguments_are_one_line_user_errors(kwargs, said):
    with pytest.raises(UserError) as caught:
        RemoteRewardFunction(**{"url": "http://127.0.0.1:8000", **kwargs})
    assert said in str(caught.value) and "\n" not in str(caught.value)


def test_length_events_are_counted_and_warned_about_once(servers):
    server = servers()
    score = RemoteRewardFunction(server.url)
    with pytest.warns(
        UserWarning,
        match=r"1 of 4 completions cut to the server's limit, 2 left without a reward \(None\).*limit 16 tokens",
    ):
        assert score(["p"] * 4, ["ok", "LONG", "HUGE", "BIG"]) == [1.02, 1.04, None, None]
    with warnings.catch_warnings(record=True) as later:
        warnings.simplefilter("always")
        score(["p"] * 2, ["LONG", "fine"])
    assert later == []
    assert score.length_counts == {"completions": 6, "truncated": 2, "skipped": 2}


def test_servers_that_score_differently_are_warned_about_once(servers):
    same = RemoteRewardFunction([servers().url, servers().url])
    with warnings.catch_warnings(record=True) as quiet:
        warnings.simplefilter("always")
        same(["p"], ["a"])
    assert quiet == []
    other = servers(info={**INFO, "normalize": True})
    differ = RemoteRewardFunction([servers().url, other.url])
    with pytest.warns(UserWarning, match="the servers score differently") as said:
        differ(["p"], ["a"])
    assert len(said) == 1 and other.url in str(said[0].message)
    with warnings.catch_warnings(record=True) as later:
        warnings.simplefilter("always")
        differ(["p"], ["a"])
    assert later == [] and sum(r["path"] == "/info" for r in other.requests) == 1


def test_trl_call_name_repr_and_info(servers):
    first, second = servers(), servers(info={**INFO, "model": "b"})
    score = RemoteRewardFunction([first.url, second.url], name="rm")
    score.servers_checked = True
    rewards = score(
        prompts=["p "], completions=["abc"], completion_ids=[[1, 2, 3]], trainer_state=None, answer=["x"]
    )  # as GRPOTrainer._calculate_rewards calls it
    assert rewards == [2.03] and score.__name__ == "rm"
    assert RemoteRewardFunction(first.url).__name__ == "remote_reward"
    assert repr(score) == f"RemoteRewardFunction({[first.url, second.url]!r}, name='rm')"
    assert score.info() == INFO and score.info(second.url)["model"] == "b"


def test_no_network_at_construction_and_server_roots_as_given(dead_url):
    RemoteRewardFunction([dead_url(), dead_url()])  # servers may start later: nothing is contacted yet
    roots = ["http://rm1", "https://rm2:8443/", "http://[::1]:8000", "http://proxy/rm3/"]
    assert RemoteRewardFunction(roots).urls == [
        "http://rm1",
        "https://rm2:8443",
        "http://[::1]:8000",
        "http://proxy/rm3",
    ]


def test_the_client_imports_without_the_serve_extra_and_without_torch():
    script = (
        "import sys\n"
        "for name in ('fastapi', 'uvicorn', 'prometheus_client'):\n"
        "    sys.modules[name] = None\n"
        "from reward.serve.client import RemoteRewardFunction\n"
        "RemoteRewardFunction(['http://127.0.0.1:1', 'http://127.0.0.1:2'])\n"
        "loaded = [n for n in ('fastapi', 'uvicorn', 'prometheus_client', 'torch', 'transformers') "
        "if sys.modules.get(n) is not None]\n"
        "print(loaded)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_it_pickles_for_ray_and_multiprocessing(servers):
    import pickle

    score = RemoteRewardFunction(servers().url, name="rm")
    copy = pickle.loads(pickle.dumps(score))
    assert copy(["ab"], ["c"]) == [2.01] and copy.__name__ == "rm" and copy.lock is not score.lock
