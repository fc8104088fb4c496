"""The web service: ``GET /health`` and ``POST /generate {"topic": "..."}``.

A failed generation is reported as it arrived from the sidecar (502 with the
error's message and the sidecar's request id); it is not retried here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import openai
from aiohttp import web

from examples.app.generate import Generator, make_client

GENERATOR = web.AppKey("generator", Generator)
MAX_TOPIC = 300


def create_app(client: openai.AsyncOpenAI | None = None) -> web.Application:
    """The app; without *client*, one is made from the environment and closed on exit."""
    app = web.Application()

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        own = client is None
        app[GENERATOR] = Generator(make_client() if client is None else client)
        yield
        if own:
            await app[GENERATOR].client.close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/health", health)
    app.router.add_post("/generate", generate)
    return app


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def generate(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except ValueError:
        body = None
    topic = body.get("topic") if isinstance(body, dict) else None
    if not isinstance(topic, str) or not topic.strip() or len(topic) > MAX_TOPIC:
        return web.json_response(
            {"error": f'send {{"topic": "..."}}: a non-empty string of at most {MAX_TOPIC} chars'},
            status=400,
        )
    try:
        result = await request.app[GENERATOR].generate(topic.strip())
    except openai.APIError as error:
        # What the sidecar could not save: report it, do not try again.
        status = getattr(error, "status_code", None)
        request_id = getattr(error, "request_id", None)
        return web.json_response(
            {"error": error.message, "upstream_status": status, "request_id": request_id},
            status=502,
        )
    return web.json_response(result.to_json())
