"""Chaos soak: random upstream faults, live policy edits, impatient clients — nothing lost.

    python bench/soak.py [--requests 20000] [--concurrency 64] [--seed 1] [--json out.json]

Starts two mock providers (OpenAI and Anthropic formats) and the sidecar as
real processes on loopback. Each mock fails 30 % of the attempts it gets, drawn
from a seeded sequence through its control API: 429 (one mock with
Retry-After, one without), 500, 503/529, connection reset, hang, slow first
token, and, for streams, cuts, stalls and malformed chunks. Half the requests
stream; clients are the official openai and anthropic SDKs and raw aiohttp;
some streaming clients hang up after the first token on purpose. Meanwhile the
policy file is rewritten every second (every fifth edit, from the third, is invalid and must be
refused) and the sidecar gets one SIGHUP.

Every answer is classified from the client's side. The mock's answer is the
same text every time, so a "success" whose text differs from it is a truncated
success. Zero-tolerance figures: truncated successes, malformed errors,
transport errors, hangs past the deadline, upstream requests left open,
asyncio tasks above the baseline, secrets in any output. The report is
printed and, with --json, written to a file. ``run_soak`` is what the CI-sized
test (tests/soak/test_soak.py) calls.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import openai
import orjson

ROOT = Path(__file__).resolve().parent.parent
ANSWER = (
    "This is the mock provider's fixed answer. It is the same every time, word for word, "
    "so a client can compare what it received with what was sent and notice at once when "
    "a stream was cut short."
)
KEYS = {"gpt": "sk-soak-gpt-7f3a9c1e5b", "claude": "sk-ant-soak-claude-2d8e4f6a"}
MESSAGES = [{"role": "user", "content": "Say the fixed answer."}]
DEADLINE = 8.0  # the route deadline in the soak policy
HANG_AFTER = DEADLINE + 2.0  # an answer later than this is a hang
CLIENT_TIMEOUT = DEADLINE + 6.0  # clients give up here (and count a hang)

# 30 % of attempts fail. Faults that wait are set longer than the attempt timeouts,
# so they exercise first_byte / idle timeouts and the failover after them.
FAULTS: dict[str, float] = {
    "rate_limit": 0.06,
    "server_error": 0.05,
    "overloaded": 0.04,
    "reset": 0.03,
    "hang": 0.02,
    "timeout": 0.01,
    "slow_first_token": 0.02,
    "stream_cut": 0.03,
    "stream_stall": 0.02,
    "malformed_chunk": 0.02,
}
KNOBS = {"timeout_ms": 3000, "stall_ms": 3000, "ttft_ms": 2500, "chunk": 2}

POLICY = """\
# soak edit {edit}
version: 1
upstreams:
  gpt:
    url: {gpt}
    format: openai
    auth: {{header: Authorization, value: "Bearer {gpt_key}"}}
  claude:
    url: {claude}
    format: anthropic
    auth: {{header: x-api-key, value: {claude_key}}}
    capabilities: {{prefill: true}}
defaults:
  deadline: {deadline}s
  timeouts: {{connect: 1s, first_byte: 1s, idle: 1s}}
  retry:
    attempts: {attempts}
    backoff: {{base: 50ms, max: 400ms, jitter: full}}
    retry_after: {{honor: true, max_wait: 2s}}
    budget: {{ratio: 30%, min_per_second: 20}}
  breaker: {{consecutive_failures: 8, open_for: 2s, half_open: {{probes: 2}}}}
  continuation: {{enabled: true}}
routes:
  - name: chat
    match: {{path: /v1/chat/completions, methods: [POST]}}
    validate: {{max_body: 1MiB}}
    fallback:
      - upstream: gpt
      - {{upstream: claude, model: claude-sonnet-4-6}}
  - name: messages
    match: {{path: /v1/messages, methods: [POST]}}
    validate: {{max_body: 1MiB}}
    fallback:
      - upstream: claude
      - {{upstream: gpt, model: gpt-4o}}
