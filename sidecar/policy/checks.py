"""Cross-field checks: what the schema cannot see, reported at file:line:col.

A merged route value is located where it was written: in the route, else in
``defaults``, else at the route itself (a built-in default).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast
from urllib.parse import urlsplit

from sidecar.headers import CLIENT_CLAIMS, CREDENTIALS
from sidecar.policy.errors import Issue, Path, did_you_mean
from sidecar.policy.merge import RouteSource, has
from sidecar.policy.model import (
    Backoff,
    Retry,
    Route,
    StateBackend,
    Target,
    Timeouts,
    Window,
)
from sidecar.policy.source import Document
from sidecar.policy.units import format_duration
from sidecar.typedefs import JSON as Tree


class Checker:
    """Collects issues, locating a merged value where it was written."""

    def __init__(self, defaults: tuple[Document, Tree] | None, issues: list[Issue]) -> None:
        self.issues = issues
        self._defaults = defaults

    def at(self, source: RouteSource, subpath: Path, message: str) -> None:
        """An issue where the route's value at *subpath* was written."""
        document, path = self._where(source, subpath)
        self.issues.append(document.issue(path, message))

    def quote(self, source: RouteSource, subpath: Path, value: object) -> str:
        """The route's *value* at *subpath* for a message (``${VAR}`` when interpolated)."""
        document, path = self._where(source, subpath)
        return document.quote(path, value)

    def _where(self, source: RouteSource, subpath: Path) -> tuple[Document, Path]:
        if has(source.tree, subpath) or self._defaults is None:
            return source.document, ("routes", source.index, *subpath)
        if has(self._defaults[1], subpath):
            return self._defaults[0], ("defaults", *subpath)
        return source.document, ("routes", source.index)


_BAD_PORT = "the port is not a number 0-65535"  # the URL is not echoed: it may hold a key


def check_state(document: Document, state: StateBackend, issues: list[Issue]) -> None:
    """A Redis backend needs a URL whose port parses."""
    if state.backend != "redis":
        return
    if state.url is None:
        issues.append(document.issue(("state",), "backend redis needs a url (e.g. ${REDIS_URL})"))
    elif not _port_ok(state.url.reveal()):
        # Found here, not when the Redis client is built.
        issues.append(document.issue(("state", "url"), _BAD_PORT))


def check_upstream(document: Document, name: str, spec: Tree, issues: list[Issue]) -> None:
    """An upstream's URL has a port that parses; it allows only droppable headers through."""
    if not _port_ok(cast(str, spec["url"])):
        issues.append(document.issue(("upstreams", name, "url"), _BAD_PORT))
    for index, header in enumerate(cast(list[str], spec.get("forward_headers", []))):
        lowered = header.lower()
        if lowered in CLIENT_CLAIMS:
            continue
        allowed = sorted(CLIENT_CLAIMS)
        hint = (
            " (a client's credentials: see client_auth)"
            if lowered in CREDENTIALS
            else did_you_mean(lowered, allowed)
        )
        message = (
            f"{document.quote(('upstreams', name, 'forward_headers', index), header)} "
            f"cannot be allowed: forward_headers takes only {', '.join(allowed)}{hint}"
        )
        issues.append(document.issue(("upstreams", name, "forward_headers", index), message))


def check_route_name(source: RouteSource, first: RouteSource | None, checker: Checker) -> bool:
    """Whether the route's name is its own (else reported: *first* has it)."""
    if first is None:
        return True
    name = checker.quote(source, ("name",), source.tree["name"])
    message = f"route name {name} already used in {first.document.file}"
    checker.at(source, ("name",), message)
    return False


def check_window(spec: Tree, window: Window, source: RouteSource, checker: Checker) -> None:
    """A failure-rate window: alone, with a rate above 0 and at least two calls."""
    if "consecutive_failures" in spec:
        checker.at(
            source, ("breaker", "window"), "set either consecutive_failures or window, not both"
        )
    if window.failure_rate <= 0:
        checker.at(source, ("breaker", "window", "failure_rate"), "failure_rate must be > 0%")
    if window.min_calls < 2:
        checker.at(
            source,
            ("breaker", "window", "min_calls"),
            "min_calls below 2 would open the breaker on a single failure; "
            "use consecutive_failures: 1 for that",
        )


