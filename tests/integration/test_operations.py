"""Operations: metrics that move as the scenarios say, the admin API and its token, access
control, secrets that never leak, and the process lifecycle (drain on SIGTERM, exit codes)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families

from mock_provider.app import create_app as create_mock
from mock_provider.content import DEFAULT_ANSWER
from mock_provider.state import MockSettings
from sidecar.app import SidecarConfig
from sidecar.app import create_app as create_sidecar
from sidecar.observability.logs import JSONLineFormatter
from sidecar.resilience.clock import FakeClock
from sidecar.state import ADMIN_APP

ServerFactory = Callable[..., Awaitable[TestServer]]
MESSAGES = [{"role": "user", "content": "hello"}]
BODY = {"model": "gpt-4o", "messages": MESSAGES}
PRIMARY_KEY = "sk-primary-SECRET-7f3a"
SECONDARY_KEY = "sk-secondary-SECRET-9b1c"
CLIENT_KEY = "client-SECRET-key-42"
ADMIN_TOKEN = "admin-SECRET-token-5e"
SECRETS = (PRIMARY_KEY, SECONDARY_KEY, CLIENT_KEY, ADMIN_TOKEN)

POLICY = """\
version: 1
upstreams:
  primary:
    url: {primary}
    format: openai
    auth: {{header: Authorization, value: "Bearer ${{PRIMARY_KEY}}"}}
  secondary:
    url: {secondary}
    format: openai
    auth: {{header: Authorization, value: "Bearer ${{SECONDARY_KEY}}"}}
routes:
  - name: chat
    match: {{path: /v1/chat/completions}}
    access: {{keys: ["${{CLIENT_KEY}}"]}}
    validate: {{max_prompt_tokens: 1000}}
    retry:
      attempts: {attempts}
      backoff: {{base: 100ms, max: 1s}}
      retry_after: {{max_wait: 2s}}
      budget: {{ratio: 100%, min_per_second: 100}}
    breaker: {{consecutive_failures: 5, open_for: 10s}}
    fallback: [{{upstream: primary}}, {{upstream: secondary}}]
