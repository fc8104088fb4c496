"""The prefer stage: the preferred upstream is validated, recorded, and never forwarded."""

from __future__ import annotations

import orjson
import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from sidecar.errors import InvalidRequest
from sidecar.pipeline.call import Answer, Call
from sidecar.pipeline.prefer import make_prefer
from sidecar.policy.model import Match, Route, Target, Upstream

A = Upstream("a", "http://a", "openai")
B = Upstream("b", "http://b", "openai")
ROUTE = Route("chat", Match("/v1/chat/completions"), (Target(A), Target(B)), prefer=("a", "b"))


def call(body: dict[str, object], **headers: str) -> Call:
    raw = orjson.dumps(body)
    return Call(
        request_id="rid",
        method="POST",
        path_qs="/v1/chat/completions",
        headers=CIMultiDictProxy(CIMultiDict(headers)),
        client_format="openai",
        route=ROUTE,
        body=raw,
        parsed=dict(body),
        model="gpt-4o",
        stream=False,
    )


async def following(c: Call) -> Answer:
    return Answer(200, CIMultiDict(), A)


async def test_the_body_field_is_recorded_and_removed_before_forwarding() -> None:
    c = call({"model": "gpt-4o", "preferred_provider": "b"})
    await make_prefer(ROUTE)(c, following)
    assert c.prefer == "b"
    assert c.parsed == {"model": "gpt-4o"}
    assert orjson.loads(c.body) == {"model": "gpt-4o"}


async def test_the_header_wins_over_the_field() -> None:
    c = call({"model": "gpt-4o", "preferred_provider": "b"}, **{"x-sidecar-prefer": "a"})
    await make_prefer(ROUTE)(c, following)
    assert c.prefer == "a"
    assert b"preferred_provider" not in c.body


async def test_no_preference_leaves_the_body_as_sent() -> None:
    c = call({"model": "gpt-4o"})
    body = c.body
    await make_prefer(ROUTE)(c, following)
    assert c.prefer is None
    assert c.body is body  # no re-serialisation on the usual path


@pytest.mark.parametrize("named", ["c", "A", ""])
async def test_a_name_the_route_does_not_allow_is_a_400_listing_the_allowed(named: str) -> None:
    with pytest.raises(InvalidRequest, match="allowed: a, b") as refused:
        await make_prefer(ROUTE)(call({"model": "m"}, **{"x-sidecar-prefer": named}), following)
    assert refused.value.status == 400
