"""Health, readiness, metrics, and the admin API (policy and breakers; secrets redacted).

The main port serves ``/health``, ``/ready`` and ``/metrics`` (unless switched off)
beside the proxy. The admin API (``/admin/...``, plus the same three) is a separate
application on its own port, bound to 127.0.0.1 by default. Every admin request passes
the browser guard (``admin_guard``: loopback ``Host`` unless a token is set, no
cross-site ``Origin`` or ``Sec-Fetch-Site``), then, with a token configured, needs
``Authorization: Bearer <token>``. State changes are POST only; every error is JSON.
"""

from __future__ import annotations

import asyncio
import hmac
import os
from datetime import UTC, datetime

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sidecar.admin_guard import refusal
from sidecar.policy.explain import policy_json
from sidecar.resilience.breaker import CircuitBreaker
from sidecar.state import HOLDER, LIFECYCLE, REGISTRIES, STORE


def _json(body: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


def _error(status: int, kind: str, code: str, message: str) -> web.Response:
    return _json({"error": {"message": message, "type": kind, "code": code}}, status)


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="milliseconds")


async def health(request: web.Request) -> web.Response:
    """Liveness: the process serves."""
    return _json({"status": "healthy"})


async def ready(request: web.Request) -> web.Response:
    """Readiness: 200 once a policy is loaded and not draining, 503 with a reason otherwise."""
    store = request.app[STORE]
    if request.app[LIFECYCLE].draining:
        return _json({"status": "not ready", "reason": "draining: the sidecar is stopping"}, 503)
    if store.active is None:
        return _json({"status": "not ready", "reason": "no valid policy loaded"}, 503)
    return _json({"status": "ready", "policy": store.active.hash})


async def policy(request: web.Request) -> web.Response:
    """Active hash, loaded-at, last reload error, and the effective policy."""
    store = request.app[STORE]
    error = store.last_error
    return _json(
        {
            "directory": str(store.directory),
            "hash": store.active.hash if store.active else None,
            "loaded_at": _iso(store.loaded_at),
            "reloads": store.counts,
            "last_error": {"hash": error.hash, "at": _iso(error.at), "errors": error.errors}
            if error
            else None,
            "policy": policy_json(store.active) if store.active else None,
        }
    )


async def _sync_breakers(app: web.Application, force: bool) -> None:
    """With shared state, mirror the shared breakers into the local ones first."""
    registries = app[REGISTRIES]
    store = registries.shared.current if registries.shared is not None else None
    views = registries.shared_breakers
    if store is None or views is None:
        return
    breakers = [breaker for breaker in registries.breakers.all() if breaker.policy.enabled]
    await asyncio.gather(*(views.sync(store, breaker, force) for breaker in breakers))


def _snapshot(app: web.Application, breaker: CircuitBreaker) -> dict[str, object]:
    snapshot = breaker.snapshot()
    registries = app[REGISTRIES]
    store = registries.shared.current if registries.shared is not None else None
    if store is not None and registries.shared_breakers is not None:
        view = registries.shared_breakers.view(store, breaker.key)
        snapshot["shared"] = (
            {"state": view.state, "consecutive_failures": view.failures,
             "probes_in_flight": view.probes}
            if view is not None
            else None  # Redis unavailable: the local state decides
        )  # fmt: skip
    return snapshot


async def breakers(request: web.Request) -> web.Response:
    """Every breaker: state, counts, time until half-open (shared state: as Redis has it)."""
    await _sync_breakers(request.app, force=True)
    registry = request.app[REGISTRIES].breakers
    return _json({"breakers": [_snapshot(request.app, breaker) for breaker in registry.all()]})


