"""The effective policy for people (admin JSON, `sidecar explain`) and the `sidecar` CLI."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar import cli
from sidecar.policy.explain import explain, policy_json
from sidecar.policy.loader import load_policy
from sidecar.policy.model import REDACTED, PolicySet
from sidecar.policy.redaction import redact_url

REPO = Path(__file__).resolve().parents[2]
SECRET = "sk-SECRET-123"
URL_PASSWORD = "hunter2-PASSWORD"

POLICY = f"""\
version: 1
upstreams:
  openai:
    url: https://api.example.com/
    format: openai
    auth: {{header: Authorization, value: "Bearer ${{KEY}}"}}
  anthropic:
    url: https://proxy-user:{URL_PASSWORD}@anthropic.example.com:8443/base
    format: anthropic
    connect_timeout: 750ms
    capabilities: {{prefill: true}}
    client_auth: pass
    forward_headers: [X-Forwarded-For, cookie]
defaults:
  deadline: 30s
  timeouts: {{first_byte: 10s}}
  retry:
    backoff: {{base: 100ms, max: 2s}}
    budget: {{ratio: 10%}}
routes:
  - name: chat
    match:
      path: /v1/chat/completions
      methods: [POST]
      model: "gpt-*"
      header: {{name: X-Tenant, value: "premium-*"}}
    validate: {{max_prompt_tokens: 8000}}
    breaker:
      window: {{size: 1m, min_calls: 20, failure_rate: 50%}}
      key: upstream_model
    fallback:
      - upstream: openai
      - upstream: anthropic
        model_map: {{"gpt-4o-mini*": claude-haiku, "*": claude-sonnet}}
  - name: rest
    match: {{prefix: /v1/}}
    timeouts: {{connect: 1s}}
    retry: {{retry_after: {{honor: false}}}}
    breaker: {{enabled: false}}
    fallback:
      - {{upstream: openai, model: gpt-4o}}
