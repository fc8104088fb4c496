"""What a request holds, and the one place it is all let go.

Theory of operation. Every resource a request takes — a breaker permit, a
balancer's in-flight count, a rate-limit correction, a cache fill, an upstream
response — is registered with the request's ``Scope`` the moment it is taken
(``scope.hold(release)``), before the next ``await``. The stage that took it
releases it as soon as it knows the result (``held.release("success")``), or
hands it to the ``Answer`` when the result is only known once the answer's
stream has ended. The proxy closes the scope in a ``finally`` that spans the
whole answer, stream and continuation included: whatever is still held then —
an answer dropped by a hedge race, a continuation the client left during, a
cancellation at any await — is released as ``"cancelled"``. A release runs
once; later calls are no-ops. Releases run last-taken first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

Completion = Literal["success", "failure", "cancelled"]
Release = Callable[[Completion], None]


class Held:
    """One resource: released exactly once, by whoever gets there first."""

    __slots__ = ("_release",)

    def __init__(self, release: Release) -> None:
        self._release: Release | None = release

    @property
    def held(self) -> bool:
        return self._release is not None

    def release(self, completion: Completion) -> None:
        release, self._release = self._release, None
        if release is not None:
            release(completion)

    def take(self) -> bool:
        """Detach it without releasing (the caller settles it itself); False if already gone."""
        taken, self._release = self._release is not None, None
        return taken


class Scope:
    """Everything one request holds; ``close()`` lets go of what is left."""

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held: list[Held] = []

    def hold(self, release: Release) -> Held:
        held = Held(release)
        self._held.append(held)
        return held

    @property
    def holding(self) -> int:
        """How many resources are still held (0 once the request is over)."""
        return sum(1 for held in self._held if held.held)

    def close(self, completion: Completion = "cancelled") -> None:
        """Release everything still held, last taken first (a failing release stops none)."""
        errors: list[Exception] = []
        while self._held:
            try:
                self._held.pop().release(completion)
            except Exception as exc:
                errors.append(exc)
        if errors:
            raise errors[0]
