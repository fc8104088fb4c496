"""Merging files, inheriting defaults, cross-field checks, and the compiled routing objects."""

from __future__ import annotations

from pathlib import Path

import pytest
from multidict import CIMultiDict

from sidecar.policy.errors import PolicyError
from sidecar.policy.loader import load_policy
from sidecar.policy.model import (
    Backoff,
    Breaker,
    Budget,
    Limits,
    Match,
    PolicySet,
    Retry,
    RetryAfter,
    Secret,
    Target,
    Timeouts,
    Upstream,
    Validation,
    Window,
)

UPSTREAMS = """\
version: 1
upstreams:
  openai: {url: http://o, format: openai, auth: {header: Authorization, value: sk-SECRET-123}}
  anthropic: {url: http://a, format: anthropic}
"""


def load(directory: Path, files: dict[str, str]) -> PolicySet:
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (directory / name).write_text(text)
    return load_policy(directory, {})


def errors(directory: Path, files: dict[str, str]) -> list[str]:
    """Every issue, with the temporary directory stripped from file names."""
    with pytest.raises(PolicyError) as caught:
        load(directory, files)
    return [str(issue).replace(f"{directory}/", "") for issue in caught.value.issues]


def one(text: str) -> dict[str, str]:
    return {"p.yaml": UPSTREAMS + text}


# --- defaults -----------------------------------------------------------------------------


def test_built_in_defaults_when_nothing_is_set(tmp_path: Path) -> None:
    policy = load(
        tmp_path,
        {
            "p.yaml": "upstreams:\n  u: {url: http://u, format: openai}\n"
            "routes:\n  - {name: r, match: {path: /x}, fallback: [{upstream: u}]}\n"
        },
    )
    (route,) = policy.routes
    assert route.validate == Validation()
    assert route.validate.max_body == 1024 * 1024
    assert route.deadline == 60.0
    assert route.timeouts == Timeouts()
    assert route.retry == Retry()
    assert route.breaker == Breaker()
    assert route.match == Match(path="/x")
    assert route.fallback == (Target(policy.upstreams["u"]),)
    assert policy.upstreams["u"] == Upstream(name="u", url="http://u", format="openai")


def test_built_in_defaults_have_the_documented_values() -> None:
    """docs/policy.md's reference table is written from these; keep them in step."""
    assert Validation() == Validation(max_body=1_048_576, max_prompt_tokens=None)
    assert Timeouts() == Timeouts(connect=None, first_byte=30.0, idle=30.0)
    assert Retry() == Retry(
        attempts=3,
        on=frozenset({"connect_error", "reset", "timeout", 429, 500, 502, 503, 504, 529}),
        backoff=Backoff(base=0.25, max=4.0, multiplier=2.0, jitter="full"),
        retry_after=RetryAfter(honor=True, max_wait=5.0),
        budget=Budget(ratio=0.2, min_per_second=5.0),
    )
    assert Breaker() == Breaker(
        enabled=True,
        consecutive_failures=5,
        window=None,
        open_for=30.0,
        half_open_probes=1,
        key="upstream",
    )
    assert Limits() == Limits(max_in_flight=1000)


def test_max_in_flight_from_defaults_and_per_route(tmp_path: Path) -> None:
    text = (
        "defaults: {limits: {max_in_flight: 50}, fallback: [{upstream: openai}]}\n"
        "routes:\n"
        "  - {name: a, match: {path: /a}}\n"
        "  - {name: b, match: {path: /b}, limits: {max_in_flight: 2}}\n"
    )
    a, b = load(tmp_path, one(text)).routes
    assert a.limits == Limits(max_in_flight=50)
    assert b.limits == Limits(max_in_flight=2)


def test_max_in_flight_must_be_a_positive_count(tmp_path: Path) -> None:
    text = (
        "routes:\n"
        "  - {name: a, match: {path: /a}, limits: {max_in_flight: 0}, "
        "fallback: [{upstream: openai}]}\n"
    )
    (issue,) = errors(tmp_path, one(text))
    assert "routes[0].limits.max_in_flight" in issue
    assert "0 is not a request count from 1 to 1000000" in issue


DEFAULTS = """\
defaults:
  deadline: 20s
  timeouts: {first_byte: 10s, idle: 5s}
  retry:
    attempts: 4
    on: [429, 503]
    backoff: {base: 100ms, max: 1s, jitter: none}
  breaker: {consecutive_failures: 3, open_for: 5s}
  fallback: [{upstream: openai}, {upstream: anthropic, model: claude}]
"""


