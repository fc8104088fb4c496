"""Keeping a policy's secrets out of what it shows and of text it did not write: URLs'
user info (``redact_url``), exception messages (``scrub``), the values of ``${VAR}``
references in error messages (``conceal``), and what an upstream sends back
(``Scrubber``, compiled once per policy load)."""

from __future__ import annotations

import base64
import dataclasses
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Final
from urllib.parse import quote, unquote

import orjson

from sidecar.policy.model import REDACTED, PolicySet, Secret

MIN_SECRET: int = 4  # shorter values would redact ordinary words, not secrets
# What an upstream sends is redacted only for values at least this long (as access keys):
# a short value ("1234", a user name like "admin") would mangle answers, not protect keys.
MIN_ECHOED: Final = 8
_REDACTED: Final = REDACTED.encode()
_Trie = dict[str, "_Trie"]
_SCHEME: Final = re.compile(r"(?i)^(?:bearer|basic|token|key)\s+(\S+)$")

# scheme://userinfo@ — read by hand: urlsplit refuses some URLs (a bad port, a stray
# bracket), and a redaction must never fail. Everything up to the *last* @ counts: a
# key holding a / would otherwise end the user info early and show in the path.
_USERINFO: Final = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)(.*)@", re.DOTALL)


def redact_url(url: str) -> str:
    """*url* with its whole user info (``user:password@``, or a key written as the user)
    replaced, taken as all before the URL's last ``@``; any text at all is accepted."""
    return _USERINFO.sub(rf"\g<1>{REDACTED}@", url, count=1)


def secret_values(policy: PolicySet, min_length: int = MIN_SECRET) -> set[str]:
    """Every ``Secret`` of *policy* (auth values, client keys, the state URL), and the user
    info written in any of its URLs (raw and decoded, whole and in parts)."""
    found: set[str] = set()
    for value in _walk(policy):
        if isinstance(value, Secret):
            found.add(value.reveal())
            found.update(_userinfo(value.reveal()))
        elif isinstance(value, str) and "@" in value:
            found.update(_userinfo(value))
    return {value for value in found if len(value) >= min_length}


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


class Scrubber:
    """A policy's secrets, as an upstream may echo them, redacted from text and bytes.

    Built once per policy load (one precompiled pattern), used on the sidecar's
    error paths only: upstream header values, non-2xx bodies, stream error events.
    Each secret is matched as written, as the credential after an auth scheme
    (``Bearer <value>``), percent-encoded and JSON-escaped; a URL's user name and
    password also as HTTP Basic credentials. Values shorter than ``MIN_ECHOED`` are
    left alone.
    """

    __slots__ = ("_pattern", "_text")

    def __init__(self, secrets: Iterable[str]) -> None:
        forms = {form for s in secrets for form in _encodings(s) if len(form) >= MIN_ECHOED}
        # One pattern, a trie, so a keys file of thousands of keys is still one pass over
        # the text; compiled for bytes (bodies) and for text (header values).
        source = _trie_pattern(forms) if forms else None
        self._pattern = re.compile(source.encode()) if source is not None else None
        self._text = re.compile(source) if source is not None else None

    def __bool__(self) -> bool:
        return self._pattern is not None

    def text(self, value: str) -> str:
        """*value* with every secret replaced."""
        return self._text.sub(REDACTED, value) if self._text is not None else value

    def in_any(self, values: Iterable[str]) -> bool:
        """Whether any of *values* holds a secret (one pass over all of them)."""
        return self._text is not None and self._text.search("\n".join(values)) is not None

    def bytes(self, value: bytes) -> bytes:
        """*value* (UTF-8, as bodies come) with every secret replaced."""
        return self._pattern.sub(_REDACTED, value) if self._pattern is not None else value


def make_scrubber(policy: PolicySet) -> Scrubber:
    """The scrubber of *policy*'s secrets: its ``Secret`` values and its URLs' user info."""
    found = secret_values(policy, MIN_ECHOED)  # user info included
    for value in _walk(policy):
        text = value.reveal() if isinstance(value, Secret) else value
        if isinstance(text, str) and "@" in text:
            found.update(_basic(text))
    return Scrubber(found)


def _trie_pattern(words: Iterable[str]) -> str:
    """One regular expression matching each of *words*, longest first, as a trie."""
    trie: _Trie = {}
    for word in words:
        node = trie
        for char in word:
            node = node.setdefault(char, {})
        node[""] = {}  # a word ends here
    return _node_pattern(trie)


def _node_pattern(node: _Trie) -> str:
    out: list[str] = []
    while True:
        ends = "" in node
        children = [(char, child) for char, child in sorted(node.items()) if char]
        if len(children) == 1 and not ends:  # a plain run of characters: no group
            char, node = children[0]
            out.append(re.escape(char))
            continue
        if children:
            group = "(?:" + "|".join(re.escape(c) + _node_pattern(n) for c, n in children) + ")"
            out.append(group + "?" if ends else group)  # greedy: the longer secret first
        return "".join(out)


def _encodings(secret: str) -> set[str]:
    """*secret* as written and without its auth scheme, each also percent-encoded and
    JSON-escaped."""
    credential = _SCHEME.match(secret)
    values = {secret} if credential is None else {secret, credential.group(1)}
    forms = set(values)
    for value in values:
        forms.update((quote(value, safe=""), orjson.dumps(value).decode()[1:-1]))
    return forms


def _userinfo(url: str) -> list[str]:
    match = _USERINFO.match(url)
    if match is None:
        return []
    info = match.group(2)
    parts = [info, *info.split(":", 1)]
    return [text for part in parts for text in (part, unquote(part))]


def _basic(url: str) -> list[str]:
    """The HTTP Basic credentials the sidecar sends for a URL's user info."""
    match = _USERINFO.match(url)
    if match is None:
        return []
    user, _, password = match.group(2).partition(":")
    pair = f"{unquote(user)}:{unquote(password)}"
    return [base64.b64encode(pair.encode()).decode()]


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
