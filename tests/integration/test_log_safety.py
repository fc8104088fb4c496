"""Logs can't be forged or flooded (docs/security.md): one escaped line per request in both
formats whatever the client sends, a line for every request refused before routing, and a
flood of refusals held to the rate limit plus a summary.

The sidecar runs in this process on a frozen fake clock (the refusal lines' token bucket
never refills unless a test moves it), in front of the real mock provider; its records are
captured with ``caplog`` and rendered with both formatters. The last tests run the real
``sidecar run --log-format json|text`` process and read its stdout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from test_operations import _addresses, _reap, _start_sidecar, simple_policy
from yarl import URL

from sidecar.app import SidecarConfig, server_options
from sidecar.app import create_app as create_sidecar
from sidecar.observability.logs import JSONLineFormatter, TextLineFormatter
from sidecar.observability.refusals import BURST, SUMMARY_EVERY
from sidecar.resilience.clock import FakeClock
from sidecar.state import LIFECYCLE

MockServerFactory = Callable[..., Awaitable[TestServer]]
CLIENT_KEY = "client-SECRET-key"
CHAT = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
KEY = f"x-api-key: {CLIENT_KEY}"  # past the key gate to the 404 (keyless: a 401)
FORMATTERS = {"json": JSONLineFormatter(), "text": TextLineFormatter()}
TEXT_RECORD = re.compile(r"\d\d:\d\d:\d\d\.\d{3} \w+ +[.\w]+ +\S")

POLICY = """\
version: 1
upstreams:
  mock: {{url: "{url}", format: openai}}
defaults:
  retry: {{attempts: 1}}
routes:
  - {{name: files, match: {{prefix: /v1/files/}}, fallback: [{{upstream: mock}}]}}
  - name: keyed
    match: {{path: /v1/keyed/chat/completions}}
    access: {{keys: ["{client_key}"]}}
    fallback: [{{upstream: mock}}]
  - name: chat
    match: {{path: /v1/chat/completions}}
    validate: {{max_body: 4KiB}}
    fallback: [{{upstream: mock}}]
