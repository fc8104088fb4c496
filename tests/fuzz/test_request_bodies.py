"""Bad request bodies sent to a real sidecar in front of a real mock provider.

Every body is answered with a 4xx in the client's wire format (or a 2xx when it
happens to be valid), never a 5xx; a body the sidecar refuses itself costs no
upstream call; and the sidecar keeps serving afterwards.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

CheckAnswer = Callable[[int, bytes, str], None]
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
# Per client format: a model served in the same format, and one reached by translation.
MODELS = {"openai": ("gpt-4o", "claude-sonnet-4-6"), "anthropic": ("claude-sonnet-4-6", "gpt-4o")}
TOP_FIELDS = (
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "n",
    "stream",
    "stream_options",
    "stop",
    "stop_sequences",
    "tools",
    "tool_choice",
    "system",
    "metadata",
    "response_format",
    "top_k",
    "logprobs",
)
MESSAGE_FIELDS = ("role", "content", "tool_calls", "tool_call_id", "name")

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=10,
)
formats = st.sampled_from(sorted(PATHS))
translated = st.booleans()


def base_body(fmt: str, translate: bool) -> dict[str, Any]:
    return {
        "model": MODELS[fmt][int(translate)],
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 16,
    }


async def send(
    stack: Any, fmt: str, data: bytes | AsyncIterator[bytes], content_type: str | None = None
) -> tuple[int, bytes, bool]:
    """POST *data*; return the status, body, and whether an upstream answered."""
    headers = {"content-type": content_type or "application/json"}
    if content_type == "":
        headers = {}
    async with stack.http.post(stack.url(PATHS[fmt]), data=data, headers=headers) as response:
        return response.status, await response.read(), "x-sidecar-upstream" in response.headers


async def probe(
    stack: Any,
    fmt: str,
    data: bytes,
    check: CheckAnswer,
    content_type: str | None = None,
    *,
    refused: bool = False,
) -> int:
    """Send *data*; check the answer's shape and that a sidecar refusal cost no upstream call."""
    before = await stack.upstream_calls()
    status, body, from_upstream = await send(stack, fmt, data, content_type)
    check(status, body, fmt)
    if refused:
        assert 400 <= status < 500, (status, body[:300])
        assert not from_upstream, (status, body[:300])
    if not from_upstream:
        assert await stack.upstream_calls() == before, (status, body[:300])
    return status


async def still_serving(stack: Any, check: CheckAnswer) -> None:
    for fmt in PATHS:
        status = await probe(stack, fmt, json.dumps(base_body(fmt, False)).encode(), check)
        assert status == 200


@given(fmt=formats, translate=translated, field=st.sampled_from(TOP_FIELDS), value=json_values)
async def test_any_value_in_any_field(
    body_stack: Any, answer_check: CheckAnswer, fmt: str, translate: bool, field: str, value: Any
) -> None:
    body = base_body(fmt, translate)
    body[field] = value
    await probe(body_stack, fmt, json.dumps(body).encode(), answer_check)


@given(
    fmt=formats,
    translate=translated,
    field=st.sampled_from(MESSAGE_FIELDS),
    value=json_values,
    whole=json_values,
    replace_whole=st.booleans(),
)
async def test_any_message_item(
    body_stack: Any,
    answer_check: CheckAnswer,
    fmt: str,
    translate: bool,
    field: str,
    value: Any,
    whole: Any,
    replace_whole: bool,
) -> None:
    body = base_body(fmt, translate)
    if replace_whole:
        body["messages"] = [whole]
    else:
        body["messages"][0][field] = value
    await probe(body_stack, fmt, json.dumps(body).encode(), answer_check)


@given(fmt=formats, data=st.binary(max_size=200) | st.text(max_size=200).map(str.encode))
async def test_arbitrary_bytes(
    body_stack: Any, answer_check: CheckAnswer, fmt: str, data: bytes
) -> None:
    # No arbitrary byte string of this size is a complete valid chat request.
    await probe(body_stack, fmt, data, answer_check, refused=True)


@given(fmt=formats, value=json_values.filter(lambda value: not isinstance(value, dict)))
async def test_json_that_is_not_an_object(
    body_stack: Any, answer_check: CheckAnswer, fmt: str, value: Any
) -> None:
    await probe(body_stack, fmt, json.dumps(value).encode(), answer_check, refused=True)


# Bodies the validator must refuse on its own, without asking an upstream.
WRONG_TYPES = [
    ("model", 5),
    ("model", ""),
    ("model", None),
    ("model", ["gpt-4o"]),
    ("messages", {}),
    ("messages", []),
    ("messages", "hello"),
    ("messages", [None]),
    ("messages", [{"content": "no role"}]),
    ("messages", [{"role": 7, "content": "x"}]),
    ("messages", [{"role": "user"}]),
    ("messages", [{"role": "user", "content": 5}]),
    ("messages", [{"role": "user", "content": {"text": "x"}}]),
    ("messages", [{"role": "user", "content": [5]}]),
    ("messages", [{"role": "user", "content": ["text"]}]),
    ("temperature", "hot"),
    ("temperature", -1),
    ("temperature", 3),
    ("temperature", True),
    ("max_tokens", 0),
    ("max_tokens", 1.5),
    ("max_tokens", "16"),
    ("max_tokens", False),
    ("stream", "yes"),
    ("stream", 1),
    ("tools", {}),
    ("tools", "search"),
    ("tools", [5]),
]


