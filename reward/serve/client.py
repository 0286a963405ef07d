"""A reward served by `reward-serve` as a TRL reward function: `RemoteRewardFunction`.

    from reward.serve.client import RemoteRewardFunction
    trainer = trl.GRPOTrainer(..., reward_funcs=RemoteRewardFunction(["http://rm1:8000", "http://rm2:8000"]))

TRL calls it as `f(prompts=..., completions=..., completion_ids=..., **columns)` and wants one float (or
None: NaN) per completion (trl/trainer/grpo_trainer.py `_calculate_rewards`), as the in-process
`RewardFunction` (reward/eval/reward_function.py) gives them; the server formats text as training did.

What it sends: `POST <server>/score` with `{"groups": [{"prompt": P, "completions": [C, ...]}, ...]}`
(docs/serving.md). GRPO passes G completions of each prompt, interleaved or not; those of equal prompts go
as one group, so the server runs the prompt's tokens once for all G. A request holds whole groups, at most
`max_completions_per_request` completions (a larger group goes in pieces of that size); over n servers a
call is cut into requests of about 1/n of it, so one step is scored on every server at once: request i goes
to server (offset + i) % n, the offset moving on each call (from the process's RANK: ranks start apart).

Faults (a refused or reset connection, no answer within `timeout`, HTTP 408, 429 or 5xx) are retried on
the next server after a back-off (the server's Retry-After, else `backoff * 2**attempt` +-10 %, capped at
30 s); after `retries` tries a `RemoteRewardError` names each server and its last error. Other 4xx would be
refused again: a `UserError` at once. The key: `api_key=`, else $REWARD_SERVE_API_KEY (a bearer token).
Standard library only (the trainer needs no `serve` extra); the first call imports RewardFunction's
argument check (reward/eval/arguments.py) to refuse bad calls in its words.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import threading
import time
import urllib.error
import urllib.request
import warnings
from concurrent.futures import ThreadPoolExecutor
from http.client import HTTPException
from typing import Any
from urllib.parse import urlsplit

from reward import __version__
from reward.errors import UserError, first_line

API_KEY_ENV = "REWARD_SERVE_API_KEY"
MAX_WAIT_S = 30.0  # the longest back-off, whatever a server's Retry-After says: a step must not stall for long
RETRIED = frozenset({408, 429})  # and every 5xx: the next server may well answer
IN_FLIGHT_PER_SERVER = 8  # concurrent requests per server: enough to fill its batcher
INFO_FIELDS = ("weights", "reward_format", "normalize")  # what makes two servers two different reward functions


class RemoteRewardError(RuntimeError):
    """No server answered a request within `retries` tries (each server tried and its last error, one line)."""


class ServerFault(Exception):
    """One try that failed in a way another try may not: the reason, and the server's Retry-After (seconds)."""

    def __init__(self, reason: str, retry_after: float | None = None):
        super().__init__(reason)
        self.reason, self.retry_after = reason, retry_after


