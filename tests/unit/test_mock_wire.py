"""The two wire formats, SSE framing and embeddings, without a server."""

from __future__ import annotations

import ast
import base64
import json
import math
import struct
from pathlib import Path

import pytest

import mock_provider
from mock_provider.anthropic_wire import AnthropicFlavour
from mock_provider.embeddings import DEFAULT_DIMENSIONS, embeddings_body
from mock_provider.openai_wire import DONE, OpenAIFlavour
from mock_provider.wire import BadRequest, Reply, sse

OPENAI = OpenAIFlavour()
ANTHROPIC = AnthropicFlavour()
MESSAGES = [{"role": "user", "content": "hi"}]
REPLY = Reply(id="x-1", created=1, model="m", tokens=("a", " b"), prompt_tokens=1, truncated=False)


def test_the_mock_imports_nothing_from_the_sidecar() -> None:
    """The mock is an independent reading of the providers (docs/architecture.md)."""
    found = []
    for path in sorted(Path(mock_provider.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            found += [f"{path}: {name}" for name in names if name.split(".")[0] == "sidecar"]
    assert found == []


def test_sse_framing() -> None:
    assert sse({"a": 1}) == b'data: {"a":1}\n\n'
    assert sse({"a": 1}, "ping") == b'event: ping\ndata: {"a":1}\n\n'


def test_openai_parse_chat() -> None:
    chat = OPENAI.parse_chat(
        {
            "model": "gpt-4o",
            "messages": MESSAGES,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": 9,
            "max_completion_tokens": 3,
        }
    )
    assert (chat.model, chat.stream, chat.include_usage, chat.max_tokens) == (
        "gpt-4o",
        True,
        True,
        3,
    )
    plain = OPENAI.parse_chat({"model": "gpt-4o", "messages": MESSAGES, "stream": None})
    assert (plain.stream, plain.include_usage, plain.max_tokens) == (False, False, None)


def test_anthropic_parse_chat() -> None:
    chat = ANTHROPIC.parse_chat(
        {"model": "claude-haiku-4-5", "messages": MESSAGES, "max_tokens": 5, "system": "s"}
    )
    assert (chat.max_tokens, chat.system, chat.include_usage) == (5, "s", True)


@pytest.mark.parametrize(
    ("body", "message", "param"),
    [
        ([], "must be a JSON object", None),
        ({"messages": MESSAGES}, "'model' is required", "model"),
        ({"model": "", "messages": MESSAGES}, "'model' is required", "model"),
        ({"model": "m"}, "'messages' is required", "messages"),
        ({"model": "m", "messages": []}, "'messages' must be a non-empty list", "messages"),
        ({"model": "m", "messages": "hi"}, "'messages' must be a non-empty list", "messages"),
        ({"model": "m", "messages": [{"content": "x"}]}, r"messages\[0\] must be", "messages"),
        (
            {"model": "m", "messages": MESSAGES, "stream": "yes"},
            "'stream' must be a boolean",
            "stream",
        ),
        (
            {"model": "m", "messages": MESSAGES, "max_tokens": 0},
            "'max_tokens' must be a positive",
            "max_tokens",
        ),
        (
            {"model": "m", "messages": MESSAGES, "max_tokens": True},
            "'max_tokens' must be a positive",
            "max_tokens",
        ),
        (
            {"model": "m", "messages": MESSAGES, "stream_options": 1},
            "'stream_options' must be",
            "stream_options",
        ),
    ],
)
def test_openai_bad_requests(body: object, message: str, param: str | None) -> None:
    with pytest.raises(BadRequest, match=message) as info:
        OPENAI.parse_chat(body)
    assert info.value.param == param


def test_anthropic_requires_max_tokens() -> None:
    with pytest.raises(BadRequest, match="'max_tokens' is required") as info:
        ANTHROPIC.parse_chat({"model": "m", "messages": MESSAGES})
    assert info.value.param == "max_tokens"


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (429, "rate_limit_error"),
        (500, "server_error"),
        (503, "server_error"),
        (504, "timeout_error"),
        (418, "invalid_request_error"),
        (599, "server_error"),
    ],
)
def test_openai_error_bodies(status: int, kind: str) -> None:
    body = OPENAI.error(status, "boom", "messages")
    assert body == {
        "error": {
            "message": "boom",
            "type": kind,
            "code": body["error"]["code"],
            "param": "messages",
        }
    }  # type: ignore[index]


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, "invalid_request_error"),
        (401, "authentication_error"),
        (413, "request_too_large"),
        (429, "rate_limit_error"),
        (500, "api_error"),
        (503, "api_error"),
        (504, "timeout_error"),
        (529, "overloaded_error"),
        (418, "invalid_request_error"),
    ],
)
def test_anthropic_error_bodies(status: int, kind: str) -> None:
    assert ANTHROPIC.error(status, "boom") == {
        "type": "error",
        "error": {"type": kind, "message": "boom"},
    }