"""


@pytest.fixture
def policy(tmp_path: Path) -> PolicySet:
    (tmp_path / "policy.yaml").write_text(POLICY)
    return load_policy(tmp_path, {"KEY": SECRET})


# --- redact_url ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://h", "http://h"),
        ("http://h:8080/x?q=1", "http://h:8080/x?q=1"),
        # The whole user info: a key is as often written as the user name.
        ("http://sk-user-key@h:1/x", f"http://{REDACTED}@h:1/x"),
        ("http://u:p@h", f"http://{REDACTED}@h"),
        ("https://u:p@h:8443/base?q=1", f"https://{REDACTED}@h:8443/base?q=1"),
        ("https://u:p@[::1]:8443/x", f"https://{REDACTED}@[::1]:8443/x"),
        # A key with a / or @ in it: all before the last @ is user info.
        ("http://sk/ab@c@h/x", f"http://{REDACTED}@h/x"),
        # URLs urlsplit refuses: redacted all the same, never an exception.
        ("http://u:pw@h:abc", f"http://{REDACTED}@h:abc"),
        ("http://u:pw@[::1", f"http://{REDACTED}@[::1"),
        ("http://[::1", "http://[::1"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


# --- policy_json ----------------------------------------------------------------------


def test_policy_json_never_contains_secrets(policy: PolicySet) -> None:
    text = json.dumps(policy_json(policy))
    assert SECRET not in text
    assert URL_PASSWORD not in text
    assert REDACTED in text


def test_policy_json_upstreams(policy: PolicySet) -> None:
    upstreams = policy_json(policy)["upstreams"]
    assert upstreams == {
        "openai": {
            "url": "https://api.example.com",
            "format": "openai",
            "auth": {"header": "Authorization", "value": REDACTED},
            "client_auth": "drop",
            "forward_headers": [],
            "connect_timeout": "2s",
            "pool": {"max_connections": 256},
            "capabilities": {"prefill": False, "tools": True},
            "rate_limit": None,
        },
        "anthropic": {
            "url": f"https://{REDACTED}@anthropic.example.com:8443/base",
            "format": "anthropic",
            "auth": None,
            "client_auth": "pass",
            "forward_headers": ["cookie", "x-forwarded-for"],
            "connect_timeout": "750ms",
            "pool": {"max_connections": 256},
            "capabilities": {"prefill": True, "tools": True},
            "rate_limit": None,
        },
    }


def test_policy_json_routes_show_effective_values(policy: PolicySet) -> None:
    data = policy_json(policy)
    assert data["hash"] == policy.hash
    assert data["files"] == list(policy.files)
    chat, rest = data["routes"]  # type: ignore[misc]
    assert chat == {
        "name": "chat",
        "match": {
            "path": "/v1/chat/completions",
            "methods": ["POST"],
            "model": "gpt-*",
            "header": {"name": "x-tenant", "value": "premium-*"},
        },
        "validate": {"max_body": 1048576, "max_prompt_tokens": 8000},
        "deadline": "30s",
        "timeouts": {"connect": "per upstream", "first_byte": "10s", "idle": "30s"},
        "retry": {
            "attempts": 3,
            "on": ["429", "500", "502", "503", "504", "529", "connect_error", "reset", "timeout"],
            "backoff": {"base": "100ms", "max": "2s", "multiplier": 2.0, "jitter": "full"},
            "retry_after": {"honor": True, "max_wait": "5s"},
            "budget": {"ratio": 0.1, "min_per_second": 5.0},
        },
        "breaker": {
            "enabled": True,
            "consecutive_failures": None,
            "window": {"size": "1m", "min_calls": 20, "failure_rate": 0.5},
            "open_for": "30s",
            "half_open": {"probes": 1},
            "key": "upstream_model",
        },
        "fallback": [
            {"upstream": "openai", "model": None, "model_map": None, "when": "always"},
            {
                "upstream": "anthropic",
                "model": None,
                "model_map": {"gpt-4o-mini*": "claude-haiku", "*": "claude-sonnet"},
                "when": "always",
            },
        ],
        "translate": {"max_tokens": 4096, "unsupported": "error"},
        "continuation": {"enabled": False, "target": "next"},
        "access": {"keys": [], "localhost_only": False},
        "limits": {"max_in_flight": 1000},
        "rate_limit": None,
        "cache": {
            "enabled": False,
            "when": "deterministic",
            "ttl": "5m",
            "max_entries": 1000,
            "max_entry_size": 1048576,
        },
    }
    assert rest["match"] == {"prefix": "/v1/", "methods": "any", "model": None, "header": None}
    assert rest["timeouts"]["connect"] == "1s"
    assert rest["retry"]["retry_after"] == {"honor": False, "max_wait": "5s"}
    assert rest["breaker"]["enabled"] is False
    assert rest["breaker"]["consecutive_failures"] == 5
    assert rest["fallback"] == [
        {"upstream": "openai", "model": "gpt-4o", "model_map": None, "when": "always"}
    ]


# --- explain ----------------------------------------------------------------------------


def test_explain_never_contains_secrets(policy: PolicySet) -> None:
    text = explain(policy)
    assert SECRET not in text
    assert URL_PASSWORD not in text
    assert f"Authorization: {REDACTED}" in text


def test_explain_shows_each_route_pipeline_with_effective_values(policy: PolicySet) -> None:
    lines = explain(policy).splitlines()
    assert lines[0] == f"policy {policy.hash} from {policy.files[0]}"
    text = "\n".join(lines)
    assert (
        "route 1 'chat': /v1/chat/completions (POST, model gpt-*, header x-tenant: premium-*)"
        in lines
    )
    # The steps are numbered in the order a request meets them, each number once.
    assert "  1. in flight  at most 1000 at once (503 + Retry-After beyond)" in lines
    assert "  2. validate   body <= 1048576 bytes, prompt <= 8000 tokens (chars/4)" in lines
    assert "  3. deadline   30s for the whole chain" in lines
    assert "  4. fallback   2 target(s), in order:" in lines
    assert "     1) openai (openai, https://api.example.com)" in lines
    assert (
        f"     2) anthropic (anthropic, https://{REDACTED}@anthropic.example.com:8443"
        "/base), model map: gpt-4o-mini* → claude-haiku, * → claude-sonnet"
    ) in lines
    assert (
        "        retry      3 attempt(s) on 429, 500, 502, 503, 504, 529, connect_error, reset, "
        "timeout"
    ) in lines
    assert "                   backoff 100ms x2 up to 2s, jitter full" in lines
    assert "                   Retry-After honored up to 5s" in lines
    assert "                   budget 10% of requests, min 5/s" in lines
    assert (
        "        breaker    per upstream+model: opens at 50% failures over 1m (min 20 calls), "
        "open 30s, 1 half-open probe(s)"
    ) in lines
    # connect falls back to each upstream's own connect_timeout.
    assert "        timeouts   connect 2s, first byte 10s, idle 30s" in lines
    assert "        timeouts   connect 750ms, first byte 10s, idle 30s" in lines
    assert f"        auth       Authorization: {REDACTED}; client credentials dropped" in lines
    assert (
        "        auth       none; client credentials passed (client_auth: pass, same wire format "
        "only)"
    ) in lines
    assert "        forwards   cookie, x-forwarded-for (dropped by default)" in lines
    assert sum(line.startswith("        forwards") for line in lines) == 1  # anthropic's only
    assert "route 2 'rest': prefix /v1/ (any method)" in lines
    assert "     1) openai (openai, https://api.example.com), model → gpt-4o" in lines
    assert "                   Retry-After ignored" in lines
    assert "        breaker    off" in lines
    assert "        timeouts   connect 1s, first byte 10s, idle 30s" in lines
    assert text.endswith("No route matches → 404 in the client's wire format, no upstream call.")


def test_explain_says_access_keys_keep_client_credentials_back(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "version: 1\n"
        "upstreams: {byok: {url: http://b, format: openai, client_auth: pass}}\n"
        "routes:\n"
        "  - name: keyed\n"
        "    match: {path: /v1/chat/completions}\n"
        "    access: {keys: [sidecar-key-123]}\n"
        "    fallback: [{upstream: byok}]\n"
    )
    lines = explain(load_policy(tmp_path, {})).splitlines()
    assert (
        "        auth       none; client credentials dropped (they hold the route's access keys)"
    ) in lines


# --- the CLI --------------------------------------------------------------------------

GOOD = """\
version: 1
upstreams:
  a: {url: http://a, format: openai, auth: {header: x-api-key, value: sk-SECRET-123}}
routes:
  - {name: chat, match: {path: /v1/chat/completions}, fallback: [{upstream: a}]}
"""
BAD = """\
version: 2
upstreams:
  a: {url: http://a, format: openia}
routes:
  - {name: chat, match: {path: /v1/chat/completions}, fallback: [{upstream: a}]}
"""


def write(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "policy.yaml").write_text(text)
    return directory


def test_check_good_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = write(tmp_path / "good", GOOD)
    assert cli.check(directory) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"ok: {directory} — 1 file(s), 1 upstream(s), 1 route(s), hash ")


def test_check_bad_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = write(tmp_path / "bad", BAD)
    assert cli.check(directory) == 1
    out, err = capsys.readouterr()
    assert out == ""
    file = directory / "policy.yaml"
    assert err.splitlines() == [
        f"{file}:1:10: version: must be 1, got 2",
        f"{file}:3:30: upstreams.a.format: 'openia' is not one of 'openai', 'anthropic' "
        "(did you mean 'openai'?)",
        f"2 error(s) in {directory}",
    ]


def test_check_missing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.check(tmp_path / "nope") == 1
    assert capsys.readouterr().err.splitlines() == [
        f"{tmp_path / 'nope'}: not a directory",
        f"1 error(s) in {tmp_path / 'nope'}",
    ]


def test_show_good_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = write(tmp_path / "good", GOOD)
    assert cli.show(directory) == 0
    out = capsys.readouterr().out
    assert "route 1 'chat': /v1/chat/completions (any method)" in out
    assert "sk-SECRET-123" not in out
    assert f"x-api-key: {REDACTED}" in out


def test_show_bad_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = write(tmp_path / "bad", BAD)
    assert cli.show(directory) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.splitlines()) == 2


def test_main_exits_with_the_check_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as caught:
        cli.main(["check", str(write(tmp_path / "bad", BAD))])
    assert caught.value.code == 1
    with pytest.raises(SystemExit) as caught:
        cli.main(["explain", str(write(tmp_path / "good", GOOD))])
    assert caught.value.code == 0
    assert "route 1 'chat'" in capsys.readouterr().out


def test_shipped_default_policy_is_valid() -> None:
    """`python -m sidecar check policies` from the repository root, in a clean environment."""
    environment = {"PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "sidecar", "check", "policies"],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ok: policies — ")
    assert done.stderr == ""


def test_rate_limits_cache_and_state_are_explained_with_the_redis_password_redacted(
    tmp_path: Path,
) -> None:
    (tmp_path / "p.yaml").write_text(
        "version: 1\n"
        "state: {backend: redis, url: 'redis://:s3cret-pass@redis:6379/0', prefix: app1}\n"
        "upstreams:\n"
        "  gpt: {url: 'https://api.example.com', format: openai,"
        " rate_limit: {requests_per_minute: 500, tokens_per_minute: 90000}}\n"
        "routes:\n"
        "  - name: chat\n"
        "    match: {path: /v1/chat/completions}\n"
        "    rate_limit: {requests_per_minute: 60, key: client_key}\n"
        "    cache: {ttl: 10m}\n"
        "    fallback: [{upstream: gpt}]\n"
    )
    policy = load_policy(tmp_path, {})
    text = explain(policy)
    shown = json.dumps(policy_json(policy))
    assert "s3cret-pass" not in text
    assert "s3cret-pass" not in shown
    assert "state: shared through Redis redis://***redacted***@redis:6379/0" in text
    assert "  3. rate limit 60 requests/min, burst 100%, per client_key (429 beyond)" in text
    assert "  4. cache      deterministic requests, ttl 10m" in text
    assert "limit      500 requests/min, 90000 tokens/min" in text
    data = policy_json(policy)
    assert data["state"] == {
        "backend": "redis",
        "url": "redis://***redacted***@redis:6379/0",
        "prefix": "app1",
        "timeout": "50ms",
    }


def test_each_routes_steps_are_numbered_once_in_order(policy: PolicySet) -> None:
    routes = explain(policy).split("\nroute ")[1:]
    assert routes
    for block in routes:
        numbers = [int(n) for n in re.findall(r"^  (\d+)\. ", block, re.M)]
        assert numbers == list(range(1, len(numbers) + 1)), block
