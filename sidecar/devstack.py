"""``make run``: the local stack in the foreground, stopped as one by Ctrl-C.

Starts mock provider "openai" on :8001, mock provider "anthropic" on :8002 and
the sidecar on :8080 with ``policies/`` (its upstream URLs pointed at the
mocks). On SIGINT/SIGTERM, or when any process dies, every process it started
is terminated (then killed after a grace period), so nothing is left running.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import FrameType

GRACE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Service:
    name: str
    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


def services(args: argparse.Namespace) -> list[Service]:
    mock = (sys.executable, "-m", "mock_provider", "--chunk-ms", str(args.chunk_ms))
    sidecar = (
        *(sys.executable, "-m", "sidecar", "run", "--policies", args.policies),
        *("--admin-port", str(args.admin_port), "--log-format", args.log_format),
    )
    return [
        Service("mock-openai", (*mock, "--port", str(args.openai_port), "--name", "openai")),
        Service(
            "mock-anthropic",
            (*mock, "--port", str(args.anthropic_port), "--name", "anthropic"),
        ),
        Service(
            "sidecar",
            (*sidecar, "--port", str(args.sidecar_port)),
            (
                ("OPENAI_URL", f"http://127.0.0.1:{args.openai_port}"),
                ("ANTHROPIC_URL", f"http://127.0.0.1:{args.anthropic_port}"),
            ),
        ),
    ]


class StopRequested(Exception):
    """Raised by the signal handler to end the wait for children."""


def request_stop(signum: int, _frame: FrameType | None) -> None:
    raise StopRequested(signal.Signals(signum).name)


class Stack:
    """A group of child processes that live and die together."""

    def __init__(self, wanted: Sequence[Service], grace: float = GRACE_SECONDS) -> None:
        self._wanted = wanted
        self._grace = grace
        self._children: dict[str, subprocess.Popen[bytes]] = {}

    def run(self) -> int:
        """Start everything, wait for a signal or a death, stop everything; the exit code."""
        signal.signal(signal.SIGINT, request_stop)
        signal.signal(signal.SIGTERM, request_stop)
        code = 0
        try:
            self.start()
            code = self.wait()
        finally:
            self.stop()
        return code

    def start(self) -> None:
        for service in self._wanted:
            env = {**os.environ, **dict(service.env)} if service.env else None
            child = subprocess.Popen(service.argv, env=env)
            self._children[service.name] = child
            print(f"devstack: started {service.name} (pid {child.pid})", flush=True)

    def wait(self) -> int:
        """Block until a signal asks us to stop (0) or any child exits (its code, or 1)."""
        try:
            pid, status = os.wait()
        except StopRequested as stop:
            print(f"devstack: {stop}; stopping", flush=True)
            return 0
        name = next((n for n, c in self._children.items() if c.pid == pid), str(pid))
        code = os.waitstatus_to_exitcode(status)
        for child in self._children.values():
            if child.pid == pid:
                child.returncode = code
        print(f"devstack: {name} exited with {code}; stopping the rest", flush=True)
        return code or 1

    def stop(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for child in self._children.values():
            if child.poll() is None:
                child.terminate()
        deadline = time.monotonic() + self._grace
        for name, child in self._children.items():
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"devstack: {name} ignored SIGTERM; killing it", flush=True)
                child.kill()
                child.wait()
        print("devstack: all processes stopped", flush=True)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="devstack", description=__doc__)
    parser.add_argument("--openai-port", type=int, default=8001)
    parser.add_argument("--anthropic-port", type=int, default=8002)
    parser.add_argument("--sidecar-port", type=int, default=8080)
    parser.add_argument("--admin-port", type=int, default=8081, help="the sidecar's admin API")
    parser.add_argument("--log-format", choices=("json", "text"), default="text")
    parser.add_argument("--policies", default="policies", help="the sidecar's policy directory")
    parser.add_argument("--chunk-ms", type=int, default=40, help="mock streaming pace")
    args = parser.parse_args(argv)
    sys.exit(Stack(services(args)).run())


if __name__ == "__main__":
    main()
