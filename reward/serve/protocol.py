"""What the server accepts: a request body -> groups of (prompt, completions), or an HTTP status and one
line naming the field at fault. No web framework here, so every rule is tested directly
(tests/test_serve_protocol.py); reward/serve/app.py turns a `RequestError` into the response.

Two protocols:

    POST /score       {"groups": [{"prompt": P, "completions": [C, ...]}, ...]}  -> rewards per group
                      {"prompt": P, "completions": [C, ...]}                     -> one flat list
    POST /get_reward  {"query": [Q, ...], "prompts": [P, ...], "labels": ...}      -> OpenRLHF's reply

P and C are strings or message lists, as in the training data (training's text rule, reward/data.py
`text_problem`, through reward/eval/arguments.py `sequence_problem`). OpenRLHF's client
(openrlhf/utils/remote_rm_utils.py `remote_rm_fn`) posts `{"query": queries, "prompts": prompts, "labels":
labels}`, each query the whole prompt + response text; some of its versions name the field "queries",
accepted too. Fields OpenRLHF adds over time (labels, references, metas, datasources) are ignored there;
/score is ours, and an unknown field is refused, so that a typo ("completion") is not silently dropped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from reward.eval.arguments import kind, sequence_problem


class RequestError(Exception):
    """A request the server refuses: its HTTP status, one line, and the field when one is at fault."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field

    def body(self) -> dict:
        """The JSON reply; text from the request (a field's name) is escaped where it is not valid Unicode (a
        lone surrogate), which a JSON encoder would refuse."""
        safe = lambda text: text.encode("utf-8", "backslashreplace").decode("utf-8")  # noqa: E731
        return {"error": safe(self.message), **({"field": safe(self.field)} if self.field else {})}


@dataclass(frozen=True)
class Limits:
    """What one request may hold (413 past them)."""

    max_body_bytes: int = 32 * 2**20
    max_group: int = 1024  # completions in one group
    max_completions: int = 4096  # completions in one request


@dataclass
class Group:
    """One prompt's completions. `key`: groups with equal keys, from any request in a micro-batch, are
    computed as one segment, their prompt once (None: not merged with another request's group)."""

    prompt: str | list | None
    completions: list
    key: str | None


@dataclass
class Parsed:
    """A request's groups; `flat`: where each reward goes in a flat reply ((group, completion) per item),
    None for /score's nested `groups` reply."""

    groups: list[Group]
    flat: list[tuple[int, int]] | None
    protocol: str  # "score" or "get_reward"


SCORE_FIELDS = {"groups", "prompt", "completions"}