def test_routes_inherit_defaults(tmp_path: Path) -> None:
    policy = load(tmp_path, one(DEFAULTS + "routes:\n  - {name: r, match: {path: /x}}\n"))
    (route,) = policy.routes
    assert route.deadline == 20.0
    assert route.timeouts == Timeouts(connect=None, first_byte=10.0, idle=5.0)
    assert route.retry.attempts == 4
    assert route.retry.on == frozenset({429, 503})
    assert route.retry.backoff == Backoff(base=0.1, max=1.0, multiplier=2.0, jitter="none")
    assert route.breaker.consecutive_failures == 3
    assert [(t.upstream.name, t.model) for t in route.fallback] == [
        ("openai", None),
        ("anthropic", "claude"),
    ]


def test_deep_merge_overrides_one_key_and_keeps_its_siblings(tmp_path: Path) -> None:
    text = DEFAULTS + (
        "routes:\n"
        "  - name: r\n"
        "    match: {path: /x}\n"
        "    timeouts: {idle: 7s}\n"
        "    retry: {backoff: {base: 200ms}}\n"
    )
    (route,) = load(tmp_path, one(text)).routes
    assert route.timeouts == Timeouts(connect=None, first_byte=10.0, idle=7.0)
    assert route.retry.attempts == 4  # sibling of backoff, inherited
    assert route.retry.backoff == Backoff(base=0.2, max=1.0, multiplier=2.0, jitter="none")


def test_lists_are_replaced_not_merged(tmp_path: Path) -> None:
    text = DEFAULTS + (
        "routes:\n"
        "  - name: r\n"
        "    match: {path: /x}\n"
        "    retry: {on: [500]}\n"
        "    fallback: [{upstream: anthropic}]\n"
    )
    (route,) = load(tmp_path, one(text)).routes
    assert route.retry.on == frozenset({500})
    assert [t.upstream.name for t in route.fallback] == ["anthropic"]


def test_a_route_choosing_a_window_drops_the_default_count(tmp_path: Path) -> None:
    text = DEFAULTS + (
        "routes:\n"
        "  - name: windowed\n"
        "    match: {path: /x}\n"
        "    breaker: {window: {size: 30s, min_calls: 10, failure_rate: 50%}}\n"
        "  - name: counted\n"
        "    match: {path: /y}\n"
    )
    windowed, counted = load(tmp_path, one(text)).routes
    assert windowed.breaker.consecutive_failures is None
    assert windowed.breaker.window == Window(size=30.0, min_calls=10, failure_rate=0.5)
    assert windowed.breaker.open_for == 5.0  # the rest of the default breaker still applies
    assert counted.breaker.consecutive_failures == 3
    assert counted.breaker.window is None


def test_a_route_choosing_a_count_drops_the_default_window(tmp_path: Path) -> None:
    text = (
        "defaults:\n"
        "  breaker: {window: {size: 30s, min_calls: 10, failure_rate: 50%}}\n"
        "  fallback: [{upstream: openai}]\n"
        "routes:\n"
        "  - {name: r, match: {path: /x}, breaker: {consecutive_failures: 2}}\n"
    )
    (route,) = load(tmp_path, one(text)).routes
    assert route.breaker.window is None
    assert route.breaker.consecutive_failures == 2


def test_defaults_may_live_in_another_file(tmp_path: Path) -> None:
    files = {
        "00-upstreams.yaml": UPSTREAMS,
        "10-defaults.yaml": DEFAULTS,
        "20-routes.yaml": "routes:\n  - {name: r, match: {path: /x}}\n",
    }
    policy = load(tmp_path, files)
    assert policy.files == tuple(str(tmp_path / name) for name in sorted(files))
    assert policy.routes[0].deadline == 20.0


def test_routes_keep_file_order_then_list_order(tmp_path: Path) -> None:
    files = {
        "b.yaml": "routes:\n  - {name: b1, match: {path: /b1}, fallback: [{upstream: openai}]}\n",
        "a.yaml": UPSTREAMS + "routes:\n"
        "  - {name: a1, match: {path: /a1}, fallback: [{upstream: openai}]}\n"
        "  - {name: a2, match: {path: /a2}, fallback: [{upstream: openai}]}\n",
    }
    assert [route.name for route in load(tmp_path, files).routes] == ["a1", "a2", "b1"]


