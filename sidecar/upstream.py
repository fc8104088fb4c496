"""The pooled ClientSessions upstream attempts go through: one per upstream, with its limit."""

from __future__ import annotations

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

from sidecar.policy.model import Upstream

# Per-attempt timeouts are set on each request; the session has none of its own.
_NO_TIMEOUT = ClientTimeout(total=None, connect=None, sock_connect=None, sock_read=None)


def make_session(limit: int = 1024, limit_per_host: int = 256) -> ClientSession:
    """A keep-alive session with explicit connection limits and no client-side magic."""
    connector = TCPConnector(
        limit=limit,
        limit_per_host=limit_per_host,
        keepalive_timeout=30,
        ttl_dns_cache=60,
    )
    return ClientSession(
        connector=connector,
        timeout=_NO_TIMEOUT,
        auto_decompress=True,
        raise_for_status=False,
        skip_auto_headers=("User-Agent",),
    )


class UpstreamPools:
    """One session per upstream name, its connector capped at ``pool.max_connections``.

    A session per upstream (not aiohttp's ``limit_per_host``, which is keyed by host and
    port) so that two upstreams on one host each get their own limit. The session
    survives policy reloads while the limit stays; a changed limit gets a new session,
    and the old one (still serving requests that started before) closes at shutdown.
    """

    def __init__(self) -> None:
        self._sessions: dict[str, tuple[int, ClientSession]] = {}
        self._retired: list[ClientSession] = []

    def session_for(self, upstream: Upstream) -> ClientSession:
        current = self._sessions.get(upstream.name)
        if current is not None and current[0] == upstream.max_connections:
            return current[1]
        if current is not None:
            self._retired.append(current[1])
        session = make_session(limit=upstream.max_connections, limit_per_host=0)
        self._sessions[upstream.name] = (upstream.max_connections, session)
        return session

    async def close(self) -> None:
        for session in [*(s for _, s in self._sessions.values()), *self._retired]:
            await session.close()
        self._sessions.clear()
        self._retired.clear()


POOLS = web.AppKey("upstream_pools", UpstreamPools)
