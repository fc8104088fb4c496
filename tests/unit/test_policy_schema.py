"""The JSON Schema stage: every field accepted, every class of mistake named precisely."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from sidecar.policy.errors import PolicyError
from sidecar.policy.loader import load_policy
from sidecar.policy.model import (
    Auth,
    Backoff,
    Breaker,
    Budget,
    Match,
    PolicySet,
    Retry,
    RetryAfter,
    Route,
    Secret,
    Target,
    Timeouts,
    Upstream,
    Validation,
    Window,
)
from sidecar.policy.schema import schema

ENV = {"KEY": "sk-1", "PRIMARY_URL": "https://api.example.com/"}

MAXIMAL = """\
# yaml-language-server: $schema=../sidecar/policy/schema.json
version: 1
upstreams:
  primary:
    url: ${PRIMARY_URL}
    format: openai
    auth: {header: Authorization, value: "Bearer ${KEY}"}
    connect_timeout: 1500ms
    pool: {max_connections: 64}
    capabilities: {prefill: true, tools: false}
  backup:
    url: http://user:pw@127.0.0.1:8002/base
    format: anthropic
    client_auth: pass
    forward_headers: [X-Forwarded-For]
defaults:
  validate: {max_body: 512KiB, max_prompt_tokens: 1000}
  deadline: 45s
  timeouts: {connect: 1s, first_byte: 20s, idle: 10s}
  retry:
    attempts: ${ATTEMPTS:-4}
    on: [connect_error, reset, timeout, 408, 409, 425, 429, 500, 503, 599]
    backoff: {base: 100ms, max: 2s, multiplier: 3, jitter: equal}
    retry_after: {honor: false, max_wait: 2s}
    budget: {ratio: 10%, min_per_second: 2.5}
  breaker:
    enabled: false
    consecutive_failures: 7
    open_for: 1m
    half_open: {probes: 3}
    key: upstream_model
  fallback:
    - upstream: primary
routes:
  - name: chat
    match:
      path: /v1/chat/completions
      methods: [POST, PUT]
      model: "gpt-4*"
      header: {name: X-Tenant, value: "premium-*"}
    fallback:
      - upstream: primary
        model: gpt-4o
      - upstream: backup
        model_map: {"gpt-4o-mini*": claude-haiku, "*": claude-sonnet}
    prefer: [backup]
  - name: rest.v1_all-methods
    match: {prefix: /v1/, methods: [GET, PATCH, DELETE, HEAD, OPTIONS]}
    validate: {max_body: 2048}
    deadline: 1h
    breaker:
      window: {size: 30s, min_calls: 20, failure_rate: 0.25}
