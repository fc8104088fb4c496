"""Security properties, each named in docs/security.md: no client-chosen upstream host or path,
credentials only from the policy, limits that keep one client from exhausting the sidecar.

The upstream is a tiny recording server on loopback: it records the host, raw path and
headers of every request that reaches it, and can hold requests to measure concurrency.
Requests are written as raw bytes where the client's exact request line matters.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import re
import socket
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import anthropic
import openai
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from sidecar.app import SidecarConfig, server_options
from sidecar.app import create_app as create_sidecar

ServerFactory = Callable[..., Awaitable[TestServer]]
KEY_A = "sk-upstream-A-SECRET"
KEY_B = "sk-upstream-B-SECRET"
CLIENT_KEY = "client-SECRET-key"
JSON = {"Content-Type": "application/json"}
CHAT = b'{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}'
COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-4o",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "ok"}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
}

POLICY = """\
version: 1
upstreams:
  a:
    url: "{rec}/base"
    format: openai
    auth: {{header: Authorization, value: "Bearer {key_a}"}}
    pool: {{max_connections: 2}}
  b:
    url: "{rec}/base"
    format: openai
    auth: {{header: x-upstream-token, value: "{key_b}"}}
    pool: {{max_connections: 3}}
  open: {{url: "{rec}/open", format: openai}}
  byok: {{url: "{rec}/byok", format: openai, client_auth: pass}}
  fwd: {{url: "{rec}/fwd", format: openai, forward_headers: [X-Forwarded-For, Cookie]}}
{upstreams}
defaults:
  retry: {{attempts: 1}}
  timeouts: {{first_byte: 5s}}
routes:
{routes}
  - {{name: files, match: {{prefix: /v1/files/}}, fallback: [{{upstream: a}}]}}
  - name: keyed
    match: {{path: /v1/keyed/chat/completions}}
    access: {{keys: ["{client_key}"]}}
    fallback: [{{upstream: byok}}]
  - {{name: only-b, match: {{path: /v1/b/chat/completions}}, fallback: [{{upstream: b}}]}}
  - {{name: fwd, match: {{path: /v1/fwd/chat/completions}}, fallback: [{{upstream: fwd}}]}}
  - name: chat
    match: {{path: /v1/chat/completions}}
    fallback: [{{upstream: a}}, {{upstream: b}}]
{extra}"""


@dataclass
class Seen:
    host: str
    raw_path: str
    headers: dict[str, str]


Reply = Callable[[web.Request, dict[str, str]], Awaitable[web.StreamResponse]]


@dataclass
class Recorder:
    """The upstream: records every request; *fail_auth* gets a 503; *hold* keeps requests open;
    *reply* (given the request and its headers) answers instead of the completion."""

    seen: list[Seen] = field(default_factory=list)
    fail_auth: set[str] = field(default_factory=set)
    echo: bool = False
    hold: asyncio.Event | None = None
    reply: Reply | None = None
    active: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        headers = {key.lower(): value for key, value in request.headers.items()}
        self.seen.append(Seen(request.host, request.raw_path, headers))
        who = headers.get("authorization") or headers.get("x-upstream-token") or "none"
        self.active[who] = self.active.get(who, 0) + 1
        self.peak[who] = max(self.peak.get(who, 0), self.active[who])
        try:
            if self.hold is not None:
                await self.hold.wait()
            if who in self.fail_auth:
                return web.json_response({"error": {"message": "down"}}, status=503)
            if self.reply is not None:
                return await self.reply(request, headers)
            response = web.json_response(COMPLETION)
            if self.echo:  # a debugging proxy that reflects the request's credentials
                for name in ("authorization", "x-api-key", "x-upstream-token"):
                    if name in headers:
                        response.headers[name] = headers[name]
            return response
        finally:
            self.active[who] -= 1


@dataclass
class Stack:
    sidecar: TestServer
    upstream: TestServer
    recorder: Recorder
    http: aiohttp.ClientSession

    async def raw(self, head: bytes, body: bytes = CHAT) -> bytes:
        """Send one request written byte for byte; return the whole response."""
        reader, writer = await asyncio.open_connection(self.sidecar.host, self.sidecar.port)
        try:
            length = f"Content-Length: {len(body)}\r\n".encode()
            writer.write(head + length + b"Connection: close\r\n\r\n" + body)
            await writer.drain()
            return await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()


@pytest.fixture
async def make_stack(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Stack]]]:
    sessions: list[aiohttp.ClientSession] = []

    async def start(
        extra: str = "", upstreams: str = "", routes: str = "", **config: object
    ) -> Stack:
        """*upstreams* are added to the policy's; *routes* go before its routes, *extra* after."""
        recorder = Recorder()
        upstream_app = web.Application()
        upstream_app.router.add_route("*", "/{tail:.*}", recorder.handle)
        upstream = await aiohttp_server(upstream_app)
        rec = str(upstream.make_url("")).rstrip("/")
        (tmp_path / "p.yaml").write_text(
            POLICY.format(
                rec=rec,
                key_a=KEY_A,
                key_b=KEY_B,
                client_key=CLIENT_KEY,
                upstreams=upstreams,
                routes=routes,
                extra=extra,
            )
        )
        settings = SidecarConfig(
            policies=tmp_path,
            watch=False,
            poll_interval=3600,
            **config,  # type: ignore[arg-type]
        )
        sidecar = await aiohttp_server(create_sidecar(settings), **server_options(settings))
        http = aiohttp.ClientSession()
        sessions.append(http)
        return Stack(sidecar, upstream, recorder, http)

    yield start
    for http in sessions:
        await http.close()


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1])


