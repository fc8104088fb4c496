"""Replicas sharing state through a real Redis: two sidecar processes, one mock provider.

Each test uses its own key prefix (``prefix``, tests/integration/conftest.py) and deletes
its keys afterwards. Redis is REDIS_URL (default redis://127.0.0.1:6379/0); when none
answers the tests are skipped, except under CI=true, where that is a failure. The outage
test runs its own ``redis-server`` on a free port and kills it mid-test.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import redis
from aiohttp.test_utils import TestServer
from redis_support import REDIS_URL, redis_unavailable

from mock_provider.app import create_app as create_mock
from mock_provider.state import MockSettings
from sidecar.policy.model import Breaker, Secret, StateBackend
from sidecar.resilience.clock import SystemClock
from sidecar.shared.breakers import SharedBreakers
from sidecar.shared.redis import SharedStore

ROOT = Path(__file__).resolve().parents[2]
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello"}]}

POLICY = """\
version: 1
state: {{backend: redis, url: "{url}", prefix: "{prefix}", timeout: 200ms}}
upstreams:
  mock: {{url: "{mock}", format: openai}}
routes:
  - name: chat
    match: {{path: /v1/chat/completions, methods: [POST]}}
    {rate_limit}
    retry: {{attempts: 1}}
    breaker: {{consecutive_failures: 3, open_for: 30s}}
    fallback: [{{upstream: mock}}]