def test_malformed_chunks_are_not_json() -> None:
    for flavour in (OPENAI, ANTHROPIC):
        frame = flavour.stream_malformed(REPLY)
        data = frame.split(b"data: ", 1)[1]
        with pytest.raises(json.JSONDecodeError):
            json.loads(data)


def test_stream_markers() -> None:
    assert OPENAI.stream_done() == DONE == b"data: [DONE]\n\n"
    assert ANTHROPIC.stream_done().startswith(b"event: message_stop\n")


def test_openai_usage_chunk_only_when_asked() -> None:
    assert len(OPENAI.stream_tail(REPLY, include_usage=False)) == 1
    usage = json.loads(OPENAI.stream_tail(REPLY, include_usage=True)[1][len(b"data: ") :])
    assert usage["choices"] == []
    assert usage["usage"] == {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}


# ------------------------------------------------------------------------------ embeddings


def test_embeddings_are_deterministic_unit_vectors() -> None:
    model, body = embeddings_body({"model": "e", "input": ["alpha", "beta", "alpha"]})
    assert model == "e"
    vectors = [item["embedding"] for item in body["data"]]  # type: ignore[attr-defined]
    assert [item["index"] for item in body["data"]] == [0, 1, 2]  # type: ignore[attr-defined]
    assert vectors[0] == vectors[2] != vectors[1]
    assert len(vectors[0]) == DEFAULT_DIMENSIONS
    assert math.fsum(x * x for x in vectors[1]) == pytest.approx(1.0)
    assert body["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    assert embeddings_body({"model": "e", "input": "alpha"})[1]["data"] == [body["data"][0]]  # type: ignore[index]


def test_embeddings_base64_is_the_float32_of_the_float_vector() -> None:
    _, floats = embeddings_body({"model": "e", "input": "x", "dimensions": 8})
    _, packed = embeddings_body(
        {"model": "e", "input": "x", "dimensions": 8, "encoding_format": "base64"}
    )
    raw = base64.b64decode(packed["data"][0]["embedding"])  # type: ignore[index]
    decoded = struct.unpack("<8f", raw)
    assert decoded == pytest.approx(floats["data"][0]["embedding"], rel=1e-6)  # type: ignore[index]


def test_embeddings_token_arrays() -> None:
    _, one = embeddings_body({"model": "e", "input": [1, 2, 3]})
    _, two = embeddings_body({"model": "e", "input": [[1, 2, 3], [4]]})
    assert len(one["data"]) == 1  # type: ignore[arg-type]
    assert len(two["data"]) == 2  # type: ignore[arg-type]
    assert one["data"][0]["embedding"] == two["data"][0]["embedding"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": "x"}, "'model' is required"),
        ({"model": "e"}, "'input' must be"),
        ({"model": "e", "input": ""}, "'input' must be"),
        ({"model": "e", "input": []}, "'input' must be"),
        ({"model": "e", "input": ["a", 1]}, "'input' must be"),
        ({"model": "e", "input": "x", "dimensions": 0}, "'dimensions' must be between"),
        ({"model": "e", "input": "x", "dimensions": "8"}, "'dimensions' must be an integer"),
        ({"model": "e", "input": "x", "encoding_format": "hex"}, "'encoding_format' must be"),
    ],
)
def test_embeddings_bad_requests(body: object, message: str) -> None:
    with pytest.raises(BadRequest, match=message):
        embeddings_body(body)
