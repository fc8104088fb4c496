"""Type aliases shared across the sidecar, each defined here and nowhere else."""

from __future__ import annotations

from typing import Literal

JSON = dict[str, object]  # a parsed JSON object: request and response bodies, policy trees
WireFormat = Literal["openai", "anthropic"]  # the formats clients and upstreams speak
