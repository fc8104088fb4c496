"""Request bodies with a Content-Encoding, end to end: real mock provider, real sidecar.

The sidecar decodes gzip and deflate bodies itself and forwards them as identity (no
Content-Encoding, the decoded Content-Length); ``max_body`` applies to the decoded
size; a zip bomb, an unknown or stacked coding and a corrupt body are refused before
any upstream call, in the client's wire format. The sidecar runs with the CLI's
``server_options`` (aiohttp's own request decompression off), as in production.
"""

from __future__ import annotations

import contextlib
import gzip
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiohttp.web_protocol import RequestPayloadError

from mock_provider.app import create_app as create_mock
from mock_provider.state import MockSettings
from sidecar.app import SidecarConfig, server_options
from sidecar.app import create_app as create_sidecar
from sidecar.state import ADMIN_APP

ServerFactory = Callable[..., Awaitable[TestServer]]
PROMPT = "say it back, compressed"
CHAT = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": PROMPT}]})
MESSAGES = orjson.dumps(
    {
        "model": "claude-sonnet-4-6",
        "max_tokens": 64,
        "messages": [{"role": "user", "content": PROMPT}],
    }
)
JSON = {"Content-Type": "application/json"}
GZIP = {**JSON, "Content-Encoding": "gzip"}
# 1 GiB of zeros as 100 concatenated gzip members of 10 MiB each: ~1 MB on the wire,
# under the default max_body of 1 MiB, so only the decoded size can refuse it.
BOMB_MEMBER = gzip.compress(bytes(10 * 1024 * 1024))
BOMB = BOMB_MEMBER * 100

POLICY = """\
version: 1
upstreams:
  mock: {{url: "{mock}", format: openai, auth: {{header: Authorization, value: "Bearer sk-m"}}}}
  claude: {{url: "{mock}", format: anthropic, auth: {{header: x-api-key, value: "sk-m"}}}}
defaults:
  retry: {{attempts: 2, backoff: {{base: 1ms, max: 1ms}}}}
  breaker: {{consecutive_failures: 3, open_for: 60s}}
routes:
  - name: small
    match: {{path: /v1/small/chat/completions}}
    validate: {{max_body: 4KiB}}
    fallback: [{{upstream: mock}}]
  - {{name: chat, match: {{path: /v1/chat/completions}}, fallback: [{{upstream: mock}}]}}
  - {{name: messages, match: {{path: /v1/messages}}, fallback: [{{upstream: claude}}]}}
"""


@dataclass
class Arrived:
    """What one request looked like when it reached the mock."""

    headers: dict[str, str]
    body: bytes


