"""Header hygiene: hop-by-hop stripped both ways, upstream auth from the policy only."""

from __future__ import annotations

from dataclasses import replace

from multidict import CIMultiDict, CIMultiDictProxy

from sidecar.headers import (
    CLIENT_CLAIMS,
    CREDENTIALS,
    HOP_BY_HOP,
    client_headers,
    upstream_headers,
)
from sidecar.policy.model import REDACTED, Auth, Secret, Upstream
from sidecar.policy.redaction import Scrubber

OPENAI = Upstream(
    "openai",
    "https://api.openai.com",
    "openai",
    Auth("Authorization", Secret("Bearer sk-policy")),
)
ANTHROPIC = Upstream(
    "anthropic", "https://api.anthropic.com", "anthropic", Auth("x-api-key", Secret("ak-policy"))
)
OPEN = Upstream("local", "http://localhost:8000", "openai")  # no auth in the policy
PASS = Upstream("byok", "https://api.openai.com", "openai", client_auth="pass")  # opts in
CLIENT_CREDENTIALS = (
    ("Authorization", "Bearer sk-client"),
    ("x-api-key", "client-key"),
    ("api-key", "azure-key"),
    ("x-goog-api-key", "goog"),
)


def headers(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


def test_upstream_strips_hop_by_hop_and_framing() -> None:
    incoming = headers(
        ("Host", "localhost:8080"),
        ("Content-Length", "123"),
        ("Content-Encoding", "gzip"),  # the sidecar forwards bodies decoded (sidecar.body)
        ("Accept-Encoding", "gzip, br"),
        ("Connection", "keep-alive"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Authorization", "Basic xyz"),
        ("Proxy-Connection", "keep-alive"),
        ("TE", "trailers"),
        ("Trailer", "x-checksum"),
        ("Transfer-Encoding", "chunked"),
        ("Upgrade", "h2c"),
        ("Content-Type", "application/json"),
        ("Accept", "text/event-stream"),
        ("OpenAI-Beta", "assistants=v2"),
    )
    out = upstream_headers(incoming, OPEN, "rid-1")
    assert dict(out) == {
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        "OpenAI-Beta": "assistants=v2",
        "x-request-id": "rid-1",
    }


def test_upstream_strips_headers_named_in_connection() -> None:
    incoming = headers(
        ("Connection", "close, X-Hop , x-other"),
        ("X-Hop", "1"),
        ("x-OTHER", "2"),
        ("X-Stay", "3"),
    )
    out = upstream_headers(incoming, OPEN, "rid")
    assert "X-Hop" not in out
    assert "x-other" not in out
    assert out["X-Stay"] == "3"


def test_every_connection_header_is_honoured() -> None:
    incoming = headers(
        ("Connection", "x-one"), ("Connection", "x-two"), ("X-One", "1"), ("X-Two", "2")
    )
    assert "X-Two" not in upstream_headers(incoming, OPEN, "rid")
    assert "X-Two" not in client_headers(incoming)


def test_upstream_auth_replaces_client_credentials() -> None:
    incoming = headers(
        ("Authorization", "Bearer sk-client"),
        ("x-api-key", "client-key"),
        ("api-key", "azure-key"),
        ("x-goog-api-key", "goog"),
        ("anthropic-version", "2023-06-01"),
    )
    out = upstream_headers(incoming, ANTHROPIC, "rid")
    assert out.getall("x-api-key") == ["ak-policy"]
    assert "Authorization" not in out
    assert "api-key" not in out
    assert "x-goog-api-key" not in out
    assert out["anthropic-version"] == "2023-06-01"

    out = upstream_headers(incoming, OPENAI, "rid")
    assert out.getall("authorization") == ["Bearer sk-policy"]
    assert "x-api-key" not in out
    assert "api-key" not in out


def test_upstream_auth_with_a_custom_header() -> None:
    custom = Upstream("gw", "http://gw", "openai", Auth("X-Gateway-Token", Secret("gw-token")))
    incoming = headers(("Authorization", "Bearer sk-client"), ("x-gateway-token", "forged"))
    out = upstream_headers(incoming, custom, "rid")
    assert out.getall("x-gateway-token") == ["gw-token"]
    assert "Authorization" not in out


def test_client_credentials_dropped_without_auth_by_default() -> None:
    # An upstream without `auth` (vLLM, Ollama, a second OpenAI-compatible provider) does
    # not get the key the app meant for another provider.
    out = upstream_headers(headers(*CLIENT_CREDENTIALS, ("OpenAI-Beta", "v2")), OPEN, "rid")
    assert dict(out) == {"OpenAI-Beta": "v2", "x-request-id": "rid"}
    out = upstream_headers(headers(*CLIENT_CREDENTIALS), OPEN, "rid", "openai")
    assert dict(out) == {"x-request-id": "rid"}


def test_client_credentials_pass_to_an_upstream_that_opts_in() -> None:
    out = upstream_headers(headers(*CLIENT_CREDENTIALS), PASS, "rid", "openai")
    assert list(out.items()) == [*CLIENT_CREDENTIALS, ("x-request-id", "rid")]


def test_an_opt_in_never_takes_a_key_of_the_other_wire_format() -> None:
    out = upstream_headers(headers(*CLIENT_CREDENTIALS), PASS, "rid", "anthropic")
    assert dict(out) == {"x-request-id": "rid"}


def test_an_opt_in_with_auth_keeps_the_policys_header() -> None:
    # A gateway that takes its own token and forwards the app's provider key.
    gateway = Upstream(
        "gw", "http://gw", "openai", Auth("X-Gateway-Token", Secret("gw")), client_auth="pass"
    )
    incoming = headers(("Authorization", "Bearer sk-client"), ("x-gateway-token", "forged"))
    out = upstream_headers(incoming, gateway, "rid", "openai")
    assert out.getall("x-gateway-token") == ["gw"]
    assert out.getall("authorization") == ["Bearer sk-client"]


def test_client_credentials_dropped_when_the_route_checks_sidecar_keys() -> None:
    incoming = headers(("Authorization", "Bearer sidecar-key"), ("x-api-key", "sidecar-key"))
    for upstream in (OPEN, PASS):  # even to an upstream that opts in
        out = upstream_headers(incoming, upstream, "rid", "openai", sidecar_keys=True)
        assert dict(out) == {"x-request-id": "rid"}


def test_client_host_overrides_are_not_forwarded() -> None:
    incoming = headers(
        ("Host", "evil.example"),
        ("X-Forwarded-Host", "evil.example"),
        ("X-Original-URL", "/admin"),
        ("X-Rewrite-URL", "/admin"),
    )
    out = upstream_headers(incoming, OPENAI, "rid")
    assert set(out) == {"Authorization", "x-request-id"}


def test_client_claims_about_itself_and_cookies_are_not_forwarded() -> None:
    incoming = headers(
        ("Forwarded", "for=10.0.0.1;host=evil.example"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("X-Real-IP", "10.0.0.1"),
        ("X-HTTP-Method-Override", "DELETE"),
        ("X-Method-Override", "DELETE"),
        ("Cookie", "session=abc"),
        ("X-Tag", "kept"),
    )
    out = upstream_headers(incoming, OPEN, "rid")
    assert dict(out) == {"X-Tag": "kept", "x-request-id": "rid"}


CLAIMS = (
    ("Forwarded", "for=10.0.0.1"),
    ("X-Forwarded-For", "10.0.0.1"),
    ("X-Real-IP", "10.0.0.1"),
    ("Cookie", "session=abc"),
    ("X-Tag", "kept"),
)


def test_an_upstream_can_allow_named_dropped_headers() -> None:
    allowed = frozenset({"x-forwarded-for", "cookie"})
    for base in (OPEN, PASS):
        upstream = replace(base, forward_headers=allowed)
        out = upstream_headers(headers(*CLAIMS, *CLIENT_CREDENTIALS), upstream, "rid", "openai")
        assert out["X-Forwarded-For"] == "10.0.0.1"
        assert out["Cookie"] == "session=abc"
        assert "Forwarded" not in out  # not named: still dropped
        assert "X-Real-IP" not in out
        # Credentials keep their own rule (client_auth), whatever forward_headers says.
        assert ("Authorization" in out) == (base is PASS)
    assert "Cookie" not in upstream_headers(headers(*CLAIMS), OPEN, "rid")  # others: dropped


def test_forward_headers_never_let_hop_by_hop_host_or_credentials_through() -> None:
    # The compiler refuses such names; an Upstream built by hand cannot either.
    named = frozenset({"host", "content-length", "connection", "authorization", "cookie"})
    upstream = replace(OPEN, forward_headers=named)
    incoming = headers(
        ("Host", "evil.example"),
        ("Content-Length", "1"),
        ("Connection", "close"),
        ("Authorization", "Bearer sk-client"),
        ("Cookie", "a=1"),
    )
    assert dict(upstream_headers(incoming, upstream, "rid")) == {
        "Cookie": "a=1",
        "x-request-id": "rid",
    }


def test_what_a_policy_may_allow_is_never_hop_by_hop_framing_host_or_a_credential() -> None:
    never = HOP_BY_HOP | set(CREDENTIALS) | {"host", "content-length", "content-encoding"}
    assert not CLIENT_CLAIMS & never


def test_client_headers_drop_echoed_credentials() -> None:
    custom = Upstream("gw", "http://gw", "openai", Auth("X-Gateway-Token", Secret("gw-token")))
    response = headers(
        ("Authorization", "Bearer sk-policy"),
        ("x-api-key", "ak"),
        ("api-key", "az"),
        ("X-Gateway-Token", "gw-token"),
        ("Content-Type", "application/json"),
    )
    assert list(client_headers(response, custom).items()) == [("Content-Type", "application/json")]


def test_client_headers_redact_the_policys_secrets_from_every_value() -> None:
    response = headers(
        ("X-Debug-Auth", "Bearer sk-policy-key"),
        ("X-Trace", "key=sk-policy-key; user=1"),
        ("X-Tag", "kept"),
    )
    scrubber = Scrubber(["Bearer sk-policy-key"])
    assert list(client_headers(response, OPENAI, scrubber).items()) == [
        ("X-Debug-Auth", REDACTED),
        ("X-Trace", f"key={REDACTED}; user=1"),
        ("X-Tag", "kept"),
    ]


def test_request_id_is_always_set() -> None:
    incoming = headers(("X-Request-Id", "from-client"), ("x-request-id", "dupe"))
    out = upstream_headers(incoming, OPENAI, "rid-7")
    assert out.getall("x-request-id") == ["rid-7"]
    assert upstream_headers(headers(), OPEN, "rid-8") == CIMultiDict({"x-request-id": "rid-8"})


def test_repeated_headers_are_kept() -> None:
    incoming = headers(("X-Tag", "a"), ("X-Tag", "b"))
    assert upstream_headers(incoming, OPEN, "rid").getall("x-tag") == ["a", "b"]


def test_input_is_not_modified() -> None:
    incoming = headers(("Authorization", "Bearer sk-client"), ("Connection", "close"))
    upstream_headers(incoming, OPENAI, "rid")
    assert dict(incoming) == {"Authorization": "Bearer sk-client", "Connection": "close"}


def test_client_headers_strip_hop_by_hop_and_framing() -> None:
    response = headers(
        ("Content-Type", "text/event-stream"),
        ("Content-Length", "10"),
        ("Content-Encoding", "gzip"),
        ("Transfer-Encoding", "chunked"),
        ("Connection", "keep-alive, X-Internal"),
        ("Keep-Alive", "timeout=5"),
        ("X-Internal", "secret-route"),
        ("Server", "cloudflare"),
        ("Date", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ("x-ratelimit-remaining-requests", "99"),
        ("retry-after", "2"),
        ("openai-processing-ms", "12"),
        ("Set-Cookie", "a=1"),
        ("Set-Cookie", "b=2"),
        ("WWW-Authenticate", 'Bearer realm="sk-echoed"'),
    )
    out = client_headers(response)
    assert list(out.items()) == [
        ("Content-Type", "text/event-stream"),
        ("x-ratelimit-remaining-requests", "99"),
        ("retry-after", "2"),
        ("openai-processing-ms", "12"),
    ]


def test_hop_by_hop_set() -> None:
    assert {
        "connection",
        "keep-alive",
        "transfer-encoding",
        "upgrade",
        "te",
        "trailer",
    } <= HOP_BY_HOP
    assert all(name == name.lower() for name in HOP_BY_HOP)


def test_secret_is_never_in_repr() -> None:
    assert "sk-policy" not in repr(OPENAI)
    assert "sk-policy" not in str(OPENAI.auth)