"""


@pytest.fixture
def prefix(redis_prefix: str) -> str:
    return redis_prefix


@dataclass
class Sidecar:
    process: subprocess.Popen[bytes]
    output: Path
    url: str = ""
    admin: str = ""

    def log(self) -> str:
        return self.output.read_text(errors="replace")


@pytest.fixture
def start_sidecar(tmp_path: Path) -> Iterator[Callable[[str], Sidecar]]:
    """Factory: a `python -m sidecar run` process on policy text, listening on free ports."""
    started: list[Sidecar] = []

    def start(policy: str) -> Sidecar:
        number = len(started)
        policies = tmp_path / f"policies-{number}"
        policies.mkdir()
        (policies / "policy.yaml").write_text(policy)
        output = tmp_path / f"sidecar-{number}.log"
        with output.open("wb") as sink:
            process = subprocess.Popen(
                [sys.executable, "-m", "sidecar", "run", "--port", "0", "--admin-port", "0",
                 "--policies", str(policies), "--no-watch", "--grace", "0"],
                cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
            )  # fmt: skip
        sidecar = Sidecar(process, output)
        started.append(sidecar)
        while not (sidecar.url and sidecar.admin):  # the per-test timeout bounds this
            assert process.poll() is None, f"the sidecar exited:\n{sidecar.log()}"
            text = sidecar.log()
            if found := re.search(r"listening on (http://[\d.]+:\d+)", text):
                sidecar.url = found.group(1)
            if found := re.search(r"admin API on (http://[\d.]+:\d+)", text):
                sidecar.admin = found.group(1)
            time.sleep(0.05)
        return sidecar

    yield start
    for sidecar in started:
        if sidecar.process.poll() is None:
            sidecar.process.kill()
        sidecar.process.wait()


@pytest.fixture
async def mock(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> TestServer:
    server: TestServer = await aiohttp_server(create_mock(MockSettings(name="mock")))
    return server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def policy(url: str, prefix: str, mock: TestServer, rate_limit: str = "") -> str:
    return POLICY.format(
        url=url, prefix=prefix, mock=str(mock.make_url("")).rstrip("/"), rate_limit=rate_limit
    )


async def chat(http: aiohttp.ClientSession, sidecar: Sidecar) -> tuple[int, dict, dict]:
    async with http.post(f"{sidecar.url}/v1/chat/completions", json=BODY) as response:
        return response.status, dict(response.headers), await response.json()


async def calls(http: aiohttp.ClientSession, mock: TestServer) -> int:
    async with http.get(mock.make_url("/stats")) as response:
        return int((await response.json())["total"])


async def metric(http: aiohttp.ClientSession, sidecar: Sidecar, name: str, **labels: str) -> float:
    async with http.get(f"{sidecar.url}/metrics") as response:
        text = await response.text()
    for line in text.splitlines():
        if line.startswith(name) and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# -- two replicas, one Redis ----------------------------------------------------------------


@pytest.mark.slow
async def test_two_replicas_enforce_one_combined_rate_limit(
    prefix: str, mock: TestServer, start_sidecar: Callable[[str], Sidecar],
    http: aiohttp.ClientSession,
) -> None:  # fmt: skip
    text = policy(REDIS_URL, prefix, mock, "rate_limit: {requests_per_minute: 10}")
    a, b = start_sidecar(text), start_sidecar(text)

    results = [await chat(http, (a, b)[i % 2]) for i in range(30)]

    ok = [r for r in results if r[0] == 200]
    limited = [r for r in results if r[0] == 429]
    assert 10 <= len(ok) <= 11, [r[0] for r in results]  # one bucket, not one per replica
    assert len(ok) + len(limited) == 30
    assert all(int(headers["Retry-After"]) >= 1 for _, headers, _ in limited)
    assert all(body["error"]["code"] == "rate_limit_exceeded" for _, _, body in limited)
    assert await calls(http, mock) == len(ok)  # refused requests never reached the upstream
    served = {sidecar.url: 0 for sidecar in (a, b)}
    for i, result in enumerate(results):
        served[(a, b)[i % 2].url] += result[0] == 200
    assert all(count >= 1 for count in served.values())  # both replicas took part


@pytest.mark.slow
async def test_a_breaker_opened_through_one_replica_rejects_on_the_other(
    prefix: str, mock: TestServer, start_sidecar: Callable[[str], Sidecar],
    http: aiohttp.ClientSession,
) -> None:  # fmt: skip
    text = policy(REDIS_URL, prefix, mock)
    a, b = start_sidecar(text), start_sidecar(text)
    assert (await chat(http, b))[0] == 200  # B has seen the breaker closed
    async with http.post(
        mock.make_url("/config/failures"), json={"script": [{"fail": 503}] * 3}
    ) as response:
        assert response.status == 200

    for _ in range(3):
        assert (await chat(http, a))[0] == 503  # the upstream's 503, three times through A
    before = await calls(http, mock)
    await asyncio.sleep(0.3)  # B's copy of the shared state is at most 0.2 s old

    status, headers, body = await chat(http, b)

    assert status == 503
    assert body["error"]["code"] == "all_targets_unavailable"
    assert 25 <= int(headers["Retry-After"]) <= 30
    assert await calls(http, mock) == before  # B did not call the upstream
    assert await metric(http, b, "sidecar_breaker_state", breaker="mock") == 2
    async with http.get(f"{b.admin}/admin/breakers") as response:
        (breaker,) = (await response.json())["breakers"]
    assert breaker["state"] == "open"
    assert breaker["shared"]["state"] == "open"
    assert breaker["shared"]["consecutive_failures"] == 3
    b.process.terminate()
    b.process.wait(timeout=10)
    assert '"event":"BreakerOpened"' in b.log()  # B's own log shows the shared breaker


# -- Redis goes away and comes back ---------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _redis_server(port: int) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        redis_unavailable("redis-server is not installed")
    assert binary is not None
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = redis.Redis(port=port, socket_timeout=1, socket_connect_timeout=1)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except (redis.RedisError, OSError):
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
    client.close()
    return process


@pytest.fixture
def own_redis() -> Iterator[Callable[[int], subprocess.Popen[bytes]]]:
    servers: list[subprocess.Popen[bytes]] = []

    def start(port: int) -> subprocess.Popen[bytes]:
        servers.append(_redis_server(port))
        return servers[-1]

    yield start
    for server in servers:
        if server.poll() is None:
            server.kill()
        server.wait()


@pytest.mark.slow
@pytest.mark.timeout(60)
async def test_redis_killed_mid_test_requests_go_on_then_sharing_resumes(
    mock: TestServer, start_sidecar: Callable[[str], Sidecar], http: aiohttp.ClientSession,
    own_redis: Callable[[int], subprocess.Popen[bytes]],
) -> None:  # fmt: skip
    port = _free_port()
    server = own_redis(port)
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    url = f"redis://127.0.0.1:{port}/0"
    sidecar = start_sidecar(policy(url, prefix, mock, "rate_limit: {requests_per_minute: 600}"))
    up = "sidecar_state_backend_up"
    assert (await chat(http, sidecar))[0] == 200
    assert await metric(http, sidecar, up, backend="redis") == 1

    server.kill()
    server.wait()
    for _ in range(5):  # answered from local state; a request never fails with Redis
        assert (await chat(http, sidecar))[0] == 200
    assert await metric(http, sidecar, up, backend="redis") == 0
    assert await metric(http, sidecar, "sidecar_state_backend_errors_total") > 0

    own_redis(port)  # the same port: sharing resumes
    client = redis.Redis(port=port, socket_timeout=1)
    deadline = time.monotonic() + 15
    while await metric(http, sidecar, up, backend="redis") != 1:
        assert time.monotonic() < deadline, "sharing did not resume"
        assert (await chat(http, sidecar))[0] == 200
        await asyncio.sleep(0.3)
    assert (await chat(http, sidecar))[0] == 200
    assert client.keys(f"{prefix}:*")  # the state lives in Redis again
    client.close()

    sidecar.process.terminate()
    sidecar.process.wait(timeout=10)
    log = sidecar.log()
    assert '"event":"state_backend_unavailable"' in log
    assert '"event":"state_backend_resumed"' in log


# -- the scripts themselves: two replicas' SharedBreakers on one Redis ------------------------


async def test_half_open_probes_are_limited_across_replicas(prefix: str) -> None:
    clock = SystemClock()
    config = StateBackend("redis", Secret(REDIS_URL), prefix, 1.0)
    stores = [SharedStore(config, clock), SharedStore(config, clock)]
    views = [SharedBreakers(clock), SharedBreakers(clock)]
    rule = Breaker(consecutive_failures=2, open_for=0.3, half_open_probes=2)
    try:
        first, extra = await views[0].record(stores[0], "r:u", rule, "failure")
        assert first is not None
        assert (first.state, first.failures, extra) == ("closed", 1, 0)
        second, extra = await views[1].record(stores[1], "r:u", rule, "failure")
        assert second is not None
        assert (second.state, second.failures, extra) == ("open", 2, 1)  # counted across both
        assert (await views[0].acquire(stores[0], "r:u", rule))[1] == 0  # open: rejected
        await asyncio.sleep(0.35)

        grants = [(await views[i % 2].acquire(stores[i % 2], "r:u", rule)) for i in range(4)]

        assert [extra for _, extra in grants] == [2, 2, 0, 0]  # two probes, whoever asks
        generation = grants[0][0].generation  # type: ignore[union-attr]
        await views[0].probe_done(stores[0], "r:u", rule, generation, "success")
        closed, _ = await views[1].probe_done(stores[1], "r:u", rule, generation, "success")
        assert closed is not None
        assert (closed.state, closed.failures) == ("closed", 0)
        seen = await views[0].current(stores[0], "r:u", force=True)
        assert seen is not None
        assert seen.state == "closed"
    finally:
        for store in stores:
            await store.close()


async def test_a_lost_probe_slot_is_freed_after_open_for(prefix: str) -> None:
    clock = SystemClock()
    store = SharedStore(StateBackend("redis", Secret(REDIS_URL), prefix, 1.0), clock)
    views = SharedBreakers(clock)
    rule = Breaker(consecutive_failures=1, open_for=0.2, half_open_probes=1)
    try:
        await views.record(store, "k", rule, "failure")
        await asyncio.sleep(0.25)
        assert (await views.acquire(store, "k", rule))[1] == 2  # its replica then dies
        assert (await views.acquire(store, "k", rule))[1] == 0
        await asyncio.sleep(0.25)
        assert (await views.acquire(store, "k", rule))[1] == 2  # the lease ran out
    finally:
        await store.close()