"""
INVALID = "version: 1\nroutes:\n  - name: chat\n    retry: {attempts: many}\n"


@dataclass
class Proc:
    process: subprocess.Popen[bytes]
    log: Path
    urls: list[str]

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def _start(argv: list[str], log: Path, want: int, env: dict[str, str] | None = None) -> Proc:
    """Start a server writing to *log*; wait for *want* ``http://`` URLs in what it prints."""
    handle = log.open("wb")
    process = subprocess.Popen(
        [sys.executable, *argv],
        stdout=handle,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    handle.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        urls = re.findall(r"(?:listening on|admin API on) (http://[\d.]+:\d+)", log.read_text())
        if len(urls) >= want:
            return Proc(process, log, urls[:want])
        if process.poll() is not None:
            raise RuntimeError(f"{argv[:3]} exited: {log.read_text()[-2000:]}")
        time.sleep(0.05)  # polling a child's startup output, not a race
    process.kill()
    raise RuntimeError(f"{argv[:3]} did not start: {log.read_text()[-2000:]}")


def _stop(proc: Proc) -> None:
    if proc.process.poll() is None:
        proc.process.send_signal(signal.SIGTERM)
        try:
            proc.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.process.kill()
            proc.process.wait()


def _proc_figures(pid: int) -> dict[str, int]:
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    with open(f"/proc/{pid}/status") as status:
        rss_kb = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    return {"open_fds": fds, "rss_kb": rss_kb}


@dataclass
class Outcome:
    kind: str  # success | error:<type> | truncated | malformed_error | transport_error | hang
    seconds: float
    cancelled: bool = False  # the client hung up on purpose
    body: str = ""  # error bodies, for the secrets grep


@dataclass
class Plan:
    fmt: str  # openai | anthropic
    stream: bool
    sdk: bool
    hang_up: bool  # a streaming client that leaves after the first token


def _plans(count: int, seed: int) -> list[Plan]:
    rng = random.Random(seed)
    plans = []
    for _ in range(count):
        stream = rng.random() < 0.5
        plans.append(
            Plan(
                fmt="openai" if rng.random() < 0.6 else "anthropic",
                stream=stream,
                sdk=rng.random() < 0.5,
                hang_up=stream and rng.random() < 0.06,
            )
        )
    return plans


# -- one request per client kind ------------------------------------------------------


def _error_kind(fmt: str, body: object) -> str | None:
    """The error's stable type if *body* is a well-formed error in *fmt*, else None."""
    if not isinstance(body, dict):
        return None
    if fmt == "openai":
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error.get("code") or error.get("type"))
        return None
    error = body.get("error")
    if body.get("type") == "error" and isinstance(error, dict) and "message" in error:
        return str(error.get("type"))
    return None


async def _raw(session: aiohttp.ClientSession, base: str, plan: Plan) -> Outcome:
    started = time.monotonic()
    if plan.fmt == "openai":
        url, payload = base + "/v1/chat/completions", {"model": "gpt-4o", "messages": MESSAGES}
    else:
        url = base + "/v1/messages"
        payload = {"model": "claude-sonnet-4-6", "max_tokens": 256, "messages": MESSAGES}
    if plan.stream:
        payload["stream"] = True
    async with session.post(url, json=payload) as response:
        if response.status >= 400:
            text = await response.text()
            kind = _error_kind(plan.fmt, _loads(text))
            return Outcome(
                f"error:{kind}" if kind else "malformed_error", _since(started), body=text
            )
        if not plan.stream:
            body = _loads(await response.text())
            return Outcome(_judge(_text_of(plan.fmt, body)), _since(started))
        return await _raw_stream(response, plan, started)


async def _raw_stream(response: aiohttp.ClientResponse, plan: Plan, started: float) -> Outcome:
    text, buffer = [], b""
    terminated = False
    async for chunk in response.content.iter_any():
        buffer += chunk
        while b"\n\n" in buffer:
            block, buffer = buffer.split(b"\n\n", 1)
            data = b"".join(
                line[5:].strip() for line in block.split(b"\n") if line.startswith(b"data:")
            )
            if not data:
                continue
            if data == b"[DONE]":
                terminated = True
                continue
            event = _loads(data)
            kind = _error_kind(plan.fmt, event)
            if kind is not None:
                return Outcome(f"error:{kind}", _since(started), body=data.decode(errors="replace"))
            piece = _delta(plan.fmt, event)
            if piece is None:
                return Outcome("malformed_event", _since(started))
            text.append(piece)
            if isinstance(event, dict) and event.get("type") == "message_stop":
                terminated = True
            if plan.hang_up and text and "".join(text):
                response.close()  # leave mid-stream on purpose
                return Outcome("cancelled", _since(started), cancelled=True)
    if not terminated:
        return Outcome("truncated", _since(started))  # ended without terminator or error
    return Outcome(_judge("".join(text)), _since(started))


