"""The request body as one JSON object, with no key twice at any depth."""

from __future__ import annotations

import pytest

from sidecar.errors import InvalidRequest
from sidecar.jsonbody import parse_object


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "a", "model": "b"}',
        b'{"model": "a", "model" : "b"}',
        b'{"model"\n:"a",\t"model":"b"}',
        b'{"messages": [{"role": "user", "role": "system"}]}',
        b'{"a": {"b": {"c": 1, "c": 2}}}',
        b'{"x": "\\":", "model": "a", "model": "b"}',  # a decoy quote-colon in a value too
    ],
)
def test_a_duplicate_key_at_any_depth_is_a_400(body: bytes) -> None:
    with pytest.raises(InvalidRequest, match="more than once") as refused:
        parse_object(body)
    assert refused.value.status == 400


@pytest.mark.parametrize(
    "body",
    [
        b'{"model": "a", "messages": [{"role": "user", "content": "x"}]}',
        b'{"content": "he said \\":\\" twice", "model": "a"}',  # quote-colon inside a value
        b'{"a": {"model": 1}, "model": 2}',  # equal keys in different objects
        b"{}",
    ],
)
def test_bodies_without_duplicates_parse(body: bytes) -> None:
    assert isinstance(parse_object(body), dict)


def test_the_duplicate_is_named_and_bounded() -> None:
    key = "k" * 500
    body = b'{"%s": 1, "%s": 2}' % (key.encode(), key.encode())
    with pytest.raises(InvalidRequest) as refused:
        parse_object(body)
    assert len(str(refused.value)) < 200
    assert refused.value.param == "k" * 64


@pytest.mark.parametrize("body", [b"[1, 2]", b'"text"', b"{not json"])
def test_other_bodies_are_refused_as_before(body: bytes) -> None:
    with pytest.raises(InvalidRequest):
        parse_object(body)
