"""check_chat: fail fast with the right status, code and param, before any upstream call."""

from __future__ import annotations

from typing import Any

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from sidecar.errors import InvalidRequest, SidecarError
from sidecar.pipeline.call import Answer, Call, Handler, Stage, fold
from sidecar.pipeline.validate import PromptTooLong, SchemaViolation, check_chat, make_validate
from sidecar.policy.model import Match, Route, Target, Upstream, Validation

UPSTREAM = Upstream("openai", "https://api.openai.com", "openai")
ROUTE = Route(
    name="chat",
    match=Match("/v1/chat/completions", methods=frozenset({"POST"})),
    fallback=(Target(UPSTREAM),),
    validate=Validation(max_prompt_tokens=10),
)
USER = {"role": "user", "content": "hi"}


def make_call(
    body: dict[str, Any] | None,
    *,
    fmt: str = "openai",
    path: str = "/v1/chat/completions",
    method: str = "POST",
    route: Route = ROUTE,
) -> Call:
    return Call(
        request_id="rid",
        method=method,
        path_qs=path,
        headers=CIMultiDictProxy(CIMultiDict()),
        client_format=fmt,  # type: ignore[arg-type]
        route=route,
        body=b"",
        parsed=body,
        model=body.get("model") if body else None,
        stream=False,
    )


def chat(**fields: Any) -> dict[str, Any]:
    return {"model": "gpt-4o", "messages": [USER], **fields}


def rejects(
    body: dict[str, Any] | None, *, fmt: str = "openai", limit: int | None = None
) -> SidecarError:
    with pytest.raises(SidecarError) as caught:
        check_chat(make_call(body, fmt=fmt), limit)
    return caught.value


def assert_schema(error: SidecarError, param: str) -> None:
    assert isinstance(error, SchemaViolation)
    assert (error.status, error.type, error.code) == (
        400,
        "invalid_request_error",
        "invalid_request_body",
    )
    assert error.param == param


def test_minimal_valid_requests_pass() -> None:
    check_chat(make_call(chat()), None)
    check_chat(make_call(chat(max_tokens=16), fmt="anthropic"), None)
    check_chat(
        make_call(
            chat(
                temperature=0,
                max_tokens=1,
                max_completion_tokens=5,
                stream=True,
                messages=[
                    {"role": "system", "content": "be brief"},
                    USER,
                    {"role": "assistant", "tool_calls": []},  # no content, but tool calls
                    {"role": "user", "content": [{"type": "text", "text": "again"}]},
                ],
            )
        ),
        None,
    )


def test_missing_body_is_400() -> None:
    error = rejects(None)
    assert isinstance(error, InvalidRequest)
    assert error.status == 400


@pytest.mark.parametrize("model", [None, "", 42, ["gpt-4o"]])
def test_model_required(model: object) -> None:
    body = chat(model=model)
    if model is None:
        del body["model"]
    assert_schema(rejects(body), "model")


@pytest.mark.parametrize("messages", [None, "hi", {"role": "user"}, []])
def test_messages_must_be_a_non_empty_list(messages: object) -> None:
    body = chat(messages=messages)
    if messages is None:
        del body["messages"]
    error = rejects(body)
    assert_schema(error, "messages")
    assert "non-empty list" in error.message


@pytest.mark.parametrize(
    "item",
    [
        "just text",
        {"content": "no role"},
        {"role": 1, "content": "numeric role"},
        {"role": None, "content": "null role"},
    ],
)
def test_message_needs_a_role(item: object) -> None:
    error = rejects(chat(messages=[USER, item]))
    assert_schema(error, "messages")
    assert "messages[1]" in error.message
    assert "role" in error.message


def test_message_needs_content() -> None:
    error = rejects(chat(messages=[{"role": "user"}]))
    assert_schema(error, "messages")
    assert error.message == "messages[0] has no 'content'"


@pytest.mark.parametrize("temperature", [-0.1, 2.01, 5, True, False, "1", [1]])
def test_temperature_out_of_range_or_wrong_type(temperature: object) -> None:
    assert_schema(rejects(chat(temperature=temperature)), "temperature")


@pytest.mark.parametrize("temperature", [0, 0.0, 1, 1.5, 2, 2.0])
def test_temperature_in_range(temperature: float) -> None:
    check_chat(make_call(chat(temperature=temperature)), None)


