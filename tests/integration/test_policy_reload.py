"""Hot reload against a running sidecar and real mock providers on loopback.

Behaviour is observed the way a user sees it: which mock answered
(`x-mock-name`), through the official openai SDK.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import openai
import pytest
from aiohttp.test_utils import TestServer

from mock_provider.app import create_app as create_mock
from mock_provider.content import DEFAULT_ANSWER
from mock_provider.state import MockSettings
from sidecar import app as sidecar_app
from sidecar.app import SidecarConfig
from sidecar.app import create_app as create_sidecar
from sidecar.observability.logs import JSONLineFormatter, TextLineFormatter
from sidecar.policy.store import PolicyStore, ReloadResult
from sidecar.policy.watcher import PolicyWatcher
from sidecar.state import ADMIN_APP, STORE

ServerFactory = Callable[..., Awaitable[TestServer]]
MESSAGES = [{"role": "user", "content": "hello"}]


def policy_text(urls: dict[str, str], target: str, deadline: str = "30s") -> str:
    upstreams = "".join(
        f"  {name}:\n    url: {url}\n    format: openai\n" for name, url in urls.items()
    )
    return (
        "version: 1\n"
        f"upstreams:\n{upstreams}"
        "routes:\n"
        "  - name: chat\n"
        "    match: {path: /v1/chat/completions, methods: [POST]}\n"
        f"    deadline: {deadline}\n"
        "    fallback:\n"
        f"      - upstream: {target}\n"
    )


def kubelet_write(directory: Path, files: dict[str, str]) -> None:
    """Update a ConfigMap volume exactly as the kubelet's AtomicWriter does.

    New timestamped directory with the files → ``..data_tmp`` symlink to it →
    rename over ``..data`` (atomic) → user-visible symlinks ``name -> ..data/name``
    (created once) → the old timestamped directory removed.
    """
    old = os.readlink(directory / "..data") if (directory / "..data").is_symlink() else None
    stamp = f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    (directory / stamp).mkdir()
    for name, text in files.items():
        (directory / stamp / name).write_text(text)
    os.symlink(stamp, directory / "..data_tmp")
    os.rename(directory / "..data_tmp", directory / "..data")
    for name in files:
        if not (directory / name).is_symlink():
            os.symlink(f"..data/{name}", directory / name)
    if old is not None:
        for child in (directory / old).iterdir():
            child.unlink()
        (directory / old).rmdir()


@pytest.fixture
async def mocks(aiohttp_server: ServerFactory) -> dict[str, TestServer]:
    servers = {}
    for name in ("a", "b"):
        servers[name] = await aiohttp_server(create_mock(MockSettings(name=name, chunk_ms=10)))
    return servers


@pytest.fixture
def urls(mocks: dict[str, TestServer]) -> dict[str, str]:
    return {name: str(server.make_url("")).rstrip("/") for name, server in mocks.items()}


ADMIN: dict[int, TestServer] = {}  # id(sidecar server) -> its admin API server


@pytest.fixture
async def sidecar_factory(
    aiohttp_server: ServerFactory,
) -> Callable[..., Awaitable[TestServer]]:
    async def start(
        directory: Path, poll_interval: float = 3600, environ: dict[str, str] | None = None
    ) -> TestServer:
        config = SidecarConfig(
            policies=directory, poll_interval=poll_interval, environ=environ or {}
        )
        app = create_sidecar(config)
        server = await aiohttp_server(app)
        ADMIN[id(server)] = await aiohttp_server(app[ADMIN_APP])
        return server

    return start


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[[TestServer], openai.AsyncOpenAI]]:
    made: list[openai.AsyncOpenAI] = []

    def make(server: TestServer, api_key: str = "client-key") -> openai.AsyncOpenAI:
        client = openai.AsyncOpenAI(
            base_url=str(server.make_url("/v1")), api_key=api_key, max_retries=0
        )
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


async def answered_by(client: openai.AsyncOpenAI) -> str:
    raw = await client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    assert raw.parse().choices[0].message.content == DEFAULT_ANSWER
    return raw.headers["x-mock-name"]


async def wait_until_answered_by(client: openai.AsyncOpenAI, name: str, within: float) -> float:
    """Send requests until *name* answers; return how long that took (bounded by *within*)."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        if await answered_by(client) == name:
            return time.monotonic() - start
    raise AssertionError(f"{name!r} did not answer within {within}s")


async def served_by(client: openai.AsyncOpenAI) -> tuple[str, str]:
    """(which mock answered, the hash of the policy whose runtime served the request)."""
    raw = await client.chat.completions.with_raw_response.create(model="gpt-4o", messages=MESSAGES)
    return raw.headers["x-mock-name"], raw.headers["x-sidecar-policy"]


