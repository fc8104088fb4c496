"""Hot reload: watch the policy directory (not single files) and poll its hash as a safety net.

Kubernetes updates a ConfigMap volume by writing a new timestamped directory
and renaming a ``..data`` symlink over the old one; a watch on one file goes
blind after the first swap. So the whole directory is watched recursively, any
event triggers a full re-read, and the store's content hash decides whether
anything changed. A slow periodic poll catches filesystems without events, and
files a policy reads from outside its directory (``access.keys_file``): those
are not watched for events, their bytes are part of the hash every poll checks.

Both loops are supervised: a reload that raises (the store refuses rather than
raise, so this is a bug) is logged and the loops go on; a watch that fails is
restarted after a poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from watchfiles import awatch

from sidecar.policy.store import PolicyStore, where

log = logging.getLogger("sidecar.policy")


class PolicyWatcher:
    """Runs the event watch and the periodic poll until stopped."""

    def __init__(
        self, store: PolicyStore[object], poll_interval: float = 10.0, debounce_ms: int = 50
    ) -> None:
        self._store = store
        self._poll_interval = poll_interval
        self._debounce_ms = debounce_ms
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, events: bool = True) -> None:
        """Start the poll, and the file-event watch unless *events* is False."""
        self._tasks = [asyncio.create_task(self._poll(), name="policy-poll")]
        if events:
            self._tasks.append(asyncio.create_task(self._watch(), name="policy-watch"))

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _watch(self) -> None:
        directory = self._store.directory
        while not self._stop.is_set():
            try:
                async for _changes in awatch(
                    directory,
                    watch_filter=None,
                    debounce=self._debounce_ms,
                    step=50,
                    stop_event=self._stop,
                    recursive=True,
                ):
                    self._reload("file change")
            except Exception as exc:  # the watch must outlive any failure
                # The directory may vanish for a moment; the poll keeps working meanwhile.
                log.warning(
                    "policy watch on %s failed (%s); retrying", directory, type(exc).__name__
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), self._poll_interval)

    async def _poll(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._poll_interval)
            if not self._stop.is_set():
                self._reload("poll")

    def _reload(self, reason: str) -> None:
        try:
            self._store.reload(reason)
        except Exception as exc:  # logged; the next event or poll tries again
            log.error(
                {
                    "event": "policy_reload_failed",
                    "reason": reason,
                    "error": type(exc).__name__,
                    "where": where(exc),
                }
            )
