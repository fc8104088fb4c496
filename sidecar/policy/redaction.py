"""Keeping a policy's secrets out of what it shows: URLs' user info, exception messages,
and the values of ``${VAR}`` references in error messages."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Final
from urllib.parse import unquote

from sidecar.policy.model import REDACTED, PolicySet, Secret

MIN_SECRET: int = 4  # shorter values would redact ordinary words, not secrets
# scheme://userinfo@ — read by hand: urlsplit refuses some URLs (a bad port, a stray
# bracket), and a redaction must never fail. Everything up to the *last* @ counts: a
# key holding a / would otherwise end the user info early and show in the path.
_USERINFO: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)(.*)@", re.DOTALL)


def redact_url(url: str) -> str:
    """*url* with its whole user info (``user:password@``, or a key written as the user)
    replaced, taken as all before the URL's last ``@``; any text at all is accepted."""
    return _USERINFO.sub(rf"\g<1>{REDACTED}@", url, count=1)


def secret_values(policy: PolicySet) -> set[str]:
    """Every ``Secret`` of *policy* (auth values, client keys, the state URL), and the user
    info written in any of its URLs (raw and decoded, whole and in parts)."""
    found: set[str] = set()
    for value in _walk(policy):
        if isinstance(value, Secret):
            found.add(value.reveal())
            found.update(_userinfo(value.reveal()))
        elif isinstance(value, str) and "@" in value:
            found.update(_userinfo(value))
    return {value for value in found if len(value) >= MIN_SECRET}


def scrub(text: str, policy: PolicySet) -> str:
    """*text* with every secret of *policy* replaced (longest first)."""
    for secret in sorted(secret_values(policy), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text


def conceal(text: str, variables: Iterable[tuple[str, str]]) -> str:
    """*text* with each (variable, value)'s value replaced by ``${variable}`` (longest
    first; values shorter than MIN_SECRET are left, as they would garble the text)."""
    pairs = sorted(
        (pair for pair in variables if len(pair[1]) >= MIN_SECRET),
        key=lambda pair: len(pair[1]),
        reverse=True,
    )
    for name, value in pairs:
        text = text.replace(value, f"${{{name}}}")
    return text


def _userinfo(url: str) -> list[str]:
    match = _USERINFO.match(url)
    if match is None:
        return []
    info = match.group(2)
    parts = [info, *info.split(":", 1)]
    return [text for part in parts for text in (part, unquote(part))]


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
