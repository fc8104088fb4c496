"""``sidecar``: check and explain policies, or run the server."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from aiohttp import web

from sidecar.app import DEFAULT_PORT, SidecarConfig, create_app, server_options
from sidecar.observability.logs import configure as configure_logging
from sidecar.policy.envfile import read_env_file
from sidecar.policy.errors import PolicyError
from sidecar.policy.explain import explain
from sidecar.policy.files import directories_of, read_paths
from sidecar.policy.loader import Checked, check_files, load_paths, load_policy
from sidecar.server import JsonErrorRunner
from sidecar.state import ADMIN_APP, LIFECYCLE, STORE

log = logging.getLogger("sidecar")


def _version() -> str:
    try:
        return version("llm-sidecar")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "0+unknown"


def _default_policies() -> str:
    return os.environ.get("SIDECAR_POLICIES", "policies")


def _policy_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "paths",
        nargs="*",
        type=Path,
        metavar="PATH",
        help="one policy directory, or policy files read as one set (default: $SIDECAR_POLICIES)",
    )
    parser.add_argument(
        "--env-file",
        action="append",
        type=Path,
        default=[],
        metavar="FILE",
        help="KEY=VALUE lines over the environment for ${VAR}s (repeatable; later files win)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sidecar",
        description="A reliability sidecar for LLM APIs (OpenAI and Anthropic wire formats).",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = commands.add_parser(
        "check", help="validate a policy (directory or files); exit 1 on errors (CI, pre-commit)"
    )
    _policy_arguments(check)
    check.add_argument(
        "--allow-unset",
        action="store_true",
        help="an unset ${VAR} is a warning, read as empty (check without secrets)",
    )
    check.add_argument(
        "--whole-directory",
        action="store_true",
        help="check the whole directory of each file given, each one a policy (pre-commit)",
    )
    show = commands.add_parser(
        "explain", help="print each route's compiled pipeline with every effective value"
    )
    _policy_arguments(show)
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
    run.add_argument(
        "--admin-host",
        default=os.environ.get("SIDECAR_ADMIN_HOST", "127.0.0.1"),
        help="admin API address (default 127.0.0.1; others need SIDECAR_ADMIN_TOKEN)",
    )
    run.add_argument(
        "--admin-port",
        type=int,
        default=int(os.environ.get("SIDECAR_ADMIN_PORT", "8081")),
        help="admin API port (default 8081; 0 picks a free one)",
    )
    run.add_argument(
        "--main-metrics",
        choices=("on", "off"),
        default=os.environ.get("SIDECAR_MAIN_METRICS", "on"),
        help="GET /metrics on the main port too (default on; the admin port always has it)",
    )
    run.add_argument(
        "--grace",
        type=float,
        default=float(os.environ.get("SIDECAR_GRACE", "25")),
        help="seconds in-flight requests get to finish on SIGTERM (default 25)",
    )
    run.add_argument(
        "--header-timeout",
        type=float,
        default=float(os.environ.get("SIDECAR_HEADER_TIMEOUT", "30")),
        help="seconds a connection gets to send a request head; idle keep-alive too (default 30)",
    )
    run.add_argument(
        "--body-timeout",
        type=float,
        default=float(os.environ.get("SIDECAR_BODY_TIMEOUT", "30")),
        help="seconds a client gets to send a request body; then 408 (default 30)",
    )
    run.add_argument("--log-format", choices=("json", "text"), default="json")
    run.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"), default="info")
    run.add_argument(
        "--workers",
        type=int,
        default=1,
        help="processes sharing the port (SO_REUSEPORT); worker i's admin port is admin+i",
    )
    return parser


def _environment(env_files: Sequence[Path]) -> dict[str, str]:
    """The process environment, each ``--env-file`` over it; exit 2 on a bad one."""
    environ = dict(os.environ)
    for env_file in env_files:
        try:
            environ.update(read_env_file(env_file))
        except ValueError as exc:
            print(f"sidecar: --env-file {exc}", file=sys.stderr)
            sys.exit(2)
    return environ


def _as_list(paths: Path | Sequence[Path]) -> list[Path]:
    return [paths] if isinstance(paths, Path) else list(paths)


def _label(paths: Sequence[Path]) -> str:
    return str(paths[0]) if len(paths) == 1 else f"{len(paths)} files"


def check(
    paths: Path | Sequence[Path],
    environ: Mapping[str, str] = os.environ,
    allow_unset: bool = False,
) -> int:
    """``sidecar check``: 0 when valid (warnings allowed), 1 when not."""
    paths = _as_list(paths)
    try:
        checked = check_files(read_paths(paths), environ, allow_unset)
    except PolicyError as error:
        checked = Checked(None, list(error.issues))
    for warning in checked.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    label = _label(paths)
    if checked.errors:
        for issue in checked.errors:
            print(issue, file=sys.stderr)
        print(f"{len(checked.errors)} error(s) in {label}", file=sys.stderr)
        return 1
    warned = f", {len(checked.warnings)} warning(s)" if checked.warnings else ""
    policy = checked.policy
    if policy is None:
        print(f"ok: {label} — partly checked: some values come from unset variables{warned}")
        return 0
    print(
        f"ok: {label} — {len(policy.files)} file(s), {len(policy.upstreams)} upstream(s), "
        f"{len(policy.routes)} route(s), hash {policy.hash}{warned}"
    )
    return 0


def show(paths: Path | Sequence[Path], environ: Mapping[str, str] = os.environ) -> int:
    """``sidecar explain``: 0 and the pipeline, or 1 and the errors."""
    try:
        policy = load_paths(_as_list(paths), environ)
    except PolicyError as error:
        for issue in error.issues:
            print(issue, file=sys.stderr)
        return 1
    print(explain(policy))
    return 0


def tune_gc() -> None:
    """Once started: move what startup built (modules, policy, schema) out of the collector's
    sight, and collect the young generation less often. A request allocates a few hundred
    objects (aiohttp's request/response/protocol objects among them); with the default
    threshold (700) the collector ran every couple of requests, scanning the same
    long-lived objects each time. Cycles are still collected, just in bigger batches."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 10, 10)


async def serve(config: SidecarConfig, reuse_port: bool = False) -> None:
    """Serve until SIGINT/SIGTERM (then drain within the grace period); SIGHUP reloads."""
    app = create_app(config)
    runner = JsonErrorRunner(
        app,
        handler_cancellation=True,
        access_log=None,
        shutdown_timeout=1.0,
        **server_options(config),  # type: ignore[arg-type]
    )
    admin_runner = web.AppRunner(app[ADMIN_APP], access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    await admin_runner.setup()
    site = web.TCPSite(runner, config.host, config.port, reuse_address=True, reuse_port=reuse_port)
    admin_site = web.TCPSite(admin_runner, config.admin_host, config.admin_port)
    for which, started in ((site, runner), (admin_site, admin_runner)):
        try:
            await which.start()
        except OSError as exc:
            await runner.cleanup()
            await admin_runner.cleanup()
            raise SystemExit(f"sidecar: cannot listen on {which.name}: {exc.strerror}") from None
        host, port = started.addresses[-1][:2]
        label = "sidecar listening on" if which is site else "sidecar admin API on"
        print(f"{label} http://{host}:{port}", flush=True)
    log.info({"event": "started", "policies": str(config.policies), "grace_s": config.grace})
    tune_gc()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGHUP, lambda: app[STORE].reload("SIGHUP"))
    try:
        await stop.wait()
        lifecycle = app[LIFECYCLE]
        lifecycle.draining = True  # readiness fails at once
        log.info({"event": "draining", "in_flight": lifecycle.in_flight, "grace_s": config.grace})
        await site.stop()  # no new connections
        aborted = await lifecycle.drain(config.grace)
        log.info({"event": "stopped", "aborted": aborted})
    finally:
        await runner.cleanup()
        await admin_runner.cleanup()


def run(args: argparse.Namespace) -> None:
    configure_logging(getattr(logging, args.log_level.upper()), args.log_format)
    policies = Path(args.policies or _default_policies())
    try:
        config = SidecarConfig(
            policies=policies,
            host=args.host,
            port=args.port,
            poll_interval=args.poll_interval,
            watch=not args.no_watch,
            admin_host=args.admin_host,
            admin_port=args.admin_port,
            admin_token=os.environ.get("SIDECAR_ADMIN_TOKEN") or None,
            main_metrics=args.main_metrics == "on",
            grace=args.grace,
            header_timeout=args.header_timeout,
            body_timeout=args.body_timeout,
        )
        load_policy(policies, os.environ)  # refuse to start on an invalid policy
    except ValueError as exc:
        print(f"sidecar: {exc}", file=sys.stderr)
        sys.exit(2)
    except PolicyError as error:
        for issue in error.issues:
            print(issue, file=sys.stderr)
        print(f"sidecar: refusing to start: {len(error.issues)} error(s) in {policies}",
              file=sys.stderr)  # fmt: skip
        sys.exit(2)
    if args.workers > 1:
        sys.exit(run_workers(args))
    with contextlib.suppress(KeyboardInterrupt):
        try:
            import uvloop
        except ImportError:  # pragma: no cover
            asyncio.run(serve(config, reuse_port=args.worker))
        else:
            uvloop.run(serve(config, reuse_port=args.worker))


def run_workers(args: argparse.Namespace) -> int:
    """Start N worker processes sharing the port; they live and stop together."""
    from sidecar.devstack import Service, Stack

    base = [sys.executable, "-m", "sidecar", "run", "--worker"]
    skip = {"--workers", "--admin-port"}
    forwarded: list[str] = []
    argv = sys.argv[2:] if sys.argv[1:2] == ["run"] else []
    iterator = iter(argv)
    for item in iterator:
        name = item.split("=", 1)[0]
        if name in skip:
            if "=" not in item:
                next(iterator, None)
            continue
        forwarded.append(item)
    services = [
        Service(
            f"worker-{index}",
            (
                *base,
                *forwarded,
                "--admin-port",
                str(args.admin_port + index if args.admin_port else 0),
            ),
        )
        for index in range(args.workers)
    ]
    return Stack(services, grace=args.grace + 5).run()


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("check", "explain"):
        paths = args.paths or [Path(_default_policies())]
        environ = _environment(args.env_file)
        if args.command == "check" and args.whole_directory:
            sys.exit(max(check(one, environ, args.allow_unset) for one in directories_of(paths)))
        if args.command == "check":
            sys.exit(check(paths, environ, args.allow_unset))
        sys.exit(show(paths, environ))
    if args.command == "run":
        run(args)
        return
    parser.print_help()
