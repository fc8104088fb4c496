"""Durations (``250ms``, ``2s``, ``1m``), sizes (``1MiB``) and percentages (``50%``)."""

from __future__ import annotations

import re
from typing import Final

_DURATION: Final = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)$")
_SIZE: Final = re.compile(r"^(\d+)(B|KB|KiB|MB|MiB|GB|GiB)?$")
_PERCENT: Final = re.compile(r"^(\d+(?:\.\d+)?)%$")
_SECONDS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_BYTES: Final = {
    None: 1,
    "B": 1,
    "KB": 1000,
    "KiB": 1024,
    "MB": 1000**2,
    "MiB": 1024**2,
    "GB": 1000**3,
    "GiB": 1024**3,
}
DURATION_PATTERN: Final = _DURATION.pattern
SIZE_PATTERN: Final = _SIZE.pattern


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``250ms``, ``2s``, ``1.5m``, ``1h``."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (expected e.g. 250ms, 2s, 1m)")
    return float(match.group(1)) * _SECONDS[match.group(2)]


def parse_size(value: str | int) -> int:
    """Bytes in a size such as ``512KiB``, ``1MiB`` or a plain integer."""
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a size (expected e.g. 1MiB, 512KiB, 1000000)")
    return int(match.group(1)) * _BYTES[match.group(2)]


def parse_ratio(value: str | float) -> float:
    """A fraction in [0, 1] from ``50%`` or ``0.5``."""
    if isinstance(value, str):
        match = _PERCENT.match(value)
        if not match:
            raise ValueError(f"{value!r} is not a percentage (expected e.g. 50%)")
        ratio = float(match.group(1)) / 100
    else:
        ratio = float(value)
    if not 0 <= ratio <= 1:
        raise ValueError(f"{value!r} is not between 0% and 100%")
    return ratio


def format_duration(seconds: float) -> str:
    """The shortest exact spelling of *seconds* (for `sidecar explain`)."""
    millis = round(seconds * 1000)
    if millis % 60_000 == 0 and millis:
        return f"{millis // 60_000}m"
    if millis % 1000 == 0:
        return f"{millis // 1000}s"
    return f"{millis}ms"