def parse_json(body: bytes) -> dict:
    """The body as a JSON object (400 when it is not JSON, 422 when it is not an object)."""
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:  # RecursionError: arrays nested 100k deep
        raise RequestError(400, f"the body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise RequestError(422, f"the body must be a JSON object, got {json_kind(data)}")
    return data


def json_kind(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(value), "a number")


def parse_score(data: dict, limits: Limits) -> Parsed:
    """/score's body -> its groups, every prompt and completion checked by training's text rule."""
    if unknown := sorted(set(data) - SCORE_FIELDS):
        raise RequestError(
            422, f"unknown field(s) {', '.join(map(repr, unknown))}: /score takes 'groups', or 'prompt' + 'completions'"
        )
    if "groups" in data:
        if "completions" in data or "prompt" in data:
            raise RequestError(422, "give 'groups', or one group's 'prompt' + 'completions', not both", "groups")
        items, names = data["groups"], "groups"
        if not isinstance(items, list):
            raise RequestError(
                422, f"'groups' must be an array of {{prompt, completions}} objects, got {json_kind(items)}", "groups"
            )
    elif "completions" in data:
        items, names = [data], None
    else:
        raise RequestError(422, "missing field 'groups' (or one group's 'completions', with its 'prompt')", "groups")
    groups = [score_group(item, f"groups[{g}]" if names else "", limits) for g, item in enumerate(items)]
    check_total(sum(len(group.completions) for group in groups), limits)
    flat = None if names else [(0, k) for k in range(len(groups[0].completions))]
    return Parsed(groups, flat, "score")


def score_group(item: object, where: str, limits: Limits) -> Group:
    at = f"{where}." if where else ""
    if not isinstance(item, dict):
        raise RequestError(
            422, f"{where} must be an object with 'completions' (and 'prompt'), got {json_kind(item)}", where
        )
    if unknown := sorted(set(item) - {"prompt", "completions"}):
        raise RequestError(
            422, f"{at}{unknown[0]}: unknown field (a group has 'prompt' and 'completions')", at + unknown[0]
        )
    if "completions" not in item:
        raise RequestError(422, f"{at}completions: missing (the group's responses, an array)", f"{at}completions")
    prompt, completions = item.get("prompt"), item["completions"]
    if not isinstance(completions, list):
        raise RequestError(422, f"{at}completions must be an array, got {json_kind(completions)}", f"{at}completions")
    if len(completions) > limits.max_group:
        raise RequestError(
            413,
            f"{at}completions has {len(completions)} completions; this server takes at most {limits.max_group} "
            "per group (--max_group): split the group",
            f"{at}completions",
        )
    if prompt is not None and (problem := sequence_problem(f"{at}prompt", prompt, may_be_empty=True)):
        raise RequestError(422, problem, f"{at}prompt")
    for k, completion in enumerate(completions):
        name = f"{at}completions[{k}]"
        # an empty completion after a prompt is one (a policy may stop at once); alone it is no text (score.py's rule)
        if problem := sequence_problem(name, completion, may_be_empty=bool(prompt)):
            raise RequestError(422, problem, name)
        if prompt and isinstance(prompt, list) != isinstance(completion, list):
            raise RequestError(
                422,
                f"{name} is {'a message list' if isinstance(completion, list) else 'a string'} but {at}prompt is "
                "not: both strings, or both message lists",
                name,
            )
    key = json.dumps(prompt, sort_keys=True) if prompt else None
    return Group(prompt or None, completions, key)


def parse_get_reward(data: dict, limits: Limits) -> Parsed:
    """OpenRLHF's body -> groups of queries by their prompt (each query a whole text; the prompts only say
    which queries share one), and where each reward goes in the flat reply."""
    name = "query" if "query" in data or "queries" not in data else "queries"
    queries, prompts = data.get(name), data.get("prompts")
    if queries is None:
        raise RequestError(422, "missing field 'query': the prompt + response texts to score", "query")
    if not isinstance(queries, list):
        raise RequestError(422, f"'{name}' must be an array of strings, got {json_kind(queries)}", name)
    for i, query in enumerate(queries):
        if not isinstance(query, str):
            raise RequestError(
                422, f"{name}[{i}] must be a string (prompt + response text), got {kind(query)}", f"{name}[{i}]"
            )
    check_total(len(queries), limits)
    if prompts is not None:
        if not isinstance(prompts, list) or len(prompts) != len(queries):
            got = f"{len(prompts)} items" if isinstance(prompts, list) else json_kind(prompts)
            raise RequestError(
                422, f"'prompts' must be an array with one prompt per query ({len(queries)}), got {got}", "prompts"
            )
        if (bad := next((i for i, p in enumerate(prompts) if not isinstance(p, str)), None)) is not None:
            raise RequestError(422, f"prompts[{bad}] must be a string, got {kind(prompts[bad])}", f"prompts[{bad}]")
    by_prompt: dict[str, int] = {}
    groups: list[Group] = []
    flat = []
    for i, query in enumerate(queries):
        if prompts is None or not prompts[i]:
            groups.append(Group(None, [query], None))  # no prompt given: a group of its own
            flat.append((len(groups) - 1, 0))
            continue
        g = by_prompt.setdefault(prompts[i], len(groups))
        if g == len(groups):
            groups.append(Group(None, [], "query:" + prompts[i]))
        if len(groups[g].completions) >= limits.max_group:
            raise RequestError(
                413,
                f"{limits.max_group + 1} or more queries share prompts[{i}]; the most per group is "
                f"{limits.max_group} (--max_group)",
                "prompts",
            )
        flat.append((g, len(groups[g].completions)))
        groups[g].completions.append(query)
    return Parsed(groups, flat, "get_reward")


def check_total(count: int, limits: Limits) -> None:
    if count > limits.max_completions:
        raise RequestError(
            413,
            f"the request holds {count} completions; this server takes at most {limits.max_completions} per request "
            "(--max_request_completions): send several requests",
        )
