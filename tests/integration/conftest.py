"""Fixtures for the tests that use a real Redis (REDIS_URL, default 127.0.0.1:6379/0).

``redis_url`` is that URL; ``prefix`` is a key prefix of the test's own
(``test-<uuid>``), whose keys are deleted afterwards. When no Redis answers the test
is skipped, except under CI=true, where that is a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import redis

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture
def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def prefix() -> Iterator[str]:
    """A key prefix of this test's own on REDIS_URL; its keys are deleted afterwards."""
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.ping()
    except (redis.RedisError, OSError) as error:
        client.close()
        reason = f"no Redis at {REDIS_URL} ({type(error).__name__}); set REDIS_URL"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: the Redis tests must run)")
        pytest.skip(reason)
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    keys = list(client.scan_iter(match=f"{name}:*"))
    if keys:
        client.delete(*keys)
    client.close()
