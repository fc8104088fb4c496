"""The admin API's guard against web pages: DNS rebinding (``Host``) and CSRF (``Origin``,
``Sec-Fetch-Site``). Pure checks on request headers; ``admin`` turns a refusal into a 403.

Theory of operation. A page in a browser on the sidecar's host can send requests to
``127.0.0.1:8081`` (CSRF), and, by pointing its own name at 127.0.0.1 (DNS rebinding),
even read the answers: the browser then thinks the admin API is the page's own origin.
Browsers send the Host they aimed at, ``Origin`` on every cross-origin fetch and POST,
and (current ones) ``Sec-Fetch-Site`` on every request; tools (curl, SDKs, Prometheus)
send neither of the last two, so:

- ``Host`` must name a loopback address (``localhost``, 127.0.0.0/8, ``[::1]``, any
  port) unless an admin token is set: a rebound page sends its own name.
- ``Origin``, when present, must be the admin API's own loopback origin (a page on
  another local port is another site).
- ``Sec-Fetch-Site`` may be absent, ``none`` (typed in the address bar) or
  ``same-origin``; ``cross-site``, ``same-site`` and anything else are refused.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

# host [":" port], the host a name, an IPv4 address or a bracketed IPv6 literal.
_AUTHORITY: Final = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[^:\[\]/@]+))(?::(?P<port>\d{0,5}))?"
)
_ORIGIN: Final = re.compile(r"(?P<scheme>https?)://(?P<authority>[^/?#]+)")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
ALLOWED_FETCH_SITES: Final = frozenset({"none", "same-origin"})


def is_loopback(host: str) -> bool:
    """A loopback address (127.0.0.0/8, ::1) or the name ``localhost``."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() == "localhost"


def split_authority(authority: str, default_port: int = 80) -> tuple[str, int] | None:
    """``(host, port)`` of a ``Host`` value (host lower-cased, IPv6 without brackets), or
    None when it is not one."""
    found = _AUTHORITY.fullmatch(authority)
    if found is None:
        return None
    port = int(found["port"]) if found["port"] else default_port
    if port > 65535:
        return None
    if found["v6"] is not None:
        try:
            return str(ipaddress.IPv6Address(found["v6"])), port
        except ValueError:
            return None
    return found["name"].lower(), port


def loopback_authority(authority: str) -> bool:
    """A ``Host`` value naming a loopback address, with or without a port."""
    parts = split_authority(authority)
    return parts is not None and is_loopback(parts[0])


def same_loopback_origin(origin: str, host: str | None) -> bool:
    """*origin* is a loopback origin with the request's own host and port."""
    found = _ORIGIN.fullmatch(origin)
    if found is None or host is None:
        return False
    theirs = split_authority(found["authority"], _DEFAULT_PORTS[found["scheme"]])
    ours = split_authority(host)
    return theirs is not None and is_loopback(theirs[0]) and theirs == ours


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is refused: a stable code and a message naming the rule (never the
    client's value)."""

    code: str
    message: str


HOST_REFUSED: Final = Refusal(
    "admin_host_refused",
    "the admin API answers only to a loopback Host (localhost, 127.0.0.0/8, [::1]) "
    "unless SIDECAR_ADMIN_TOKEN is set",
)
ORIGIN_REFUSED: Final = Refusal(
    "admin_cross_site_refused",
    "browser requests from another origin are refused (Origin is not this admin API)",
)
FETCH_SITE_REFUSED: Final = Refusal(
    "admin_cross_site_refused",
    "browser requests from another site are refused (Sec-Fetch-Site)",
)


def loopback_origin(origin: str) -> bool:
    """*origin* is a page served from this host (any loopback address or port)."""
    found = _ORIGIN.fullmatch(origin)
    if found is None:
        return False
    theirs = split_authority(found["authority"], _DEFAULT_PORTS[found["scheme"]])
    return theirs is not None and is_loopback(theirs[0])


def cross_site(headers: Mapping[str, str]) -> bool:
    """The main port's guard: a browser request from a page that is not on this host.

    The proxy serves apps, not web pages; a page elsewhere that gets a browser on the
    host to send requests to it would spend the sidecar's provider keys. Tools send
    neither header; a page on this host (a local dev UI) is let through."""
    origin = headers.get("Origin")
    if origin is not None and not loopback_origin(origin):
        return True
    site = headers.get("Sec-Fetch-Site")
    return site is not None and site.lower() == "cross-site"


def refusal(headers: Mapping[str, str], token_set: bool) -> Refusal | None:
    """Why a request with these (case-insensitive) headers is refused, or None. A second
    ``Host`` line never gets here: aiohttp's parser answers 400."""
    host = headers.get("Host")  # None only from HTTP/1.0 tools: browsers always send it
    if not token_set and host is not None and not loopback_authority(host):
        return HOST_REFUSED
    origin = headers.get("Origin")
    if origin is not None and not same_loopback_origin(origin, host):
        return ORIGIN_REFUSED
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site.lower() not in ALLOWED_FETCH_SITES:
        return FETCH_SITE_REFUSED
    return None