@pytest.mark.parametrize("key", ["max_tokens", "max_completion_tokens"])
@pytest.mark.parametrize("value", [0, -1, 1.5, "10", True])
def test_max_tokens_must_be_positive_integers(key: str, value: object) -> None:
    assert_schema(rejects(chat(**{key: value})), key)


def test_anthropic_requires_max_tokens() -> None:
    error = rejects(chat(), fmt="anthropic")
    assert_schema(error, "max_tokens")
    assert error.message == "'max_tokens' is required"
    # max_completion_tokens is OpenAI's name; it does not satisfy Anthropic.
    assert_schema(rejects(chat(max_completion_tokens=5), fmt="anthropic"), "max_tokens")


@pytest.mark.parametrize("stream", ["true", 1, 0, [True]])
def test_stream_must_be_bool(stream: object) -> None:
    assert_schema(rejects(chat(stream=stream)), "stream")


def test_prompt_estimate_is_chars_over_four_rounded_up() -> None:
    # 40 characters = 10 tokens: at the limit.
    body = chat(messages=[{"role": "user", "content": "x" * 40}])
    check_chat(make_call(body), 10)
    # 41 characters = 11 tokens (rounded up): over.
    body = chat(messages=[{"role": "user", "content": "x" * 41}])
    error = rejects(body, limit=10)
    assert isinstance(error, PromptTooLong)
    assert (error.status, error.type, error.code) == (
        400,
        "invalid_request_error",
        "context_length_exceeded",
    )
    assert error.param == "messages"
    assert "about 11 tokens" in error.message
    assert "allows 10" in error.message


def test_prompt_estimate_counts_system_and_text_parts() -> None:
    body = chat(
        system=[{"type": "text", "text": "s" * 10}],
        messages=[
            {"role": "system", "content": "y" * 10},
            {"role": "user", "content": [{"type": "text", "text": "z" * 10}, {"type": "image"}]},
            {"role": "assistant", "tool_calls": [{"id": "t"}]},
        ],
    )
    check_chat(make_call(body), 8)  # 30 characters -> 8 tokens
    assert isinstance(rejects(body, limit=7), PromptTooLong)
    assert isinstance(rejects(chat(system="q" * 41), limit=10), PromptTooLong)


def test_no_prompt_limit() -> None:
    check_chat(make_call(chat(messages=[{"role": "user", "content": "x" * 100_000}])), None)


def test_schema_errors_come_before_the_prompt_estimate() -> None:
    body = chat(messages=[{"role": "user", "content": "x" * 400}], temperature=9)
    assert_schema(rejects(body, limit=1), "temperature")


async def test_stage_checks_chat_posts_only() -> None:
    stage = make_validate(ROUTE)
    reached: list[str] = []

    async def following(call: Call) -> Answer:
        reached.append(call.path_qs)
        return Answer(200, CIMultiDict(), UPSTREAM)

    long_prompt = chat(messages=[{"role": "user", "content": "x" * 100}])
    with pytest.raises(PromptTooLong):
        await stage(make_call(long_prompt, path="/v1/chat/completions?x=1"), following)
    with pytest.raises(SchemaViolation):
        await stage(make_call({"messages": []}, path="/v1/messages", fmt="anthropic"), following)
    # Other paths and methods pass through untouched.
    await stage(make_call({"input": "x"}, path="/v1/embeddings"), following)
    await stage(make_call(None, method="GET"), following)
    answer = await stage(make_call(chat()), following)
    assert answer.status == 200
    assert reached == ["/v1/embeddings", "/v1/chat/completions", "/v1/chat/completions"]


async def test_fold_runs_stages_outermost_first() -> None:
    order: list[str] = []

    def stage(name: str) -> Stage:
        async def run(call: Call, following: Handler) -> Answer:
            order.append(f"{name}>")
            answer = await following(call)
            order.append(f"<{name}")
            return answer

        return run

    async def terminal(call: Call) -> Answer:
        order.append("terminal")
        return Answer(204, CIMultiDict(), UPSTREAM)

    handler = fold([stage("a"), stage("b"), make_validate(ROUTE)], terminal)
    assert (await handler(make_call(chat()))).status == 204
    assert order == ["a>", "b>", "terminal", "<b", "<a"]
    assert (await fold([], terminal)(make_call(chat()))).status == 204
