"""Garbage from upstream: each reply is a failure the sidecar fails over from.

A raw asyncio server on loopback plays the broken provider (its reply is
scripted byte for byte, so it can break HTTP itself); the mock provider is the
healthy second target. Whatever the garbage, the client gets the healthy
target's answer in its own wire format — never a 5xx, a crash or a hang.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from mock_provider.app import create_app as create_mock
from mock_provider.state import MockSettings

CheckAnswer = Callable[[int, bytes, str], None]
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}

POLICY = """\
version: 1
upstreams:
  bad_oa: {{url: {bad}, format: openai}}
  bad_an: {{url: {bad}, format: anthropic}}
  good_oa: {{url: {good}, format: openai}}
  good_an: {{url: {good}, format: anthropic}}
defaults:
  deadline: 6s
  timeouts: {{first_byte: 1s, idle: 500ms}}
  retry: {{attempts: 1, on: [connect_error, reset, timeout, 500, 502, 503, 504]}}
  breaker: {{enabled: false}}
routes:
  - name: chat-translated
    match: {{path: /v1/chat/completions, methods: [POST], model: "claude*"}}
    fallback: [{{upstream: bad_an}}, {{upstream: good_an}}]
  - name: chat
    match: {{path: /v1/chat/completions, methods: [POST]}}
    fallback: [{{upstream: bad_oa}}, {{upstream: good_oa}}]
  - name: messages-translated
    match: {{path: /v1/messages, methods: [POST], model: "gpt*"}}
    fallback: [{{upstream: bad_oa}}, {{upstream: good_oa}}]
  - name: messages
    match: {{path: /v1/messages, methods: [POST]}}
    fallback: [{{upstream: bad_an}}, {{upstream: good_an}}]
"""


def reply(
    body: bytes,
    content_type: bytes = b"application/json",
    *extra: bytes,
    length: int | None = None,
    status: bytes = b"200 OK",
) -> bytes:
    head = [b"HTTP/1.1 " + status, b"Content-Type: " + content_type, *extra]
    if length is not None or not any(h.lower().startswith(b"transfer-encoding") for h in extra):
        head.append(b"Content-Length: %d" % (len(body) if length is None else length))
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def sse(body: bytes, *extra: bytes) -> bytes:
    head = [b"HTTP/1.1 200 OK", b"Content-Type: text/event-stream", *extra]
    return b"\r\n".join(head) + b"\r\n\r\n" + body  # no length: ends when the server closes


def deep_tool_reply() -> bytes:
    """A well-formed answer whose tool input nests 600 levels (orjson writes 255)."""
    deep = b'{"a": ' * 600 + b"1" + b"}" * 600
    openai = (
        b'{"id": "x", "object": "chat.completion", "model": "gpt-4o", "choices": [{"index": 0,'
        b' "finish_reason": "tool_calls", "message": {"role": "assistant", "content": null,'
        b' "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f",'
        b' "arguments": "{}"}}]}, "extra": %s}]}' % deep
    )
    return reply(openai)


def deep_anthropic_reply() -> bytes:
    deep = b'{"a": ' * 600 + b"1" + b"}" * 600
    return reply(
        b'{"id": "m", "type": "message", "role": "assistant", "model": "claude-sonnet-4-6",'
        b' "stop_reason": "tool_use", "content": [{"type": "tool_use", "id": "t", "name": "f",'
        b' "input": %s}], "usage": {"input_tokens": 1, "output_tokens": 1}}' % deep
    )


GARBAGE: dict[str, bytes] = {
    "not-json-200": reply(b"this is not json"),
    "truncated-json": reply(b'{"id": "chatcmpl-1", "choices": [{"mess'),
    "short-body": reply(b'{"id": "chatcmpl-1"', length=4000),
    "no-content-type": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    "fake-gzip": reply(b"definitely not gzip", b"application/json", b"Content-Encoding: gzip"),
    "gzip-of-garbage": reply(
        gzip.compress(b"<<garbage>>"), b"application/json", b"Content-Encoding: gzip"
    ),
    "long-line-json": reply(b"x" * 3_000_000),
    "sse-no-data-lines": sse(b"event: message\n\n: just a comment\n\nid: 3\n\n"),
    "sse-binary-noise": sse(bytes(range(256)) * 64),
    "sse-long-line": sse(b"data: " + b"x" * 3_000_000),
    "sse-fake-gzip": sse(b"data: {}\n\n", b"Content-Encoding: gzip"),
    "sse-invalid-json": sse(b"data: {not json\n\ndata: also not\n\n"),
    "sse-json-arrays": sse(b"data: [1]\n\ndata: 2\n\ndata: null\n\n"),
    "sse-invalid-utf8": sse(b"data: \xff\xfe\xfd\n\n"),
    "empty-close": b"",
    "deep-json-openai": deep_tool_reply(),
    "deep-json-anthropic": deep_anthropic_reply(),
    "silence": b"HOLD",
}
# Raw replies that found bugs (invalid HTTP, statuses past 599, non-object chat answers).
GARBAGE.update(
    (path.stem, path.read_bytes())
    for path in sorted((Path(__file__).parent / "corpus" / "upstream").glob("*.http"))
)
# Well-formed JSON objects: passed through as they are when no translation is needed.
VALID_OBJECTS = {"deep-json-openai", "deep-json-anthropic"}


@dataclass
class BadUpstream:
    """A raw TCP server answering every request with *script*'s bytes."""

    script: bytes = b""
    server: asyncio.Server | None = None
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    port: int = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    await reader.readexactly(int(line.split(b":", 1)[1]))
            if self.script == b"HOLD":
                await asyncio.sleep(30)
                return
            writer.write(self.script)
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        for writer in self.writers:
            writer.close()
        if self.server is not None:
            self.server.close()