# -- 1. no client-chosen upstream host or path ---------------------------------------------


async def test_client_host_headers_never_choose_the_upstream(make_stack) -> None:
    s = await make_stack()
    head = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: evil.example\r\n"
        b"X-Forwarded-Host: evil.example\r\nX-Original-URL: /admin\r\nX-Rewrite-URL: /admin\r\n"
        b"Forwarded: host=evil.example\r\nContent-Type: application/json\r\n"
    )
    assert status_of(await s.raw(head)) == 200
    (seen,) = s.recorder.seen
    assert seen.host == f"{s.upstream.host}:{s.upstream.port}"
    assert seen.raw_path == "/base/v1/chat/completions"
    for name in ("x-forwarded-host", "x-original-url", "x-rewrite-url"):
        assert name not in seen.headers


CLAIMS = {
    "Forwarded": "for=10.0.0.1",
    "X-Forwarded-For": "10.0.0.1",
    "X-Real-IP": "10.0.0.1",
    "X-HTTP-Method-Override": "DELETE",
    "Cookie": "session=abc",
}


async def test_client_claims_go_only_to_an_upstream_that_names_them(make_stack) -> None:
    s = await make_stack()
    for path in ("/v1/chat/completions", "/v1/fwd/chat/completions"):
        url = s.sidecar.make_url(path)
        async with s.http.post(url, data=CHAT, headers={**CLAIMS, **JSON}) as response:
            assert response.status == 200
    default, named = s.recorder.seen
    for name in CLAIMS:
        assert name.lower() not in default.headers
    assert named.raw_path == "/fwd/v1/fwd/chat/completions"
    assert named.headers["x-forwarded-for"] == "10.0.0.1"
    assert named.headers["cookie"] == "session=abc"
    for name in ("forwarded", "x-real-ip", "x-http-method-override"):  # not named: dropped
        assert name not in named.headers


async def test_absolute_form_request_target_keeps_the_configured_upstream(make_stack) -> None:
    s = await make_stack()
    head = (
        b"POST http://evil.example:9/v1/chat/completions?x=1 HTTP/1.1\r\nHost: evil.example\r\n"
        b"Content-Type: application/json\r\n"
    )
    assert status_of(await s.raw(head)) == 200
    (seen,) = s.recorder.seen
    assert seen.host == f"{s.upstream.host}:{s.upstream.port}"
    assert seen.raw_path == "/base/v1/chat/completions?x=1"


@pytest.mark.parametrize(
    "target",
    [
        "/v1/files/../../admin",
        "/v1/files/%2e%2e/%2e%2e/admin",
        "/v1/files/%2E%2E/admin",
        "/v1/files/./x",
        "/v1/files/..%2f..%2fadmin",
        "/v1/files/%2F%2Fevil.example",
        "/v1/files/..%5cadmin",
        "/v1/files/a%00b",
        "/v1/files/..;/..;/admin",  # path parameters: ".." to servers that strip them
        "/v1/files/%2e%2e;x/admin",
        "/v1/files/.;/x",
        "/v1/files/%252e%252e/%252e%252e/admin",  # double encoding, decoded again upstream
        "/v1/files/%252E%252E/admin",
        "/v1/files/%c0%ae%c0%ae/admin",  # overlong UTF-8 dots
        "/v1/files/%e0%80%ae%e0%80%ae/admin",
        "/v1/files/%c0%af",  # an overlong slash
    ],
)
async def test_path_tricks_cannot_leave_a_prefix_route(make_stack, target: str) -> None:
    s = await make_stack()
    head = f"POST {target} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
    response = await s.raw(head)
    assert status_of(response) == 400, response
    assert b'"invalid_request"' in response  # the OpenAI wire format, not a traceback
    assert s.recorder.seen == []


