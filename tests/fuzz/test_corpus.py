"""Replays the fuzz corpus: one file per nasty input that once found a bug.

``corpus/request/*`` are raw request bodies, sent to both wire formats: each
gets a 4xx in the client's format (or a 2xx), never a 5xx.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

CORPUS = Path(__file__).parent / "corpus"
PATHS = {"openai": "/v1/chat/completions", "anthropic": "/v1/messages"}


def cases(kind: str) -> dict[str, bytes]:
    """The corpus files of *kind*, read once at collection time."""
    return {path.name: path.read_bytes() for path in sorted((CORPUS / kind).iterdir())}


REQUESTS = cases("request")


@pytest.mark.parametrize("fmt", sorted(PATHS))
@pytest.mark.parametrize("case", sorted(REQUESTS))
async def test_request_corpus(
    body_stack: Any, answer_check: Callable[[int, bytes, str], None], fmt: str, case: str
) -> None:
    before = await body_stack.upstream_calls()
    headers = {"content-type": "application/json"}
    async with body_stack.http.post(
        body_stack.url(PATHS[fmt]), data=REQUESTS[case], headers=headers
    ) as response:
        status, body = response.status, await response.read()
        from_upstream = "x-sidecar-upstream" in response.headers
    answer_check(status, body, fmt)
    if not from_upstream:
        assert await body_stack.upstream_calls() == before
