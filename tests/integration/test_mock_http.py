"""Raw HTTP checks: bad input, body limits, API keys, forced streams, bytes on the wire."""

from __future__ import annotations

import asyncio
import contextlib
import json

import anthropic
import openai
import pytest

from mock_provider.content import DEFAULT_ANSWER, split_tokens
from mock_provider.state import STATE

MESSAGES = [{"role": "user", "content": "hi"}]
OPENAI_BODY = {"model": "gpt-4o", "messages": MESSAGES}
ANTHROPIC_BODY = {"model": "claude-sonnet-4-6", "max_tokens": 64, "messages": MESSAGES}
BODIES = {"openai": OPENAI_BODY, "anthropic": ANTHROPIC_BODY}
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}
VALID_FAIL = "valid: an HTTP status 400-599 or one of timeout, reset, hang, context_length"
FLAVOURS = pytest.mark.parametrize("flavour", ["openai", "anthropic"])


def error_message(flavour: str, body: dict[str, object], kind: str = "invalid_request_error"):
    """Check the flavour's error format; return (message, param-or-None)."""
    if flavour == "openai":
        assert list(body) == ["error"]
        error = body["error"]
        assert set(error) == {"message", "type", "code", "param"}
        assert error["type"] == kind
        return error["message"], error["param"]
    assert body["type"] == "error"
    assert set(body["error"]) == {"type", "message"}
    assert body["error"]["type"] == kind
    return body["error"]["message"], None


async def post(http, path: str, **kwargs):
    async with http.post(path, **kwargs) as response:
        assert response.headers["x-mock-name"] == "mock-test"
        assert response.content_type == "application/json"
        return response.status, await response.json()


# ------------------------------------------------------------------------------- bad input

BAD_INPUT = [
    ("openai", {"data": b"{not json"}, "the request body is not valid JSON", None),
    ("openai", {"data": b""}, "the request body is empty", None),
    ("openai", {"json": [1, 2]}, "must be a JSON object", None),
    ("openai", {"json": {"model": "gpt-4o"}}, "'messages' is required", "messages"),
    (
        "openai",
        {"json": {**OPENAI_BODY, "messages": []}},
        "'messages' must be a non-empty list",
        "messages",
    ),
    ("openai", {"json": {"messages": MESSAGES}}, "'model' is required", "model"),
    ("openai", {"json": {**OPENAI_BODY, "stream": "yes"}}, "'stream' must be a boolean", "stream"),
    (
        "openai",
        {"json": {**OPENAI_BODY, "max_tokens": -3}},
        "'max_tokens' must be a positive integer",
        "max_tokens",
    ),
    ("anthropic", {"data": b"{not json"}, "the request body is not valid JSON", None),
    ("anthropic", {"data": b""}, "the request body is empty", None),
    (
        "anthropic",
        {"json": {"model": "claude-sonnet-4-6", "messages": MESSAGES}},
        "'max_tokens' is required",
        None,
    ),
    (
        "anthropic",
        {"json": {"model": "claude-sonnet-4-6", "max_tokens": 5}},
        "'messages' is required",
        None,
    ),
    (
        "anthropic",
        {"json": {**ANTHROPIC_BODY, "messages": [{"content": "no role"}]}},
        "messages[0] must be an object with a string 'role'",
        None,
    ),
]


@pytest.mark.parametrize(("flavour", "request_kwargs", "message", "param"), BAD_INPUT)
async def test_bad_input_is_a_400_in_the_flavours_format(
    http, flavour: str, request_kwargs, message: str, param: str | None
) -> None:
    headers = {"content-type": "application/json"}
    status, body = await post(http, PATHS[flavour], headers=headers, **request_kwargs)
    assert status == 400
    text, got_param = error_message(flavour, body)
    assert message in text
    assert got_param == param


async def test_embeddings_bad_input(http) -> None:
    status, body = await post(http, "/v1/embeddings", json={"model": "text-embedding-3-small"})
    assert status == 400
    assert error_message("openai", body) == (
        "'input' must be a non-empty string, list of strings, or token array(s)",
        "input",
    )


@FLAVOURS
@pytest.mark.parametrize(
    "channel",
    [
        {"params": {"fail": "sometimes"}},
        {"headers": {"x-mock-fail": "sometimes"}},
        {"headers": {"x-mock-fail": "429"}, "params": {"fail": "sometimes"}},  # query wins
    ],
)
async def test_unknown_fail_value_lists_the_valid_values(http, flavour: str, channel) -> None:
    status, body = await post(http, PATHS[flavour], json=BODIES[flavour], **channel)
    assert status == 400
    text, _ = error_message(flavour, body)
    assert text == f"unknown fail value 'sometimes'; {VALID_FAIL}"


