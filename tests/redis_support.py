"""The Redis every Redis test uses (REDIS_URL), and what a test does when none answers."""

from __future__ import annotations

import os

import pytest

REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_unavailable(reason: str) -> None:
    """Skip a Redis test where none answers, except under CI=true: there it is a failure."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: the Redis tests must run)")
    pytest.skip(reason)
