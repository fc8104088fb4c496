"""A bare aiohttp pass-through proxy: the baseline the sidecar's overhead is measured against.

    python bench/passthrough.py --upstream http://127.0.0.1:8001 [--port 0]

One pooled ClientSession, headers copied minus hop-by-hop, the body streamed
back chunk by chunk. No policy, no validation, no retries, no logs.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

from aiohttp import ClientSession, TCPConnector, web

HOP = {"connection", "keep-alive", "transfer-encoding", "host", "content-length", "upgrade"}


def make_app(upstream: str) -> web.Application:
    app = web.Application()
    session_key = web.AppKey("session", ClientSession)

    async def forward(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        async with request.app[session_key].request(
            request.method, upstream + request.path_qs, data=body, headers=headers
        ) as answer:
            response = web.StreamResponse(status=answer.status)
            for key, value in answer.headers.items():
                if key.lower() not in HOP and key.lower() != "content-encoding":
                    response.headers[key] = value
            await response.prepare(request)
            async for chunk in answer.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def lifecycle(app: web.Application):  # type: ignore[no-untyped-def]
        app[session_key] = ClientSession(connector=TCPConnector(limit=1024))
        yield
        await app[session_key].close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


async def serve(upstream: str, port: int) -> None:
    runner = web.AppRunner(make_app(upstream), handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    host, bound = runner.addresses[0][:2]
    print(f"passthrough listening on http://{host}:{bound}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.upstream.rstrip("/"), args.port))


if __name__ == "__main__":
    main()