async def force_breaker(request: web.Request) -> web.Response:
    """POST /admin/breakers/{key}/reset | /open — for drills (every replica, when shared)."""
    registries = request.app[REGISTRIES]
    breaker = registries.breakers.find(request.match_info["key"])
    if breaker is None:
        message = "no breaker with that key (GET /admin/breakers lists them)"
        return _error(404, "invalid_request_error", "breaker_not_found", message)
    reset = request.match_info["action"] == "reset"
    breaker.force("closed" if reset else "open")
    store = registries.shared.current if registries.shared is not None else None
    if store is not None and registries.shared_breakers is not None and breaker.policy.enabled:
        await registries.shared_breakers.record(
            store, breaker.key, breaker.policy, "close" if reset else "open"
        )
    return _json(_snapshot(request.app, breaker))


async def runtime(request: web.Request) -> web.Response:
    """Process figures for soak tests and leak hunts: asyncio tasks, open fds, RSS."""
    return _json(
        {
            "tasks": len(asyncio.all_tasks()),
            "in_flight": request.app[LIFECYCLE].in_flight,
            "open_fds": _count_fds(),
            "rss_bytes": _rss_bytes(),
        }
    )


def _count_fds() -> int | None:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # not Linux
        return None


def _rss_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text format (shared breakers mirrored first, from copies ≤ 0.2 s old)."""
    await _sync_breakers(request.app, force=False)
    body = generate_latest(request.app[REGISTRIES].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_routes(app: web.Application, with_metrics: bool = True) -> None:
    """The endpoints of the main port (beside the proxy); the admin API's too."""
    app.router.add_get("/health", health)
    app.router.add_get("/ready", ready)
    if with_metrics:
        app.router.add_get("/metrics", metrics)


async def index(request: web.Request) -> web.Response:
    """GET /admin: what the admin API serves, from its own router (never out of date)."""
    endpoints = sorted(
        {
            (route.resource.canonical, route.method)
            for route in request.app.router.routes()
            if route.resource is not None and route.method != "HEAD"
        }
    )
    described = [{"method": method, "path": path} for path, method in endpoints]
    return _json({"endpoints": described})


def create_admin_app(main: web.Application, token: str | None) -> web.Application:
    """The admin API, sharing the main app's state."""
    admin = web.Application(
        middlewares=[_json_errors, _refuse_browsers(token is not None), _require_token(token)]
    )
    admin[STORE] = main[STORE]
    admin[REGISTRIES] = main[REGISTRIES]
    admin[LIFECYCLE] = main[LIFECYCLE]
    admin[HOLDER] = main[HOLDER]
    add_routes(admin)
    admin.router.add_get("/admin", index)
    admin.router.add_get("/admin/policy", policy)
    admin.router.add_get("/admin/breakers", breakers)
    admin.router.add_get("/admin/runtime", runtime)
    admin.router.add_post("/admin/breakers/{key}/{action:reset|open}", force_breaker)
    return admin


@web.middleware
async def _json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The router's 404 and 405 (with its ``Allow``) as JSON, like every admin error."""
    try:
        return await handler(request)
    except web.HTTPMethodNotAllowed as error:
        allow = error.headers["Allow"]
        message = f"this endpoint takes only {allow}: state changes are POST, reads GET"
        response = _error(405, "invalid_request_error", "method_not_allowed", message)
        response.headers["Allow"] = allow
        return response
    except web.HTTPNotFound:
        return _error(404, "invalid_request_error", "not_found", "no such admin endpoint")


def _refuse_browsers(token_set: bool) -> Middleware:
    """Refuse what only a web page would send: a foreign Host, Origin or Sec-Fetch-Site."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        refused = refusal(request.headers, token_set)
        if refused is not None:
            return _error(403, "permission_error", refused.code, refused.message)
        return await handler(request)

    return guard


def _require_token(token: str | None) -> Middleware:
    expected = token.encode() if token else None

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        if expected is not None:
            given = request.headers.get("Authorization", "")
            presented = given[7:].encode() if given.startswith("Bearer ") else b""
            if not hmac.compare_digest(presented, expected):
                message = (
                    "the admin API needs 'Authorization: Bearer <token>' "
                    "(the value of SIDECAR_ADMIN_TOKEN)"
                )
                return _error(401, "authentication_error", "admin_token_required", message)
        return await handler(request)

    return check