# --- cross-field checks -----------------------------------------------------------------

ROUTE = "routes:\n  - name: r\n    match: {path: /x}\n    fallback: [{upstream: openai}]\n"
# Line numbers below: UPSTREAMS is 4 lines, so `routes:` is line 5 and `- name: r` line 6.


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        pytest.param(
            "    retry: {backoff: {base: 5s, max: 1s}}\n",
            "p.yaml:9:29: routes[0].retry.backoff.base: backoff base (5s) is larger than max (1s)",
            id="backoff-base-above-max",
        ),
        pytest.param(
            "    retry: {backoff: {base: 5s}}\n",
            "p.yaml:9:29: routes[0].retry.backoff.base: backoff base (5s) is larger than max (4s)",
            id="backoff-base-above-built-in-max",
        ),
        pytest.param(
            "    deadline: 20s\n    timeouts: {first_byte: 25s}\n",
            "p.yaml:10:28: routes[0].timeouts.first_byte: first_byte (25s) is longer than the "
            "deadline (20s); it could never fire",
            id="first-byte-beyond-deadline",
        ),
        pytest.param(
            "    deadline: 40s\n    timeouts: {connect: 1m}\n",
            "p.yaml:10:25: routes[0].timeouts.connect: connect (1m) is longer than the "
            "deadline (40s); it could never fire",
            id="connect-beyond-deadline",
        ),
        pytest.param(
            "    deadline: 40s\n    retry: {retry_after: {max_wait: 45s}}\n",
            "p.yaml:10:37: routes[0].retry.retry_after.max_wait: max_wait (45s) is longer than "
            "the deadline (40s); it could never fire",
            id="max-wait-beyond-deadline",
        ),
        pytest.param(
            "    breaker:\n      consecutive_failures: 3\n"
            "      window: {size: 10s, min_calls: 5, failure_rate: 50%}\n",
            "p.yaml:11:15: routes[0].breaker.window: set either consecutive_failures or window, "
            "not both",
            id="count-and-window",
        ),
        pytest.param(
            "    breaker: {window: {size: 10s, min_calls: 1, failure_rate: 50%}}\n",
            "p.yaml:9:46: routes[0].breaker.window.min_calls: min_calls below 2 would open the "
            "breaker on a single failure; use consecutive_failures: 1 for that",
            id="window-min-calls-below-2",
        ),
        pytest.param(
            "    breaker: {window: {size: 10s, min_calls: 5, failure_rate: 0%}}\n",
            "p.yaml:9:63: routes[0].breaker.window.failure_rate: failure_rate must be > 0%",
            id="window-failure-rate-zero",
        ),
    ],
)
def test_cross_field_check(tmp_path: Path, extra: str, expected: str) -> None:
    assert errors(tmp_path, one(ROUTE + extra)) == [expected]


def test_a_short_deadline_clamps_built_in_defaults(tmp_path: Path) -> None:
    """deadline 3s: the built-in first_byte (30s) and max_wait (5s) are clamped to it."""
    route = load(tmp_path, one(ROUTE + "    deadline: 3s\n")).routes[0]
    assert route.timeouts.first_byte == 3.0
    assert route.retry.retry_after.max_wait == 3.0


def test_a_written_timeout_longer_than_the_deadline_is_an_error(tmp_path: Path) -> None:
    text = one(ROUTE + "    deadline: 3s\n    timeouts: {first_byte: 4s}\n")
    assert errors(tmp_path, text) == [
        "p.yaml:10:28: routes[0].timeouts.first_byte: first_byte (4s) is longer than the "
        "deadline (3s); it could never fire",
    ]


def test_inherited_mistake_points_at_the_defaults_block_once(tmp_path: Path) -> None:
    text = (
        "defaults:\n"  # line 5
        "  deadline: 10s\n"
        "  timeouts: {first_byte: 5s}\n"
        "  retry:\n"
        "    retry_after: {max_wait: 2s}\n"
        "    backoff:\n"
        "      base: 8s\n"  # line 11
        "  fallback: [{upstream: openai}]\n"
        "routes:\n"
        "  - {name: r, match: {path: /x}}\n"
        "  - {name: s, match: {path: /y}}\n"
    )
    assert errors(tmp_path, one(text)) == [
        "p.yaml:11:13: defaults.retry.backoff.base: backoff base (8s) is larger than max (4s)"
    ]