"""


def load(
    directory: Path, files: dict[str, str], environ: dict[str, str] | None = None
) -> PolicySet:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return load_policy(directory, ENV if environ is None else environ)


def errors(directory: Path, files: dict[str, str]) -> list[str]:
    """Every issue of loading *files*, with the temporary directory stripped from names."""
    with pytest.raises(PolicyError) as caught:
        load(directory, files)
    return [str(issue).replace(f"{directory}/", "") for issue in caught.value.issues]


def test_schema_itself_is_valid_draft_2020_12() -> None:
    Draft202012Validator.check_schema(schema())
    shipped = Path(__file__).resolve().parents[2] / "sidecar" / "policy" / "schema.json"
    assert json.loads(shipped.read_text()) == schema()


def test_maximal_policy_compiles_to_every_value(tmp_path: Path) -> None:
    policy = load(tmp_path, {"policy.yaml": MAXIMAL})
    assert policy.files == (str(tmp_path / "policy.yaml"),)
    assert len(policy.hash) == 12
    primary = Upstream(
        name="primary",
        url="https://api.example.com",  # trailing slash dropped
        format="openai",
        auth=Auth("Authorization", Secret("Bearer sk-1")),
        connect_timeout=1.5,
        max_connections=64,
        prefill=True,
        tools=False,
    )
    backup = Upstream(
        name="backup",
        url="http://user:pw@127.0.0.1:8002/base",
        format="anthropic",
        client_auth="pass",
        forward_headers=frozenset({"x-forwarded-for"}),
    )
    assert dict(policy.upstreams) == {"primary": primary, "backup": backup}
    retry = Retry(
        attempts=4,
        on=frozenset({"connect_error", "reset", "timeout", 408, 409, 425, 429, 500, 503, 599}),
        backoff=Backoff(base=0.1, max=2.0, multiplier=3.0, jitter="equal"),
        retry_after=RetryAfter(honor=False, max_wait=2.0),
        budget=Budget(ratio=0.1, min_per_second=2.5),
    )
    chat = Route(
        name="chat",
        match=Match(
            path="/v1/chat/completions",
            prefix=False,
            methods=frozenset({"POST", "PUT"}),
            model="gpt-4*",
            header=("x-tenant", "premium-*"),
        ),
        fallback=(
            Target(primary, model="gpt-4o"),
            Target(backup, model_map=(("gpt-4o-mini*", "claude-haiku"), ("*", "claude-sonnet"))),
        ),
        validate=Validation(max_body=512 * 1024, max_prompt_tokens=1000),
        deadline=45.0,
        timeouts=Timeouts(connect=1.0, first_byte=20.0, idle=10.0),
        retry=retry,
        breaker=Breaker(
            enabled=False,
            consecutive_failures=7,
            window=None,
            open_for=60.0,
            half_open_probes=3,
            key="upstream_model",
        ),
        prefer=("backup",),
    )
    rest = Route(
        name="rest.v1_all-methods",
        match=Match(
            path="/v1/",
            prefix=True,
            methods=frozenset({"GET", "PATCH", "DELETE", "HEAD", "OPTIONS"}),
        ),
        fallback=(Target(primary),),  # from defaults
        validate=Validation(max_body=2048, max_prompt_tokens=1000),
        deadline=3600.0,
        timeouts=Timeouts(connect=1.0, first_byte=20.0, idle=10.0),
        retry=retry,
        breaker=Breaker(
            enabled=False,
            consecutive_failures=None,  # the route chose a window: the default count is dropped
            window=Window(size=30.0, min_calls=20, failure_rate=0.25),
            open_for=60.0,
            half_open_probes=3,
            key="upstream_model",
        ),
        prefer=("primary",),  # the default: any upstream of its chain
    )
    assert policy.routes == (chat, rest)
    assert policy.needs_model


def test_interpolated_plain_scalar_is_typed_for_the_schema(tmp_path: Path) -> None:
    policy = load(tmp_path, {"policy.yaml": MAXIMAL}, {**ENV, "ATTEMPTS": "7"})
    assert policy.routes[0].retry.attempts == 7


# --- one test per class of mistake, with the exact text and location ------------------

BASE = """\
version: 1
upstreams:
  a: {url: http://x, format: openai}
routes:
  - name: r
    match: {path: /x}
    fallback: [{upstream: a}]
"""


def with_route(extra: str) -> dict[str, str]:
    return {"p.yaml": BASE + extra}


RETRYABLE = (
    "is not a retryable condition (connect_error, reset, timeout, 408, 409, 425, 429, "
    "500-599; 4xx client errors are never retried)"
)
NAME = "is not a valid name (letters, digits, '_', '.', '-'; at most 64)"


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param(
            with_route("    retyr:\n      attempts: 3\n"),
            ["p.yaml:8:5: routes[0].retyr: unknown key 'retyr' (did you mean 'retry'?)"],
            id="unknown-key-did-you-mean",
        ),
        pytest.param(
            with_route("    colour: red\n"),
            ["p.yaml:8:13: routes[0].colour: unknown key 'colour'"],
            id="unknown-key-no-suggestion",
        ),
        pytest.param(
            {"p.yaml": BASE.replace("upstreams:", "upstream:")},
            ["p.yaml:2:1: upstream: unknown key 'upstream' (did you mean 'upstreams'?)"],
            id="unknown-top-level-key",
        ),
        pytest.param(
            {"p.yaml": BASE.replace("    match: {path: /x}\n", "")},
            ["p.yaml:5:5: routes[0]: missing required key 'match'"],
            id="missing-required-key",
        ),
        pytest.param(
            {
                "p.yaml": BASE.replace(
                    "  a: {url: http://x, format: openai}", "  a:\n    url: http://x"
                )
            },
            ["p.yaml:3:3: upstreams.a: missing required key 'format'"],
            id="missing-required-key-block",
        ),
        pytest.param(
            {"p.yaml": BASE.replace("format: openai", "format: openia")},
            [
                "p.yaml:3:30: upstreams.a.format: 'openia' is not one of 'openai', 'anthropic' "
                "(did you mean 'openai'?)"
            ],
            id="bad-enum-with-suggestion",
        ),
        pytest.param(
            {"p.yaml": BASE.replace("format: openai}", "format: openai, client_auth: forward}")},
            ["p.yaml:3:51: upstreams.a.client_auth: 'forward' is not one of 'drop', 'pass'"],
            id="bad-client-auth",
        ),
        pytest.param(
            with_route("    breaker: {key: model}\n"),
            [
                "p.yaml:8:20: routes[0].breaker.key: "
                "'model' is not one of 'upstream', 'upstream_model'"
            ],
            id="bad-enum",
        ),
        pytest.param(
            with_route("    retry: {backoff: {base: '250'}}\n"),
            [
                "p.yaml:8:29: routes[0].retry.backoff.base: '250' is not a duration "
                "(expected e.g. 250ms, 2s, 1m)"
            ],
            id="bad-duration",
        ),
        pytest.param(
            with_route("    deadline: 5\n"),
            ["p.yaml:8:15: routes[0].deadline: 5 is not a duration (expected e.g. 250ms, 2s, 1m)"],
            id="bad-duration-number",
        ),
        pytest.param(
            with_route("    validate: {max_body: 1.5MiB}\n"),
            [
                "p.yaml:8:26: routes[0].validate.max_body: '1.5MiB' is not a size "
                "(expected e.g. 1MiB, 512KiB, 1000000)"
            ],
            id="bad-size",
        ),
        pytest.param(
            with_route("    validate: {max_body: 0}\n"),
            [
                "p.yaml:8:26: routes[0].validate.max_body: 0 is not a size "
                "(expected e.g. 1MiB, 512KiB, 1000000)"
            ],
            id="zero-size",
        ),
        pytest.param(
            with_route("    breaker: {window: {size: 1m, min_calls: 5, failure_rate: 150%}}\n"),
            [
                "p.yaml:8:62: routes[0].breaker.window.failure_rate: '150%' is not a ratio "
                "(expected e.g. 50% or 0.5)"
            ],
            id="bad-ratio-percent",
        ),
        pytest.param(
            with_route("    retry: {budget: {ratio: 2}}\n"),
            [
                "p.yaml:8:29: routes[0].retry.budget.ratio: "
                "2 is not a ratio (expected e.g. 50% or 0.5)"
            ],
            id="bad-ratio-number",
        ),
        pytest.param(
            with_route("    retry: {on: [400, timeouts, 503]}\n"),
            [
                f"p.yaml:8:18: routes[0].retry.on[0]: 400 {RETRYABLE}",
                f"p.yaml:8:23: routes[0].retry.on[1]: 'timeouts' {RETRYABLE}",
            ],
            id="non-retryable-condition",
        ),
        pytest.param(
            {"p.yaml": BASE.replace("{path: /x}", "{methods: [POST]}")},
            ["p.yaml:6:12: routes[0].match: needs exactly one of 'path' (exact) or 'prefix'"],
            id="match-without-path-or-prefix",
        ),
        pytest.param(
            {"p.yaml": BASE.replace("{path: /x}", "{path: /x, prefix: /y}")},
            ["p.yaml:6:12: routes[0].match: needs exactly one of 'path' (exact) or 'prefix'"],
            id="match-with-both",
        ),
        pytest.param(
            {"p.yaml": BASE.replace("{path: /x}", "/x")},
            ["p.yaml:6:12: routes[0].match: '/x' needs exactly one of 'path' (exact) or 'prefix'"],
            id="match-not-a-mapping-reported-once",
        ),
        pytest.param(
            {"p.yaml": BASE.replace("{path: /x}", "{path: x}")},
            ["p.yaml:6:19: routes[0].match.path: 'x' must start with '/'"],
            id="relative-path",
        ),
        pytest.param(
            {"p.yaml": BASE.replace("version: 1", "version: 2")},
            ["p.yaml:1:10: version: must be 1, got 2"],
            id="version-2",
        ),
        pytest.param(
            {"p.yaml": BASE.replace("version: 1", "version: '1'")},
            ["p.yaml:1:10: version: must be 1, got '1'"],
            id="version-string",
        ),
        pytest.param(
            {"p.yaml": BASE.replace("format: openai}", "format: openai, forward_headers: [a b]}")},
            ["p.yaml:3:56: upstreams.a.forward_headers[0]: 'a b' is not a header name"],
            id="bad-forward-header-name",
        ),
        pytest.param(
            {"p.yaml": BASE.replace("format: openai}", "format: openai, forward_headers: cookie}")},
            ["p.yaml:3:55: upstreams.a.forward_headers: 'cookie' is not of type 'array'"],
            id="forward-headers-not-a-list",
        ),
        pytest.param(
            {"p.yaml": BASE.replace("http://x", "ftp://x")},
            ["p.yaml:3:12: upstreams.a.url: 'ftp://x' is not an http(s) URL"],
            id="bad-url",
        ),
        pytest.param(
            {"p.yaml": BASE.replace("name: r", "name: my route")},
            [f"p.yaml:5:11: routes[0].name: 'my route' {NAME}"],
            id="bad-route-name",
        ),
        pytest.param(
            {"p.yaml": BASE.replace("name: r", "name: " + "r" * 65)},
            [f"p.yaml:5:11: routes[0].name: {'r' * 65!r} {NAME}"],
            id="route-name-too-long",
        ),
        pytest.param(
            {
                "p.yaml": BASE.replace(
                    "  a: {url", "  'my api': {url: http://y, format: openai}\n  a: {url"
                )
            },
            [f"p.yaml:3:13: upstreams.my api: 'my api' {NAME}"],
            id="bad-upstream-name",
        ),
        pytest.param(
            with_route("    retry: {attempts: 11}\n"),
            ["p.yaml:8:23: routes[0].retry.attempts: 11 is greater than the maximum of 10"],
            id="out-of-range",
        ),
        pytest.param(
            with_route("    retry: {attempts: three}\n"),
            ["p.yaml:8:23: routes[0].retry.attempts: 'three' is not of type 'integer'"],
            id="wrong-type",
        ),
        pytest.param(
            {"p.yaml": BASE.replace("fallback: [{upstream: a}]", "fallback: []")},
            ["p.yaml:7:15: routes[0].fallback: [] should be non-empty"],
            id="empty-fallback",
        ),
        pytest.param(
            {"p.yaml": "- a\n"},
            ["p.yaml:1:1: ['a'] is not of type 'object'"],
            id="not-a-mapping",
        ),
    ],
)
def test_schema_error(tmp_path: Path, files: dict[str, str], expected: list[str]) -> None:
    assert errors(tmp_path, files) == expected


def test_every_error_of_a_file_is_reported_in_file_order(tmp_path: Path) -> None:
    text = """\
version: 2
upstreams:
  a: {url: http://x, format: openia}
routes:
  - name: r
    match: {path: /x}
    retry:
      atempts: 3
      on: [400]
      backoff: {base: '250'}
    fallback: [{upstream: a}]
"""
    assert errors(tmp_path, {"p.yaml": text}) == [
        "p.yaml:1:10: version: must be 1, got 2",
        "p.yaml:3:30: upstreams.a.format: 'openia' is not one of 'openai', 'anthropic' "
        "(did you mean 'openai'?)",
        "p.yaml:8:16: routes[0].retry.atempts: unknown key 'atempts' (did you mean 'attempts'?)",
        f"p.yaml:9:12: routes[0].retry.on[0]: 400 {RETRYABLE}",
        "p.yaml:10:23: routes[0].retry.backoff.base: '250' is not a duration "
        "(expected e.g. 250ms, 2s, 1m)",
    ]


def test_errors_in_several_files_are_all_reported(tmp_path: Path) -> None:
    files = {
        "10-upstreams.yaml": "version: 1\nupstreams:\n  a: {url: nope, format: openai}\n",
        "20-routes.yaml": BASE.split("upstreams:")[0] + "routes:\n  - name: r\n    match: {}\n",
        "30-ok.yaml": "version: 1\n",
        "40-broken.yaml": "routes: [\n",
        "50-env.yaml": "upstreams:\n  b: {url: '${B_URL}', format: openai}\n",
    }
    assert errors(tmp_path, files) == [
        "10-upstreams.yaml:3:12: upstreams.a.url: 'nope' is not an http(s) URL",
        "20-routes.yaml:4:12: routes[0].match: needs exactly one of 'path' (exact) or 'prefix'",
        "40-broken.yaml:2:1: invalid YAML: expected the node content, but found '<stream end>'",
        "50-env.yaml:2:12: upstreams.b.url: environment variable B_URL is not set "
        "(and has no default)",
    ]


def test_schema_errors_stop_before_cross_field_checks(tmp_path: Path) -> None:
    """A file with schema errors is not compiled: no follow-on noise."""
    files = {"p.yaml": BASE.replace("{upstream: a}", "{upstream: b, model: m, colour: red}")}
    assert errors(tmp_path, files) == [
        "p.yaml:7:48: routes[0].fallback[0].colour: unknown key 'colour'"
    ]
