"""The one pooled ClientSession every upstream attempt goes through."""

from __future__ import annotations

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

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


SESSION = web.AppKey("upstream_session", ClientSession)