"""


POLICY_DIR: list[Path] = []


@dataclass
class Stack:
    sidecar: TestServer
    admin: TestServer
    primary: TestServer
    secondary: TestServer
    client: openai.AsyncOpenAI
    http: aiohttp.ClientSession

    async def script(self, mock: TestServer, body: dict[str, object]) -> None:
        async with self.http.post(mock.make_url("/config/failures"), json=body) as response:
            assert response.status == 200

    async def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        async with self.http.get(self.sidecar.make_url("/metrics")) as response:
            text = await response.text()
        samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
async def make_stack(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Stack]]]:
    made: list[Stack] = []

    async def start(attempts: int = 3) -> Stack:
        primary = await aiohttp_server(create_mock(MockSettings(name="p", api_key=PRIMARY_KEY)))
        secondary = await aiohttp_server(create_mock(MockSettings(name="s", api_key=SECONDARY_KEY)))
        POLICY_DIR[:] = [tmp_path]
        (tmp_path / "p.yaml").write_text(
            POLICY.format(
                primary=str(primary.make_url("")).rstrip("/"),
                secondary=str(secondary.make_url("")).rstrip("/"),
                attempts=attempts,
            )
        )
        environ = {"PRIMARY_KEY": PRIMARY_KEY, "SECONDARY_KEY": SECONDARY_KEY,
                   "CLIENT_KEY": CLIENT_KEY}  # fmt: skip
        config = SidecarConfig(
            policies=tmp_path,
            environ=environ,
            clock=FakeClock(),
            seed=1,
            watch=False,
            poll_interval=3600,
            admin_token=ADMIN_TOKEN,
        )
        app = create_sidecar(config)
        sidecar = await aiohttp_server(app)
        admin = await aiohttp_server(app[ADMIN_APP])
        client = openai.AsyncOpenAI(
            base_url=str(sidecar.make_url("/v1")), api_key=CLIENT_KEY, max_retries=0
        )
        stack = Stack(sidecar, admin, primary, secondary, client, aiohttp.ClientSession())
        made.append(stack)
        return stack

    yield start
    for stack in made:
        await stack.client.close()
        await stack.http.close()


# -- metrics move as the scenarios say ----------------------------------------------------


async def test_metrics_after_the_seed_scenarios(make_stack) -> None:
    s = await make_stack()
    before = await s.metrics()

    await s.client.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # happy path
    await s.script(s.primary, {"script": [{"fail": 503}, {"fail": 503}]})  # retry, success
    await s.client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    await s.script(s.primary, {"script": [{"fail": 429, "retry_after": 30}]})  # failover
    await s.client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    with pytest.raises(openai.BadRequestError):  # validation
        await s.client.chat.completions.create(model="gpt-4o", messages=[])
    stream = await s.client.chat.completions.create(
        model="gpt-4o", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    async for _ in stream:
        pass

    after = await s.metrics()

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    ok = {"route": "chat", "outcome": "success", "status_class": "2xx"}
    assert delta("sidecar_requests_total", **ok) == 4
    rejected = {"route": "chat", "outcome": "invalid_request_body", "status_class": "4xx"}
    assert delta("sidecar_requests_total", **rejected) == 1
    assert delta("sidecar_upstream_attempts_total", route="chat", upstream="primary",
                 result="ok") == 3  # fmt: skip
    assert delta("sidecar_upstream_attempts_total", route="chat", upstream="primary",
                 result="5xx") == 2  # fmt: skip
    assert delta("sidecar_upstream_attempts_total", route="chat", upstream="primary",
                 result="429") == 1  # fmt: skip
    assert delta("sidecar_upstream_attempts_total", route="chat", upstream="secondary",
                 result="ok") == 1  # fmt: skip
    assert delta("sidecar_retries_total", route="chat", upstream="primary") == 2
    assert delta("sidecar_backoff_seconds_count", route="chat") == 2
    assert delta("sidecar_fallbacks_total", route="chat", from_upstream="primary",
                 to_upstream="secondary", reason="retry_after_too_long") == 1  # fmt: skip
    assert delta("sidecar_time_to_first_token_seconds_count", route="chat",
                 upstream="primary") == 1  # fmt: skip
    durations = {"route": "chat", "status_class": "2xx"}
    assert delta("sidecar_request_duration_seconds_count", **durations) == 4
    failed = {"route": "chat", "status_class": "4xx"}
    assert delta("sidecar_request_duration_seconds_count", **failed) == 1
    # The standard series are there; the `_created` ones are not.
    names = {name for (name, _) in after}
    assert {"process_cpu_seconds_total", "process_resident_memory_bytes"} <= names
    assert any(name.startswith("python_gc_") for name in names)
    assert not any(name.endswith("_created") for name in names)
    assert delta("sidecar_overhead_seconds_count", route="chat") == 5
    tokens = delta("sidecar_tokens_total", upstream="primary", model="gpt-4o", kind="completion")
    assert tokens == 3 * 38  # two plain answers and one stream with usage, 38 tokens each
    assert value(after, "sidecar_in_flight_requests") == 0
    assert value(after, "sidecar_breaker_state", breaker="primary") == 0
    assert value(after, "sidecar_policy_reloads_total", result="loaded") == 1
    policy_hash = (await admin_json(s, "/admin/policy"))["hash"]
    assert value(after, "sidecar_policy_info", hash=policy_hash) == 1


async def test_breaker_metrics(make_stack) -> None:
    s = await make_stack(attempts=1)
    await s.script(s.primary, {"server_error": 1.0})
    for _ in range(5):
        await s.client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    samples = await s.metrics()
    assert value(samples, "sidecar_breaker_state", breaker="primary") == 2
    assert value(samples, "sidecar_breaker_transitions_total", breaker="primary",
                 state="open") == 1  # fmt: skip
    assert value(samples, "sidecar_fallbacks_total", route="chat", from_upstream="primary",
                 to_upstream="secondary", reason="retries_exhausted") == 5  # fmt: skip


async def test_client_cancellation_is_counted(make_stack) -> None:
    s = await make_stack()
    await s.script(s.primary, {"script": [{"fail": "hang"}]})
    request = asyncio.create_task(s.client.chat.completions.create(model="gpt-4o",
                                                                   messages=MESSAGES))  # fmt: skip
    in_flight = 0.0
    for _ in range(500):  # until the request is in flight: each scrape is real I/O
        in_flight = value(await s.metrics(), "sidecar_in_flight_requests")
        if in_flight:
            break
    assert in_flight == 1
    request.cancel()
    with pytest.raises(asyncio.CancelledError):
        await request
    for _ in range(200):
        samples = await s.metrics()
        if value(samples, "sidecar_client_cancellations_total", route="chat") == 1:
            break
    assert value(samples, "sidecar_client_cancellations_total", route="chat") == 1


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
async def test_promtool_finds_nothing_wrong(make_stack) -> None:
    s = await make_stack(attempts=1)
    await s.client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    await s.script(s.primary, {"script": [{"fail": 500}]})
    await s.client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    async with s.http.get(s.sidecar.make_url("/metrics")) as response:
        text = await response.read()
    result = await asyncio.to_thread(
        subprocess.run,
        ["promtool", "check", "metrics"],
        input=text,
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == b""
    assert result.stderr.strip() == b""


# -- admin API, access control, secrets ------------------------------------------------


async def admin_json(s: Stack, path: str, token: str | None = ADMIN_TOKEN) -> dict:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with s.http.get(s.admin.make_url(path), headers=headers) as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def test_admin_api_needs_the_token(make_stack) -> None:
    s = await make_stack()
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": ADMIN_TOKEN}):
        async with s.http.get(s.admin.make_url("/admin/policy"), headers=headers) as response:
            assert response.status == 401
            body = await response.json()
            assert body["error"]["code"] == "admin_token_required"
    assert (await admin_json(s, "/admin/breakers"))["breakers"] == []
    async with s.http.get(s.sidecar.make_url("/admin/policy")) as response:
        assert response.status == 401  # the policy's routes are keyed: no key, no 404 either
    key = {"x-api-key": CLIENT_KEY}
    async with s.http.get(s.sidecar.make_url("/admin/policy"), headers=key) as response:
        assert response.status == 404  # not on the application port


def test_admin_on_a_public_address_requires_a_token(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="SIDECAR_ADMIN_TOKEN"):
        SidecarConfig(policies=tmp_path, admin_host="0.0.0.0")
    SidecarConfig(policies=tmp_path, admin_host="0.0.0.0", admin_token="t" * 20)


async def test_route_keys_are_required(make_stack) -> None:
    s = await make_stack()
    for key in (None, "wrong-key-123"):
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        async with s.http.post(
            s.sidecar.make_url("/v1/chat/completions"), json=BODY, headers=headers
        ) as response:
            assert response.status == 401
            body = await response.json()
            assert body["error"]["code"] == "invalid_api_key"
    async with s.http.post(
        s.sidecar.make_url("/v1/chat/completions"), json=BODY, headers={"x-api-key": CLIENT_KEY}
    ) as response:
        assert response.status == 200
    async with s.http.get(s.primary.make_url("/stats")) as response:
        assert (await response.json())["total"] == 1  # the refused requests never went out


async def test_secrets_never_leak(make_stack, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    s = await make_stack(attempts=2)
    seen: list[str] = []
    await s.client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    await s.script(s.primary, {"script": [{"fail": 503}, {"fail": 401}]})
    with pytest.raises(openai.InternalServerError) as caught:  # the sidecar's key: a 502
        await s.client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    seen.append(str(caught.value.body))
    async with s.http.post(
        s.sidecar.make_url("/v1/chat/completions"), json=BODY, headers={"x-api-key": "nope"}
    ) as response:
        seen.append(await response.text())
    seen.append(json.dumps(await admin_json(s, "/admin/policy")))
    seen.append(json.dumps(await admin_json(s, "/admin/breakers")))
    async with s.http.get(s.sidecar.make_url("/metrics")) as response:
        seen.append(await response.text())
    formatter = JSONLineFormatter()
    seen.extend(formatter.format(record) for record in caplog.records)
    explained = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "sidecar", "explain", str(POLICY_DIR[0])],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env={**os.environ, "PRIMARY_KEY": PRIMARY_KEY, "SECONDARY_KEY": SECONDARY_KEY,
             "CLIENT_KEY": CLIENT_KEY},
    )  # fmt: skip
    assert explained.returncode == 0, explained.stderr
    seen.append(explained.stdout + explained.stderr)
    everything = "\n".join(seen)
    assert "request_id" in everything  # the logs were captured
    for secret in SECRETS:
        assert secret not in everything


# -- lifecycle -----------------------------------------------------------------------------


def _start_sidecar(
    policies: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "sidecar", "run", "--port", "0", "--admin-port", "0",
         "--policies", str(policies), *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def _reap(process: subprocess.Popen[str]) -> None:
    """Kill *process* (and, if it leads a process group, its children) if a test left it
    running, and close its output."""
    if process.poll() is None:
        if os.getpgid(process.pid) == process.pid:  # started with start_new_session
            os.killpg(process.pid, signal.SIGKILL)  # the --workers processes too
        else:
            process.kill()
    process.wait()
    assert process.stdout is not None
    process.stdout.close()


def _addresses(process: subprocess.Popen[str]) -> tuple[str, str]:
    main = admin = ""
    assert process.stdout is not None
    while not (main and admin):  # the per-test timeout bounds this
        line = process.stdout.readline()
        assert line, "the sidecar exited before listening"
        if found := re.search(r"listening on (http://[\d.]+:\d+)", line):
            main = found.group(1)
        if found := re.search(r"admin API on (http://[\d.]+:\d+)", line):
            admin = found.group(1)
    return main, admin


def simple_policy(mock: TestServer, idle: str) -> str:
    url = str(mock.make_url("")).rstrip("/")
    return (
        f"version: 1\nupstreams:\n  m: {{url: '{url}', format: openai}}\n"
        "routes:\n  - {name: chat, match: {path: /v1/chat/completions}, "
        f"timeouts: {{idle: {idle}}}, fallback: [{{upstream: m}}]}}\n"
    )


def _ready(admin: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"{admin}/ready", timeout=5) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


@pytest.mark.timeout(60)
async def test_sigterm_drains_a_slow_stream_then_exits_0(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    mock = await aiohttp_server(create_mock(MockSettings(name="slow", chunk_ms=40)))
    (tmp_path / "p.yaml").write_text(simple_policy(mock, "30s"))
    process = _start_sidecar(tmp_path, "--grace", "20")
    try:
        main, admin = await asyncio.to_thread(_addresses, process)
        assert (await asyncio.to_thread(_ready, admin))[0] == 200
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{main}/v1/chat/completions", json={**BODY, "stream": True}) as response,
        ):
            first = await response.content.readline()
            assert first.startswith(b"data: ")
            process.send_signal(signal.SIGTERM)
            status, reason = await asyncio.to_thread(_ready, admin)
            while status == 200:  # readiness flips at once; poll until it has
                status, reason = await asyncio.to_thread(_ready, admin)
            assert status == 503
            assert "draining" in reason["reason"]
            rest = await response.read()
        text = "".join(
            json.loads(line[6:])["choices"][0]["delta"].get("content", "")
            for line in (first + rest).decode().splitlines()
            if line.startswith("data: {") and json.loads(line[6:])["choices"]
        )
        assert text == DEFAULT_ANSWER  # the stream finished within the grace
        assert rest.endswith(b"data: [DONE]\n\n")
        assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        _reap(process)


@pytest.mark.timeout(60)
async def test_grace_end_gives_running_streams_a_final_error(
    aiohttp_server: ServerFactory, tmp_path: Path
) -> None:
    mock = await aiohttp_server(create_mock(MockSettings(name="slow", chunk_ms=200)))
    (tmp_path / "p.yaml").write_text(simple_policy(mock, "30s"))
    process = _start_sidecar(tmp_path, "--grace", "0.5")
    try:
        main, _admin = await asyncio.to_thread(_addresses, process)
        async with (
            aiohttp.ClientSession() as http,
            http.post(f"{main}/v1/chat/completions", json={**BODY, "stream": True}) as response,
        ):
            await response.content.readline()
            process.send_signal(signal.SIGTERM)
            rest = await response.read()
        assert b"[DONE]" not in rest
        last = rest.strip().split(b"\n\n")[-1]
        assert b'"code":"shutdown"' in last
        assert await asyncio.to_thread(process.wait, 30) == 0
    finally:
        _reap(process)


@pytest.mark.timeout(30)
def test_invalid_policy_refuses_to_start_with_exit_code_2(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("version: 1\nroutes: [{name: x}]\n")
    process = _start_sidecar(tmp_path)
    output, _ = process.communicate(timeout=20)
    assert process.returncode == 2
    assert "missing required key 'match'" in output
    assert "refusing to start" in output


def _free_port(span: int = 1) -> int:
    """A port p with p .. p+span-1 all free right now."""
    import socket

    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        try:
            for offset in range(1, span):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port + offset))
        except OSError:
            continue
        return port
    raise AssertionError("no free port range")


@pytest.mark.timeout(60)
def test_workers_share_the_port_and_stop_together(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "version: 1\nupstreams:\n  m: {url: 'http://127.0.0.1:9', format: openai}\n"
        "routes:\n  - {name: chat, match: {path: /v1/chat/completions}, "
        "fallback: [{upstream: m}]}\n"
    )
    port, admin = _free_port(), _free_port(span=2)
    process = subprocess.Popen(
        [sys.executable, "-m", "sidecar", "run", "--workers", "2", "--port", str(port),
         "--admin-port", str(admin), "--policies", str(tmp_path), "--grace", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        admins: set[str] = set()
        while len(admins) < 2:  # the per-test timeout bounds this
            line = process.stdout.readline()
            assert line, "the workers exited early"
            if found := re.search(r"admin API on (http://[\d.]+:\d+)", line):
                admins.add(found.group(1))
        assert admins == {f"http://127.0.0.1:{admin}", f"http://127.0.0.1:{admin + 1}"}
        for url in admins:
            assert _ready(url)[0] == 200
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
            assert response.status == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        _reap(process)


async def test_get_admin_lists_the_admin_endpoints(make_stack) -> None:
    s = await make_stack()
    listed = (await admin_json(s, "/admin"))["endpoints"]
    pairs = {(e["method"], e["path"]) for e in listed}
    assert {
        ("GET", "/admin/policy"),
        ("GET", "/admin/breakers"),
        ("GET", "/admin/runtime"),
        ("POST", "/admin/breakers/{key}/{action}"),
        ("GET", "/metrics"),
    } <= pairs
    for method, path in pairs:  # every GET listed answers (the listing is the router's own)
        if method == "GET" and "{" not in path:
            headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            async with s.http.get(s.admin.make_url(path), headers=headers) as response:
                assert response.status in (200, 503), path  # /ready: 503 while draining
