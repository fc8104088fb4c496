"""``create_app(config)``: the sidecar's aiohttp application."""

from __future__ import annotations

import logging
import os
import random
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from aiohttp import web

from sidecar import admin, proxy
from sidecar.admin_guard import is_loopback
from sidecar.body import HARD_BODY_LIMIT
from sidecar.lifecycle import Lifecycle
from sidecar.observability.logs import log_breaker_event
from sidecar.observability.refusals import RefusalLog
from sidecar.pipeline.build import Registries, Runtime, make_runtime
from sidecar.policy.model import PolicySet
from sidecar.policy.store import PolicyStore
from sidecar.policy.watcher import PolicyWatcher
from sidecar.resilience.breaker import BreakerRegistry
from sidecar.resilience.clock import Clock, SystemClock
from sidecar.state import (
    ADMIN_APP,
    BODY_TIMEOUT,
    HOLDER,
    LIFECYCLE,
    REFUSALS,
    REGISTRIES,
    STORE,
    RuntimeHolder,
)
from sidecar.upstream import POOLS, UpstreamPools

log = logging.getLogger("sidecar")
DEFAULT_PORT: Final = 8080
# Request-head limits of the main port (aiohttp's parser answers 400 beyond them).
MAX_LINE_SIZE: Final = 8190  # the request line, and any one header line
MAX_FIELD_SIZE: Final = 8190  # one header value
MAX_HEADERS: Final = 100  # header fields per request


@dataclass(frozen=True, slots=True)
class SidecarConfig:
    policies: Path = Path("policies")
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    poll_interval: float = 10.0  # safety-net hash poll of the policy directory
    watch: bool = True  # file-event watch; the hash poll always runs
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    clock: Clock = field(default_factory=SystemClock)
    seed: int | None = None  # seeds backoff jitter (tests, reproducible drills)
    admin_host: str = "127.0.0.1"
    admin_port: int = 8081
    admin_token: str | None = field(default=None, repr=False)  # SIDECAR_ADMIN_TOKEN
    main_metrics: bool = True  # /metrics on the main port too (the admin port always has it)
    grace: float = 25.0  # seconds in-flight requests get to finish on SIGTERM
    # Slow clients: the request head must arrive within header_timeout of the connection
    # opening (or of the previous answer on a kept-alive connection; idle connections
    # close then too); the body within body_timeout of the head.
    header_timeout: float = 30.0
    body_timeout: float = 30.0

    def __post_init__(self) -> None:
        for name, port in (("port", self.port), ("admin_port", self.admin_port)):
            if not 0 <= port <= 65535:
                raise ValueError(f"{name} must be 0..65535, got {port}")
        if self.poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        if self.grace < 0:
            raise ValueError("grace must be >= 0")
        if self.header_timeout <= 0 or self.body_timeout <= 0:
            raise ValueError("header_timeout and body_timeout must be positive")
        if not self.admin_token and not is_loopback(self.admin_host):
            raise ValueError(
                f"the admin API on {self.admin_host} would be reachable from outside: "
                "set SIDECAR_ADMIN_TOKEN (or bind it to 127.0.0.1)"
            )


def server_options(config: SidecarConfig) -> dict[str, float | int | bool]:
    """The main port's server settings (``web.AppRunner`` keywords): head size limits, the
    slow-client timeout for request heads (aiohttp's keep-alive timer, which runs from
    the connection's start and is not reset by bytes that do not complete a request), and
    no automatic request decompression: ``sidecar.body`` decodes, with its own caps."""
    return {
        "auto_decompress": False,
        "keepalive_timeout": config.header_timeout,
        "max_line_size": MAX_LINE_SIZE,
        "max_field_size": MAX_FIELD_SIZE,
        "max_headers": MAX_HEADERS,
    }


def create_app(config: SidecarConfig) -> web.Application:
    app = web.Application(client_max_size=HARD_BODY_LIMIT)
    draining = app[LIFECYCLE] = Lifecycle()
    registries = Registries(
        config.clock, BreakerRegistry(config.clock), rng=random.Random(config.seed)
    )
    registries.breakers.listeners.append(log_breaker_event)
    shared = registries.shared
    assert shared is not None
    pools = app[POOLS] = UpstreamPools()

    def build(policy: PolicySet) -> Runtime:
        """The runtime of *policy*; a failed build leaves the shared-state choice as it was."""
        before = shared.current
        try:
            return make_runtime(policy, registries, pools)
        except BaseException:
            shared.current = before
            raise

    store = PolicyStore(config.policies, config.environ, build)
    holder = RuntimeHolder(store)
    registries.metrics.watch(
        store,
        registries.breakers,
        lambda: draining.in_flight,
        lambda: shared.current.available if shared.current is not None else None,
    )
    app[STORE] = store
    app[HOLDER] = holder
    app[REGISTRIES] = registries
    app[BODY_TIMEOUT] = config.body_timeout
    refusals = app[REFUSALS] = RefusalLog(config.clock)
    admin.add_routes(app, with_metrics=config.main_metrics)
    # (?s): a path with a newline (%0A) is the proxy's 400 too, not aiohttp's plain-text 404
    app.router.add_route("*", "/{tail:(?s:.*)}", proxy.serve)
    app[ADMIN_APP] = admin.create_admin_app(app, config.admin_token)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        result = store.reload("startup")
        if result.outcome == "refused":
            log.error("starting without a policy: every request gets 503 until it is fixed")
        watcher = PolicyWatcher(store, config.poll_interval)
        watcher.start(events=config.watch)
        yield
        await watcher.stop()
        await refusals.close()  # the last summary of suppressed refusal lines
        await pools.close()
        await shared.close()

    app.cleanup_ctx.append(lifecycle)
    return app
