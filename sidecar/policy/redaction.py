"""Keeping a policy's secrets out of text it did not write (an exception's message)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from urllib.parse import urlsplit

from sidecar.policy.model import REDACTED, PolicySet, Secret

MIN_SECRET: int = 4  # shorter values would redact ordinary words, not secrets


def secret_values(policy: PolicySet) -> set[str]:
    """Every ``Secret`` of *policy* (auth values, client keys, the state URL), and each
    password written in one of its URLs."""
    found: set[str] = set()
    for value in _walk(policy):
        if isinstance(value, Secret):
            found.add(value.reveal())
            found.update(_password(value.reveal()))
        elif isinstance(value, str) and "@" in value:
            found.update(_password(value))
    return {value for value in found if len(value) >= MIN_SECRET}


def scrub(text: str, policy: PolicySet) -> str:
    """*text* with every secret of *policy* replaced (longest first)."""
    for secret in sorted(secret_values(policy), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def _password(url: str) -> list[str]:
    try:
        password = urlsplit(url).password
    except ValueError:
        return []
    return [password] if password else []


def _walk(value: object) -> Iterator[object]:
    yield value
    if isinstance(value, Secret):
        return
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            yield from _walk(getattr(value, field.name))
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _walk(item)
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _walk(item)
