"""Converters from a policy tree's values to the model's; nothing here has a default.

``given`` applies them to the fields a tree writes only, so model.py's default
stays for every other field. The schema has checked every value (no nulls,
durations and sizes well formed), so converters only convert.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from sidecar.policy.model import Auth, RetryCondition, Secret
from sidecar.policy.units import parse_duration, parse_ratio, parse_size
from sidecar.typedefs import JSON as Tree

Convert = Callable[[object], object]


def given(spec: Tree, **convert: Convert) -> dict[str, Any]:
    """The fields *spec* writes, each converted; one it leaves out keeps its default.

    For ``replace(default_object, **given(...))`` only: ``Any`` lets the splat
    through mypy's check of ``replace``; the converter and the schema fix each type."""
    return {name: read(spec[name]) for name, read in convert.items() if name in spec}


def subtree(spec: Tree, key: str) -> Tree:
    """The mapping at *key*; empty when it is not written."""
    return cast(Tree, spec.get(key, {}))


def same(value: object) -> object:
    """The value as written (strings, integers, flags)."""
    return value


def number(value: object) -> float:
    """A float from an integer or a float."""
    return float(cast(float, value))


def duration(value: object) -> float:
    """Seconds from ``250ms``, ``2s``, ``1m``..."""
    return parse_duration(cast(str, value))


def size(value: object) -> int:
    """Bytes from ``1MiB`` or an integer."""
    return parse_size(cast(str | int, value))


def ratio(value: object) -> float:
    """A fraction from ``50%`` or ``0.5``."""
    return parse_ratio(cast(str | float, value))


def secret(value: object) -> Secret | None:
    """A credential; an empty string is none."""
    return Secret(cast(str, value)) if value else None


def auth(value: object) -> Auth:
    """The ``{header, value}`` an upstream sends."""
    spec = cast(Tree, value)
    return Auth(cast(str, spec["header"]), Secret(cast(str, spec["value"])))


def conditions(value: object) -> frozenset[RetryCondition]:
    """The retryable failures of ``retry.on``."""
    return frozenset(cast(list[RetryCondition], value))


def methods(value: object) -> frozenset[str] | None:
    """The HTTP methods a route matches; none listed is any method."""
    listed = cast(list[str], value)
    return frozenset(listed) if listed else None


def header_names(value: object) -> frozenset[str]:
    """A list of header names, lower-cased."""
    return frozenset(name.lower() for name in cast(list[str], value))


def header(value: object) -> tuple[str, str]:
    """A header match: (lower-cased name, value glob)."""
    spec = cast(Tree, value)
    return cast(str, spec["name"]).lower(), cast(str, spec["value"])


def pairs(value: object) -> tuple[tuple[str, str], ...]:
    """A ``model_map`` as (glob, model) pairs, in written order."""
    return tuple((pattern, cast(str, model)) for pattern, model in cast(Tree, value).items())


def rate_key(value: object) -> str:
    """A rate-limit key; a header name is lower-cased."""
    key = cast(str, value)
    return key.lower() if key.startswith("header:") else key
