"""Control-API state: random fault probabilities and a FIFO script of exact outcomes.

Theory of operation: a request that names no fault itself asks the
:class:`Controller` for one. The first script entry whose ``model`` scope
matches is consumed; with no such entry, one random draw in [0, 1) picks a
fault by the cumulative probabilities (in the fixed order of ``PROBABILITIES``).
With a ``seed`` the draws repeat exactly from one configuration to the next.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from mock_provider.faults import HAPPY, Fault, FaultError, describe_vocabulary, parse_fault

# Probability name -> the fault it injects. Stream faults only touch streams.
PROBABILITIES: Final = (
    "timeout",
    "rate_limit",
    "server_error",
    "overloaded",
    "reset",
    "hang",
    "stream_cut",
    "stream_stall",
    "malformed_chunk",
    "slow_first_token",
)
STREAM_ONLY: Final = frozenset({"stream_cut", "stream_stall", "malformed_chunk"})
# Knobs for the random faults, with their defaults.
KNOBS: Final[dict[str, float]] = {
    "retry_after": 0,  # seconds of Retry-After on rate_limit / overloaded; 0 = none
    "chunk": 2,  # stream faults strike after this many chunks
    "stall_ms": 5_000,
    "ttft_ms": 5_000,  # slow_first_token
    "timeout_ms": 30_000,
}
_ALIASES: Final = {f"{name}_probability": name for name in PROBABILITIES}


@dataclass(frozen=True, slots=True)
class ScriptEntry:
    fault: Fault
    model: str | None
    source: Mapping[str, object]


@dataclass(frozen=True, slots=True)
class FailureConfig:
    """A validated control-API configuration."""

    probabilities: Mapping[str, float]
    knobs: Mapping[str, float]
    seed: int | None
    script: tuple[ScriptEntry, ...]

    @classmethod
    def parse(cls, body: object) -> FailureConfig:
        """Validate a ``POST /config/failures`` body; raise FaultError naming the problem."""
        if not isinstance(body, dict):
            raise FaultError("body must be a JSON object")
        probabilities: dict[str, float] = {}
        knobs = dict(KNOBS)
        seed: int | None = None
        script: list[ScriptEntry] = []
        for key, value in body.items():
            name = _ALIASES.get(key, key)
            if name in PROBABILITIES:
                probabilities[name] = _probability(name, value)
            elif name in KNOBS:
                knobs[name] = _knob(name, value)
            elif name == "seed":
                if not isinstance(value, int) or isinstance(value, bool):
                    raise FaultError(f"seed must be an integer, got {value!r}")
                seed = value
            elif name == "script":
                script = _script(value)
            else:
                valid = [*PROBABILITIES, *KNOBS, "seed", "script"]
                raise FaultError(f"unknown key {key!r}; valid: {', '.join(valid)}")
        total = sum(probabilities.values())
        if total > 1.0 + 1e-9:
            raise FaultError(f"probabilities add up to {total:g}; they must not exceed 1")
        return cls(probabilities, knobs, seed, tuple(script))

    def to_json(self) -> dict[str, object]:
        return {
            "probabilities": dict(self.probabilities),
            **self.knobs,
            "seed": self.seed,
            "script": [dict(entry.source) for entry in self.script],
        }


EMPTY: Final = FailureConfig({}, dict(KNOBS), None, ())


class Controller:
    """Hands out the next fault for a request that asked for none."""

    def __init__(self) -> None:
        self._config = EMPTY
        self._script: deque[ScriptEntry] = deque()
        self._random = random.Random()

    def configure(self, config: FailureConfig) -> None:
        """Replace the whole configuration (and restart the seeded sequence)."""
        self._config = config
        self._script = deque(config.script)
        self._random = random.Random(config.seed)

    def reset(self) -> None:
        self.configure(EMPTY)

    def next_fault(self, model: str | None, stream: bool, overloaded_status: int = 529) -> Fault:
        """Consume one script entry or one random draw.

        *overloaded_status* is the flavour's "overloaded" status (529 Anthropic, 503 OpenAI).
        """
        for index, entry in enumerate(self._script):
            if entry.model is None or entry.model == model:
                del self._script[index]
                return entry.fault
        if not self._config.probabilities:
            return HAPPY
        draw = self._random.random()
        edge = 0.0
        for name in PROBABILITIES:
            edge += self._config.probabilities.get(name, 0.0)
            if draw < edge:
                if name in STREAM_ONLY and not stream:
                    return HAPPY
                return self._fault_for(name, overloaded_status)
        return HAPPY

    def snapshot(self) -> dict[str, object]:
        state = self._config.to_json()
        state["script_remaining"] = [dict(entry.source) for entry in self._script]
        state["vocabulary"] = dict(describe_vocabulary())
        return state

    def _fault_for(self, name: str, overloaded_status: int) -> Fault:
        knobs = self._config.knobs
        retry_after = knobs["retry_after"] or None
        chunk = int(knobs["chunk"])
        match name:
            case "timeout":
                return Fault(fail="timeout", timeout_ms=int(knobs["timeout_ms"]))
            case "rate_limit":
                return Fault(fail=429, retry_after=retry_after)
            case "server_error":
                return Fault(fail=500)
            case "overloaded":
                return Fault(fail=overloaded_status, retry_after=retry_after)
            case "reset":
                return Fault(fail="reset")
            case "hang":
                return Fault(fail="hang")
            case "stream_cut":
                return Fault(fail_chunk=chunk)
            case "stream_stall":
                return Fault(stall_chunk=chunk, stall_ms=int(knobs["stall_ms"]))
            case "malformed_chunk":
                return Fault(malformed_chunk=chunk)
            case _:
                return Fault(ttft_ms=int(knobs["ttft_ms"]))


def _probability(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise FaultError(f"{name} must be a probability between 0 and 1, got {value!r}")
    return float(value)


def _knob(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise FaultError(f"{name} must be a non-negative number, got {value!r}")
    return float(value)


def _script(value: object) -> list[ScriptEntry]:
    if not isinstance(value, list):
        raise FaultError("script must be a list of fault objects")
    entries = []
    for position, item in enumerate(value):
        if not isinstance(item, dict):
            raise FaultError(f"script[{position}] must be an object, got {item!r}")
        fields = dict(item)
        model = fields.pop("model", None)
        if model is not None and not isinstance(model, str):
            raise FaultError(f"script[{position}].model must be a string")
        try:
            fault = parse_fault(fields)
        except FaultError as exc:
            raise FaultError(f"script[{position}]: {exc}") from None
        entries.append(ScriptEntry(fault, model, item))
    return entries