@FLAVOURS
async def test_a_digit_that_is_not_a_decimal_is_a_400_not_a_500(http, flavour: str) -> None:
    status, body = await post(http, PATHS[flavour], json=BODIES[flavour], params={"fail": "²"})
    assert status == 400
    assert error_message(flavour, body)[0] == f"unknown fail value '²'; {VALID_FAIL}"


@FLAVOURS
async def test_other_bad_fault_parameters(http, flavour: str) -> None:
    status, body = await post(
        http, PATHS[flavour], json=BODIES[flavour], headers={"x-mock-explode": "1"}
    )
    assert status == 400
    text, _ = error_message(flavour, body)
    assert text.startswith("unknown fault parameter 'explode'; valid: chunk_ms, delay, error_chunk")
    status, body = await post(http, PATHS[flavour], json=BODIES[flavour], params={"delay": "x"})
    assert status == 400
    assert error_message(flavour, body)[0] == "delay must be an integer, got 'x'"


async def test_sdk_sees_bad_fault_values_as_bad_request(openai_client, anthropic_client) -> None:
    with pytest.raises(openai.BadRequestError, match="reset, hang, context_length") as info:
        await openai_client.chat.completions.create(
            model="gpt-4o", messages=MESSAGES, extra_query={"fail": "sometimes"}
        )
    assert info.value.body["type"] == "invalid_request_error"
    with pytest.raises(anthropic.BadRequestError, match="reset, hang, context_length") as error:
        await anthropic_client.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=64,
            messages=MESSAGES,
            extra_headers={"x-mock-fail": "sometimes"},
        )
    assert error.value.type == "invalid_request_error"


async def test_bad_requests_are_counted(http, mock) -> None:
    await post(http, "/v1/messages", json={"model": "claude-sonnet-4-6"})
    stats = mock.app[STATE].stats.snapshot()
    assert stats["by_outcome"] == {"bad_request": 1}
    assert stats["by_model"] == {"-": 1}


# ---------------------------------------------------------------------------- body limit


@pytest.fixture
async def small(mock_server, http_for):
    server = await mock_server(name="mock-test", max_body=1024)
    return server, http_for(server)


@pytest.mark.parametrize(
    ("path", "flavour", "kind"),
    [
        ("/v1/chat/completions", "openai", "invalid_request_error"),
        ("/v1/embeddings", "openai", "invalid_request_error"),
        ("/v1/messages", "anthropic", "request_too_large"),
    ],
)
async def test_oversize_body_is_a_413(small, path: str, flavour: str, kind: str) -> None:
    server, http = small
    body = {
        "model": "m",
        "max_tokens": 5,
        "input": "x",
        "messages": [{"role": "user", "content": "x" * 2000}],
    }
    status, response = await post(http, path, json=body)
    assert status == 413
    text, _ = error_message(flavour, response, kind)
    assert text == "the request body exceeds the mock's limit of 1024 bytes"
    assert server.app[STATE].stats.snapshot()["by_outcome"] == {"413": 1}
    status, _ = await post(http, path, json={**body, "messages": MESSAGES})  # under the limit
    assert status == 200


async def test_oversize_body_through_the_sdks(small, openai_for, anthropic_for) -> None:
    server, _ = small
    big = [{"role": "user", "content": "word " * 500}]
    with pytest.raises(openai.APIStatusError) as info:
        await openai_for(server).chat.completions.create(model="gpt-4o", messages=big)
    assert info.value.status_code == 413
    with pytest.raises(anthropic.APIStatusError) as error:
        await anthropic_for(server).messages.create(
            model="claude-haiku-4-5", max_tokens=5, messages=big
        )
    assert error.value.status_code == 413
    assert error.value.type == "request_too_large"


# -------------------------------------------------------------------------------- api key


@pytest.fixture
async def keyed(mock_server, http_for):
    server = await mock_server(name="mock-test", api_key="sk-mock-secret")
    return server, http_for(server)


@pytest.mark.parametrize(
    ("path", "flavour", "headers"),
    [
        ("/v1/chat/completions", "openai", {}),
        ("/v1/chat/completions", "openai", {"Authorization": "Bearer wrong"}),
        ("/v1/chat/completions", "openai", {"x-api-key": "sk-mock-secret"}),
        ("/v1/embeddings", "openai", {}),
        ("/v1/messages", "anthropic", {}),
        ("/v1/messages", "anthropic", {"x-api-key": "wrong"}),
        (
            "/v1/messages",
            "anthropic",
            {"x-api-key": "wrong", "Authorization": "Bearer sk-mock-secret"},
        ),
    ],
)
async def test_api_key_required(keyed, path: str, flavour: str, headers) -> None:
    server, http = keyed
    body = {**BODIES[flavour], "input": "x"}
    status, response = await post(http, path, json=body, headers=headers, params={"fail": "500"})
    assert status == 401  # checked before anything else, faults included
    text, _ = error_message(flavour, response, "authentication_error")
    assert text == "invalid or missing API key"
    assert server.app[STATE].stats.snapshot()["by_outcome"] == {"401": 1}


