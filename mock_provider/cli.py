"""``mock-provider``: run one mock LLM provider until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from mock_provider.app import create_app
from mock_provider.content import DEFAULT_ANSWER
from mock_provider.state import DEFAULT_MODELS, MockSettings
from mock_provider.turns import PREFILL_MODES

log = logging.getLogger("mock_provider")
SHUTDOWN_TIMEOUT = 0.5  # seconds


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="mock-provider",
        description="A mock LLM provider (OpenAI and Anthropic formats) that fails on purpose.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8001, help="port (0 picks a free one)")
    parser.add_argument("--name", default="mock", help="instance name, sent as x-mock-name")
    parser.add_argument("--answer", default=DEFAULT_ANSWER, help="the canned answer text")
    parser.add_argument(
        "--echo", action="store_true", help="answer with the last user message instead"
    )
    parser.add_argument(
        "--models", default=",".join(DEFAULT_MODELS), help="comma-separated /v1/models list"
    )
    parser.add_argument(
        "--chunk-ms", type=int, default=0, help="default pause between stream chunks"
    )
    parser.add_argument(
        "--api-key", default=None, help="require this key (Bearer / x-api-key); default: none"
    )
    parser.add_argument(
        "--prefill",
        choices=PREFILL_MODES,
        default=None,
        help="a trailing assistant turn: continue it (accept), 400 (reject) or answer afresh "
        "(ignore); default: accept on /v1/messages, ignore on /v1/chat/completions",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    return parser.parse_args(argv)


async def serve(settings: MockSettings, host: str, port: int, access_log: bool) -> None:
    """Serve until SIGINT or SIGTERM; print the bound address first (for scripts and tests)."""
    app = create_app(settings)
    # A short grace for requests in flight: hangs and stalls never finish on their own,
    # and aiohttp's default (60 s) would hold SIGTERM up that long.
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        access_log=log if access_log else None,
        shutdown_timeout=SHUTDOWN_TIMEOUT,
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise SystemExit(f"mock-provider: cannot listen on {host}:{port}: {exc.strerror}") from None
    bound = runner.addresses[0]
    print(
        f"mock-provider {settings.name!r} listening on http://{bound[0]}:{bound[1]}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    try:
        settings = MockSettings(
            name=args.name,
            answer=args.answer,
            echo=args.echo,
            models=tuple(m.strip() for m in args.models.split(",") if m.strip()),
            chunk_ms=args.chunk_ms,
            api_key=args.api_key,
            prefill=args.prefill,
        )
    except ValueError as exc:
        sys.exit(f"mock-provider: {exc}")
    coroutine = serve(settings, args.host, args.port, args.access_log)
    with contextlib.suppress(KeyboardInterrupt):
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a Linux/macOS dependency
            asyncio.run(coroutine)
        else:
            uvloop.run(coroutine)
