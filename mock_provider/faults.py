"""The fault vocabulary: one set of names, read from query, headers or a script.

A :class:`Fault` says how one request should misbehave. The same names work as
query parameters (``?fail=429&retry_after=2``), as headers (``x-mock-fail: 429``)
and as entries of a control-API script (``{"fail": 429, "retry_after": 2}``).
Parsing is strict: an unknown value is an error that names the valid ones.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Final, Literal

FailMode = Literal["timeout", "reset", "hang", "context_length"]
FAIL_MODES: Final = ("timeout", "reset", "hang", "context_length")
HEADER_PREFIX: Final = "x-mock-"
DEFAULT_TIMEOUT_MS: Final = 30_000

# name -> (kind, help). Kinds: ms / count / seconds / flag / fail.
VOCABULARY: Final[dict[str, tuple[str, str]]] = {
    "delay": ("ms", "wait this long before answering at all"),
    "fail": ("fail", "answer with this HTTP status, or timeout | reset | hang | context_length"),
    "retry_after": ("seconds", "send Retry-After with a failure"),
    "timeout_ms": ("ms", "how long fail=timeout holds the request before its 504"),
    "fail_chunk": ("count", "cut the connection after n stream chunks"),
    "stall_chunk": ("count", "pause the stream after n chunks, for stall_ms"),
    "stall_ms": ("ms", "length of the stall_chunk pause"),
    "malformed_chunk": ("count", "stream chunk n carries invalid JSON"),
    "error_chunk": ("count", "stream: an error event after n chunks, then the end"),
    "no_done": ("flag", "end the stream without [DONE] / message_stop"),
    "ttft_ms": ("ms", "time to first token"),
    "chunk_ms": ("ms", "pause between stream chunks"),
}
_TRUE: Final = frozenset({"1", "true", "yes", "on"})
_FALSE: Final = frozenset({"0", "false", "no", "off", ""})


class FaultError(ValueError):
    """A fault parameter that cannot be understood; the message says why."""


@dataclass(frozen=True, slots=True)
class Fault:
    """How one request misbehaves. The default instance is the happy path."""

    delay: int = 0
    fail: int | FailMode | None = None
    retry_after: float | None = None
    timeout_ms: int = DEFAULT_TIMEOUT_MS
    fail_chunk: int | None = None
    stall_chunk: int | None = None
    stall_ms: int = 0
    malformed_chunk: int | None = None
    error_chunk: int | None = None
    no_done: bool = False
    ttft_ms: int = 0
    chunk_ms: int = 0

    @property
    def outcome(self) -> str:
        """A short label for stats: ``ok``, ``429``, ``timeout``, ``stream_cut``..."""
        if self.fail is not None:
            return str(self.fail)
        if self.fail_chunk is not None:
            return "stream_cut"
        if self.malformed_chunk is not None:
            return "malformed_chunk"
        if self.error_chunk is not None:
            return "error_chunk"
        if self.stall_chunk is not None:
            return "stream_stall"
        if self.no_done:
            return "no_done"
        return "ok"

    def overlay(self, other: Fault) -> Fault:
        """Fields that *other* sets (differ from the default) win over ours."""
        changes = {
            f.name: getattr(other, f.name)
            for f in fields(Fault)
            if getattr(other, f.name) != getattr(_DEFAULT, f.name)
        }
        return replace(self, **changes)


_DEFAULT: Final = Fault()
HAPPY: Final = _DEFAULT


def parse_fault(values: Mapping[str, object]) -> Fault:
    """Build a Fault from name -> value pairs (strings, numbers or booleans)."""
    unknown = sorted(set(values) - VOCABULARY.keys())
    if unknown:
        raise FaultError(
            f"unknown fault parameter {unknown[0]!r}; valid: {', '.join(sorted(VOCABULARY))}"
        )
    kwargs: dict[str, object] = {}
    for name, raw in values.items():
        kind = VOCABULARY[name][0]
        kwargs[name] = _PARSERS[kind](name, raw)
    if kwargs.get("stall_chunk") is not None and "stall_ms" not in kwargs:
        raise FaultError("stall_chunk needs stall_ms (how long to stall, in ms)")
    return Fault(**kwargs)  # type: ignore[arg-type]


def fault_from_request(query: Mapping[str, str], headers: Mapping[str, str]) -> Fault | None:
    """Read fault parameters from the query string and ``x-mock-*`` headers.

    Returns None when the request asks for nothing (so the control API decides).
    Query parameters win over headers. ``stream`` is not a fault and is ignored here.
    """
    values: dict[str, object] = {}
    for key, value in headers.items():
        lowered = key.lower()
        if lowered.startswith(HEADER_PREFIX):
            name = lowered[len(HEADER_PREFIX) :].replace("-", "_")
            if name != "stream":
                values[name] = value
    for key, value in query.items():
        if key in VOCABULARY:
            values[key] = value
    return parse_fault(values) if values else None


def _int(name: str, raw: object, *, minimum: int = 0) -> int:
    if isinstance(raw, bool):
        raise FaultError(f"{name} must be an integer, got {raw!r}")
    try:
        value = int(str(raw))
    except (TypeError, ValueError):
        raise FaultError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise FaultError(f"{name} must be >= {minimum}, got {value}")
    return value


def _ms(name: str, raw: object) -> int:
    return _int(name, raw)


def _count(name: str, raw: object) -> int:
    return _int(name, raw)


def _seconds(name: str, raw: object) -> float:
    if isinstance(raw, bool):
        raise FaultError(f"{name} must be a number of seconds, got {raw!r}")
    try:
        value = float(str(raw))
    except (TypeError, ValueError):
        raise FaultError(f"{name} must be a number of seconds, got {raw!r}") from None
    if not 0 <= value < 86_400:
        raise FaultError(f"{name} must be between 0 and 86400 seconds, got {raw!r}")
    return value


def _flag(name: str, raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise FaultError(f"{name} must be a boolean (1/0, true/false), got {raw!r}")


def _fail(name: str, raw: object) -> int | FailMode:
    text = str(raw).strip().lower()
    if text in FAIL_MODES:
        return text  # type: ignore[return-value]
    valid = f"an HTTP status 400-599 or one of {', '.join(FAIL_MODES)}"
    if isinstance(raw, bool) or not text.isdecimal():
        raise FaultError(f"unknown fail value {raw!r}; valid: {valid}")
    status = int(text)
    if not 400 <= status <= 599:
        raise FaultError(f"fail status {status} out of range; valid: {valid}")
    return status


_PARSERS: Final = {
    "ms": _ms,
    "count": _count,
    "seconds": _seconds,
    "flag": _flag,
    "fail": _fail,
}


def describe_vocabulary() -> Iterable[tuple[str, str]]:
    """(name, help) pairs, for error messages and the control API."""
    return ((name, info[1]) for name, info in VOCABULARY.items())
