"""Malformed, huge and numerous request headers, written on a raw socket.

An HTTP client refuses to send CR/LF inside a header, so these requests are
written byte by byte. Requests aiohttp's own HTTP parser refuses never reach
the sidecar's handler: they get aiohttp's plain 400 (or the connection is
closed) — still no 5xx, no traceback — and the sidecar keeps serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

BODY = b'{"model": "gpt-4o", "max_tokens": 16, "messages": [{"role": "user", "content": "x"}]}'


def request(*headers: bytes, path: bytes = b"/v1/chat/completions", body: bytes = BODY) -> bytes:
    lines = [b"POST " + path + b" HTTP/1.1", b"Host: 127.0.0.1", *headers]
    if not any(h.lower().startswith((b"content-length", b"transfer-encoding")) for h in headers):
        lines.append(b"Content-Length: %d" % len(body))
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


MALFORMED = {
    "lf-in-value": request(b"x-request-id: abc\ndef"),
    "cr-in-value": request(b"x-request-id: abc\rdef"),
    "nul-in-value": request(b"x-request-id: abc\x00def"),
    "space-in-name": request(b"x bad: 1"),
    "no-colon": request(b"just-a-name"),
    "obs-fold": request(b"x-request-id: abc", b" continued"),
    "two-content-lengths": request(b"Content-Length: 5", b"Content-Length: 7"),
    "negative-content-length": request(b"Content-Length: -1"),
    "content-length-and-chunked": request(b"Content-Length: 5", b"Transfer-Encoding: chunked"),
    "bad-chunk-size": request(b"Transfer-Encoding: chunked", body=b"zz\r\nabc\r\n0\r\n\r\n"),
    "huge-header": request(b"x-big: " + b"a" * 100_000),
    "huge-request-id": request(b"x-request-id: " + b"r" * 8000),
    "many-headers": request(*(b"x-h%d: v" % i for i in range(2000))),
    "binary-request-line": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64,
    "bad-method": request(path=b"/v1/chat/completions HTTP/1.1\r\nX: y"),
    "latin1-value": request(b"x-request-id: caf\xe9"),
    "short-body": request(b"Content-Length: 500"),
}


async def raw_exchange(port: int, data: bytes) -> bytes:
    """Write *data*; read what comes back until the server closes or goes quiet."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        if b"Content-Length: 500" in data:
            writer.write_eof()  # the body ends early: the server must notice
        received = b""
        while True:
            try:
                piece = await asyncio.wait_for(reader.read(65536), 2)
            except TimeoutError:
                break
            if not piece:
                break
            received += piece
            if b"\r\n\r\n" in received and _complete(received):
                break
        return received
    except (ConnectionResetError, BrokenPipeError):
        return b""
    finally:
        writer.close()


def _complete(received: bytes) -> bool:
    head, _, body = received.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return len(body) >= int(line.split(b":", 1)[1])
    return False


@pytest.mark.parametrize("name", sorted(MALFORMED))
async def test_malformed_requests(
    body_stack: Any, answer_check: Callable[[int, bytes, str], None], name: str
) -> None:
    before = await body_stack.upstream_calls()
    received = await raw_exchange(body_stack.sidecar.port, MALFORMED[name])
    if received:
        status_line = received.split(b"\r\n", 1)[0]
        status = int(status_line.split()[1])
        assert b"Traceback" not in received
        body = received.partition(b"\r\n\r\n")[2]
        if b"application/json" in received.partition(b"\r\n\r\n")[0].lower():
            answer_check(status, body, "openai")
        else:
            assert 400 <= status < 500 or status == 200, received[:300]
    assert await body_stack.upstream_calls() - before <= 1  # only a valid request goes up
    async with body_stack.http.post(
        body_stack.url("/v1/chat/completions"),
        data=BODY,
        headers={"content-type": "application/json"},
    ) as response:
        assert response.status == 200  # still serving


async def test_many_and_odd_headers_through_the_client(
    body_stack: Any, answer_check: Callable[[int, bytes, str], None]
) -> None:
    headers = {f"x-odd-{i}": "v" * 50 for i in range(80)}
    headers["content-type"] = "application/json"
    headers["x-request-id"] = "\t spaced id \t"
    headers["anthropic-version"] = "garbage"  # asks for the Anthropic wire format
    async with body_stack.http.post(
        body_stack.url("/v1/chat/completions"), data=BODY, headers=headers
    ) as response:
        answer_check(response.status, await response.read(), "anthropic")
