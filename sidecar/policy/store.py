"""The active policy: one reference, swapped atomically; the last good one kept on error.

Theory of operation: ``reload()`` reads every policy file and the files the
active policy reads besides them (``access.keys_file``), hashes the bytes, and
does nothing when the hash equals the active one (or the last refused one). A new
hash is loaded and compiled in full; on success the reference is swapped in
one assignment (requests already running hold the object they started with),
on failure the previous policy keeps serving and the error is recorded.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from sidecar.policy.compiler import compile_policy, input_paths
from sidecar.policy.errors import PolicyError
from sidecar.policy.loader import parse_files
from sidecar.policy.model import PolicySet
from sidecar.policy.source import content_hash, read_files, read_inputs

log = logging.getLogger("sidecar.policy")
ReloadOutcome = Literal["loaded", "unchanged", "refused"]


@dataclass(frozen=True, slots=True)
class ReloadError:
    hash: str | None
    at: float  # unix time
    errors: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ReloadResult:
    outcome: ReloadOutcome
    hash: str | None
    errors: tuple[str, ...] = ()


class PolicyStore:
    """Holds the active PolicySet and the reload status shown by ``/admin/policy``."""

    def __init__(
        self,
        directory: Path,
        environ: Mapping[str, str],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self._environ = environ
        self._wall_clock = wall_clock
        self._active: PolicySet | None = None
        self.loaded_at: float | None = None
        self.last_error: ReloadError | None = None
        self._inputs: tuple[str, ...] = ()  # files the active policy reads besides its own
        self._refused_inputs: tuple[str, ...] = ()
        self.counts: dict[ReloadOutcome, int] = {"loaded": 0, "unchanged": 0, "refused": 0}
        self._listeners: list[Callable[[PolicySet], None]] = []

    @property
    def active(self) -> PolicySet | None:
        return self._active

    def on_swap(self, listener: Callable[[PolicySet], None]) -> None:
        """Call *listener* with each newly activated policy (after the swap)."""
        self._listeners.append(listener)

    def reload(self, reason: str = "request") -> ReloadResult:
        """Re-read the directory; swap in the new policy if it changed and is valid."""
        digest: str | None = None
        paths: tuple[str, ...] = ()
        try:
            files = read_files(self.directory)
            active, refused = self._active, self.last_error
            if active is not None and _same(files, self._inputs, active.hash):
                self.last_error = None  # a bad edit was reverted: nothing is wrong any more
                return self._count(ReloadResult("unchanged", active.hash))
            if refused is not None and _same(files, self._refused_inputs, refused.hash):
                return self._count(ReloadResult("unchanged", refused.hash, refused.errors))
            digest = content_hash(files)
            documents = parse_files(files, self._environ)
            paths = tuple(input_paths(documents))
            inputs = read_inputs(paths)
            digest = content_hash(files, inputs)
            policy = compile_policy(documents, digest, inputs)
        except PolicyError as error:
            errors = tuple(str(issue) for issue in error.issues)
            self.last_error = ReloadError(digest, self._wall_clock(), errors)
            self._refused_inputs = paths
            log.error(
                {
                    "event": "policy_refused",
                    "reason": reason,
                    "kept": self._active.hash if self._active else None,
                    "errors": list(errors),
                }
            )
            return self._count(ReloadResult("refused", digest, errors))
        previous = self._active
        self._active = policy
        self._inputs = paths
        self.loaded_at = self._wall_clock()
        self.last_error = None
        log.info(
            {
                "event": "policy_loaded",
                "hash": digest,
                "reason": reason,
                "files": len(policy.files),
                **diff(previous, policy),
            }
        )
        for listener in self._listeners:
            listener(policy)
        return self._count(ReloadResult("loaded", digest))

    def _count(self, result: ReloadResult) -> ReloadResult:
        self.counts[result.outcome] += 1
        return result


def _same(files: list[tuple[str, bytes]], inputs: tuple[str, ...], digest: str | None) -> bool:
    return digest is not None and content_hash(files, read_inputs(inputs)) == digest


def diff(old: PolicySet | None, new: PolicySet) -> dict[str, list[str]]:
    """What a reload changed: routes and upstreams added, removed or modified (by name)."""
    if old is None:
        return {}
    summary: dict[str, list[str]] = {}
    for kind, before, after in (
        ("routes", {r.name: r for r in old.routes}, {r.name: r for r in new.routes}),
        ("upstreams", dict(old.upstreams), dict(new.upstreams)),
    ):
        for change, names in (
            ("added", sorted(after.keys() - before.keys())),
            ("removed", sorted(before.keys() - after.keys())),
            ("modified", sorted(n for n in before.keys() & after.keys() if before[n] != after[n])),
        ):
            if names:
                summary[f"{kind}_{change}"] = names
    return summary