async def test_paths_under_a_prefix_route_go_only_below_it(make_stack) -> None:
    s = await make_stack()
    for target in ("/v1/files//evil.example/x", "/v1/files/@evil.example", "/v1/files/a%3Fb"):
        head = f"POST {target}?q=%26 HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        assert status_of(await s.raw(head.encode())) == 200
        seen = s.recorder.seen.pop()
        assert seen.host == f"{s.upstream.host}:{s.upstream.port}"
        assert seen.raw_path == f"/base{target}?q=%26"  # byte for byte, below the upstream's path


# -- 2. credentials only from the policy -------------------------------------------------


async def test_each_upstream_gets_only_its_own_key(make_stack) -> None:
    s = await make_stack()
    s.recorder.fail_auth.add(f"Bearer {KEY_A}")  # a fails: the chat route falls over to b
    client = {"Authorization": "Bearer sk-client-own", "x-api-key": "sk-client-own", **JSON}
    async with s.http.post(
        s.sidecar.make_url("/v1/chat/completions"), data=CHAT, headers=client
    ) as response:
        assert response.status == 200
        assert response.headers["x-sidecar-upstream"] == "b"
    to_a, to_b = s.recorder.seen
    assert to_a.headers["authorization"] == f"Bearer {KEY_A}"
    assert "x-upstream-token" not in to_a.headers
    assert "x-api-key" not in to_a.headers
    assert to_b.headers["x-upstream-token"] == KEY_B
    assert "authorization" not in to_b.headers
    assert "x-api-key" not in to_b.headers
    assert "sk-client-own" not in repr(s.recorder.seen)


CHAINS = """\
  - name: drop-chain
    match: {path: /v1/chat/completions, header: {name: x-chain, value: drop}}
    fallback: [{upstream: flaky}, {upstream: open}]
  - name: pass-chain
    match: {path: /v1/chat/completions, header: {name: x-chain, value: pass}}
    fallback: [{upstream: flaky}, {upstream: byok}]
  - {name: messages, match: {path: /v1/messages}, fallback: [{upstream: byok}]}
"""