@pytest.mark.parametrize("fmt", sorted(PATHS))
@pytest.mark.parametrize(("field", "value"), WRONG_TYPES)
async def test_wrong_types_are_refused_without_upstream_calls(
    body_stack: Any, answer_check: CheckAnswer, fmt: str, field: str, value: Any
) -> None:
    for translate in (False, True):
        body = base_body(fmt, translate)
        body[field] = value
        await probe(body_stack, fmt, json.dumps(body).encode(), answer_check, refused=True)


def deep_tool(fmt: str, depth: int) -> bytes:
    """A tool whose JSON schema nests *depth* objects (the translation re-encodes it)."""
    schema = '{"type": "object", "properties": ' * depth + "{}" + "}" * depth
    if fmt == "openai":
        return (
            b'{"type": "function", "function": {"name": "f", "parameters": %s}}' % schema.encode()
        )
    return b'{"name": "f", "input_schema": %s}' % schema.encode()


@pytest.mark.parametrize("fmt", sorted(PATHS))
@pytest.mark.parametrize("depth", [100, 126, 127, 200, 600, 1100])
async def test_deep_nesting(
    body_stack: Any, answer_check: CheckAnswer, fmt: str, depth: int
) -> None:
    template = (
        b'{"model": "%s", "max_tokens": 16, "metadata": %s, "tools": [%s],'
        b' "messages": [{"role": "user", "content": "hi"}]}'
    )
    for translate in (False, True):
        model = MODELS[fmt][int(translate)].encode()
        lists = b"[" * (2 * depth) + b"]" * (2 * depth)
        for data in (
            template % (model, lists, deep_tool(fmt, 1)),
            template % (model, b"{}", deep_tool(fmt, depth)),
        ):
            await probe(body_stack, fmt, data, answer_check)
    await still_serving(body_stack, answer_check)


@pytest.mark.parametrize("fmt", sorted(PATHS))
async def test_duplicate_keys_are_refused(
    body_stack: Any, answer_check: CheckAnswer, fmt: str
) -> None:
    # Parsers disagree on which of two equal keys counts: the body validated here could
    # be read upstream as another request. Any duplicate, at any depth, is a 400.
    rest = b'"max_tokens": 16, "messages": [{"role": "user", "content": "x"}]'
    model = MODELS[fmt][0].encode()
    for data in (
        b'{"model": 5, "model": "%s", %s}' % (model, rest),
        b'{"model": "%s", "model" : "%s", %s}' % (model, model, rest),
        b'{"model": "%s", "max_tokens": 16, '
        b'"messages": [{"role": "user", "role": "system", "content": "x"}]}' % model,
    ):
        status = await probe(body_stack, fmt, data, answer_check, refused=True)
        assert status == 400
    # An escaped quote and a colon inside a string are no key: the body is valid.
    content = b'he said \\":\\" and left'
    data = b'{"model": "%s", "max_tokens": 16, "messages": [{"role": "user", "content": "%s"}]}'
    assert await probe(body_stack, fmt, data % (model, content), answer_check) == 200


@pytest.mark.parametrize("fmt", sorted(PATHS))
@pytest.mark.parametrize(
    "content_type", ["", "text/plain", "application/x-www-form-urlencoded", "multipart/form-data"]
)
async def test_wrong_content_type(
    body_stack: Any, answer_check: CheckAnswer, fmt: str, content_type: str
) -> None:
    data = json.dumps(base_body(fmt, False)).encode()
    status = await probe(body_stack, fmt, data, answer_check, content_type)
    if content_type == "multipart/form-data":  # a form, whatever it holds: not a chat request
        assert status == 400
    else:  # none, curl -d's default, text/plain: a body that is JSON is read as JSON
        assert status == 200
        broken = await probe(body_stack, fmt, b'{"model": ', answer_check, content_type)
        assert broken == 400  # and one that looks like JSON but is not says so


async def chunks(data: bytes, size: int = 4096) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


@pytest.mark.parametrize("fmt", sorted(PATHS))
async def test_chunked_bodies(body_stack: Any, answer_check: CheckAnswer, fmt: str) -> None:
    valid = json.dumps(base_body(fmt, False)).encode()
    before = await body_stack.upstream_calls()
    status, body, _ = await send(body_stack, fmt, chunks(valid, 7))
    check = answer_check
    check(status, body, fmt)
    assert status == 200
    huge = base_body(fmt, False)
    huge["messages"][0]["content"] = "x" * 300_000
    status, body, _ = await send(body_stack, fmt, chunks(json.dumps(huge).encode()))
    check(status, body, fmt)
    assert status == 413
    status, body, _ = await send(body_stack, fmt, chunks(b""))
    check(status, body, fmt)
    assert status == 400
    assert await body_stack.upstream_calls() == before + 1
    await still_serving(body_stack, answer_check)


@pytest.mark.parametrize("fmt", sorted(PATHS))
async def test_huge_strings_and_arrays(
    body_stack: Any, answer_check: CheckAnswer, fmt: str
) -> None:
    body = base_body(fmt, False)
    body["messages"][0]["content"] = "x" * 300_000
    assert await probe(body_stack, fmt, json.dumps(body).encode(), answer_check) == 413
    body["messages"][0]["content"] = "x" * 100_000  # ~25,000 tokens; the route allows 20,000
    assert await probe(body_stack, fmt, json.dumps(body).encode(), answer_check) == 400
    body = base_body(fmt, False)
    body["messages"] = [{"role": "user", "content": "x"}] * 7000
    await probe(body_stack, fmt, json.dumps(body).encode(), answer_check)
    body["messages"] = [{}] * 60_000
    await probe(body_stack, fmt, json.dumps(body).encode(), answer_check, refused=True)
    body = base_body(fmt, False)
    body["model"] = "m" * 200_000
    await probe(body_stack, fmt, json.dumps(body).encode(), answer_check)
    await still_serving(body_stack, answer_check)
