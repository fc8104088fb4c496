"""Type aliases shared across the sidecar, each defined here and nowhere else."""

from __future__ import annotations

JSON = dict[str, object]  # a parsed JSON object: request and response bodies, policy trees