def test_route_value_checked_against_inherited_deadline_points_at_the_route(
    tmp_path: Path,
) -> None:
    text = (
        "defaults:\n"
        "  deadline: 10s\n"
        "  timeouts: {first_byte: 5s}\n"
        "  retry: {retry_after: {max_wait: 2s}}\n"
        "routes:\n"
        "  - name: r\n"  # line 10
        "    match: {path: /x}\n"
        "    timeouts: {first_byte: 12s}\n"
        "    fallback: [{upstream: openai}]\n"
    )
    assert errors(tmp_path, one(text)) == [
        "p.yaml:12:28: routes[0].timeouts.first_byte: first_byte (12s) is longer than the "
        "deadline (10s); it could never fire"
    ]


def test_count_and_window_both_in_defaults_points_at_defaults(tmp_path: Path) -> None:
    text = (
        "defaults:\n"
        "  breaker:\n"
        "    consecutive_failures: 3\n"
        "    window: {size: 10s, min_calls: 5, failure_rate: 50%}\n"  # line 8
        "  fallback: [{upstream: openai}]\n"
        "routes:\n"
        "  - {name: r, match: {path: /x}}\n"
    )
    assert errors(tmp_path, one(text)) == [
        "p.yaml:8:13: defaults.breaker.window: set either consecutive_failures or window, not both"
    ]


def test_unknown_fallback_upstream_with_suggestion(tmp_path: Path) -> None:
    text = "routes:\n  - name: r\n    match: {path: /x}\n    fallback:\n      - upstream: opneai\n"
    assert errors(tmp_path, one(text)) == [
        "p.yaml:9:19: routes[0].fallback[0].upstream: unknown upstream 'opneai' "
        "(did you mean 'openai'?); defined: anthropic, openai"
    ]


def test_unknown_fallback_upstream_without_suggestion(tmp_path: Path) -> None:
    text = "routes:\n  - {name: r, match: {path: /x}, fallback: [{upstream: gemini}]}\n"
    assert errors(tmp_path, one(text)) == [
        "p.yaml:6:56: routes[0].fallback[0].upstream: unknown upstream 'gemini'; "
        "defined: anthropic, openai"
    ]


def test_unknown_fallback_upstream_when_none_defined(tmp_path: Path) -> None:
    text = "routes:\n  - {name: r, match: {path: /x}, fallback: [{upstream: gemini}]}\n"
    assert errors(tmp_path, {"p.yaml": text}) == [
        "p.yaml:2:56: routes[0].fallback[0].upstream: unknown upstream 'gemini'; defined: none"
    ]


def test_unknown_upstream_inherited_from_defaults_points_at_defaults(tmp_path: Path) -> None:
    text = (
        "defaults:\n  fallback: [{upstream: opneai}]\nroutes:\n  - {name: r, match: {path: /x}}\n"
    )
    assert errors(tmp_path, one(text)) == [
        "p.yaml:6:25: defaults.fallback[0].upstream: unknown upstream 'opneai' "
        "(did you mean 'openai'?); defined: anthropic, openai"
    ]


def test_model_and_model_map_both_set(tmp_path: Path) -> None:
    text = (
        "routes:\n  - name: r\n    match: {path: /x}\n    fallback:\n"
        "      - {upstream: openai, model: a, model_map: {'*': b}}\n"
    )
    assert errors(tmp_path, one(text)) == [
        "p.yaml:9:9: routes[0].fallback[0]: set either model or model_map, not both"
    ]


def test_duplicate_route_name_names_the_first_file(tmp_path: Path) -> None:
    files = {
        "a.yaml": UPSTREAMS + ROUTE,
        "b.yaml": "routes:\n  - {name: r, match: {path: /y}, fallback: [{upstream: openai}]}\n",
    }
    assert errors(tmp_path, files) == [
        "b.yaml:2:12: routes[0].name: route name 'r' already used in a.yaml"
    ]


def test_duplicate_route_name_in_one_file(tmp_path: Path) -> None:
    text = ROUTE + "  - {name: r, match: {path: /y}, fallback: [{upstream: openai}]}\n"
    assert errors(tmp_path, one(text)) == [
        "p.yaml:9:12: routes[1].name: route name 'r' already used in p.yaml"
    ]


