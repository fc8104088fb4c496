"""``POST /v1/embeddings``: deterministic vectors, so equal inputs embed equally."""

from __future__ import annotations

import base64
import hashlib
import math
import random
import struct
from typing import Final

from mock_provider.content import count_tokens
from mock_provider.wire import JSON, BadRequest, require_model

DEFAULT_DIMENSIONS: Final = 16
MAX_DIMENSIONS: Final = 4096


def embeddings_body(body: object) -> tuple[str, JSON]:
    """Validate an embeddings request and build the response body: (model, body)."""
    if not isinstance(body, dict):
        raise BadRequest("the request body must be a JSON object")
    model = require_model(body)
    inputs = _inputs(body.get("input"))
    dimensions = body.get("dimensions", DEFAULT_DIMENSIONS)
    if isinstance(dimensions, bool) or not isinstance(dimensions, int):
        raise BadRequest("'dimensions' must be an integer", "dimensions")
    if not 1 <= dimensions <= MAX_DIMENSIONS:
        raise BadRequest(f"'dimensions' must be between 1 and {MAX_DIMENSIONS}", "dimensions")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise BadRequest("'encoding_format' must be 'float' or 'base64'", "encoding_format")
    data: list[object] = []
    tokens = 0
    for index, text in enumerate(inputs):
        vector = _vector(text, dimensions)
        tokens += max(1, count_tokens(text))
        embedding: object = (
            base64.b64encode(struct.pack(f"<{dimensions}f", *vector)).decode()
            if encoding == "base64"
            else vector
        )
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return model, {"object": "list", "data": data, "model": model, "usage": usage}


def _inputs(value: object) -> list[str]:
    """The texts to embed; token-id arrays are embedded by their text form."""
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(item, str) for item in value):
            return [str(item) for item in value]
        if all(isinstance(item, int) and not isinstance(item, bool) for item in value):
            return [" ".join(map(str, value))]
        if all(isinstance(item, list) and item for item in value):
            return [" ".join(map(str, item)) for item in value]
    raise BadRequest(
        "'input' must be a non-empty string, list of strings, or token array(s)", "input"
    )


def _vector(text: str, dimensions: int) -> list[float]:
    seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")
    rng = random.Random(seed)
    raw = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [x / norm for x in raw]