async def test_client_credentials_reach_only_an_upstream_that_opts_in(
    make_stack, mock_server, openai_for
) -> None:
    flaky = await mock_server(name="flaky")  # the primary of both chains: a 500 every time
    url = str(flaky.make_url("")).rstrip("/")
    s = await make_stack(upstreams=f'  flaky: {{url: "{url}", format: openai}}', routes=CHAINS)
    async with s.http.post(flaky.make_url("/config/failures"), json={"server_error": 1.0}) as r:
        assert r.status == 200
    client = openai_for(s.sidecar, api_key="sk-client-own")  # the SDK always sends its key
    for chain, fallback in (("drop", "open"), ("pass", "byok")):
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o",
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-chain": chain},
        )
        assert raw.headers["x-sidecar-upstream"] == fallback
    # An Anthropic client's key never reaches an OpenAI-format upstream, opted in or not.
    anthropic = {"x-api-key": "sk-ant-client-own", "anthropic-version": "2023-06-01", **JSON}
    body = {"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    url = s.sidecar.make_url("/v1/messages")
    async with s.http.post(url, json=body, headers=anthropic) as response:
        assert response.status == 200
    to_open, to_byok, translated = s.recorder.seen
    assert to_open.raw_path == "/open/v1/chat/completions"
    assert "authorization" not in to_open.headers
    assert "sk-client-own" not in repr(to_open)
    assert to_byok.raw_path == "/byok/v1/chat/completions"
    assert to_byok.headers["authorization"] == "Bearer sk-client-own"
    assert translated.raw_path == "/byok/v1/chat/completions"
    assert "sk-ant-client-own" not in repr(translated)


async def test_the_sidecars_client_key_is_never_forwarded(make_stack) -> None:
    # The keyed route's upstream opts in to client credentials: the sidecar's key still stays.
    s = await make_stack()
    url = s.sidecar.make_url("/v1/keyed/chat/completions")
    for header in ({"Authorization": f"Bearer {CLIENT_KEY}"}, {"x-api-key": CLIENT_KEY}):
        async with s.http.post(url, data=CHAT, headers={**header, **JSON}) as response:
            assert response.status == 200
    assert len(s.recorder.seen) == 2
    assert CLIENT_KEY not in repr(s.recorder.seen)


async def test_upstream_echoes_of_credentials_do_not_reach_the_client(make_stack) -> None:
    s = await make_stack()
    s.recorder.echo = True
    for path in ("/v1/chat/completions", "/v1/b/chat/completions"):
        async with s.http.post(
            s.sidecar.make_url(path), data=CHAT, headers={"x-api-key": "sk-client-own", **JSON}
        ) as response:
            assert response.status == 200
            echoed = {k.lower(): v for k, v in response.headers.items()}
        assert s.recorder.seen  # the upstream did echo something
        for name in ("authorization", "x-api-key", "x-upstream-token"):
            assert name not in echoed
        assert KEY_A not in repr(echoed)
        assert KEY_B not in repr(echoed)


# -- 4. limits: heads, slow clients ------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    [
        b"X-Big: " + b"a" * 100_000 + b"\r\n",  # one huge header
        b"".join(b"X-H%d: v\r\n" % i for i in range(200)),  # too many headers
        b"Cookie: " + b"c" * 9000 + b"\r\n",  # just over the field limit
    ],
    ids=["huge", "many", "long"],
)
async def test_oversized_request_heads_get_400_and_the_sidecar_keeps_serving(
    make_stack, head: bytes
) -> None:
    s = await make_stack()
    response = await s.raw(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n" + head)
    assert status_of(response) == 400
    assert s.recorder.seen == []
    ok = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    assert status_of(await s.raw(ok)) == 200


async def test_slow_request_head_is_cut_off(make_stack) -> None:
    s = await make_stack(header_timeout=0.5)
    reader, writer = await asyncio.open_connection(s.sidecar.host, s.sidecar.port)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
    started = asyncio.get_running_loop().time()
    try:
        for _ in range(40):  # one header line every 100 ms, never finishing the head
            await asyncio.sleep(0.1)
            if reader.at_eof():
                break
            writer.write(b"X-Slow: 1\r\n")
        assert await asyncio.wait_for(reader.read(), 2) == b""  # closed without an answer
    finally:
        writer.close()
    assert asyncio.get_running_loop().time() - started < 2
    assert s.recorder.seen == []


@pytest.mark.parametrize(
    ("path", "chunked", "gzipped"),
    [
        ("/v1/chat/completions", False, False),
        ("/v1/chat/completions", True, False),
        ("/v1/messages", False, False),
        # Valid gzip that keeps decoding: progress does not reset the timer.
        ("/v1/chat/completions", False, True),
    ],
)
async def test_slow_request_body_gets_408_in_the_clients_format(
    make_stack, path: str, chunked: bool, gzipped: bool
) -> None:
    s = await make_stack(body_timeout=0.5)
    reader, writer = await asyncio.open_connection(s.sidecar.host, s.sidecar.port)
    framing = b"Transfer-Encoding: chunked" if chunked else b"Content-Length: 100000"
    coding = b"Content-Encoding: gzip\r\n" if gzipped else b""
    compressor = zlib.compressobj(wbits=31)

    def piece() -> bytes:
        data = b'{"a":'
        if gzipped:
            data = compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        return b"%x\r\n%s\r\n" % (len(data), data) if chunked else data

    key = f"Authorization: Bearer {CLIENT_KEY}\r\n"  # past the key gate (/v1/messages: no route)
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\n{key}Content-Type: application/json\r\n".encode()
        + coding
        + framing
        + b"\r\n\r\n"
    )
    started = asyncio.get_running_loop().time()
    try:
        for _ in range(20):  # a few bytes every 100 ms: never done within the timeout
            await asyncio.sleep(0.1)
            if reader.at_eof() or reader._buffer:
                break
            writer.write(piece())
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        response = head + await reader.readexactly(length)
    finally:
        writer.close()
    assert asyncio.get_running_loop().time() - started < 2
    assert status_of(response) == 408
    assert b"connection: close" in head.lower()
    body = response.split(b"\r\n\r\n", 1)[1]
    if path == "/v1/messages":
        assert b'"type":"error"' in body
        assert b'"timeout_error"' in body
    else:
        assert b'"code":"request_timeout"' in body
    assert s.recorder.seen == []


async def until(condition: Callable[[], bool]) -> None:
    while not condition():  # noqa: ASYNC110 - polls plain state; the per-test timeout bounds it
        await asyncio.sleep(0.01)


async def test_pool_max_connections_is_per_upstream(make_stack) -> None:
    s = await make_stack()
    s.recorder.hold = asyncio.Event()
    a, b = f"Bearer {KEY_A}", KEY_B  # a: 2 connections, b: 3, one host and port
    sends = [
        *(s.http.post(s.sidecar.make_url("/v1/files/x"), data=CHAT, headers=JSON)
          for _ in range(5)),
        *(s.http.post(s.sidecar.make_url("/v1/b/chat/completions"), data=CHAT, headers=JSON)
          for _ in range(5)),
    ]  # fmt: skip
    tasks = [asyncio.ensure_future(send) for send in sends]
    await until(lambda: s.recorder.active.get(a) == 2 and s.recorder.active.get(b) == 3)
    await asyncio.sleep(0.2)  # nothing more gets through while they are held
    assert s.recorder.peak == {a: 2, b: 3}
    s.recorder.hold.set()
    for response in await asyncio.gather(*tasks):
        assert response.status == 200
        response.release()
    assert len(s.recorder.seen) == 10


