"""The application's shared state, under typed keys (``web.AppKey``)."""

from __future__ import annotations

from typing import Final

from aiohttp import web

from sidecar.lifecycle import Lifecycle
from sidecar.pipeline.build import Registries, Runtime
from sidecar.policy.store import PolicyStore


class RuntimeHolder:
    """The one reference the request path reads; replaced whole on every policy swap."""

    __slots__ = ("current",)

    def __init__(self) -> None:
        self.current: Runtime | None = None


STORE: Final = web.AppKey("policy_store", PolicyStore)
HOLDER: Final = web.AppKey("runtime_holder", RuntimeHolder)
REGISTRIES: Final = web.AppKey("registries", Registries)
LIFECYCLE: Final = web.AppKey("lifecycle", Lifecycle)
ADMIN_APP: Final = web.AppKey("admin_app", web.Application)
BODY_TIMEOUT: Final = web.AppKey("body_timeout", float)  # seconds to read a request body