class RemoteRewardFunction:
    """`f(prompts, completions, **kwargs) -> list[float | None]`, scored by one or several `reward-serve`s."""

    def __init__(
        self,
        url: str | list[str],
        api_key: str | None = None,
        timeout: float = 120.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_completions_per_request: int = 512,
        name: str | None = None,
    ):
        urls = [url] if isinstance(url, str) else url
        check_arguments(urls, api_key, timeout, retries, backoff, max_completions_per_request, name)
        self.urls: list[str] = [u.rstrip("/") for u in urls]
        self.api_key = api_key if api_key is not None else (os.environ.get(API_KEY_ENV) or None)
        self.timeout, self.retries, self.backoff = float(timeout), retries, float(backoff)
        self.max_completions_per_request = max_completions_per_request
        self.__name__ = name or "remote_reward"  # TRL logs rewards/<__name__>/mean
        self.length_counts = {"completions": 0, "truncated": 0, "skipped": 0}  # over every call
        self.warned, self.servers_checked = False, False  # the length warning; the first call's /info check
        self.lock = threading.Lock()
        self.calls = int(os.environ.get("RANK", "0")) if os.environ.get("RANK", "0").isdigit() else 0  # first server

    def __call__(self, prompts: list, completions: list, **kwargs: Any) -> list[float | None]:
        """One reward per completion, in input order (None: the server's length rule skipped it); other keyword
        arguments (completion_ids, dataset columns, trainer_state, ...) are accepted and ignored."""
        from reward.eval.arguments import check_sequences  # RewardFunction's words; imports torch (a trainer has it)

        check_sequences(prompts, completions)
        with self.lock:
            offset, self.calls, check, self.servers_checked = self.calls, self.calls + 1, not self.servers_checked, True
        if check and len(self.urls) > 1:
            self.warn_if_servers_differ()
        requests = pack(group_by_prompt(prompts), self.max_completions_per_request, len(self.urls))
        rewards: list[float | None] = [None] * len(completions)
        events: list[dict] = []
        workers = max(1, min(len(requests), IN_FLIGHT_PER_SERVER * len(self.urls)))  # no requests: no completions
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="remote-reward") as pool:
            futures = [pool.submit(self.score, req, completions, offset + i) for i, req in enumerate(requests)]
            try:
                replies = [future.result() for future in futures]
            except BaseException:
                pool.shutdown(wait=True, cancel_futures=True)  # the call failed: no more requests
                raise
        for request, (group_rewards, lengths) in zip(requests, replies):
            for (_, indices), values in zip(request, group_rewards):
                for index, value in zip(indices, values):
                    rewards[index] = None if value is None else float(value)
            events += lengths
        self.count_lengths(len(completions), events)
        return rewards

    def score(self, request: list[tuple[Any, list[int]]], completions: list, first: int) -> tuple[list, list]:
        """One request's rewards (one list per group) and its "lengths" events, trying servers from `first` on."""
        body = {"groups": [{"prompt": prompt, "completions": [completions[i] for i in ix]} for prompt, ix in request]}
        reply, url = self.send("/score", json.dumps(body).encode(), first, request)
        rewards, lengths = reply.get("rewards"), reply.get("lengths", [])
        sizes = [len(ix) for _, ix in request]
        if not isinstance(rewards, list) or [len(r) if isinstance(r, list) else None for r in rewards] != sizes:
            raise RemoteRewardError(f"{url}/score answered without one reward per completion sent (groups of {sizes})")
        return rewards, lengths if isinstance(lengths, list) else []

    def send(self, path: str, body: bytes, first: int, request: list | None = None) -> tuple[dict, str]:
        """POST `body` to the servers from `first` on until one answers: its JSON reply and its URL."""
        tried: dict[str, str] = {}  # each server tried -> its last error
        for attempt in range(self.retries):
            url = self.urls[(first + attempt) % len(self.urls)]
            try:
                return self.exchange(url + path, body, self.timeout, request), url
            except ServerFault as fault:
                tried[url] = fault.reason
                if attempt + 1 < self.retries:
                    time.sleep(self.wait(attempt, fault.retry_after))
        said = "; ".join(f"{url}: {reason}" for url, reason in tried.items())
        raise RemoteRewardError(f"POST {path} failed {self.retries} time(s), no server answered ({said})")

    def wait(self, attempt: int, retry_after: float | None) -> float:
        """Seconds before the next try: the server's Retry-After, else exponential back-off, +-10 % jitter so
        that the processes of one job do not all come back at the same instant."""
        backoff = min(self.backoff * 2**attempt, MAX_WAIT_S) * random.uniform(0.9, 1.1)
        return backoff if retry_after is None else min(retry_after, MAX_WAIT_S)

    def exchange(self, url: str, body: bytes | None, timeout: float, request: list | None = None) -> dict:
        """One HTTP try: the reply's JSON object; a `ServerFault` to retry; a `UserError` for a refusal."""
        headers = {"Content-Type": "application/json", "User-Agent": f"reward-remote/{__version__}"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, body, headers), timeout=timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            with exc:
                raise http_error(url, exc, request) from None
        except (OSError, HTTPException) as exc:  # refused, reset, timed out, unreachable, cut short
            raise ServerFault(fault_reason(exc, timeout)) from None
        if not (reply := json_object(raw)):
            raise RemoteRewardError(f"{url} answered 200 without a JSON object ({raw[:80]!r}): is it a reward-serve?")
        return reply

    def info(self, url: str | None = None) -> dict:
        """GET /info of one server (the first by default): its model, reward_format, normalize, limits, ..."""
        root = self.urls[0] if url is None else url.rstrip("/")
        try:
            return self.exchange(root + "/info", None, self.timeout)
        except ServerFault as fault:
            raise RemoteRewardError(f"GET {root}/info: {fault.reason}") from None

    def warn_if_servers_differ(self) -> None:
        """Warn once if the servers score differently (one that does not answer now is left out)."""

        def described(url: str) -> dict | None:
            try:
                info = self.info(url)
            except (UserError, RemoteRewardError):
                return None
            return {field: info.get(field) for field in INFO_FIELDS}

        with ThreadPoolExecutor(max_workers=len(self.urls)) as pool:
            seen = {url: found for url, found in zip(self.urls, pool.map(described, self.urls)) if found is not None}
        if len({json.dumps(found, sort_keys=True, default=str) for found in seen.values()}) > 1:
            said = "; ".join(f"{url}: {json.dumps(found, sort_keys=True, default=str)}" for url, found in seen.items())
            warnings.warn(
                f"{self!r}: the servers score differently ({said}); each call is spread over all of them, so "
                "rewards of one step would come from different reward functions: serve one model everywhere",
                stacklevel=3,
            )

    def count_lengths(self, completions: int, events: list) -> None:
        """The server's "lengths" events into `length_counts`, and one warning the first time there are any."""
        actions = [event.get("action") for event in events if isinstance(event, dict)]
        truncated = actions.count("truncated")
        skipped = actions.count("skipped") + actions.count("too_large")
        for key, number_of in (("completions", completions), ("truncated", truncated), ("skipped", skipped)):
            self.length_counts[key] += number_of
        if (truncated or skipped) and not self.warned:
            self.warned = True
            limits = sorted({event.get("limit") for event in events if isinstance(event, dict)}, key=str)
            warnings.warn(
                f"{self!r}: {truncated} of {completions} completions cut to the server's limit, {skipped} left "
                f"without a reward (None) for their length (limit {', '.join(map(str, limits))} tokens; said once; "
                "`length_counts` keeps counting)",
                stacklevel=3,
            )

    def __getstate__(self) -> dict:  # picklable (Ray, multiprocessing): the lock is made again where it lands
        return {key: value for key, value in self.__dict__.items() if key != "lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, lock=threading.Lock())

    def __repr__(self) -> str:
        urls = self.urls[0] if len(self.urls) == 1 else self.urls
        return f"RemoteRewardFunction({urls!r}, name={self.__name__!r})"


def group_by_prompt(prompts: list) -> list[tuple[Any, list[int]]]:
    """(prompt, indices of its completions) for each distinct prompt, in order of first appearance.

    >>> group_by_prompt(["a", "b", "a", "b"])
    [('a', [0, 2]), ('b', [1, 3])]
    """
    groups: dict[str, tuple[Any, list[int]]] = {}
    for index, prompt in enumerate(prompts):
        groups.setdefault(json.dumps(prompt, sort_keys=True, default=str), (prompt, []))[1].append(index)
    return list(groups.values())


def pack(groups: list[tuple[Any, list[int]]], limit: int, servers: int) -> list[list[tuple[Any, list[int]]]]:
    """Groups -> requests of whole groups, at most `limit` completions each (a group over `limit`: pieces of
    `limit`), at most total // `servers` each unless one piece is larger, so that every server gets a share.

    >>> [[len(ix) for _, ix in req] for req in pack([("p", list(range(1000)))], 512, 1)]
    [[512], [488]]
    >>> [[len(ix) for _, ix in req] for req in pack([(p, [0, 1, 2]) for p in "abcd"], 512, 2)]
    [[3, 3], [3, 3]]
    """
    total = sum(len(indices) for _, indices in groups)
    target = min(limit, max(1, total // servers))
    requests: list[list[tuple[Any, list[int]]]] = []
    current: list[tuple[Any, list[int]]] = []
    size = 0
    for prompt, indices in groups:
        for start in range(0, len(indices), limit):
            piece = indices[start : start + limit]
            if current and size + len(piece) > target:
                requests.append(current)
                current, size = [], 0
            current.append((prompt, piece))
            size += len(piece)
    return requests + [current] if current else requests


def http_error(url: str, exc: urllib.error.HTTPError, request: list | None) -> Exception:
    """A status a server answered with: a `ServerFault` (retry elsewhere) or a `UserError` (it would refuse
    again), with the server's own one-line error and the field it names (reward/serve/protocol.py)."""
    text = exc.read().decode("utf-8", "replace")
    reply = json_object(text)
    error = reply.get("error")
    error = first_line(Exception(error or text or exc.reason))[:300]
    if exc.code in RETRIED or exc.code >= 500:
        return ServerFault(f"HTTP {exc.code}: {error}", retry_after_seconds(exc.headers.get("Retry-After")))
    field = reply.get("field")
    where = f" [field {field}{caller_index(field, request)}]" if field else ""
    hint = f" (the key: api_key= or {API_KEY_ENV})" if exc.code == 401 else ""
    return UserError(f"{url}: server refused the request ({exc.code}): {error}{where}{hint}")


def caller_index(field: str, request: list | None) -> str:
    """`groups[g].completions[k]` of a request as the caller's index into `completions`, when it is one."""
    found = re.fullmatch(r"groups\[(\d+)\]\.completions\[(\d+)\]", field)
    if request is None or not found or int(found[1]) >= len(request) or int(found[2]) >= len(request[int(found[1])][1]):
        return ""
    return f" = completions[{request[int(found[1])][1][int(found[2])]}]"


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After in seconds, as reward-serve sends it (the HTTP-date form counts as absent: back-off instead)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


def fault_reason(exc: BaseException, timeout: float) -> str:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, TimeoutError):
        return f"no answer within {timeout:g} s (timeout)"
    return f"{type(reason).__name__}: {first_line(reason) if isinstance(reason, BaseException) else reason}"


def check_arguments(
    urls: object, api_key: object, timeout: object, retries: object, backoff: object, limit: object, name: object
) -> None:
    """The constructor's arguments, every problem in one line (no network: the servers may start later)."""
    problems = []
    if not isinstance(urls, (list, tuple)) or not urls:
        problems.append(f"url must be a server's URL or a non-empty list of them, got {urls!r:.80}")
    else:
        problems += [p for i, u in enumerate(urls) if (p := url_problem(f"url[{i}]" if len(urls) > 1 else "url", u))]
    if api_key is not None and (not isinstance(api_key, str) or not api_key or any(c.isspace() for c in api_key)):
        problems.append("api_key must be a non-empty string without spaces (or None: $" + API_KEY_ENV + ")")
    if not number(timeout) or not timeout > 0:
        problems.append(f"timeout must be a number of seconds > 0, got {timeout!r}")
    if not count(retries):
        problems.append(f"retries must be an integer >= 1 (tries per request, the first included), got {retries!r}")
    if not number(backoff) or not 0 <= backoff <= MAX_WAIT_S:
        problems.append(f"backoff must be a number of seconds in [0, {MAX_WAIT_S:g}], got {backoff!r}")
    if not count(limit):
        problems.append(f"max_completions_per_request must be an integer >= 1, got {limit!r}")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        problems.append(f"name must be a non-empty string (or None: 'remote_reward'), got {name!r}")
    if problems:
        raise UserError("; ".join(problems))


def url_problem(name: str, url: object) -> str | None:
    """Why `url` is not a server root such as http://127.0.0.1:8000, or None."""
    if not isinstance(url, str):
        return f"{name} must be a string such as 'http://127.0.0.1:8000', got {type(url).__name__}"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"{name} {url!r} is not an http:// or https:// server URL (such as 'http://127.0.0.1:8000')"
    if parts.query or parts.fragment:
        return f"{name} {url!r}: give the server's root, without ?query or #fragment"
    try:
        return None if parts.port != 0 else f"{name} {url!r}: port 0 is no server's port"
    except ValueError:  # not a number, or over 65535
        return f"{name} {url!r} has an invalid port"


def json_object(text: str | bytes) -> dict:
    """`text` as a JSON object; {} when it is not one (a proxy's HTML page, an empty body)."""
    try:
        found = json.loads(text)
    except ValueError:
        return {}
    return found if isinstance(found, dict) else {}


def number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