async def accepted(client: openai.AsyncOpenAI) -> bool:
    """Whether the sidecar lets *client*'s key through (False: 401)."""
    try:
        await answered_by(client)
    except openai.AuthenticationError:
        return False
    return True


async def admin_policy(server: TestServer) -> dict[str, object]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(ADMIN[id(server)].make_url("/admin/policy")) as response,
    ):
        assert response.status == 200
        body: dict[str, object] = await response.json()
        return body


async def serving_a(
    directory: Path, urls: dict[str, str], sidecar_factory, client_for
) -> tuple[TestServer, openai.AsyncOpenAI, object]:
    """A sidecar on a policy routing to mock a: (server, client, the policy's hash)."""
    (directory / "chat.yaml").write_text(policy_text(urls, "a"))
    sidecar = await sidecar_factory(directory)
    client = client_for(sidecar)
    return sidecar, client, (await admin_policy(sidecar))["hash"]


async def refusal_shown(server: TestServer, within: float = 3.0) -> dict[str, object]:
    """/admin/policy once it shows a refused reload (bounded by *within* seconds)."""
    deadline = time.monotonic() + within
    status = await admin_policy(server)
    while status["last_error"] is None and time.monotonic() < deadline:
        status = await admin_policy(server)
    assert isinstance(status["last_error"], dict), "the refused reload never showed"
    return status


async def test_valid_edit_is_live_within_one_second(
    tmp_path: Path, urls: dict[str, str], sidecar_factory, client_for
) -> None:
    (tmp_path / "chat.yaml").write_text(policy_text(urls, "a"))
    sidecar = await sidecar_factory(tmp_path)
    client = client_for(sidecar)
    assert await answered_by(client) == "a"

    (tmp_path / "chat.yaml").write_text(policy_text(urls, "b"))
    took = await wait_until_answered_by(client, "b", within=1.0)
    assert took < 1.0
    status = await admin_policy(sidecar)
    assert status["last_error"] is None


async def test_invalid_edit_is_refused_and_the_last_good_policy_keeps_serving(
    tmp_path: Path, urls: dict[str, str], sidecar_factory, client_for
) -> None:
    sidecar, client, good_hash = await serving_a(tmp_path, urls, sidecar_factory, client_for)

    broken = policy_text(urls, "b", deadline="60")  # not a duration
    (tmp_path / "chat.yaml").write_text(broken)
    status = await refusal_shown(sidecar, within=2.0)
    error = status["last_error"]
    assert isinstance(error, dict)
    assert status["hash"] == good_hash
    assert error["errors"] == [
        f"{tmp_path / 'chat.yaml'}:12:15: routes[0].deadline: "
        "60 is not a duration (expected e.g. 250ms, 2s, 1m)"
    ]
    assert await answered_by(client) == "a"