async def _sdk(clients: tuple[openai.AsyncOpenAI, anthropic.AsyncAnthropic], plan: Plan) -> Outcome:
    started = time.monotonic()
    gpt, claude = clients
    try:
        if plan.fmt == "openai":
            if not plan.stream:
                completion = await gpt.chat.completions.create(model="gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
                return Outcome(_judge(completion.choices[0].message.content), _since(started))
            stream = await gpt.chat.completions.create(
                model="gpt-4o",
                messages=MESSAGES,  # type: ignore[arg-type]
                stream=True,
            )
            pieces = []
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    pieces.append(chunk.choices[0].delta.content)
                    if plan.hang_up:
                        await stream.close()
                        return Outcome("cancelled", _since(started), cancelled=True)
            return Outcome(_judge("".join(pieces)), _since(started))
        if not plan.stream:
            message = await claude.messages.create(
                model="claude-sonnet-4-6",
                max_tokens=256,
                messages=MESSAGES,  # type: ignore[arg-type]
            )
            text = "".join(block.text for block in message.content if block.type == "text")
            return Outcome(_judge(text), _since(started))
        events = await claude.messages.create(
            model="claude-sonnet-4-6",
            max_tokens=256,
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
        )
        pieces, stopped = [], False
        async for event in events:
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                pieces.append(event.delta.text)
                if plan.hang_up:
                    await events.close()
                    return Outcome("cancelled", _since(started), cancelled=True)
            stopped = stopped or event.type == "message_stop"
        if not stopped:
            return Outcome("truncated", _since(started))
        return Outcome(_judge("".join(pieces)), _since(started))
    except (openai.APIStatusError, anthropic.APIStatusError) as error:
        body = error.body
        if plan.fmt == "anthropic" and isinstance(body, dict) and "error" in body:
            kind = _error_kind("anthropic", body)
        elif isinstance(body, dict):
            kind = _error_kind("openai", {"error": body}) or _error_kind("openai", body)
        else:
            kind = None
        raw = orjson.dumps(body, default=str).decode()  # (a stream's response is not readable)
        return Outcome(f"error:{kind}" if kind else "malformed_error", _since(started), body=raw)
    except (openai.APIConnectionError, anthropic.APIConnectionError):
        raise
    except (openai.APIError, anthropic.APIError) as error:  # an error event mid-stream
        body = getattr(error, "body", None)
        kind = _error_kind(plan.fmt, body) or _error_kind(plan.fmt, {"error": body})
        return Outcome(f"error:{kind}" if kind else "malformed_error", _since(started), str(body))


def _loads(data: bytes | str) -> object:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return None


def _since(started: float) -> float:
    return time.monotonic() - started


def _judge(text: str | None) -> str:
    return "success" if text == ANSWER else "truncated"


def _text_of(fmt: str, body: object) -> str | None:
    if not isinstance(body, dict):
        return None
    try:
        if fmt == "openai":
            return str(body["choices"][0]["message"]["content"])
        return "".join(b["text"] for b in body["content"] if b.get("type") == "text")
    except (KeyError, IndexError, TypeError):
        return None


def _delta(fmt: str, event: object) -> str | None:
    """The text an event adds ("" for events without text); None when it is not an event."""
    if not isinstance(event, dict):
        return None
    if fmt == "openai":
        choices = event.get("choices")
        if not isinstance(choices, list):
            return "" if "usage" in event else None
        if not choices:
            return ""
        content = choices[0].get("delta", {}).get("content")
        return content if isinstance(content, str) else ""
    if not isinstance(event.get("type"), str):
        return None
    delta = event.get("delta")
    if event["type"] == "content_block_delta" and isinstance(delta, dict):
        return str(delta.get("text", ""))
    return ""


# -- the run ----------------------------------------------------------------------------


@dataclass
class Soak:
    workdir: Path
    gpt: Proc
    claude: Proc
    sidecar: Proc
    edits: int = 0
    invalid_edits: int = 0
    sighups: int = 0
    samples: dict[str, dict[str, int]] = field(default_factory=dict)
    series: list[int] = field(default_factory=list)  # RSS (kB) every tenth of the run

    @property
    def base(self) -> str:
        return self.sidecar.urls[0]

    @property
    def admin(self) -> str:
        return self.sidecar.urls[1]

    def write_policy(self, attempts: int, valid: bool = True) -> None:
        path = self.workdir / "policies" / "soak.yaml"
        text = (
            POLICY.format(
                edit=self.edits,
                gpt=self.gpt.urls[0],
                claude=self.claude.urls[0],
                gpt_key=KEYS["gpt"],
                claude_key=KEYS["claude"],
                deadline=int(DEADLINE),
                attempts=attempts,
            )
            if valid
            else INVALID
        )
        temporary = path.with_suffix(".tmp")
        temporary.write_text(text)
        temporary.replace(path)  # atomic, as editors and the kubelet do it


async def _json(session: aiohttp.ClientSession, url: str) -> Any:
    async with session.get(url) as response:
        return await response.json()


async def _configure_faults(session: aiohttp.ClientSession, soak: Soak, seed: int) -> None:
    for index, mock in enumerate((soak.gpt, soak.claude)):
        body: dict[str, object] = {**FAULTS, **KNOBS, "seed": seed + index}
        body["retry_after"] = 1 if index == 0 else 0  # 429s with and without Retry-After
        async with session.post(mock.urls[0] + "/config/failures", json=body) as response:
            assert response.status == 200, await response.text()


async def _reloader(soak: Soak, stop: asyncio.Event, sighup_at: asyncio.Event) -> None:
    """A policy edit every second (every fifth one, from the third, invalid), one SIGHUP."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1.0)
        if stop.is_set():
            return
        soak.edits += 1
        invalid = soak.edits % 5 == 3  # the 3rd, 8th, 13th ... edit
        soak.invalid_edits += invalid
        soak.write_policy(attempts=2 + soak.edits % 2, valid=not invalid)
        if sighup_at.is_set() and soak.sighups == 0:
            soak.sidecar.process.send_signal(signal.SIGHUP)
            soak.sighups += 1


async def _drive(soak: Soak, plans: list[Plan], concurrency: int, progress: Callable[[int], None]
                 ) -> list[Outcome]:  # fmt: skip
    outcomes: list[Outcome] = []
    gpt = openai.AsyncOpenAI(
        base_url=soak.base + "/v1", api_key="client", max_retries=0, timeout=CLIENT_TIMEOUT
    )
    claude = anthropic.AsyncAnthropic(
        base_url=soak.base, api_key="client", max_retries=0, timeout=CLIENT_TIMEOUT
    )
    connector = aiohttp.TCPConnector(limit=concurrency * 2)
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
    queue = iter(enumerate(plans))
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def worker() -> None:
            for index, plan in queue:
                started = time.monotonic()
                try:
                    if plan.sdk:
                        outcome = await _sdk((gpt, claude), plan)
                    else:
                        outcome = await _raw(session, soak.base, plan)
                except (TimeoutError, openai.APITimeoutError, anthropic.APITimeoutError):
                    outcome = Outcome("hang", _since(started))
                except (aiohttp.ClientError, openai.APIConnectionError,
                        anthropic.APIConnectionError) as exc:  # fmt: skip
                    outcome = Outcome(f"transport_error:{type(exc).__name__}", _since(started))
                outcomes.append(outcome)
                progress(index)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    await gpt.close()
    await claude.close()
    return outcomes


def _percentile(values: list[int], share: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * share))] if ordered else 0


async def run_soak(
    requests: int = 1000,
    concurrency: int = 64,
    seed: int = 1,
    workdir: Path | None = None,
    verbose: bool = False,
) -> dict[str, Any]:
    """Run the soak; the report (see the module docstring)."""
    owned = tempfile.TemporaryDirectory(prefix="soak-") if workdir is None else None
    root = Path(owned.name) if owned is not None else workdir
    assert root is not None
    (root / "policies").mkdir(parents=True, exist_ok=True)
    procs: list[Proc] = []
    try:
        for name, key in KEYS.items():
            procs.append(
                _start(
                    [
                        *("-m", "mock_provider", "--port", "0", "--name", name),
                        *("--api-key", key, "--chunk-ms", "4"),
                    ],
                    root / f"{name}.log",
                    1,
                )
            )
        soak = Soak(root, procs[0], procs[1], procs[0])
        soak.write_policy(attempts=3)
        soak.sidecar = _start(
            [
                *("-m", "sidecar", "run", "--port", "0", "--admin-port", "0"),
                *("--policies", str(root / "policies"), "--grace", "5"),
            ],
            root / "sidecar.log",
            2,
            env={"SIDECAR_ADMIN_TOKEN": ""},
        )
        procs.append(soak.sidecar)
        return await _soak(soak, requests, concurrency, seed, verbose)
    finally:
        for proc in reversed(procs):
            _stop(proc)
        if owned is not None:
            owned.cleanup()


async def _soak(
    soak: Soak, requests: int, concurrency: int, seed: int, verbose: bool
) -> dict[str, Any]:
    pid = soak.sidecar.process.pid
    async with aiohttp.ClientSession() as admin:
        # Warm up without faults at full concurrency (connection pools at their working
        # size), then take the baseline.
        await _drive(soak, _plans(4 * concurrency, seed + 100), concurrency, lambda _: None)
        baseline = await _json(admin, soak.admin + "/admin/runtime")
        soak.samples["start"] = _proc_figures(pid)
        await _configure_faults(admin, soak, seed)
        stop, sighup = asyncio.Event(), asyncio.Event()
        reloader = asyncio.create_task(_reloader(soak, stop, sighup))
        middle = requests // 2
        started = time.monotonic()

        tenth = max(1, requests // 10)

        def progress(index: int) -> None:
            if index == middle:
                soak.samples["middle"] = _proc_figures(pid)
                sighup.set()
            if index % tenth == 0:
                soak.series.append(_proc_figures(pid)["rss_kb"])
            if verbose and index % 1000 == 0:
                print(f"  {index} requests sent", file=sys.stderr, flush=True)

        outcomes = await _drive(soak, _plans(requests, seed), concurrency, progress)
        elapsed = time.monotonic() - started
        stop.set()
        await reloader
        for mock in (soak.gpt, soak.claude):
            async with admin.delete(mock.urls[0] + "/config/failures"):
                pass
        # Wait (bounded) for the sidecar to finish what clients left behind.
        settle_until = time.monotonic() + 10
        runtime = await _json(admin, soak.admin + "/admin/runtime")
        while time.monotonic() < settle_until and (
            runtime["in_flight"] or runtime["tasks"] > baseline["tasks"]
        ):
            await asyncio.sleep(0.1)
            runtime = await _json(admin, soak.admin + "/admin/runtime")
        soak.samples["end"] = _proc_figures(pid)
        stats = [await _json(admin, mock.urls[0] + "/stats") for mock in (soak.gpt, soak.claude)]
        policy = await _json(admin, soak.admin + "/admin/policy")
        async with admin.get(soak.base + "/metrics") as response:
            metrics = await response.text()
        async with admin.get(soak.admin + "/admin/breakers") as response:
            breakers = await response.text()
    await asyncio.sleep(0.1)  # the fast log path flushes within 50 ms
    return _report(soak, outcomes, elapsed, baseline, runtime, stats, policy, metrics, breakers)


def _report(
    soak: Soak,
    outcomes: list[Outcome],
    elapsed: float,
    baseline: dict[str, int],
    runtime: dict[str, int],
    stats: list[dict[str, Any]],
    policy: dict[str, Any],
    metrics: str,
    breakers: str,
) -> dict[str, Any]:
    kinds = Counter(outcome.kind for outcome in outcomes)
    errors = {
        k.removeprefix("error:"): v for k, v in sorted(kinds.items()) if k.startswith("error:")
    }
    log = soak.sidecar.text()
    attempts: list[int] = []
    for line in log.splitlines():
        if '"logger":"sidecar.request"' in line:
            record = orjson.loads(line)
            if isinstance(record.get("attempts"), int):
                attempts.append(record["attempts"])
    cancelled_metric = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("sidecar_client_cancellations_total{")
    )
    outputs = [log, metrics, breakers, orjson.dumps(policy).decode()]
    outputs += [outcome.body for outcome in outcomes]
    outputs += [soak.gpt.text(), soak.claude.text()]
    leaked = sum(text.count(secret) for secret in KEYS.values() for text in outputs[:4])
    leaked += sum(outcome.body.count(secret) for secret in KEYS.values() for outcome in outcomes)
    hangs = kinds.get("hang", 0) + sum(1 for o in outcomes if o.seconds > HANG_AFTER)
    upstream_attempts = sum(int(s["total"]) for s in stats)
    return {
        "requests": len(outcomes),
        "seconds": round(elapsed, 1),
        "requests_per_second": round(len(outcomes) / elapsed, 1),
        "complete_successes": kinds.get("success", 0),
        "well_formed_errors": errors,
        "client_hang_ups": kinds.get("cancelled", 0),
        "truncated_successes": kinds.get("truncated", 0),
        "malformed": kinds.get("malformed_error", 0) + kinds.get("malformed_event", 0),
        "transport_errors": sum(v for k, v in kinds.items() if k.startswith("transport_error")),
        "hangs_beyond_deadline": hangs,
        "slowest_answer_s": round(max((o.seconds for o in outcomes), default=0.0), 2),
        "upstream_attempts": upstream_attempts,
        "attempts_per_request": {
            "p50": _percentile(attempts, 0.5),
            "p99": _percentile(attempts, 0.99),
            "max": max(attempts, default=0),
            "logged_requests": len(attempts),
        },
        "upstream_outcomes": [s["by_outcome"] for s in stats],
        "upstream_in_flight_after": sum(int(s["in_flight"]) for s in stats),
        "sidecar_client_cancellations": int(cancelled_metric),
        "process": soak.samples,
        "rss_kb_every_tenth": soak.series,
        "asyncio_tasks": {"baseline": baseline["tasks"], "after": runtime["tasks"]},
        "in_flight_after": runtime["in_flight"],
        "policy_edits": {
            "written": soak.edits,
            "invalid": soak.invalid_edits,
            "sighups": soak.sighups,
            "reloads": policy["reloads"],
            "serving_hash": policy["hash"],
        },
        "secrets_found_in_outputs": leaked,
        "sidecar_unexpected_errors": log.count(
            '"level":"error","logger":"sidecar","msg":"unexpected'
        ),
        "unclassified": {
            kind: count
            for kind, count in kinds.items()
            if kind not in ("success", "cancelled", "truncated", "hang")
            and not kind.startswith(("error:", "malformed", "transport_error"))
        },
    }


def failures(report: dict[str, Any], fd_slack: int = 16, rss_slack_kb: int = 40_000) -> list[str]:
    """The zero-tolerance checks; an empty list means the soak passed."""
    problems = []
    zero = (
        "truncated_successes",
        "malformed",
        "transport_errors",
        "hangs_beyond_deadline",
        "upstream_in_flight_after",
        "in_flight_after",
        "secrets_found_in_outputs",
        "sidecar_unexpected_errors",
    )
    for key in zero:
        if report[key]:
            problems.append(f"{key}: {report[key]}")
    tasks = report["asyncio_tasks"]
    if tasks["after"] > tasks["baseline"]:
        problems.append(f"asyncio tasks grew: {tasks}")
    start, end = report["process"]["start"], report["process"]["end"]
    if end["open_fds"] > start["open_fds"] + fd_slack:
        problems.append(f"open fds grew: {start['open_fds']} -> {end['open_fds']}")
    if end["rss_kb"] > start["rss_kb"] + rss_slack_kb:
        problems.append(f"RSS grew: {start['rss_kb']} -> {end['rss_kb']} kB")
    accounted = (
        report["complete_successes"]
        + sum(report["well_formed_errors"].values())
        + report["client_hang_ups"]
    )
    if accounted != report["requests"]:
        problems.append(f"{report['requests'] - accounted} requests unaccounted for")
    reloads = report["policy_edits"]["reloads"]
    if report["policy_edits"]["invalid"] and not reloads.get("refused"):
        problems.append("invalid policy edits were not refused")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="also write the report to this file")
    args = parser.parse_args()
    report = asyncio.run(run_soak(args.requests, args.concurrency, args.seed, verbose=True))
    report["failures"] = failures(report)
    text = orjson.dumps(report, option=orjson.OPT_INDENT_2).decode()
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    sys.exit(1 if report["failures"] else 0)


if __name__ == "__main__":
    main()