LIMITED = """\
  - name: limited
    match: {path: /v1/limited/chat/completions}
    limits: {max_in_flight: 2}
    fallback: [{upstream: open}]
  - name: messages
    match: {path: /v1/messages}
    limits: {max_in_flight: 1}
    fallback: [{upstream: open}]
"""
MESSAGE = b'{"model": "claude-x", "max_tokens": 9, "messages": [{"role": "user", "content": "hi"}]}'


async def shed_count(s: Stack, route: str) -> float:
    async with s.http.get(s.sidecar.make_url("/metrics")) as response:
        text = await response.text()
    line = f'sidecar_load_shed_total{{limit="max_in_flight",route="{route}"}} '
    found = [row for row in text.splitlines() if row.startswith(line)]
    return float(found[0].split()[-1]) if found else 0.0


async def test_max_in_flight_sheds_with_503_and_no_upstream_call(make_stack) -> None:
    s = await make_stack(extra=LIMITED)
    s.recorder.hold = asyncio.Event()
    url = s.sidecar.make_url("/v1/limited/chat/completions")
    held = [asyncio.ensure_future(s.http.post(url, data=CHAT, headers=JSON)) for _ in range(2)]
    await until(lambda: len(s.recorder.seen) == 2)
    async with s.http.post(url, data=CHAT, headers=JSON) as response:
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        body = await response.json()
    assert body["error"]["code"] == "route_overloaded"
    assert "limited" in body["error"]["message"]
    assert await shed_count(s, "limited") == 1
    assert len(s.recorder.seen) == 2  # the refused request never went upstream
    s.recorder.hold.set()
    for response in await asyncio.gather(*held):
        assert response.status == 200
        response.release()
    async with s.http.post(url, data=CHAT, headers=JSON) as response:
        assert response.status == 200  # the slots were given back


async def test_max_in_flight_answers_anthropic_clients_in_their_format(make_stack) -> None:
    s = await make_stack(extra=LIMITED)
    s.recorder.hold = asyncio.Event()
    url = s.sidecar.make_url("/v1/messages")
    held = asyncio.ensure_future(s.http.post(url, data=MESSAGE, headers=JSON))
    await until(lambda: len(s.recorder.seen) == 1)
    async with s.http.post(url, data=MESSAGE, headers=JSON) as response:
        assert response.status == 503
        assert response.headers["Retry-After"] == "1"
        body = await response.json()
    assert body["type"] == "error"
    assert body["error"]["type"] == "overloaded_error"
    s.recorder.hold.set()
    response = await held
    assert response.status == 200
    response.release()