def test_duplicate_upstream_across_files_names_the_first_file(tmp_path: Path) -> None:
    files = {
        "a.yaml": UPSTREAMS + ROUTE,
        "b.yaml": "upstreams:\n  openai: {url: http://other, format: openai}\n",
    }
    assert errors(tmp_path, files) == [
        "b.yaml:2:11: upstreams.openai: upstream already defined in a.yaml"
    ]


def test_defaults_in_two_files(tmp_path: Path) -> None:
    files = {
        "a.yaml": UPSTREAMS + "defaults: {deadline: 30s}\n" + ROUTE,
        "b.yaml": "defaults:\n  deadline: 20s\n",
    }
    assert errors(tmp_path, files) == ["b.yaml:1:1: defaults: defaults already defined in a.yaml"]


def test_no_routes(tmp_path: Path) -> None:
    files = {"a.yaml": UPSTREAMS, "b.yaml": "routes: []\n"}
    assert errors(tmp_path, files) == ["a.yaml, b.yaml: no routes defined"]


def test_no_fallback_after_merge(tmp_path: Path) -> None:
    text = "defaults: {deadline: 30s}\nroutes:\n  - name: r\n    match: {path: /x}\n"
    assert errors(tmp_path, one(text)) == [
        "p.yaml:7:5: routes[0]: no fallback targets: set fallback here or in defaults"
    ]


def test_identical_match_is_shadowed(tmp_path: Path) -> None:
    text = ROUTE + (
        "  - name: s\n"  # line 9
        "    match: {path: /x}\n"
        "    fallback: [{upstream: anthropic}]\n"
    )
    assert errors(tmp_path, one(text)) == [
        "p.yaml:10:12: routes[1].match: never matches: route 'r' before it has the same match"
    ]


def test_methods_order_does_not_hide_shadowing(tmp_path: Path) -> None:
    text = (
        "routes:\n"
        "  - {name: r, match: {path: /x, methods: [POST, GET]}, fallback: [{upstream: openai}]}\n"
        "  - {name: s, match: {path: /x, methods: [GET, POST]}, fallback: [{upstream: openai}]}\n"
    )
    assert errors(tmp_path, one(text)) == [
        "p.yaml:7:22: routes[1].match: never matches: route 'r' before it has the same match"
    ]


def test_every_cross_field_issue_is_reported(tmp_path: Path) -> None:
    text = (
        "routes:\n"
        "  - name: r\n"  # line 6
        "    match: {path: /x}\n"
        "    deadline: 10s\n"
        "    timeouts: {first_byte: 5s}\n"
        "    retry: {backoff: {base: 5s, max: 1s}, retry_after: {max_wait: 1s}}\n"
        "    fallback: [{upstream: gemini}, {upstream: openai, model: a, model_map: {x: y}}]\n"
    )
    assert errors(tmp_path, one(text)) == [
        "p.yaml:10:29: routes[0].retry.backoff.base: backoff base (5s) is larger than max (1s)",
        "p.yaml:11:27: routes[0].fallback[0].upstream: unknown upstream 'gemini'; "
        "defined: anthropic, openai",
        "p.yaml:11:36: routes[0].fallback[1]: set either model or model_map, not both",
    ]


# --- routing --------------------------------------------------------------------------

ROUTING = """\
routes:
  - name: premium
    match:
      path: /v1/chat/completions
      methods: [POST]
      header: {name: X-Tenant, value: "premium-*"}
    fallback: [{upstream: openai}]
  - name: mini
    match: {path: /v1/chat/completions, methods: [POST], model: "gpt-4o-mini*"}
    fallback: [{upstream: anthropic, model: claude-haiku}]
  - name: chat
    match: {path: /v1/chat/completions, methods: [POST]}
    fallback:
      - upstream: anthropic
        model_map: {"gpt-4o-mini*": claude-haiku, "gpt-4*": claude-sonnet, "o?": claude-opus}
  - name: anything-v1
    match: {prefix: /v1/}
    fallback: [{upstream: openai}]
"""


@pytest.fixture
def routed(tmp_path: Path) -> PolicySet:
    return load(tmp_path, one(ROUTING))