@pytest.mark.parametrize(
    ("path", "flavour", "headers"),
    [
        ("/v1/chat/completions", "openai", {"Authorization": "Bearer sk-mock-secret"}),
        ("/v1/embeddings", "openai", {"Authorization": "Bearer sk-mock-secret"}),
        ("/v1/messages", "anthropic", {"x-api-key": "sk-mock-secret"}),
        # What the anthropic SDK 2.x sends for api_key=...
        ("/v1/messages", "anthropic", {"Authorization": "Bearer sk-mock-secret"}),
    ],
)
async def test_api_key_accepted(keyed, path: str, flavour: str, headers) -> None:
    server, http = keyed
    status, _ = await post(http, path, json={**BODIES[flavour], "input": "x"}, headers=headers)
    assert status == 200
    assert server.app[STATE].stats.snapshot()["by_outcome"] == {"ok": 1}


async def test_api_key_through_the_sdks(keyed, openai_for, anthropic_for) -> None:
    server, _ = keyed
    with pytest.raises(openai.AuthenticationError):
        await openai_for(server).chat.completions.create(model="gpt-4o", messages=MESSAGES)
    good = openai_for(server, api_key="sk-mock-secret")
    completion = await good.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert completion.choices[0].message.content == DEFAULT_ANSWER
    embedding = await good.embeddings.create(model="text-embedding-3-small", input="x")
    assert len(embedding.data) == 1

    with pytest.raises(anthropic.AuthenticationError) as info:
        await anthropic_for(server).messages.create(
            model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES
        )
    assert info.value.type == "authentication_error"
    message = await anthropic_for(server, api_key="sk-mock-secret").messages.create(
        model="claude-sonnet-4-6", max_tokens=64, messages=MESSAGES
    )
    assert message.content[0].text == DEFAULT_ANSWER


# ------------------------------------------------------------------------ forced streaming


@FLAVOURS
@pytest.mark.parametrize(
    "force", [{"params": {"stream": "true"}}, {"headers": {"x-mock-stream": "1"}}]
)
async def test_stream_can_be_forced(http, flavour: str, force) -> None:
    async with http.post(PATHS[flavour], json=BODIES[flavour], **force) as response:
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        assert response.headers["x-mock-name"] == "mock-test"
        body = await response.read()
    end = b"data: [DONE]\n\n" if flavour == "openai" else b'data: {"type":"message_stop"}\n\n'
    assert body.endswith(end)


@FLAVOURS
async def test_stream_false_in_the_query_changes_nothing(http, flavour: str) -> None:
    async with http.post(PATHS[flavour], json=BODIES[flavour], params={"stream": "0"}) as response:
        assert response.content_type == "application/json"


# ------------------------------------------------------------------------ bytes on the wire