"""


@dataclass
class Stack:
    sidecar: TestServer
    clock: FakeClock
    caplog: pytest.LogCaptureFixture

    async def send(self, *requests: bytes) -> bytes:
        """Write *requests* (heads and bodies, pipelined) on one connection; the answers."""
        reader, writer = await asyncio.open_connection(self.sidecar.host, self.sidecar.port)
        try:
            writer.write(b"".join(requests))
            return await reader.read()  # the last request asks the server to close
        finally:
            writer.close()

    def lines(self, fmt: str) -> list[str]:
        """Every captured record rendered in *fmt*, split into physical lines."""
        formatter = FORMATTERS[fmt]
        ours = [record for record in self.caplog.records if record.name.startswith("sidecar")]
        text = "\n".join(formatter.format(record) for record in ours)
        return text.split("\n") if text else []

    def records(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.lines("json")]


def request(
    target: str, body: bytes = b"", *headers: str, method: str = "POST", last: bool = True
) -> bytes:
    """One HTTP/1.1 request written byte for byte (the target as given, not normalised)."""
    head = [f"{method} {target} HTTP/1.1", "Host: sidecar", *headers]
    if body:
        head += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    if last:
        head.append("Connection: close")
    return "\r\n".join([*head, "", ""]).encode() + body


def chat_body(model: str) -> bytes:
    return json.dumps({**CHAT, "model": model}).encode()


def statuses(answers: bytes) -> list[int]:
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", answers)]


@pytest.fixture
async def stack(
    mock_server: MockServerFactory,
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> Stack:
    caplog.set_level(logging.WARNING, "aiohttp.access")  # the CLI turns access logs off too
    caplog.set_level(logging.INFO)  # last: it sets the capturing handler's level too
    mock = await mock_server(name="logs")
    url = str(mock.make_url("")).rstrip("/")
    (tmp_path / "p.yaml").write_text(POLICY.format(url=url, client_key=CLIENT_KEY))
    clock = FakeClock(autoadvance=False)
    config = SidecarConfig(policies=tmp_path, watch=False, poll_interval=3600, clock=clock)
    sidecar = await aiohttp_server(create_sidecar(config), **server_options(config))
    return Stack(sidecar, clock, caplog)


FORGED = {
    "model CRLF JSON": request("/v1/chat/completions", chat_body('\r\n{"forged": true}')),
    "model LF line": request("/v1/chat/completions", chat_body("x\n2026-01-01 INFO forged")),
    "path CRLF JSON": request(
        "/v1/chat/completions%0D%0A%7B%22forged%22:%20true%7D", b"{}", KEY
    ),  # (with a key: the policy has keyed routes, so a keyless 404 would be a 401)
    "path LF line": request("/v1/files/x%0A2026-01-01%20INFO%20forged", b"{}"),
    "header tab line": request(
        "/v1/chat/completions", chat_body("gpt-4o"), "x-request-id: a\t2026-01-01 INFO forged"
    ),
}


SHOWN = {"path CRLF JSON": "\\r\\n{", "path LF line": "x\\n2026-01-01 INFO forged"}


@pytest.mark.parametrize("fmt", ["json", "text"])
@pytest.mark.parametrize("case", FORGED)
async def test_a_forged_value_writes_one_escaped_line(stack: Stack, case: str, fmt: str) -> None:
    answer = await stack.send(FORGED[case])
    (status,) = statuses(answer)
    found = re.search(rb"^x-request-id: (\S+)\r$", answer, re.M | re.I)
    assert found is not None
    rid = found.group(1).decode()
    lines = stack.lines(fmt)
    mine = [line for line in lines if rid in line]
    assert len(mine) == 1, lines  # exactly one line for the request, refused or answered
    for line in lines:  # and no line anyone could take for another record
        if fmt == "json":
            assert set(json.loads(line)) >= {"ts", "level", "logger"}
        else:
            assert TEXT_RECORD.match(line), line
    (line,) = mine
    assert str(status) in line
    if case in SHOWN:  # the forged path is in the line, its control characters escaped
        assert status == 400
        assert SHOWN[case] in line


REFUSED = {
    "no route": (request("/v1/nothing/here", b"", KEY, method="GET"), 404, "no_route"),
    "path trick": (request("/v1/files/../../admin", b"{}"), 400, "invalid_request"),
    "too large": (request("/v1/chat/completions", b" " * 5000 + b"{}"), 413, "request_too_large"),
    "bad JSON": (request("/v1/chat/completions", b'{"model": '), 400, "invalid_request"),
    "encoding": (
        request("/v1/chat/completions", b"{}", "Content-Encoding: br"),
        415,
        "unsupported_content_encoding",
    ),
    "no key": (request("/v1/keyed/chat/completions", chat_body("gpt-4o")), 401, None),
    "wrong key": (
        request("/v1/keyed/chat/completions", chat_body("gpt-4o"), "x-api-key: nope"),
        401,
        None,
    ),
}


@pytest.mark.parametrize("case", REFUSED)
async def test_a_request_refused_before_routing_writes_a_line(stack: Stack, case: str) -> None:
    sent, expected, code = REFUSED[case]
    rid = f"probe-{case.replace(' ', '-')}"
    head, body = sent.split(b"\r\n\r\n", 1)
    answer = await stack.send(head + f"\r\nx-request-id: {rid}\r\n\r\n".encode() + body)
    assert statuses(answer) == [expected]
    (line,) = [record for record in stack.records() if record.get("request_id") == rid]
    assert line["status"] == expected
    if expected != 401:  # 401 comes from the route's access stage: a request line
        assert line["logger"] == "sidecar.refusal"
        method, target = head.split(b" ")[:2]
        assert line["method"] == method.decode()
        assert line["path"] == target.decode()
        assert line["remote"] == "127.0.0.1"
        if code is not None:
            assert line["error"] == code


async def test_draining_refusals_write_a_line(stack: Stack) -> None:
    stack.sidecar.app[LIFECYCLE].draining = True
    answer = await stack.send(request("/v1/chat/completions", chat_body("gpt-4o")))
    assert statuses(answer) == [503]
    (line,) = [record for record in stack.records() if record["logger"] == "sidecar.refusal"]
    assert (line["status"], line["error"]) == (503, "shutting_down")


async def test_a_flood_of_refusals_is_held_to_the_rate_limit_plus_a_summary(stack: Stack) -> None:
    probes = 10_000
    flood = [
        request(f"/v1/probe/{n}", b"", KEY, method="GET", last=False) for n in range(probes - 1)
    ]
    answers = await stack.send(*flood, request("/v1/probe/last", b"", KEY, method="GET"))
    assert statuses(answers) == [404] * probes
    refusals = [record for record in stack.records() if record["logger"] == "sidecar.refusal"]
    assert len(refusals) == BURST  # the clock stands still: no refill
    assert [record["path"] for record in refusals] == [f"/v1/probe/{n}" for n in range(BURST)]
    stack.clock.advance(SUMMARY_EVERY)  # the summary's timer is due

    def summaries() -> list[dict[str, object]]:
        return [r for r in stack.records() if r.get("event") == "refusals_suppressed"]

    while not summaries():  # noqa: ASYNC110 - its task runs on the next turns of the loop
        await asyncio.sleep(0)
    (summary,) = summaries()
    assert summary["suppressed"] == probes - BURST
    assert summary["msg"] == f"suppressed {probes - BURST} refusal lines in the last 10.0 s"
    assert len(stack.records()) == BURST + 1


# -- the real process, both formats --------------------------------------------------------


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fmt", ["json", "text"])
async def test_the_cli_writes_one_escaped_line_per_forged_request(
    mock_server: MockServerFactory, tmp_path: Path, fmt: str
) -> None:
    mock = await mock_server(name="logs")
    (tmp_path / "p.yaml").write_text(simple_policy(mock, "30s"))
    process = _start_sidecar(tmp_path, "--log-format", fmt)
    try:
        main, _ = await asyncio.to_thread(_addresses, process)
        async with aiohttp.ClientSession(main) as http:
            model = {**CHAT, "model": '\r\n{"forged": true}'}
            async with http.post("/v1/chat/completions", json=model,
                                 headers={"x-request-id": "forged-0"}) as response:  # fmt: skip
                assert response.status == 400
            path = URL("/v1/chat/completions%0D%0A2026-01-01%20INFO%20forged", encoded=True)
            async with http.post(path, json=CHAT,
                                 headers={"x-request-id": "forged-1"}) as response:  # fmt: skip
                assert response.status == 400
            async with http.post("/v1/chat/completions", json=CHAT,
                                 headers={"x-request-id": "fine"}) as response:  # fmt: skip
                assert response.status == 200
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.to_thread(process.communicate, timeout=30)
    finally:
        _reap(process)
    lines = [line for line in output.splitlines() if line.strip()]
    for line in lines:
        if fmt == "json":
            assert set(json.loads(line)) >= {"ts", "level", "logger"}, line
        else:
            assert TEXT_RECORD.match(line), line
    for rid in ("forged-0", "forged-1", "fine"):
        assert len([line for line in lines if rid in line]) == 1, lines
    (forged,) = [line for line in lines if "forged-1" in line]
    assert "completions\\r\\n2026-01-01 INFO forged" in forged