def name_of(
    policy: PolicySet, method: str, path: str, model: str | None, **headers: str
) -> str | None:
    route = policy.route_for(method, path, model, CIMultiDict(headers))
    return route.name if route else None


def test_first_match_wins(routed: PolicySet) -> None:
    assert name_of(routed, "POST", "/v1/chat/completions", "gpt-4o-mini") == "mini"
    assert name_of(routed, "POST", "/v1/chat/completions", "gpt-4o") == "chat"
    assert name_of(routed, "POST", "/v1/chat/completions", None) == "chat"


def test_header_glob_with_case_insensitive_name(routed: PolicySet) -> None:
    assert (
        name_of(
            routed, "POST", "/v1/chat/completions", "gpt-4o-mini", **{"x-tenant": "premium-acme"}
        )
        == "premium"
    )
    assert (
        name_of(routed, "POST", "/v1/chat/completions", None, **{"X-TENANT": "premium-1"})
        == "premium"
    )
    # The value glob is case-sensitive and must match.
    assert (
        name_of(routed, "POST", "/v1/chat/completions", None, **{"x-tenant": "Premium-1"}) == "chat"
    )
    assert name_of(routed, "POST", "/v1/chat/completions", None, **{"x-tenant": "free"}) == "chat"


def test_methods_filter(routed: PolicySet) -> None:
    assert name_of(routed, "GET", "/v1/chat/completions", None) == "anything-v1"


def test_prefix_and_exact_path(routed: PolicySet) -> None:
    assert name_of(routed, "GET", "/v1/models", None) == "anything-v1"
    assert name_of(routed, "DELETE", "/v1/", None) == "anything-v1"
    assert name_of(routed, "POST", "/v1/chat/completions/", None) == "anything-v1"
    assert name_of(routed, "POST", "/v1", None) is None


def test_no_match_is_none(routed: PolicySet) -> None:
    assert name_of(routed, "POST", "/v2/chat/completions", "gpt-4o") is None
    assert name_of(routed, "GET", "/", None) is None


def test_needs_model(routed: PolicySet, tmp_path: Path) -> None:
    assert routed.needs_model
    assert not load(tmp_path / "plain", one(ROUTE)).needs_model


def test_model_glob_needs_a_model() -> None:
    match = Match(path="/x", model="gpt-*")
    assert match.matches("POST", "/x", "gpt-4o", {})
    assert not match.matches("POST", "/x", None, {})
    assert not match.matches("POST", "/x", "GPT-4o", {})


def test_model_for(routed: PolicySet) -> None:
    upstream = routed.upstreams["anthropic"]
    fixed = Target(upstream, model="claude-haiku")
    assert fixed.model_for("gpt-4o") == "claude-haiku"
    assert fixed.model_for(None) == "claude-haiku"
    mapped = next(route for route in routed.routes if route.name == "chat").fallback[0]
    assert mapped.model_map == (
        ("gpt-4o-mini*", "claude-haiku"),
        ("gpt-4*", "claude-sonnet"),
        ("o?", "claude-opus"),
    )
    assert mapped.model_for("gpt-4o-mini-2024") == "claude-haiku"  # first matching glob wins
    assert mapped.model_for("gpt-4o") == "claude-sonnet"
    assert mapped.model_for("o1") == "claude-opus"
    assert mapped.model_for("o10") == "o10"  # no glob matches: passed through
    assert mapped.model_for(None) is None
    assert Target(upstream).model_for("anything") == "anything"


# --- secrets --------------------------------------------------------------------------


def test_secret_never_in_repr_or_str(routed: PolicySet) -> None:
    auth = routed.upstreams["openai"].auth
    assert auth is not None
    assert auth.value.reveal() == "sk-SECRET-123"
    for shown in (
        repr(auth),
        str(auth),
        repr(auth.value),
        str(auth.value),
        repr(routed.upstreams["openai"]),
        repr(routed.routes),
        repr(routed),
        str(routed),
    ):
        assert "sk-SECRET-123" not in shown
    assert str(auth.value) == "***redacted***"
    assert repr(auth.value) == "Secret('***redacted***')"
    assert Secret("a") != Secret("b")


def test_compiled_objects_are_frozen(routed: PolicySet) -> None:
    route = routed.routes[0]
    with pytest.raises(AttributeError):
        route.deadline = 1.0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        route.retry.backoff.base = 1.0  # type: ignore[misc]


# --- access ------------------------------------------------------------------------------