def request_bytes(server, path: str, body: dict[str, object], query: str = "") -> bytes:
    payload = json.dumps(body).encode()
    return (
        f"POST {path}{query} HTTP/1.1\r\nHost: {server.host}:{server.port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode() + payload


async def read_all(server, data: bytes) -> tuple[bytes, BaseException | None]:
    """Send raw bytes, read until the server closes; (bytes received, error if any)."""
    reader, writer = await asyncio.open_connection(server.host, server.port)
    received = b""
    error: BaseException | None = None
    try:
        writer.write(data)
        await writer.drain()
        while chunk := await asyncio.wait_for(reader.read(65536), timeout=5):
            received += chunk
    except ConnectionResetError as exc:
        error = exc
    finally:
        writer.close()
        with contextlib.suppress(ConnectionResetError):
            await writer.wait_closed()
    return received, error


@FLAVOURS
@pytest.mark.parametrize("query", ["?fail=reset", "?fail=reset&stream=true"])
async def test_reset_sends_no_response_bytes(mock, flavour: str, query: str) -> None:
    received, _ = await read_all(mock, request_bytes(mock, PATHS[flavour], BODIES[flavour], query))
    assert received == b""
    await asyncio.wait_for(mock.app[STATE].stats.wait_idle(), timeout=5)
    assert mock.app[STATE].stats.snapshot()["by_outcome"] == {"reset": 1}


def dechunk(body: bytes) -> tuple[bytes, bool]:
    """Decode an HTTP/1.1 chunked body; (payload, whether the terminating chunk arrived)."""
    payload = b""
    while body:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            return payload, True
        payload += rest[:size]
        body = rest[size + 2 :]
    return payload, False


def sse_data(payload: bytes) -> list[bytes]:
    return [event.split(b"data: ", 1)[1] for event in payload.split(b"\n\n") if event]


def content_of(flavour: str, data: bytes) -> str | None:
    if data == b"[DONE]":
        return None
    event = json.loads(data)
    if flavour == "openai":
        return event["choices"][0]["delta"].get("content") if event["choices"] else None
    return event["delta"]["text"] if event["type"] == "content_block_delta" else None


@FLAVOURS
@pytest.mark.parametrize("n", [0, 3])
async def test_fail_chunk_cuts_mid_body(mock, flavour: str, n: int) -> None:
    body = {**BODIES[flavour], "stream": True}
    received, _ = await read_all(
        mock, request_bytes(mock, PATHS[flavour], body, f"?fail_chunk={n}")
    )
    head, _, chunked = received.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Transfer-Encoding: chunked" in head
    payload, terminated = dechunk(chunked)
    assert not terminated  # the connection closed mid-body
    assert payload.endswith(b"\n\n")  # whole events only
    data = sse_data(payload)
    texts = [text for item in data if (text := content_of(flavour, item))]
    assert texts == list(split_tokens(DEFAULT_ANSWER)[:n])
    marker = b"[DONE]" if flavour == "openai" else b"message_stop"
    assert marker not in payload
    assert b'finish_reason":"stop' not in payload
    assert b"message_delta" not in payload


@FLAVOURS
async def test_complete_stream_has_a_terminating_chunk(mock, flavour: str) -> None:
    data = request_bytes(mock, PATHS[flavour], {**BODIES[flavour], "stream": True}, "?stream=1")
    data = data.replace(b"HTTP/1.1\r\n", b"HTTP/1.1\r\nConnection: close\r\n", 1)
    received, error = await read_all(mock, data)
    assert error is None
    payload, terminated = dechunk(received.partition(b"\r\n\r\n")[2])
    assert terminated
    texts = [content_of(flavour, item) for item in sse_data(payload)]
    assert "".join(text for text in texts if text) == DEFAULT_ANSWER


@FLAVOURS
async def test_malformed_chunk_on_the_wire_then_the_stream_goes_on(http, flavour: str) -> None:
    body = {**BODIES[flavour], "stream": True}
    async with http.post(PATHS[flavour], json=body, params={"malformed_chunk": "2"}) as response:
        raw = await response.read()
    events = [event for event in raw.split(b"\n\n") if event]
    data = [event.split(b"data: ", 1)[1] for event in events]
    bad = []
    for index, item in enumerate(data):
        if item == b"[DONE]":
            continue
        try:
            json.loads(item)
        except json.JSONDecodeError:
            bad.append(index)
    first_content = 1 if flavour == "openai" else 3  # after role chunk / start, block, ping
    assert bad == [first_content + 1]  # content chunk 2
    assert raw.endswith(
        b"data: [DONE]\n\n" if flavour == "openai" else b'{"type":"message_stop"}\n\n'
    )


async def test_error_and_stream_responses_name_the_instance(mock_server, http_for) -> None:
    http = http_for(await mock_server(name="instance-7"))
    for method, path, kwargs in [
        ("GET", "/v1/models", {}),
        ("GET", "/v1/models", {"headers": {"anthropic-version": "2023-06-01"}}),
        ("GET", "/health", {}),
        ("GET", "/config/failures", {}),
        ("DELETE", "/config/failures", {}),
        ("GET", "/stats", {}),
        ("POST", "/stats/reset", {}),
        ("POST", "/v1/chat/completions", {"json": OPENAI_BODY, "params": {"fail": "503"}}),
        ("POST", "/v1/messages", {"json": ANTHROPIC_BODY, "params": {"stream": "1"}}),
        ("POST", "/v1/embeddings", {"json": {"model": "e", "input": "x"}}),
        ("POST", "/v1/messages", {"data": b"nope"}),
    ]:
        async with http.request(method, path, **kwargs) as response:
            assert response.headers["x-mock-name"] == "instance-7", (method, path)
            await response.read()


async def test_models_shape_depends_on_the_anthropic_version_header(http) -> None:
    async with http.get("/v1/models") as response:
        openai_shape = await response.json()
    async with http.get("/v1/models", headers={"anthropic-version": "2023-06-01"}) as response:
        anthropic_shape = await response.json()
    assert openai_shape["object"] == "list"
    assert openai_shape["data"][0] == {
        "id": "gpt-4o",
        "object": "model",
        "created": 1_700_000_000,
        "owned_by": "mock",
    }
    assert set(anthropic_shape) == {"data", "has_more", "first_id", "last_id"}
    assert anthropic_shape["data"][0]["type"] == "model"
