"""The admin API and browsers: a web page on the sidecar's host can neither rebind a name
to the admin port (``Host``) nor send it cross-site requests (``Origin``,
``Sec-Fetch-Site``); state changes are POST only; curl-like clients keep working; and
``/metrics`` on the main port can be switched off (docs/security.md, "The admin API and
browsers")."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
from aiohttp.test_utils import TestServer
from test_operations import _addresses, _reap, _start_sidecar, simple_policy

from sidecar.app import SidecarConfig
from sidecar.app import create_app as create_sidecar
from sidecar.state import ADMIN_APP

TOKEN = "admin-token-for-browser-tests"
BODY = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}
READS = ("/health", "/ready", "/metrics", "/admin/policy", "/admin/breakers", "/admin/runtime")
FOREIGN_HOSTS = (
    "evil.example",
    "evil.example:8081",
    "localhost.evil.example",
    "127.0.0.1.nip.io",
    "10.0.0.7:8081",
    "[::2]:8081",
    "127.1",  # not a dotted quad: only resolvers read it as 127.0.0.1
    "localhost:8081@evil.example",
)


@dataclass
class Admin:
    sidecar: TestServer
    server: TestServer
    http: aiohttp.ClientSession
    auth: dict[str, str] | None = None  # the token's header, when one is set

    def url(self, path: str) -> str:
        return str(self.server.make_url(path))

    async def call(
        self, method: str, path: str, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, object], aiohttp.ClientResponse]:
        async with self.http.request(method, self.url(path), headers=headers) as response:
            json = response.content_type == "application/json" and method != "HEAD"
            body = await response.json() if json else {}
            return response.status, body, response

    async def breaker_state(self) -> str:
        status, body, _ = await self.call("GET", "/admin/breakers", self.auth)
        assert status == 200
        [breaker] = body["breakers"]
        return str(breaker["state"])


@pytest.fixture
async def make_admin(
    aiohttp_server: Callable[..., Awaitable[TestServer]],
    mock_server: Callable[..., Awaitable[TestServer]],
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Awaitable[Admin]]]:
    sessions: list[aiohttp.ClientSession] = []

    async def start(token: str | None = None, main_metrics: bool = True) -> Admin:
        mock = await mock_server(name="m")
        (tmp_path / "p.yaml").write_text(simple_policy(mock, "5s"))
        config = SidecarConfig(
            policies=tmp_path,
            watch=False,
            poll_interval=3600,
            admin_token=token,
            main_metrics=main_metrics,
        )
        app = create_sidecar(config)
        sidecar = await aiohttp_server(app)
        server = await aiohttp_server(app[ADMIN_APP])
        http = aiohttp.ClientSession()
        sessions.append(http)
        async with http.post(sidecar.make_url("/v1/chat/completions"), json=BODY) as response:
            assert response.status == 200  # the upstream's breaker exists now
        auth = {"Authorization": f"Bearer {token}"} if token else None
        return Admin(sidecar, server, http, auth)

    yield start
    for http in sessions:
        await http.close()


def cors_headers(response: aiohttp.ClientResponse) -> list[str]:
    return [name for name in response.headers if name.lower().startswith("access-control-")]


def assert_refused(status: int, body: dict[str, object], code: str) -> None:
    assert status == 403
    assert body["error"]["code"] == code
    assert body["error"]["type"] == "permission_error"


async def test_plain_loopback_requests_keep_working(make_admin) -> None:
    admin = await make_admin()
    for path in READS:
        status, _, _ = await admin.call("GET", path)
        assert status == 200, path
    status, body, _ = await admin.call("POST", "/admin/breakers/m/open")
    assert (status, body["state"]) == (200, "open")
    status, body, _ = await admin.call("POST", "/admin/breakers/m/reset")
    assert (status, body["state"]) == (200, "closed")


@pytest.mark.parametrize("host", FOREIGN_HOSTS)
async def test_a_foreign_host_is_refused_without_a_token(make_admin, host: str) -> None:
    admin = await make_admin()
    for path in READS:
        status, body, _ = await admin.call("GET", path, {"Host": host})
        assert_refused(status, body, "admin_host_refused")
        assert host not in str(body)  # the client's value is not echoed
    status, body, _ = await admin.call("POST", "/admin/breakers/m/open", {"Host": host})
    assert_refused(status, body, "admin_host_refused")
    assert await admin.breaker_state() == "closed"  # nothing happened


@pytest.mark.parametrize(
    "host", ["localhost", "LocalHost:8081", "127.0.0.1", "127.0.0.1:1", "127.9.8.7", "[::1]",
             "[::1]:8081", "[0:0:0:0:0:0:0:1]"]
)  # fmt: skip
async def test_loopback_hosts_are_accepted(make_admin, host: str) -> None:
    admin = await make_admin()
    status, _, _ = await admin.call("GET", "/admin/policy", {"Host": host})
    assert status == 200


async def test_with_a_token_any_host_is_allowed_but_the_token_is_required(make_admin) -> None:
    admin = await make_admin(token=TOKEN)
    status, body, _ = await admin.call("GET", "/admin/policy", {"Host": "sidecar.internal"})
    assert status == 401
    assert body["error"]["code"] == "admin_token_required"
    headers = {"Host": "sidecar.internal:8081", **admin.auth}
    status, _, _ = await admin.call("GET", "/admin/policy", headers)
    assert status == 200
    status, body, _ = await admin.call("POST", "/admin/breakers/m/open", headers)
    assert (status, body["state"]) == (200, "open")


@pytest.mark.parametrize(
    "origin",
    ["http://evil.example", "https://evil.example:8081", "null", "http://127.0.0.1.nip.io",
     "http://localhost:3000", "file://", "chrome-extension://abcdef"],
)  # fmt: skip
async def test_a_foreign_origin_is_refused(make_admin, origin: str) -> None:
    admin = await make_admin()
    status, body, _ = await admin.call("GET", "/admin/policy", {"Origin": origin})
    assert_refused(status, body, "admin_cross_site_refused")
    status, body, _ = await admin.call("POST", "/admin/breakers/m/open", {"Origin": origin})
    assert_refused(status, body, "admin_cross_site_refused")
    preflight = {"Origin": origin, "Access-Control-Request-Method": "POST"}
    status, body, response = await admin.call("OPTIONS", "/admin/breakers/m/open", preflight)
    assert_refused(status, body, "admin_cross_site_refused")
    assert not cors_headers(response)
    assert await admin.breaker_state() == "closed"


async def test_a_foreign_origin_is_refused_even_with_the_token(make_admin) -> None:
    admin = await make_admin(token=TOKEN)
    headers = {"Origin": "http://evil.example", **admin.auth}
    status, body, _ = await admin.call("POST", "/admin/breakers/m/open", headers)
    assert_refused(status, body, "admin_cross_site_refused")


async def test_the_admin_apis_own_origin_is_accepted(make_admin) -> None:
    admin = await make_admin()
    port = admin.server.port
    for origin, host in (
        (f"http://127.0.0.1:{port}", None),  # aiohttp sends Host 127.0.0.1:<port>
        (f"http://localhost:{port}", f"localhost:{port}"),
        ("http://[::1]", "[::1]:80"),
    ):
        headers = {"Origin": origin, **({"Host": host} if host else {})}
        status, _, response = await admin.call("POST", "/admin/breakers/m/reset", headers)
        assert status == 200, origin
        assert not cors_headers(response)  # no page elsewhere may read an answer


@pytest.mark.parametrize("site", ["cross-site", "same-site", "CROSS-SITE", "something-new"])
async def test_cross_site_fetches_are_refused(make_admin, site: str) -> None:
    admin = await make_admin()
    for method, path in (("GET", "/metrics"), ("POST", "/admin/breakers/m/open")):
        status, body, _ = await admin.call(method, path, {"Sec-Fetch-Site": site})
        assert_refused(status, body, "admin_cross_site_refused")
    assert await admin.breaker_state() == "closed"


@pytest.mark.parametrize("site", ["none", "same-origin"])
async def test_typed_urls_and_same_origin_fetches_are_accepted(make_admin, site: str) -> None:
    admin = await make_admin()
    status, _, _ = await admin.call("GET", "/admin/breakers", {"Sec-Fetch-Site": site})
    assert status == 200


async def test_state_changes_are_post_only(make_admin) -> None:
    admin = await make_admin()
    for method in ("GET", "HEAD", "PUT", "DELETE", "OPTIONS"):
        for action in ("open", "reset"):
            status, body, response = await admin.call(method, f"/admin/breakers/m/{action}")
            assert status == 405, (method, action)
            assert response.headers["Allow"] == "POST"
            assert response.content_type == "application/json"
            if method != "HEAD":
                assert body["error"]["code"] == "method_not_allowed"
    assert await admin.breaker_state() == "closed"
    for path in READS:  # and reads change nothing: POST on them is 405 too
        status, _, response = await admin.call("POST", path)
        assert (status, response.headers["Allow"]) == (405, "GET,HEAD"), path


async def test_unknown_admin_paths_and_breakers_get_a_json_404(make_admin) -> None:
    admin = await make_admin()
    status, body, _ = await admin.call("GET", "/admin/reload")
    assert (status, body["error"]["code"]) == (404, "not_found")
    status, body, _ = await admin.call("POST", "/admin/breakers/nope/open")
    assert (status, body["error"]["code"]) == (404, "breaker_not_found")


async def test_metrics_on_the_main_port_can_be_switched_off(make_admin) -> None:
    on = await make_admin()
    async with on.http.get(on.sidecar.make_url("/metrics")) as response:
        assert response.status == 200
        assert "sidecar_requests_total" in await response.text()
    off = await make_admin(main_metrics=False)
    async with off.http.get(off.sidecar.make_url("/metrics")) as response:
        assert response.status == 404  # an ordinary path of the proxy: no route matches
        assert (await response.json())["error"]["code"] == "no_route"
    async with off.http.get(off.server.make_url("/metrics")) as response:
        assert response.status == 200
        assert "sidecar_requests_total" in await response.text()


def _get(url: str, headers: dict[str, str] | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        error.close()
        return error.code


@pytest.mark.timeout(60)
async def test_the_cli_server_guards_its_admin_port_and_can_drop_main_metrics(
    mock_server: Callable[..., Awaitable[TestServer]], tmp_path: Path
) -> None:
    mock = await mock_server(name="m")
    (tmp_path / "p.yaml").write_text(simple_policy(mock, "5s"))
    process = _start_sidecar(tmp_path, "--main-metrics", "off")
    try:
        main, admin = await asyncio.to_thread(_addresses, process)
        assert await asyncio.to_thread(_get, f"{main}/metrics") == 404
        assert await asyncio.to_thread(_get, f"{admin}/metrics") == 200
        for headers in ({"Host": "evil.example"}, {"Origin": "http://evil.example"}):
            assert await asyncio.to_thread(_get, f"{admin}/metrics", headers) == 403
    finally:
        _reap(process)
