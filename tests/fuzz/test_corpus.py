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


def cases(kind: str) -> list[Path]:
    return sorted((CORPUS / kind).iterdir())


@pytest.mark.parametrize("fmt", sorted(PATHS))
@pytest.mark.parametrize("case", cases("request"), ids=lambda path: path.name)
async def test_request_corpus(
    body_stack: Any, answer_check: Callable[[int, bytes, str], None], fmt: str, case: Path
) -> None:
    before = await body_stack.upstream_calls()
    headers = {"content-type": "application/json"}
    async with body_stack.http.post(
        body_stack.url(PATHS[fmt]), data=case.read_bytes(), headers=headers
    ) as response:
        status, body = response.status, await response.read()
        from_upstream = "x-sidecar-upstream" in response.headers
    answer_check(status, body, fmt)
    if not from_upstream:
        assert await body_stack.upstream_calls() == before