@dataclass
class Stack:
    sidecar: TestServer
    admin: TestServer
    mock: TestServer
    http: aiohttp.ClientSession
    arrived: list[Arrived] = field(default_factory=list)

    async def post(
        self, path: str, data: Any, headers: dict[str, str], **options: Any
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        async with self.http.post(
            self.sidecar.make_url(path), data=data, headers=headers, **options
        ) as response:
            raw = await response.read()
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body = {"raw": raw.decode(errors="replace")}  # e.g. an upstream's plain 500
            return response.status, body, dict(response.headers)

    async def mock_calls(self) -> int:
        async with self.http.get(self.mock.make_url("/stats")) as response:
            return int((await response.json())["total"])

    async def breakers(self) -> dict[str, str]:
        async with self.http.get(self.admin.make_url("/admin/breakers")) as response:
            body = await response.json()
            return {b["key"]: b["state"] for b in body["breakers"]}

    async def metrics(self) -> str:
        async with self.http.get(self.sidecar.make_url("/metrics")) as response:
            return await response.text()


@pytest.fixture
async def stack(aiohttp_server: ServerFactory, tmp_path: Path) -> AsyncIterator[Stack]:
    mock_app = create_mock(MockSettings(name="mock", echo=True, api_key="sk-m"))
    arrived: list[Arrived] = []

    @web.middleware
    async def record(request: web.Request, handler: Any) -> web.StreamResponse:
        if not request.path.startswith("/v1/"):
            return await handler(request)  # type: ignore[no-any-return]
        seen = Arrived(dict(request.headers), b"")
        arrived.append(seen)
        with contextlib.suppress(RequestPayloadError):
            seen.body = await request.read()  # cached: the mock's handler reads it again
        response: web.StreamResponse = await handler(request)
        return response

    mock_app.middlewares.append(record)
    mock = await aiohttp_server(mock_app)
    (tmp_path / "p.yaml").write_text(POLICY.format(mock=str(mock.make_url("")).rstrip("/")))
    config = SidecarConfig(policies=tmp_path, environ={}, watch=False, poll_interval=3600)
    app = create_sidecar(config)
    sidecar = await aiohttp_server(app, **server_options(config))
    admin = await aiohttp_server(app[ADMIN_APP])
    async with aiohttp.ClientSession() as http:
        yield Stack(sidecar, admin, mock, http, arrived)


def answer_text(body: dict[str, Any]) -> str:
    return str(body["choices"][0]["message"]["content"])


# -- decoded and forwarded as identity ------------------------------------------------------


async def test_gzip_body_is_forwarded_decoded_without_content_encoding(stack: Stack) -> None:
    status, body, _ = await stack.post("/v1/chat/completions", gzip.compress(CHAT), GZIP)
    assert status == 200, body
    assert answer_text(body) == PROMPT  # the mock echoes: it parsed the JSON
    (seen,) = stack.arrived
    assert "content-encoding" not in {name.lower() for name in seen.headers}
    assert orjson.loads(seen.body) == orjson.loads(CHAT)
    assert seen.headers["Content-Length"] == str(len(seen.body))


@pytest.mark.parametrize(
    "encode",
    [
        pytest.param(lambda data: zlib.compress(data), id="deflate-zlib-wrapped"),
        pytest.param(lambda data: zlib.compress(data, wbits=-15), id="deflate-raw"),
    ],
)
async def test_deflate_bodies_both_ways_are_decoded(
    stack: Stack, encode: Callable[[bytes], bytes]
) -> None:
    headers = {**JSON, "Content-Encoding": "deflate"}
    status, body, _ = await stack.post("/v1/chat/completions", encode(CHAT), headers)
    assert status == 200, body
    assert answer_text(body) == PROMPT


async def test_chunked_compressed_body_from_aiohttp_is_decoded(stack: Stack) -> None:
    """aiohttp's ``compress=`` streams the body deflated, chunked (no Content-Length)."""
    status, body, _ = await stack.post("/v1/chat/completions", CHAT, JSON, compress="deflate")
    assert status == 200, body
    assert answer_text(body) == PROMPT
    assert orjson.loads(stack.arrived[0].body) == orjson.loads(CHAT)


async def test_explicit_identity_is_accepted(stack: Stack) -> None:
    headers = {**JSON, "Content-Encoding": "identity"}
    status, body, _ = await stack.post("/v1/chat/completions", CHAT, headers)
    assert status == 200, body
    assert "content-encoding" not in {name.lower() for name in stack.arrived[0].headers}


async def test_repeated_gzip_requests_keep_the_breaker_closed(stack: Stack) -> None:
    """The original bug: aiohttp decoded the body, the sidecar forwarded it still labelled
    gzip, the upstream answered 500, the request was retried, the breaker opened and the
    route answered 503 to every client. Chunked (aiohttp ``compress=``) and Content-Length
    framings both."""
    for _ in range(3):
        status, body, _ = await stack.post("/v1/chat/completions", CHAT, JSON, compress="gzip")
        assert status == 200, body
        status, body, _ = await stack.post("/v1/chat/completions", gzip.compress(CHAT), GZIP)
        assert status == 200, body
    assert await stack.mock_calls() == 6  # one attempt each, no retries
    assert (await stack.breakers())["mock"] == "closed"
    status, _, _ = await stack.post("/v1/chat/completions", CHAT, JSON)
    assert status == 200  # and other clients are still served
    assert 'sidecar_request_encodings_total{encoding="gzip",result="decoded"} 6.0' in (
        await stack.metrics()
    )


# -- refused before any upstream call -------------------------------------------------------


async def test_max_body_applies_to_the_decoded_size(stack: Stack) -> None:
    big = orjson.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": "a" * 8000}]})
    squeezed = gzip.compress(big)
    assert len(squeezed) < 4096 < len(big)  # fits the route's 4 KiB only compressed
    status, body, _ = await stack.post("/v1/small/chat/completions", squeezed, GZIP)
    assert status == 413, body
    assert body["error"]["code"] == "request_too_large"
    assert await stack.mock_calls() == 0


async def test_gzip_bomb_gets_413_quickly_without_an_upstream_call(stack: Stack) -> None:
    assert len(BOMB) < 1024 * 1024  # under max_body on the wire: 1 GiB once inflated
    started = time.monotonic()
    status, body, headers = await stack.post("/v1/chat/completions", BOMB, GZIP)
    assert status == 413, body
    assert time.monotonic() - started < 5  # stopped at the cap, not inflated to 1 GiB
    assert body["error"]["code"] == "request_too_large"
    assert "x-request-id" in {name.lower() for name in headers}
    assert stack.arrived == []
    assert await stack.mock_calls() == 0


@pytest.mark.parametrize("coding", ["x-foo", "compress", "br", "zstd"])
async def test_unknown_encoding_gets_415_in_the_openai_shape(stack: Stack, coding: str) -> None:
    headers = {**JSON, "Content-Encoding": coding}
    status, body, response_headers = await stack.post("/v1/chat/completions", CHAT, headers)
    assert status == 415
    error = body["error"]
    assert error["type"] == "invalid_request_error"
    assert error["code"] == "unsupported_content_encoding"
    assert coding in error["message"]
    assert response_headers["Accept-Encoding"] == "gzip, deflate, identity"
    assert await stack.mock_calls() == 0


async def test_unknown_encoding_gets_415_in_the_anthropic_shape(stack: Stack) -> None:
    headers = {**JSON, "Content-Encoding": "x-foo", "anthropic-version": "2023-06-01"}
    status, body, _ = await stack.post("/v1/messages", MESSAGES, headers)
    assert status == 415
    assert body["type"] == "error"
    assert body["error"]["type"] == "invalid_request_error"
    assert "x-foo" in body["error"]["message"]
    assert await stack.mock_calls() == 0
    metric = (
        'sidecar_request_encodings_total{encoding="other",result="unsupported_content_encoding"}'
    )
    assert f"{metric} 1.0" in await stack.metrics()


async def test_gzip_on_messages_is_decoded_for_anthropic_clients(stack: Stack) -> None:
    headers = {**GZIP, "anthropic-version": "2023-06-01"}
    status, body, _ = await stack.post("/v1/messages", gzip.compress(MESSAGES), headers)
    assert status == 200, body
    assert body["content"][0]["text"] == PROMPT


async def test_stacked_encodings_are_refused_with_415(stack: Stack) -> None:
    headers = {**JSON, "Content-Encoding": "gzip, gzip"}
    twice = gzip.compress(gzip.compress(CHAT))
    status, body, _ = await stack.post("/v1/chat/completions", twice, headers)
    assert status == 415
    assert "one content coding" in body["error"]["message"]
    assert await stack.mock_calls() == 0


async def test_corrupt_gzip_gets_400(stack: Stack) -> None:
    corrupt = bytearray(gzip.compress(CHAT))
    corrupt[12:20] = b"\xff" * 8
    status, body, _ = await stack.post("/v1/chat/completions", bytes(corrupt), GZIP)
    assert status == 400
    assert body["error"]["code"] == "invalid_request"
    status, body, _ = await stack.post("/v1/chat/completions", CHAT, GZIP)  # not gzip at all
    assert status == 400
    assert await stack.mock_calls() == 0