async def test_a_failing_runtime_build_refuses_the_reload_and_the_next_edit_is_live(
    tmp_path: Path,
    urls: dict[str, str],
    sidecar_factory,
    client_for,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    failing = False
    real_build = sidecar_app.make_runtime

    def make_runtime(*args: Any) -> Any:
        if failing:
            raise ValueError("injected build failure")
        return real_build(*args)

    monkeypatch.setattr(sidecar_app, "make_runtime", make_runtime)
    sidecar, client, good_hash = await serving_a(tmp_path, urls, sidecar_factory, client_for)
    assert await served_by(client) == ("a", good_hash)

    failing = True
    (tmp_path / "chat.yaml").write_text(policy_text(urls, "b"))
    status = await refusal_shown(sidecar)
    assert status["hash"] == good_hash
    assert status["reloads"] == {"loaded": 1, "unchanged": 0, "refused": 1}
    assert status["last_error"]["errors"] == [
        "building the runtime failed: ValueError: injected build failure"
    ]
    assert await served_by(client) == ("a", good_hash)  # the old policy and its runtime

    failing = False  # the watch survived the failure: the next edit is seen and served
    (tmp_path / "chat.yaml").write_text(policy_text(urls, "b", deadline="31s"))
    await wait_until_answered_by(client, "b", within=2.0)
    status = await admin_policy(sidecar)
    assert status["last_error"] is None
    assert await served_by(client) == ("b", status["hash"])


async def test_a_redis_url_with_a_bad_port_is_refused_and_the_old_policy_serves(
    tmp_path: Path, urls: dict[str, str], sidecar_factory, client_for
) -> None:
    sidecar, client, good_hash = await serving_a(tmp_path, urls, sidecar_factory, client_for)

    state = "state: {backend: redis, url: 'redis://h:abc'}\n"
    (tmp_path / "chat.yaml").write_text(policy_text(urls, "b") + state)
    status = await refusal_shown(sidecar)
    assert status["hash"] == good_hash
    assert status["last_error"]["errors"] == [
        f"{tmp_path / 'chat.yaml'}:15:30: state.url: the port is not a number 0-65535"
    ]
    assert await served_by(client) == ("a", good_hash)

    (tmp_path / "chat.yaml").write_text(policy_text(urls, "b"))
    await wait_until_answered_by(client, "b", within=2.0)
    assert (await admin_policy(sidecar))["last_error"] is None


SECRET = "sk-live-9f8e7d6c5b4a"
PASSWD = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"


def logged(caplog: pytest.LogCaptureFixture) -> str:
    """Every sidecar record as the sidecar writes it, in both log formats."""
    ours = [record for record in caplog.records if record.name.startswith("sidecar")]
    formatters = (JSONLineFormatter(), TextLineFormatter())
    return "\n".join(form.format(record) for form in formatters for record in ours)


async def test_a_refused_policy_never_shows_a_variables_value(
    tmp_path: Path, urls: dict[str, str], sidecar_factory, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "chat.yaml").write_text(policy_text(urls, "a"))
    sidecar = await sidecar_factory(tmp_path, environ={"KEY": SECRET})
    bad = (
        policy_text({"a": "http://${KEY}@a:abc", "b": urls["b"]}, "a", deadline="${KEY}").replace(
            "format: openai", "format: ${KEY}", 1
        )
        + "defaults:\n  retry:\n    attempts: ${KEY}\n"
    )
    (tmp_path / "chat.yaml").write_text(bad)
    status = await refusal_shown(sidecar)
    errors = status["last_error"]["errors"]
    assert [error.split(": ", 1)[1] for error in errors] == [
        "upstreams.a.format: ${KEY} is not one of 'openai', 'anthropic'",
        "routes[0].deadline: ${KEY} is not a duration (expected e.g. 250ms, 2s, 1m)",
        "defaults.retry.attempts: ${KEY} is not of type 'integer'",
    ]
    assert SECRET not in json.dumps(status)
    assert SECRET not in logged(caplog)
    assert "${KEY} is not a duration" in logged(caplog)  # the refusal was logged


async def test_a_policy_file_linked_from_outside_is_refused_unread(
    tmp_path: Path, urls: dict[str, str], sidecar_factory, caplog: pytest.LogCaptureFixture
) -> None:
    directory, outside = tmp_path / "policies", tmp_path / "passwd"
    directory.mkdir()
    outside.write_text(PASSWD)
    (directory / "chat.yaml").write_text(policy_text(urls, "a"))
    sidecar = await sidecar_factory(directory)
    good_hash = (await admin_policy(sidecar))["hash"]
    (directory / "zz.yaml").symlink_to(outside)
    status = await refusal_shown(sidecar)
    assert status["hash"] == good_hash  # the last good policy keeps serving
    assert status["last_error"]["errors"] == [
        f"{directory / 'zz.yaml'}: a symlink to a file outside the policy directory: refused"
    ]
    assert "root:x" not in json.dumps(status)
    assert "root:x" not in logged(caplog)


@pytest.mark.parametrize("events", [True, False], ids=["file watch", "poll"])
async def test_the_watcher_survives_a_reload_that_raises(
    tmp_path: Path, urls: dict[str, str], events: bool
) -> None:
    store = PolicyStore(tmp_path, {}, str)
    calls: list[str] = []
    called = asyncio.Event()
    real_reload = store.reload

    def reload(reason: str = "request") -> ReloadResult:
        calls.append(reason)
        called.set()
        if len(calls) == 1:
            raise ValueError("a reload that raises")
        return real_reload(reason)

    store.reload = reload  # type: ignore[method-assign]
    watcher = PolicyWatcher(store, poll_interval=3600 if events else 0.02)
    watcher.start(events=events)
    try:
        for target in ("a", "b"):  # the first reload raises; the second must still come
            called.clear()
            seen = len(calls)
            deadline = time.monotonic() + 3.0
            while len(calls) == seen and time.monotonic() < deadline:
                # Rewritten until seen: the watch may not be set up when the test starts.
                (tmp_path / "chat.yaml").write_text(policy_text(urls, target))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(called.wait(), 0.1)
            assert len(calls) > seen, f"no reload after {calls}"
        assert store.active is not None
        assert store.active.routes[0].fallback[0].upstream.name == "b"
    finally:
        await watcher.stop()


@pytest.mark.parametrize("reload", ["SIGHUP", "poll", "file event"])
async def test_a_rotated_keys_file_takes_effect_on_reload(
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    urls: dict[str, str],
    sidecar_factory,
    client_for,
    reload: str,
) -> None:
    if reload == "file event":  # in the watched policy directory (not a *.yaml file)
        (tmp_path / "keys").mkdir()
        keys = tmp_path / "keys" / "clients.txt"
    else:  # outside it: only the poll (or SIGHUP) sees it change
        keys = tmp_path_factory.mktemp("secret") / "clients.txt"
    keys.write_text("key-A-0123456789\n")
    access = f"    access: {{keys_file: '{keys}'}}\n"
    (tmp_path / "chat.yaml").write_text(policy_text(urls, "a") + access)
    sidecar = await sidecar_factory(tmp_path, poll_interval=0.05 if reload == "poll" else 3600)
    old, new = client_for(sidecar, "key-A-0123456789"), client_for(sidecar, "key-B-9876543210")
    assert await answered_by(old) == "a"
    assert not await accepted(new)

    keys.write_text("# A revoked\nkey-B-9876543210\n")
    if reload == "SIGHUP":
        assert sidecar.app[STORE].reload("SIGHUP").outcome == "loaded"
    deadline = time.monotonic() + 3.0
    while await accepted(old) and time.monotonic() < deadline:
        pass  # until the poll (every 50 ms) or the file event reloads
    with pytest.raises(openai.AuthenticationError) as caught:
        await answered_by(old)
    assert caught.value.status_code == 401
    assert await answered_by(new) == "a"


async def test_kubernetes_configmap_symlink_swap_is_picked_up(
    tmp_path: Path, urls: dict[str, str], sidecar_factory, client_for
) -> None:
    kubelet_write(tmp_path, {"chat.yaml": policy_text(urls, "a")})
    sidecar = await sidecar_factory(tmp_path)
    client = client_for(sidecar)
    assert await answered_by(client) == "a"

    kubelet_write(tmp_path, {"chat.yaml": policy_text(urls, "b")})
    assert await wait_until_answered_by(client, "b", within=1.0) < 1.0
    # And again: a watch on the original file would be blind by now.
    kubelet_write(tmp_path, {"chat.yaml": policy_text(urls, "a")})
    assert await wait_until_answered_by(client, "a", within=1.0) < 1.0


async def test_reload_while_streams_are_in_flight_loses_none(
    tmp_path: Path, urls: dict[str, str], sidecar_factory, client_for
) -> None:
    (tmp_path / "chat.yaml").write_text(policy_text(urls, "a"))
    sidecar = await sidecar_factory(tmp_path)
    client = client_for(sidecar)
    first_chunks = asyncio.Semaphore(0)
    streams = 8

    async def one_stream() -> tuple[str, str]:
        raw = await client.chat.completions.with_raw_response.create(
            model="gpt-4o", messages=MESSAGES, stream=True
        )
        parts = []
        first = True
        async for chunk in raw.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
                if first:
                    first_chunks.release()
                    first = False
        return raw.headers["x-mock-name"], "".join(parts)

    tasks = [asyncio.create_task(one_stream()) for _ in range(streams)]
    for _ in range(streams):
        await asyncio.wait_for(first_chunks.acquire(), 5)
    (tmp_path / "chat.yaml").write_text(policy_text(urls, "b"))
    await wait_until_answered_by(client, "b", within=2.0)
    results = await asyncio.gather(*tasks)
    assert results == [("a", DEFAULT_ANSWER)] * streams


@pytest.mark.timeout(30)
def test_sighup_forces_a_reload(tmp_path: Path) -> None:
    urls = {"a": "http://127.0.0.1:9", "b": "http://127.0.0.1:10"}
    (tmp_path / "chat.yaml").write_text(policy_text(urls, "a"))
    process = subprocess.Popen(
        [
            sys.executable, "-m", "sidecar", "run", "--port", "0", "--admin-port", "0",
            "--policies", str(tmp_path), "--no-watch", "--poll-interval", "3600",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )  # fmt: skip
    try:
        assert process.stdout is not None
        base = ""
        while not base:  # log lines come first; the per-test timeout bounds this
            line = process.stdout.readline()
            assert line, "the sidecar exited before it was listening"
            match = re.search(r"admin API on (http://[\d.]+:\d+)", line)
            base = match.group(1) if match else ""

        def current_hash() -> str:
            import json
            import urllib.request

            with urllib.request.urlopen(f"{base}/admin/policy", timeout=5) as response:
                return str(json.load(response)["hash"])

        before = current_hash()
        (tmp_path / "chat.yaml").write_text(policy_text(urls, "b"))
        assert current_hash() == before  # no watch, no poll: nothing reloads by itself
        process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 5
        while current_hash() == before and time.monotonic() < deadline:
            pass
        assert current_hash() != before
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stdout is not None
        process.stdout.close()
