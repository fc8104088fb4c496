"""``sidecar``: check and explain policies, or run the server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from aiohttp import web

from sidecar.app import DEFAULT_PORT, SidecarConfig, create_app
from sidecar.observability.logs import configure as configure_logging
from sidecar.policy.errors import PolicyError
from sidecar.policy.explain import explain
from sidecar.policy.loader import load_policy
from sidecar.state import STORE

log = logging.getLogger("sidecar")


def _version() -> str:
    try:
        return version("llm-sidecar")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def _default_policies() -> str:
    return os.environ.get("SIDECAR_POLICIES", "policies")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sidecar",
        description="A reliability sidecar for LLM APIs (OpenAI and Anthropic wire formats).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = commands.add_parser(
        "check", help="validate a policy directory; exit 1 on errors (for CI / pre-commit)"
    )
    check.add_argument("directory", nargs="?", default=None, help="default: $SIDECAR_POLICIES")
    show = commands.add_parser(
        "explain", help="print each route's compiled pipeline with every effective value"
    )
    show.add_argument("directory", nargs="?", default=None, help="default: $SIDECAR_POLICIES")
    run = commands.add_parser("run", help="start the sidecar server")
    run.add_argument("--policies", default=None, help="policy directory ($SIDECAR_POLICIES)")
    run.add_argument("--host", default=os.environ.get("SIDECAR_HOST", "127.0.0.1"))
    run.add_argument("--port", type=int, default=int(os.environ.get("SIDECAR_PORT", DEFAULT_PORT)))
    run.add_argument(
        "--poll-interval", type=float, default=10.0, help="safety-net policy hash poll (s)"
    )
    run.add_argument(
        "--no-watch",
        action="store_true",
        help="no file-event watch (reload by poll and SIGHUP only)",
    )
    return parser


def check(directory: Path) -> int:
    try:
        policy = load_policy(directory, os.environ)
    except PolicyError as error:
        for issue in error.issues:
            print(issue, file=sys.stderr)
        print(f"{len(error.issues)} error(s) in {directory}", file=sys.stderr)
        return 1
    print(
        f"ok: {directory} — {len(policy.files)} file(s), {len(policy.upstreams)} upstream(s), "
        f"{len(policy.routes)} route(s), hash {policy.hash}"
    )
    return 0


def show(directory: Path) -> int:
    try:
        policy = load_policy(directory, os.environ)
    except PolicyError as error:
        for issue in error.issues:
            print(issue, file=sys.stderr)
        return 1
    print(explain(policy))
    return 0


async def serve(config: SidecarConfig) -> None:
    """Serve until SIGINT/SIGTERM; SIGHUP forces a policy reload."""
    app = create_app(config)
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port, reuse_address=True)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise SystemExit(
            f"sidecar: cannot listen on {config.host}:{config.port}: {exc.strerror}"
        ) from None
    host, port = runner.addresses[0][:2]
    print(f"sidecar listening on http://{host}:{port} (policies: {config.policies})", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: app[STORE].reload("SIGHUP"))
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "check":
        sys.exit(check(Path(args.directory or _default_policies())))
    if args.command == "explain":
        sys.exit(show(Path(args.directory or _default_policies())))
    if args.command == "run":
        configure_logging()
        try:
            config = SidecarConfig(
                policies=Path(args.policies or _default_policies()),
                host=args.host,
                port=args.port,
                poll_interval=args.poll_interval,
                watch=not args.no_watch,
            )
        except ValueError as exc:
            sys.exit(f"sidecar: {exc}")
        with contextlib.suppress(KeyboardInterrupt):
            try:
                import uvloop
            except ImportError:  # pragma: no cover
                asyncio.run(serve(config))
            else:
                uvloop.run(serve(config))
        return
    parser.print_help()