def test_access_keys_from_a_file(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("# rotated 2026-11-23\nkey-one-12345\n\n  key-two-67890  \n")
    text = ROUTE + f"    access: {{keys: [inline-key-000], keys_file: '{keys}'}}\n"
    route = load(tmp_path / "p", one(text)).routes[0]
    assert [key.reveal() for key in route.access.keys] == [
        "inline-key-000",
        "key-one-12345",
        "key-two-67890",
    ]
    assert "key-one" not in repr(route)


def test_access_keys_file_that_cannot_be_read_refuses_the_policy(tmp_path: Path) -> None:
    text = ROUTE + f"    access: {{keys_file: '{tmp_path / 'missing'}'}}\n"
    (message,) = errors(tmp_path / "p", one(text))
    assert "routes[0].access.keys_file: cannot read" in message


def test_access_keys_file_that_is_not_utf8_refuses_the_policy(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_bytes(b"key-\xff\xfe-12345\n")
    text = ROUTE + f"    access: {{keys_file: '{keys}'}}\n"
    (message,) = errors(tmp_path / "p", one(text))
    assert message.endswith(f"routes[0].access.keys_file: {keys} is not UTF-8 text")


def test_keys_files_are_part_of_the_hash(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text("key-one-12345\n")
    text = ROUTE + f"    access: {{keys_file: '{keys}'}}\n"
    before = load(tmp_path / "p", one(text)).hash
    assert load(tmp_path / "p", one(text)).hash == before
    keys.write_text("key-two-67890\n")
    assert load(tmp_path / "p", one(text)).hash != before


# --- state --------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["redis://h:abc", "redis://:pass-word@h:99999/0", "rediss://h:6x"])
def test_state_url_with_a_bad_port_is_refused_without_echoing_it(tmp_path: Path, url: str) -> None:
    state = f"state: {{backend: redis, url: '{url}'}}\n"
    (message,) = errors(tmp_path, one(ROUTE + state))
    assert message == "p.yaml:9:30: state.url: the port is not a number 0-65535"
    assert url not in message


@pytest.mark.parametrize("url", ["redis://h:6379/0", "redis://h", "unix:///run/redis.sock"])
def test_state_url_ports_that_parse_are_accepted(tmp_path: Path, url: str) -> None:
    state = f"state: {{backend: redis, url: '{url}'}}\n"
    policy = load(tmp_path, one(ROUTE + state))
    assert policy.state.url is not None
    assert policy.state.url.reveal() == url


# --- upstreams ---------------------------------------------------------------------------


def test_forward_headers_compile_to_a_lower_cased_set(tmp_path: Path) -> None:
    fwd = "  fwd: {url: http://f, format: openai, forward_headers: [X-Forwarded-For, Cookie]}\n"
    policy = load(tmp_path, one(fwd + ROUTE))
    assert policy.upstreams["fwd"].forward_headers == frozenset({"x-forwarded-for", "cookie"})
    assert policy.upstreams["openai"].forward_headers == frozenset()  # none unless named


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("X-Forwarded-Fro", " (did you mean 'x-forwarded-for'?)"),
        ("authorization", " (a client's credentials: see client_auth)"),
        ("Host", ""),
        ("content-length", ""),
        ("connection", ""),
        ("x-forwarded-host", " (did you mean 'x-forwarded-for'?)"),
    ],
)
def test_forward_headers_take_only_the_headers_dropped_as_client_claims(
    tmp_path: Path, name: str, hint: str
) -> None:
    fwd = f"  fwd: {{url: http://f, format: openai, forward_headers: [cookie, {name}]}}\n"
    assert errors(tmp_path, one(fwd + ROUTE)) == [
        f"p.yaml:5:66: upstreams.fwd.forward_headers[1]: {name!r} cannot be allowed: "
        "forward_headers takes only cookie, forwarded, x-forwarded-for, "
        f"x-http-method-override, x-method-override, x-real-ip{hint}"
    ]


def test_upstream_url_with_a_bad_port_is_refused_without_echoing_it(tmp_path: Path) -> None:
    bad = "  bad: {url: 'http://proxy:pass-word@h:99999', format: openai}\n"
    (message,) = errors(tmp_path, one(bad + ROUTE))
    assert message == "p.yaml:5:14: upstreams.bad.url: the port is not a number 0-65535"