def check_deadline(
    tree: Tree,
    deadline: float,
    timeouts: Timeouts,
    retry: Retry,
    source: RouteSource,
    checker: Checker,
) -> None:
    """A written timeout or wait longer than the deadline could never fire."""
    limits = (
        (("timeouts", "first_byte"), timeouts.first_byte),
        (("timeouts", "connect"), timeouts.connect),
        (("retry", "retry_after", "max_wait"), retry.retry_after.max_wait),
    )
    for where, value in limits:
        if value is not None and value > deadline and has(tree, where):
            checker.at(
                source,
                where,
                f"{where[-1]} ({format_duration(value)}) is longer than the deadline "
                f"({format_duration(deadline)}); it could never fire",
            )


def check_backoff(backoff: Backoff, source: RouteSource, checker: Checker) -> None:
    """The first backoff is not larger than the cap."""
    if backoff.base > backoff.max:
        checker.at(
            source,
            ("retry", "backoff", "base"),
            f"backoff base ({format_duration(backoff.base)}) is larger than max "
            f"({format_duration(backoff.max)})",
        )


def check_some_fallback(raw_targets: list[Tree], source: RouteSource, checker: Checker) -> None:
    """A route has somewhere to go."""
    if not raw_targets:
        checker.at(source, (), "no fallback targets: set fallback here or in defaults")


def check_regular_target(targets: list[Target], source: RouteSource, checker: Checker) -> None:
    """Not every target waits for a too-long prompt."""
    if targets and all(target.when != "always" for target in targets):
        checker.at(
            source,
            ("fallback",),
            "every target is 'when: context_length_exceeded'; at least one must be a regular one",
        )


def check_known_upstream(
    name: str, known: Iterable[str], where: Path, source: RouteSource, checker: Checker
) -> None:
    """Report *name* as unknown, with the closest defined name as a hint."""
    defined = sorted(known)
    hint = did_you_mean(name, defined)
    shown = checker.quote(source, (*where, "upstream"), name)
    checker.at(
        source,
        (*where, "upstream"),
        f"unknown upstream {shown}{hint}; defined: {', '.join(defined) or 'none'}",
    )


def check_target_model(raw: Tree, where: Path, source: RouteSource, checker: Checker) -> None:
    """A target sets one model or a model map, not both."""
    if "model" in raw and "model_map" in raw:
        checker.at(source, where, "set either model or model_map, not both")


def check_tier_keys(raw: Tree, where: Path, source: RouteSource, checker: Checker) -> None:
    """A tier is a regular step; models belong to its deployments."""
    for key in ("when", "model", "model_map"):
        if key in raw:
            message = (
                "a tier is a regular step: 'when' is not allowed on it"
                if key == "when"
                else f"set {key} on the tier's deployments, not on the tier"
            )
            checker.at(source, (*where, key), message)


def check_tier_entry(
    entry: Tree, at: Path, strategy: str, seen: set[str], source: RouteSource, checker: Checker
) -> bool:
    """Whether a tier's deployment names an upstream new to the tier (*seen* grows by it)."""
    name = cast(str, entry["upstream"])
    if name in seen:
        shown = checker.quote(source, (*at, "upstream"), name)
        checker.at(source, (*at, "upstream"), f"upstream {shown} is already in this tier")
        return False
    seen.add(name)
    if "weight" in entry and strategy != "weighted":
        checker.at(
            source,
            (*at, "weight"),
            f"weight only applies to strategy 'weighted' (this tier is {strategy!r})",
        )
    return True


def check_hedge(
    after: float, deadline: float, targets: list[Target], source: RouteSource, checker: Checker
) -> None:
    """A hedge fires before the deadline, towards a second regular target."""
    if after >= deadline:
        checker.at(
            source,
            ("hedge", "after"),
            f"after ({format_duration(after)}) is not shorter than the deadline "
            f"({format_duration(deadline)}); a hedge could never be sent",
        )
    if targets and sum(1 for target in targets if target.when == "always") < 2:
        checker.at(source, ("hedge",), "a hedge needs a second target to go to; there is one")


def check_shadowed(
    route: Route, earlier: Iterable[Route], source: RouteSource, checker: Checker
) -> None:
    """A route whose match an earlier route already has is never reached."""
    for other in earlier:
        if other.match == route.match:
            checker.at(
                source,
                ("match",),
                f"never matches: route {other.name!r} before it has the same match",
            )


def _port_ok(url: str) -> bool:
    try:
        urlsplit(url).port  # noqa: B018 - parsing the port is the check
    except ValueError:
        return False
    return True
