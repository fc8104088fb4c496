"""One Redis connection per ``state:`` setting, used through ``SharedStore.run``.

Theory of operation
-------------------
Every call is bounded by the policy's ``state.timeout``. A call that fails
(connection refused, timeout, a Redis error) returns ``None`` and the caller
uses its local state instead: the sidecar never fails a request because Redis
failed. After a failure the store is *degraded*: for ``RETRY_AFTER`` seconds
calls are not even tried (no request pays a timeout while Redis is down), then
the next call tries again; a success ends the degradation. Both transitions are
logged once and exported (``sidecar_state_backend_up``,
``sidecar_state_backend_errors``).

Scripts (Lua) make every read-modify-write atomic on the server; they read the
time from Redis (``TIME``), so replicas with drifting clocks agree.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from redis.asyncio import Redis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from sidecar.policy.model import StateBackend
from sidecar.resilience.clock import Clock

log = logging.getLogger("sidecar.state")
RETRY_AFTER: Final = 1.0  # seconds between tries while Redis is unavailable


class SharedStore:
    def __init__(
        self,
        config: StateBackend,
        clock: Clock,
        on_error: Callable[[str], None] | None = None,
    ) -> None:
        assert config.url is not None
        self.config = config
        self.prefix = config.prefix
        self._clock = clock
        self._timeout = config.timeout
        self._on_error = on_error
        self._client: Redis = Redis.from_url(
            config.url.reveal(),
            socket_timeout=max(config.timeout, 0.001),
            socket_connect_timeout=max(config.timeout, 0.001),
            retry_on_timeout=False,
            health_check_interval=0,
        )
        self._scripts: dict[str, AsyncScript] = {}
        self.available = True
        self._retry_at = 0.0

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def script(self, source: str) -> AsyncScript:
        registered = self._scripts.get(source)
        if registered is None:
            registered = self._scripts[source] = self._client.register_script(source)
        return registered

    async def run(
        self, source: str, keys: Sequence[str], args: Sequence[str | int | float], op: str
    ) -> Any | None:
        """Run a Lua script; its result, or None when Redis is unavailable (use local state)."""
        script = self.script(source)
        return await self._bounded(op, lambda: script(keys=list(keys), args=list(args)))

    async def command(self, op: str, *args: str | int | float | bytes) -> Any | None:
        """One plain command (GET, SET ...); None when Redis is unavailable."""
        execute = self._client.execute_command
        return await self._bounded(op, lambda: execute(*args))  # type: ignore[no-untyped-call]

    async def _bounded(self, op: str, call: Callable[[], Awaitable[Any]]) -> Any | None:
        """*call* within the timeout; None (and degraded for a while) when it fails."""
        if not self.available and self._clock.now() < self._retry_at:
            return None
        try:
            async with asyncio.timeout(self._timeout):
                result = await call()
        except (RedisError, OSError, TimeoutError) as exc:
            self._failed(op, exc)
            return None
        if not self.available:
            self.available = True
            log.warning({"event": "state_backend_resumed", "prefix": self.prefix})
        return result

    def _failed(self, op: str, exc: BaseException) -> None:
        self._retry_at = self._clock.now() + RETRY_AFTER
        if self._on_error is not None:
            self._on_error(op)
        if self.available:
            self.available = False
            log.warning(
                {
                    "event": "state_backend_unavailable",
                    "prefix": self.prefix,
                    "operation": op,
                    "error": type(exc).__name__,
                    "fallback": "local state",
                }
            )

    async def close(self) -> None:
        with contextlib.suppress(RedisError, OSError):
            await self._client.aclose()


class SharedStores:
    """The stores by ``state:`` setting; a reload with the same setting keeps its store."""

    def __init__(self, clock: Clock, on_error: Callable[[str], None] | None = None) -> None:
        self._clock = clock
        self._on_error = on_error
        self._stores: dict[tuple[str, str, float], SharedStore] = {}
        self.current: SharedStore | None = None

    def use(self, config: StateBackend) -> SharedStore | None:
        """The store for *config* (None for the memory backend); it becomes ``current``."""
        if config.backend != "redis" or config.url is None:
            self.current = None
            return None
        key = (config.url.reveal(), config.prefix, config.timeout)
        store = self._stores.get(key)
        if store is None:
            store = self._stores[key] = SharedStore(config, self._clock, self._on_error)
        self.current = store
        return store

    def all(self) -> list[SharedStore]:
        return list(self._stores.values())

    async def close(self) -> None:
        for store in self._stores.values():
            await store.close()
        self._stores.clear()
