"""reward/serve/protocol.py: request bodies -> groups, and each refusal's HTTP status and field, without a
server (tests/test_serve.py sends the same bodies over HTTP)."""

from __future__ import annotations

import json

import pytest

from reward.serve.protocol import Limits, RequestError, parse_get_reward, parse_json, parse_score

LIMITS = Limits(max_body_bytes=10_000, max_group=4, max_completions=6)
USER = [{"role": "user", "content": "Name a fruit."}]
ANSWER = [{"role": "assistant", "content": "An apple."}]


def refused(parse, data) -> RequestError:
    with pytest.raises(RequestError) as info:
        parse(data, LIMITS)
    return info.value


def test_score_groups_keep_their_order_and_a_prompt_key_each():
    parsed = parse_score({"groups": [{"prompt": "Q:", "completions": ["a", "b"]}, {"completions": ["t"]}]}, LIMITS)
    assert [(g.prompt, g.completions) for g in parsed.groups] == [("Q:", ["a", "b"]), (None, ["t"])]
    assert parsed.groups[0].key == json.dumps("Q:") and parsed.groups[1].key is None  # no prompt: never merged
    assert parsed.flat is None  # the reply nests rewards per group


def test_one_group_form_replies_flat_and_messages_are_accepted():
    parsed = parse_score({"prompt": USER, "completions": [ANSWER, ANSWER]}, LIMITS)
    assert parsed.flat == [(0, 0), (0, 1)] and parsed.groups[0].prompt == USER
    assert parsed.groups[0].key == json.dumps(USER, sort_keys=True)


@pytest.mark.parametrize(
    "data, status, field",
    [
        ({}, 422, "groups"),
        ({"groups": {"prompt": "Q"}}, 422, "groups"),
        ({"groups": [], "prompt": "Q"}, 422, "groups"),
        ({"groups": ["Q"]}, 422, "groups[0]"),
        ({"groups": [{"prompt": "Q"}]}, 422, "groups[0].completions"),
        ({"groups": [{"prompt": "Q", "completions": "a"}]}, 422, "groups[0].completions"),
        ({"groups": [{"prompt": "Q", "completions": ["a", None]}]}, 422, "groups[0].completions[1]"),
        ({"groups": [{"prompt": 7, "completions": ["a"]}]}, 422, "groups[0].prompt"),
        ({"groups": [{"prompt": "Q", "completions": [ANSWER]}]}, 422, "groups[0].completions[0]"),
        (
            {"groups": [{"prompt": USER, "completions": [[{"role": "robot", "content": "x"}]]}]},
            422,
            "groups[0].completions[0]",
        ),
        ({"groups": [{"prompt": "Q", "completion": ["a"]}]}, 422, "groups[0].completion"),
        ({"groups": [{"completions": [""]}]}, 422, "groups[0].completions[0]"),  # no prompt: no text at all
        ({"groups": [{"prompt": "", "completions": [""]}]}, 422, "groups[0].completions[0]"),
        ({"group": []}, 422, None),
        ({"groups": [{"prompt": "Q", "completions": ["a"] * 5}]}, 413, "groups[0].completions"),
        ({"groups": [{"completions": ["a"] * 4}, {"completions": ["a"] * 3}]}, 413, None),
    ],
)
def test_score_refusals_name_the_field(data, status, field):
    error = refused(parse_score, data)
    assert (error.status, error.field) == (status, field), error.message
    if field:
        assert field in error.message


def test_an_empty_completion_is_a_completion():
    """A policy may stop at once; training trains empty responses after a prompt, so they are scored."""
    assert parse_score({"prompt": "Q:", "completions": [""]}, LIMITS).groups[0].completions == [""]


def test_bad_json_is_400_and_a_non_object_is_422():
    assert refused(lambda body, _: parse_json(body), b"{bad").status == 400
    assert refused(lambda body, _: parse_json(body), b"\xff\xfe").status == 400
    deep = b"[" * 100_000 + b"]" * 100_000  # 200 KB that json.loads cannot descend: RecursionError
    assert refused(lambda body, _: parse_json(body), deep).status == 400
    error = refused(lambda body, _: parse_json(body), b"[1, 2]")
    assert error.status == 422 and "an array" in error.message


def test_get_reward_groups_queries_by_prompt_and_keeps_each_querys_place():
    data = {"query": ["P1 a", "P2 b", "P1 c", "lone"], "prompts": ["P1", "P2", "P1", ""], "labels": [1, 2, 3, 4]}
    parsed = parse_get_reward(data, LIMITS)
    assert [g.completions for g in parsed.groups] == [["P1 a", "P1 c"], ["P2 b"], ["lone"]]
    assert [g.key for g in parsed.groups] == ["query:P1", "query:P2", None]
    assert parsed.flat == [(0, 0), (1, 0), (0, 1), (2, 0)]
    assert all(g.prompt is None for g in parsed.groups)  # each query is a whole text


def test_get_reward_without_prompts_and_with_the_older_queries_name():
    parsed = parse_get_reward({"queries": ["a", "b"], "metas": [{}, {}]}, LIMITS)  # unknown fields ignored
    assert [g.completions for g in parsed.groups] == [["a"], ["b"]] and parsed.flat == [(0, 0), (1, 0)]


@pytest.mark.parametrize(
    "data, status, field",
    [
        ({"prompts": ["a"]}, 422, "query"),
        ({"query": "a text"}, 422, "query"),
        ({"query": ["a", 3]}, 422, "query[1]"),
        ({"query": ["a", "b"], "prompts": ["a"]}, 422, "prompts"),
        ({"query": ["a", "b"], "prompts": ["a", None]}, 422, "prompts[1]"),
        ({"query": ["q"] * 7}, 413, None),
        ({"query": ["q"] * 5, "prompts": ["p"] * 5}, 413, "prompts"),
    ],
)
def test_get_reward_refusals(data, status, field):
    error = refused(parse_get_reward, data)
    assert (error.status, error.field) == (status, field), error.message


def test_a_refusal_body_is_one_line_and_its_field():
    error = RequestError(422, "groups[0].prompt must be a string", "groups[0].prompt")
    assert error.body() == {"error": "groups[0].prompt must be a string", "field": "groups[0].prompt"}
    assert RequestError(400, "the body is not JSON").body() == {"error": "the body is not JSON"}


def test_a_refusal_naming_a_field_that_is_not_valid_unicode_can_still_be_sent():
    """A lone surrogate in a field name would make the JSON encoder fail while building the 422."""
    error = refused(parse_score, {"groups": [{"completions": ["a"], "\ud800": 1}]})
    assert error.status == 422
    sent = json.dumps(error.body(), ensure_ascii=False).encode("utf-8")  # what the reply encodes; no error
    assert b"\\ud800" in sent
