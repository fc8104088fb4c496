"""Settings and per-app state of one mock provider instance."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from mock_provider.content import DEFAULT_ANSWER, Answerer
from mock_provider.control import Controller
from mock_provider.stats import Stats
from mock_provider.turns import PREFILL_MODES
from mock_provider.wire import PrefillMode

DEFAULT_MODELS: Final = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4",
    "text-embedding-3-small",
    "claude-sonnet-4-6",
    "claude-haiku-4-5",
)


@dataclass(frozen=True, slots=True)
class MockSettings:
    """How one instance behaves when nobody asks for a fault."""

    name: str = "mock"
    answer: str = DEFAULT_ANSWER
    echo: bool = False
    models: tuple[str, ...] = DEFAULT_MODELS
    chunk_ms: int = 0  # default pause between stream chunks; a request's chunk_ms wins
    max_body: int = 4 * 1024 * 1024
    api_key: str | None = None  # when set, requests must carry it (else 401)
    # A trailing assistant turn: continue it, 400, or answer afresh. None: as the real
    # providers do (accept on /v1/messages, ignore on /v1/chat/completions).
    prefill: PrefillMode | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("name must not be empty")
        if self.chunk_ms < 0:
            raise ValueError("chunk_ms must be >= 0")
        if self.max_body < 1:
            raise ValueError("max_body must be positive")
        if self.prefill is not None and self.prefill not in PREFILL_MODES:
            raise ValueError(f"prefill must be one of {', '.join(PREFILL_MODES)} or None")
        Answerer(self.answer, self.echo)  # validates the answer


@dataclass(slots=True)
class MockState:
    settings: MockSettings
    answerer: Answerer
    controller: Controller = field(default_factory=Controller)
    stats: Stats = field(default_factory=Stats)
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    def next_id(self, prefix: str) -> str:
        return f"{prefix}{self.settings.name}-{next(self._ids)}"

    def next_tool_call_id(self, prefix: str) -> str:
        """``call_<name>_<n>`` / ``toolu_<name>_<n>``."""
        return f"{prefix}{self.settings.name}_{next(self._ids)}"

    @staticmethod
    def now() -> int:
        return int(time.time())


STATE: Final = web.AppKey("mock_state", MockState)
