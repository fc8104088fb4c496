"""The sidecar's own error answers: status, retry advice, request id, relayed upstream bodies."""

from __future__ import annotations

import json

import pytest

from sidecar.errors import (
    BodyTimeout,
    Draining,
    NotReady,
    RateLimited,
    RouteOverloaded,
    SidecarError,
    UpstreamAuthFailed,
    UpstreamUnavailable,
    error_response,
    relayed_error_body,
)
from sidecar.pipeline.attempt import DeadlineExceeded
from sidecar.pipeline.fallback import AllBreakersOpen
from sidecar.pipeline.validate import SchemaViolation

RID = "req-42"

FINAL = [
    SidecarError("internal"),
    UpstreamUnavailable("every upstream failed"),
    UpstreamAuthFailed("the upstream refused the key"),
    AllBreakersOpen("breakers open", 12.0),
    DeadlineExceeded("deadline ran out"),
    SchemaViolation("'messages' must be a non-empty list", param="messages"),
]
COME_BACK = [
    RateLimited("route limit", 2.5),
    Draining("shutting down"),
    RouteOverloaded("too many in flight"),
    NotReady("no policy yet"),
]


@pytest.mark.parametrize("error", FINAL, ids=lambda e: e.code)
@pytest.mark.parametrize("fmt", ["openai", "anthropic"])
def test_final_errors_tell_the_sdk_not_to_retry(error: SidecarError, fmt: str) -> None:
    response = error_response(error, fmt, RID)  # type: ignore[arg-type]
    assert response.headers["x-should-retry"] == "false"
    assert response.headers["x-request-id"] == RID
    assert response.body is not None
    assert json.loads(bytes(response.body))["request_id"] == RID  # type: ignore[arg-type]


@pytest.mark.parametrize("error", COME_BACK, ids=lambda e: e.code)
def test_come_back_later_errors_say_retry_and_when(error: SidecarError) -> None:
    response = error_response(error, "openai", RID)
    assert response.headers["x-should-retry"] == "true"
    assert int(response.headers["Retry-After"]) >= 1


def test_route_rate_limit_rounds_its_wait_up() -> None:
    response = error_response(RateLimited("route limit", 2.5), "anthropic", RID)
    assert (response.status, response.headers["Retry-After"]) == (429, "3")


def test_a_body_timeout_leaves_retrying_to_the_sdk() -> None:
    assert "x-should-retry" not in error_response(BodyTimeout("slow"), "openai", RID).headers


def test_invalid_body_is_a_400_naming_the_field() -> None:
    error = SchemaViolation("'messages' must be a non-empty list", param="messages")
    response = error_response(error, "openai", RID)
    assert response.status == 400
    assert response.body is not None
    body = json.loads(bytes(response.body))  # type: ignore[arg-type]
    assert body["error"] == {
        "message": "'messages' must be a non-empty list",
        "type": "invalid_request_error",
        "code": "invalid_request_body",
        "param": "messages",
    }
    anthropic = error_response(error, "anthropic", RID)
    assert anthropic.body is not None
    assert json.loads(bytes(anthropic.body))["error"]["type"] == "invalid_request_error"  # type: ignore[arg-type]


def test_relayed_openai_error_gains_the_request_id() -> None:
    upstream = {"error": {"message": "boom", "type": "server_error", "code": None}}
    body = json.loads(relayed_error_body(json.dumps(upstream).encode(), RID))
    assert body == {**upstream, "request_id": RID}


def test_relayed_anthropic_error_keeps_the_upstream_id_aside() -> None:
    upstream = {"type": "error", "error": {"type": "api_error", "message": "x"}, "request_id": "u1"}
    body = json.loads(relayed_error_body(json.dumps(upstream).encode(), RID))
    assert body["request_id"] == RID
    assert body["upstream_request_id"] == "u1"
    assert body["error"] == upstream["error"]


@pytest.mark.parametrize("raw", [b"<html>bad gateway</html>", b"[1, 2]", b"", b'"text"'])
def test_relayed_non_object_bodies_go_back_as_they_came(raw: bytes) -> None:
    assert relayed_error_body(raw, RID) == raw
