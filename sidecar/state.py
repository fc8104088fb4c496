"""The application's shared state, under typed keys (``web.AppKey``)."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from sidecar.lifecycle import Lifecycle
from sidecar.observability.refusals import RefusalLog
from sidecar.pipeline.build import Registries, Runtime
from sidecar.policy.store import PolicyStore


class RuntimeHolder:
    """The request path's view of the store: the runtime that was swapped in together with
    the policy ``/admin/policy`` shows (one reference, so the two never disagree)."""

    __slots__ = ("_store",)

    def __init__(self, store: PolicyStore[Runtime]) -> None:
        self._store = store

    @property
    def current(self) -> Runtime | None:
        active = self._store.current
        return active.runtime if active is not None else None


STORE: Final = web.AppKey("policy_store", PolicyStore[Runtime])
HOLDER: Final = web.AppKey("runtime_holder", RuntimeHolder)
REGISTRIES: Final = web.AppKey("registries", Registries)
LIFECYCLE: Final = web.AppKey("lifecycle", Lifecycle)
ADMIN_APP: Final = web.AppKey("admin_app", web.Application)
BODY_TIMEOUT: Final = web.AppKey("body_timeout", float)  # seconds to read a request body
REFUSALS: Final = web.AppKey("refusals", RefusalLog)  # rate-limited lines of early refusals