def _read_all(sock: socket.socket) -> bytes:
    """Everything until the server closes (its error answers always close)."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_the_cli_server_applies_the_head_limits_and_header_timeout(tmp_path: Path) -> None:
    """The limits are wired into ``sidecar run`` itself (a real process, its own runner)."""
    (tmp_path / "p.yaml").write_text(
        "version: 1\nupstreams:\n  m: {url: 'http://127.0.0.1:9', format: openai}\n"
        "routes:\n  - {name: chat, match: {path: /v1/chat/completions}, "
        "fallback: [{upstream: m}]}\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "run", "--port", "0", "--admin-port", "0",
         "--policies", str(tmp_path), "--no-watch", "--header-timeout", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ),
    )  # fmt: skip
    try:
        assert process.stdout is not None
        port = 0
        while not port:
            line = process.stdout.readline()
            assert line, "the sidecar exited before listening"
            if found := re.search(r"listening on http://[\d.]+:(\d+)", line):
                port = int(found.group(1))
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n")
            answer = _read_all(sock)
            assert answer.split(b" ")[1] == b"400"
            assert b'"error"' in answer  # the sidecar's JSON, not aiohttp's text
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            secret = b"Bearer sk-very-secret-key-0123"
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: "
                + secret + b"\r\nX-Bad: a\x01b\r\n\r\n"
            )  # fmt: skip
            answer = _read_all(sock)
            head, _, body = answer.partition(b"\r\n\r\n")
            assert head.split(b" ")[1] == b"400"
            assert b"application/json" in head
            error = json.loads(body)["error"]
            assert error["code"] == "malformed_request"
            assert b"sk-very-secret" not in answer
            assert b"X-Bad" not in answer  # none of the client's bytes
            assert b"\x01" not in answer
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")  # the head never ends
            started = time.monotonic()
            assert sock.recv(100) == b""  # closed, unanswered
            assert time.monotonic() - started < 3
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert sock.recv(100).split(b" ")[1] == b"200"  # and it still serves
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            # aiohttp's own request decompression is off: the sidecar decodes the gzip body
            # itself (a 400 "not valid gzip" would mean it got bytes aiohttp had decoded).
            body = gzip.compress(b"{}")
            sock.sendall(
                b"POST /no/route HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                b"Content-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            assert sock.recv(100).split(b" ")[1] == b"404"
    finally:
        process.terminate()
        process.wait(timeout=30)
        assert process.stdout is not None
        process.stdout.close()


# -- the client key comes first --------------------------------------------------------


async def test_without_a_key_nothing_about_routes_or_rules_shows_before_the_401(
    make_stack,
) -> None:
    s = await make_stack()
    keyed = "POST /v1/keyed/chat/completions HTTP/1.1\r\nHost: x\r\n"
    json_type = "Content-Type: application/json\r\n"
    refusals = {
        # a path no route serves: 401, not 404 (the policy has keyed routes)
        "no route": (f"POST /v1/secret/x HTTP/1.1\r\nHost: x\r\n{json_type}", CHAT),
        # a keyed route: 401 before the body is looked at (400, 413 ...)
        "bad JSON": (keyed + json_type, b"{not json"),
        "no messages": (keyed + json_type, b'{"model": "gpt-4o"}'),
        "duplicate keys": (keyed + json_type, b'{"model": "a", "model": "b"}'),
    }
    for what, (head, body) in refusals.items():
        response = await s.raw(head.encode(), body)
        assert status_of(response) == 401, (what, response)
        assert b'"invalid_api_key"' in response
    assert s.recorder.seen == []
    # A huge declared body is not waited for, nor read: 401 at once, not 413 or 408.
    reader, writer = await asyncio.open_connection(s.sidecar.host, s.sidecar.port)
    try:
        writer.write(f"{keyed}{json_type}Content-Length: 50000000\r\n\r\n".encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 401"), head
    finally:
        writer.close()
    # With the key, the same requests get their precise answers.
    with_key = f"Authorization: Bearer {CLIENT_KEY}\r\n"
    head = f"POST /v1/secret/x HTTP/1.1\r\nHost: x\r\n{with_key}{json_type}"
    assert status_of(await s.raw(head.encode())) == 404
    assert status_of(await s.raw((keyed + with_key + json_type).encode(), b"{not")) == 400


async def test_an_open_route_stays_open_beside_keyed_ones(make_stack) -> None:
    s = await make_stack()
    head = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    assert status_of(await s.raw(head)) == 200
    assert status_of(await s.raw(head, b"{not json")) == 400  # its own rules, as before


# -- web pages on the host --------------------------------------------------------------


@pytest.mark.parametrize(
    "browser",
    [
        {"Origin": "https://evil.example"},
        {"Origin": "null"},  # a sandboxed frame or a file: page
        {"Origin": "http://127.0.0.1.evil.example:8080"},
        {"Sec-Fetch-Site": "cross-site"},
    ],
)
async def test_a_web_page_elsewhere_cannot_spend_the_sidecars_keys(make_stack, browser) -> None:
    s = await make_stack()
    headers = {**browser, "Content-Type": "text/plain"}  # a "simple" request: no preflight
    async with s.http.post(
        s.sidecar.make_url("/v1/chat/completions"), data=CHAT, headers=headers
    ) as response:
        assert response.status == 403
        assert (await response.json())["error"]["code"] == "cross_site_refused"
        assert "access-control-allow-origin" not in response.headers
    assert s.recorder.seen == []


async def test_a_page_on_this_host_and_tools_are_served(make_stack) -> None:
    s = await make_stack()
    for headers in (
        {},
        {"Origin": "http://localhost:3000", "Sec-Fetch-Site": "same-site"},
        {"Origin": "http://127.0.0.1:5173"},
    ):
        async with s.http.post(
            s.sidecar.make_url("/v1/chat/completions"), data=CHAT, headers={**JSON, **headers}
        ) as response:
            assert response.status == 200, headers


def test_an_upstreams_cors_grants_do_not_reach_the_client() -> None:
    from multidict import CIMultiDict, CIMultiDictProxy

    from sidecar.headers import client_headers

    upstream = CIMultiDictProxy(
        CIMultiDict(
            [
                ("Content-Type", "application/json"),
                ("Access-Control-Allow-Origin", "*"),
                ("Access-Control-Allow-Credentials", "true"),
                ("access-control-expose-headers", "x-request-id"),
            ]
        )
    )
    assert list(client_headers(upstream).items()) == [("Content-Type", "application/json")]


# -- 6. secrets an upstream echoes -------------------------------------------------------

SECRETS = (KEY_A, KEY_B, CLIENT_KEY, "upstream-A-SECRET", "upstream-B-SECRET")
ANTHROPIC = {"anthropic-version": "2023-06-01", **JSON}
MESSAGES = b'{"model": "gpt-4o", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}'
ECHO_ROUTES = """\
  - {name: messages, match: {path: /v1/messages}, fallback: [{upstream: a}]}
  - {name: byok-open, match: {path: /v1/byok/chat/completions}, fallback: [{upstream: byok}]}
  - {name: open-only, match: {path: /v1/open/chat/completions}, fallback: [{upstream: open}]}
