"""The admin API's browser guard as pure header checks (sidecar/admin_guard.py)."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict

from sidecar.admin_guard import (
    FETCH_SITE_REFUSED,
    HOST_REFUSED,
    ORIGIN_REFUSED,
    is_loopback,
    refusal,
    same_loopback_origin,
    split_authority,
)


@pytest.mark.parametrize(
    ("authority", "parts"),
    [
        ("localhost", ("localhost", 80)),
        ("LOCALHOST:8081", ("localhost", 8081)),
        ("127.0.0.1:", ("127.0.0.1", 80)),  # RFC 3986: an empty port is the default
        ("[::1]", ("::1", 80)),
        ("[0:0:0:0:0:0:0:1]:9", ("::1", 9)),
        ("example.com:443", ("example.com", 443)),
    ],
)
def test_split_authority(authority: str, parts: tuple[str, int]) -> None:
    assert split_authority(authority) == parts


@pytest.mark.parametrize(
    "authority",
    ["", "::1", "[::1", "[evil]", "a:b:c", "host:99999", "host:123456", "user@localhost",
     "localhost/x", "[::1]x"],
)  # fmt: skip
def test_split_authority_refuses_what_is_not_a_host(authority: str) -> None:
    assert split_authority(authority) is None


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.255.0.9", True), ("::1", True), ("LocalHost", True),
     ("127.1", False), ("0.0.0.0", False), ("::", False), ("localhost.", False),
     ("foo.localhost", False), ("10.0.0.1", False)],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        ("http://127.0.0.1:8081", "127.0.0.1:8081", True),
        ("http://localhost", "localhost:80", True),
        ("https://localhost", "localhost:443", True),
        ("http://[::1]:8081", "[::1]:8081", True),
        ("http://localhost:3000", "localhost:8081", False),  # another local site
        ("http://localhost:8081", "127.0.0.1:8081", False),  # another origin, same address
        ("http://evil.example:8081", "evil.example:8081", False),  # rebound: not loopback
        ("http://127.0.0.1:8081", None, False),
        ("null", "127.0.0.1:8081", False),
        ("http://127.0.0.1:8081/path", "127.0.0.1:8081", False),  # not an origin
        ("ftp://127.0.0.1:8081", "127.0.0.1:8081", False),
    ],
)
def test_same_loopback_origin(origin: str, host: str | None, same: bool) -> None:
    assert same_loopback_origin(origin, host) is same


def test_refusal_order_and_the_token() -> None:
    def check(token_set: bool = False, **headers: str) -> object:
        return refusal(CIMultiDict((k.replace("_", "-"), v) for k, v in headers.items()), token_set)

    assert check() is None  # an HTTP/1.0 tool without Host
    assert check(Host="127.0.0.1:8081") is None
    assert check(Host="evil.example") is HOST_REFUSED
    assert check(True, Host="evil.example") is None
    assert check(True, Host="evil.example", Origin="http://evil.example") is ORIGIN_REFUSED
    assert check(Host="localhost", Origin="http://evil.example") is ORIGIN_REFUSED
    assert check(Host="localhost", Sec_Fetch_Site="same-site") is FETCH_SITE_REFUSED
    assert check(Host="localhost", Sec_Fetch_Site="None") is None
    assert check(Host="evil.example", Origin="null") is HOST_REFUSED  # Host first
