"""The active policy and its runtime: one reference, swapped whole; the last good one kept.

Theory of operation: ``reload()`` reads every policy file and the files the
active policy reads besides them (``access.keys_file``), hashes the bytes, and
does nothing when the hash equals the active one (or the last refused one). A
new hash is a transaction: parse, compile, and build the runtime (``build``,
given by the app); only when all of it succeeded are policy and runtime swapped
in one assignment (requests already running hold the runtime they started
with). Any exception on the way refuses the reload: the old pair keeps serving,
the error is recorded for ``/admin/policy`` and logged once, secrets scrubbed.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Literal, TypeVar

from sidecar.policy.compiler import compile_policy, input_paths
from sidecar.policy.errors import PolicyError
from sidecar.policy.files import content_hash, read_files, read_inputs
from sidecar.policy.loader import parse_files
from sidecar.policy.model import PolicySet
from sidecar.policy.redaction import conceal, scrub
from sidecar.policy.source import Document

log = logging.getLogger("sidecar.policy")
ReloadOutcome = Literal["loaded", "unchanged", "refused"]
R_co = TypeVar("R_co", covariant=True)  # what the app builds from a policy (its Runtime)
MAX_MESSAGE = 500  # characters of an unexpected exception's message kept


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


@dataclass(frozen=True, slots=True)
class Active(Generic[R_co]):
    """A policy and the runtime built from it: always swapped together."""

    policy: PolicySet
    runtime: R_co
    inputs: tuple[str, ...]  # files read besides the policy's own, re-read by every reload


class PolicyStore(Generic[R_co]):
    """Holds the active policy and runtime, and the reload status shown by ``/admin/policy``."""

    def __init__(
        self,
        directory: Path,
        environ: Mapping[str, str],
        build: Callable[[PolicySet], R_co],
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.directory = directory
        self._environ = environ
        self._build = build
        self._wall_clock = wall_clock
        self._current: Active[R_co] | None = None
        self.loaded_at: float | None = None
        self.last_error: ReloadError | None = None
        self._refused_inputs: tuple[str, ...] = ()
        self.counts: dict[ReloadOutcome, int] = {"loaded": 0, "unchanged": 0, "refused": 0}

    @property
    def current(self) -> Active[R_co] | None:
        """The active policy and runtime (read once: the two always belong together)."""
        return self._current

    @property
    def active(self) -> PolicySet | None:
        return self._current.policy if self._current is not None else None

    def reload(self, reason: str = "request") -> ReloadResult:
        """Re-read the directory; swap in the new policy and runtime if it changed and
        every step succeeded. Never raises an ``Exception``: a failure is a refusal."""
        digest: str | None = None
        paths: tuple[str, ...] = ()
        policy: PolicySet | None = None
        documents: list[Document] = []
        try:
            files = read_files(self.directory)
            unchanged = self._unchanged(files)
            if unchanged is not None:
                return self._count(unchanged)
            digest = content_hash(files)
            documents = parse_files(files, self._environ)
            paths = tuple(input_paths(documents))
            inputs = read_inputs(paths)
            digest = content_hash(files, inputs)
            policy = compile_policy(documents, digest, inputs)
            runtime = self._build(policy)
        except PolicyError as error:
            errors = tuple(str(issue) for issue in error.issues)
            return self._refuse(reason, digest, paths, errors)
        except Exception as error:  # any failure refuses the reload
            described = _describe(error, policy, documents)
            return self._refuse(reason, digest, paths, (described,), where(error))
        previous = self._current
        self._current = Active(policy, runtime, paths)
        self.loaded_at = self._wall_clock()
        if self.last_error is not None:
            _recovered(reason, digest, self.last_error)
        self.last_error = None
        log.info(
            {
                "event": "policy_loaded",
                "hash": digest,
                "reason": reason,
                "files": len(policy.files),
                **diff(previous.policy if previous else None, policy),
            }
        )
        return self._count(ReloadResult("loaded", digest))

    def _unchanged(self, files: list[tuple[str, bytes]]) -> ReloadResult | None:
        """The result when *files* (with the input files read last time) hash as the active
        policy or the last refused one did; None when something changed."""
        current, refused = self._current, self.last_error
        if current is not None and _same(files, current.inputs, current.policy.hash):
            if self.last_error is not None:  # a bad edit was reverted: nothing is wrong any more
                _recovered("reverted", current.policy.hash, self.last_error)
            self.last_error = None
            return ReloadResult("unchanged", current.policy.hash)
        if refused is not None and _same(files, self._refused_inputs, refused.hash):
            return ReloadResult("unchanged", refused.hash, refused.errors)
        return None

    def _refuse(
        self,
        reason: str,
        digest: str | None,
        paths: tuple[str, ...],
        errors: tuple[str, ...],
        location: str | None = None,
    ) -> ReloadResult:
        self.last_error = ReloadError(digest, self._wall_clock(), errors)
        self._refused_inputs = paths
        record: dict[str, object] = {
            "event": "policy_refused",
            "reason": reason,
            "hash": digest,
            "kept": self._current.policy.hash if self._current else None,
            "errors": list(errors),
        }
        if location is not None:
            record["where"] = location
        log.error(record)
        return self._count(ReloadResult("refused", digest, errors))

    def _count(self, result: ReloadResult) -> ReloadResult:
        self.counts[result.outcome] += 1
        return result


def _recovered(reason: str, digest: str | None, refused: ReloadError) -> None:
    """The policy is good again after a refused reload: say so, once."""
    log.info(
        {
            "event": "policy_recovered",
            "reason": reason,
            "hash": digest,
            "refused_hash": refused.hash,
            "refused_errors": len(refused.errors),
        }
    )


def _same(files: list[tuple[str, bytes]], inputs: tuple[str, ...], digest: str | None) -> bool:
    return digest is not None and content_hash(files, read_inputs(inputs)) == digest


def _describe(error: Exception, policy: PolicySet | None, documents: list[Document]) -> str:
    """One line for an unexpected failure; its message only once the policy's secrets are
    known (they are scrubbed from it, and every variable's value), bounded."""
    stage = "building the runtime" if policy is not None else "loading the policy"
    if policy is None:
        return f"{stage} failed: {type(error).__name__}"
    variables = [pair for document in documents for pair in document.variables()]
    message = scrub(conceal(" ".join(str(error).split()), variables), policy)[:MAX_MESSAGE]
    return f"{stage} failed: {type(error).__name__}: {message}"


def where(error: Exception) -> str | None:
    """file:line in function of the innermost frame (a bug report's first clue)."""
    frames = traceback.extract_tb(error.__traceback__)
    if not frames:
        return None
    frame = frames[-1]
    return f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}"


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