"""


def credential(headers: dict[str, str]) -> str:
    """The credential the upstream was sent (as it came: ``Bearer sk-...`` or bare)."""
    return headers.get("authorization") or headers.get("x-upstream-token") or ""


def hostile(status: int) -> Reply:
    """An upstream that repeats the key it was sent everywhere it can."""

    async def reply(request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
        sent = credential(headers)
        bare = sent.removeprefix("Bearer ")
        message = f"Incorrect API key provided: {sent} (key {bare})"
        error = {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}
        body = COMPLETION if status == 200 else {"error": error}
        response = web.json_response(body, status=status)
        response.headers["x-debug-auth"] = sent
        response.headers["x-key"] = bare
        response.headers["WWW-Authenticate"] = f'Bearer error="invalid_token", key="{bare}"'
        response.headers["Set-Cookie"] = f"session={bare}; HttpOnly"
        return response

    return reply


async def stream_then_echo(request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
    """A 200 stream whose first token is followed by an error event repeating the key."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    delta = {"role": "assistant", "content": "hi"}
    chunk = {**COMPLETION, "object": "chat.completion.chunk", "usage": None,
             "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}  # fmt: skip
    await response.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
    error = {"message": f"the key {credential(headers)} was revoked", "type": "server_error"}
    await response.write(b"data: " + json.dumps({"error": error}).encode() + b"\n\n")
    return response


def leaked(response: bytes) -> list[str]:
    """The policy's secrets in *response* (every byte of it: status line, headers, body)."""
    return [secret for secret in SECRETS if secret.encode() in response]


@pytest.mark.parametrize(
    ("path", "body", "status", "expected"),
    [
        ("/v1/chat/completions", CHAT, 200, 200),  # headers of a good answer
        ("/v1/chat/completions", CHAT, 400, 400),  # never retried: a's reply as it came
        ("/v1/chat/completions", CHAT, 500, 500),  # a, then b: b's reply is the last
        ("/v1/chat/completions", CHAT, 401, 502),
        ("/v1/messages", MESSAGES, 400, 400),  # translated into the Anthropic shape
        ("/v1/messages", MESSAGES, 403, 502),
    ],
    ids=["openai-200", "openai-400", "openai-500", "openai-401", "anthropic-400", "anthropic-403"],
)
async def test_an_upstream_repeating_the_key_hands_it_to_no_client(
    make_stack, path: str, body: bytes, status: int, expected: int
) -> None:
    s = await make_stack(routes=ECHO_ROUTES)
    s.recorder.reply = hostile(status)
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    if path == "/v1/messages":
        head += "anthropic-version: 2023-06-01\r\n"
    response = await s.raw(head.encode(), body)
    assert status_of(response) == expected, response
    assert s.recorder.seen  # the upstream did get (and echo) its key
    assert leaked(response) == [], response
    lowered = response.lower()
    assert b"set-cookie" not in lowered
    assert b"www-authenticate" not in lowered
    if expected != 502:  # the upstream's own reply, its echoes redacted
        assert b"x-debug-auth: ***redacted***\r\n" in response, response
        assert b"Incorrect API key provided" in response or status == 200


@pytest.mark.parametrize("client", ["openai", "anthropic"])
async def test_a_stream_error_event_repeating_the_key_is_redacted(make_stack, client) -> None:
    s = await make_stack(routes=ECHO_ROUTES)
    s.recorder.reply = stream_then_echo
    if client == "openai":
        head = (
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        )
        body = CHAT[:-1] + b', "stream": true}'
    else:
        head = (
            b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"anthropic-version: 2023-06-01\r\n"
        )
        body = MESSAGES[:-1] + b', "stream": true}'
    response = await s.raw(head, body)
    assert status_of(response) == 200, response
    assert b"was revoked" in response  # the error event did reach the client ...
    assert b"***redacted***" in response
    assert leaked(response) == [], response  # ... without the key


async def test_a_continuation_quoting_an_error_event_leaves_the_key_out(make_stack) -> None:
    # a breaks after its first token; b, asked to finish the answer, breaks the same way:
    # the client's last event quotes b's error (the continuation's), redacted.
    route = """\
  - name: continued
    match: {path: /v1/continued/chat/completions}
    continuation: {enabled: true}
    fallback: [{upstream: a}, {upstream: b}]
"""
    s = await make_stack(routes=route)
    s.recorder.reply = stream_then_echo
    head = (
        b"POST /v1/continued/chat/completions HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\n"
    )
    response = await s.raw(head, CHAT[:-1] + b', "stream": true}')
    assert status_of(response) == 200, response
    assert len(s.recorder.seen) == 2  # a, then b to continue
    assert b"stream_incomplete" in response
    assert b"was revoked" in response, response.decode()
    assert leaked(response) == [], response


async def test_an_upstream_401_is_a_502_for_the_openai_sdk(make_stack, openai_for) -> None:
    s = await make_stack(routes=ECHO_ROUTES)
    s.recorder.reply = hostile(401)
    client = openai_for(s.sidecar, api_key="sk-client-own", max_retries=2)
    with pytest.raises(openai.InternalServerError) as caught:
        await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 502
    assert caught.value.code == "upstream_auth_failed"
    assert "'a'" in caught.value.message  # the upstream by its policy name ...
    assert s.upstream.make_url("").host not in caught.value.message  # ... not its URL
    assert len(s.recorder.seen) == 1  # never retried or failed over (not by the SDK either)


async def test_an_upstream_403_is_a_502_for_the_anthropic_sdk(
    make_stack, anthropic_for, caplog: pytest.LogCaptureFixture
) -> None:
    s = await make_stack(routes=ECHO_ROUTES)
    s.recorder.reply = hostile(403)
    client = anthropic_for(s.sidecar, api_key="sk-ant-client-own", max_retries=2)
    with pytest.raises(anthropic.InternalServerError) as caught:
        await client.messages.create(
            model="gpt-4o", max_tokens=5, messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 502
    assert caught.value.body["error"]["type"] == "api_error"  # type: ignore[index]
    assert "upstream 'a' refused" in caught.value.message
    assert len(s.recorder.seen) == 1
    warned = [r for r in caplog.records if "upstream_auth_failed" in str(r.msg)]
    assert warned
    assert warned[0].levelname == "WARNING"
    assert warned[0].msg["upstream"] == "a"  # type: ignore[index]


async def test_an_upstream_without_the_clients_key_is_the_sidecars_fault(make_stack) -> None:
    # No auth and no client_auth: pass: the upstream got no client credential either.
    s = await make_stack(routes=ECHO_ROUTES)
    s.recorder.reply = hostile(401)
    async with s.http.post(
        s.sidecar.make_url("/v1/open/chat/completions"),
        data=CHAT,
        headers={"Authorization": "Bearer sk-client-own", **JSON},
    ) as response:
        assert response.status == 502
        assert (await response.json())["error"]["code"] == "upstream_auth_failed"


async def test_a_client_auth_pass_upstreams_401_is_the_clients(make_stack, openai_for) -> None:
    s = await make_stack(routes=ECHO_ROUTES)
    s.recorder.reply = hostile(401)
    sdk = openai_for(s.sidecar, api_key="sk-client-wrong")
    client = sdk.with_options(base_url=str(s.sidecar.make_url("/v1/byok")))
    with pytest.raises(openai.AuthenticationError) as caught:
        await client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 401
    assert caught.value.code == "invalid_api_key"  # the upstream's own answer
    assert "sk-client-wrong" in caught.value.message  # the client's own key: not a secret here


async def test_a_404_for_a_path_with_routes_names_the_model_and_the_patterns(make_stack) -> None:
    routes = (
        "  - {name: gpts, match: {path: /v1/by-model/chat/completions, model: 'gpt-*'}, "
        "fallback: [{upstream: a}]}\n"
        "  - {name: claudes, match: {path: /v1/by-model/chat/completions, model: 'claude-*'}, "
        "fallback: [{upstream: a}]}\n"
    )
    s = await make_stack(routes=routes)
    body = json.dumps({"model": "llama-3", "messages": [{"role": "user", "content": "hi"}]})
    async with s.http.post(
        s.sidecar.make_url("/v1/by-model/chat/completions"), data=body, headers=JSON
    ) as response:
        assert response.status == 404
        message = (await response.json())["error"]["message"]
    assert "model 'llama-3'" in message
    assert "gpt-*, claude-*" in message
    async with s.http.post(
        s.sidecar.make_url("/v1/nowhere"), data=body, headers={**JSON, "x-api-key": CLIENT_KEY}
    ) as response:
        assert response.status == 404
        assert "accepts models" not in (await response.json())["error"]["message"]