@dataclass
class GarbageStack:
    sidecar: TestServer
    bad: BadUpstream
    http: aiohttp.ClientSession


@pytest.fixture
async def garbage_stack(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    sidecar_for: Callable[[str], Awaitable[TestServer]],
) -> AsyncIterator[GarbageStack]:
    good = await aiohttp_server(create_mock(MockSettings(name="good")))
    bad = BadUpstream()
    await bad.start()
    good_url = str(good.make_url("")).rstrip("/")
    sidecar = await sidecar_for(POLICY.format(bad=f"http://127.0.0.1:{bad.port}", good=good_url))
    async with aiohttp.ClientSession() as http:
        yield GarbageStack(sidecar, bad, http)
    await bad.stop()


def body(fmt: str, translated: bool, stream: bool) -> dict[str, Any]:
    models = {
        "openai": ("gpt-4o", "claude-sonnet-4-6"),
        "anthropic": ("claude-sonnet-4-6", "gpt-4o"),
    }
    return {
        "model": models[fmt][int(translated)],
        "max_tokens": 16,
        "stream": stream,
        "messages": [{"role": "user", "content": "hello"}],
    }


@pytest.mark.parametrize("name", sorted(GARBAGE))
async def test_garbage_fails_over(
    garbage_stack: GarbageStack, answer_check: CheckAnswer, name: str
) -> None:
    garbage_stack.bad.script = GARBAGE[name]
    combos = [(f, t, s) for f in sorted(PATHS) for t in (False, True) for s in (False, True)]
    if name == "silence":  # each costs a first-byte timeout: two are enough
        combos = [("openai", False, False), ("anthropic", True, True)]
    for fmt, translated, stream in combos:
        url = garbage_stack.sidecar.make_url(PATHS[fmt])
        sent = json.dumps(body(fmt, translated, stream))
        headers = {"content-type": "application/json"}
        async with garbage_stack.http.post(url, data=sent, headers=headers) as response:
            received = await asyncio.wait_for(response.read(), 10)
            where = (name, fmt, translated, stream, response.status, received[:300])
            answer_check(response.status, received, fmt)
            assert response.status == 200, where
            if name in VALID_OBJECTS and not stream:
                continue
            assert response.headers["x-sidecar-upstream"].startswith("good"), where
            if stream:
                assert b"error" not in received, where
            else:
                assert isinstance(json.loads(received), dict), where


UNTRANSLATABLE_ANTHROPIC = sse(
    b'event: message_start\ndata: {"type": "message_start", "message": {"id": "m",'
    b' "model": "claude-sonnet-4-6", "usage": {"input_tokens": "lots"}}}\n\n'
    b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0,'
    b' "delta": {"type": "text_delta", "text": "Hi"}}\n\n'
    b'event: message_stop\ndata: {"type": "message_stop"}\n\n'
)


@pytest.mark.parametrize("stream", [False, True])
async def test_an_event_that_cannot_be_translated_fails_over_before_the_commit_point(
    garbage_stack: GarbageStack, answer_check: CheckAnswer, stream: bool
) -> None:
    # Valid JSON with a string where a token count belongs: translating it to the
    # OpenAI client's format raised ValueError, which became a 500.
    garbage_stack.bad.script = UNTRANSLATABLE_ANTHROPIC
    url = garbage_stack.sidecar.make_url(PATHS["openai"])
    sent = json.dumps(body("openai", True, stream))
    headers = {"content-type": "application/json"}
    async with garbage_stack.http.post(url, data=sent, headers=headers) as response:
        received = await asyncio.wait_for(response.read(), 10)
        answer_check(response.status, received, "openai")
        assert response.status == 200, received[:300]
