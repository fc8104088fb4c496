"""Secrets in configuration never show: a key in a URL's user info, a ``${VAR}``'s value
in an error, a file the policy directory links to from outside (docs/security.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sidecar import cli
from sidecar.policy.errors import PolicyError
from sidecar.policy.explain import explain, policy_json
from sidecar.policy.loader import load_policy
from sidecar.policy.model import REDACTED
from sidecar.policy.redaction import scrub, secret_values

SECRET = "sk-live-9f8e7d6c5b4a"
ENV = {"KEY": SECRET}
ROUTE = """\
  - name: chat
    match: {path: /v1/chat/completions}
    fallback: [{upstream: a}]
"""


def policy(upstreams: str = "  a: {url: 'http://a', format: openai}\n", rest: str = "") -> str:
    return f"version: 1\nupstreams:\n{upstreams}{rest}routes:\n{ROUTE}"


def run(command: str, directory: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`sidecar check` or `sidecar explain` on *directory* with KEY set: (exit code, output)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KEY", SECRET)
        code = cli.check(directory) if command == "check" else cli.show(directory)
    out = capsys.readouterr()
    return code, out.out + out.err


# --- a key written as a URL's user name or password ---------------------------------------

USERINFO = policy(
    "  a: {url: 'http://${KEY}@a.example:8080/v1', format: openai}\n"
    "  b: {url: 'https://proxy-user-name:${KEY}@b.example', format: openai}\n",
    "state: {backend: redis, url: 'redis://${KEY}@redis:6379/0'}\n",
)


def test_a_key_in_a_urls_user_info_is_never_shown(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(USERINFO)
    loaded = load_policy(tmp_path, ENV)
    text, shown = explain(loaded), json.dumps(policy_json(loaded))
    for output in (text, shown):
        assert SECRET not in output
        assert "proxy-user-name" not in output  # the whole user info, not only a password
    assert f"http://{REDACTED}@a.example:8080/v1" in text
    assert f"https://{REDACTED}@b.example" in shown
    assert f"redis://{REDACTED}@redis:6379/0" in text
    # And out of any exception message the policy's runtime may raise.
    assert SECRET in secret_values(loaded)
    assert SECRET not in scrub(f"cannot connect to redis://{SECRET}@redis:6379", loaded)


def test_check_refuses_an_upstream_url_with_a_bad_port_and_explain_does_not_crash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "p.yaml").write_text(
        policy("  a: {url: 'http://u:${KEY}@h:abc', format: openai}\n")
    )
    for command in ("check", "explain"):
        code, output = run(command, tmp_path, capsys)
        assert code == 1
        assert f"{tmp_path / 'p.yaml'}:3:12: upstreams.a.url: the port is not a number 0-65535" in (
            output
        )
        assert SECRET not in output
        assert "Traceback" not in output


def test_a_password_written_in_a_url_is_not_echoed_by_an_error(tmp_path: Path) -> None:
    written = "  a: {url: 'ftp://proxy-user-name:hunter2-pass@a.example', format: openai}\n"
    (tmp_path / "p.yaml").write_text(policy(written))
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path, {})
    (issue,) = caught.value.issues
    assert issue.message == f"'ftp://{REDACTED}@a.example' is not an http(s) URL"


# --- a variable's value is never echoed in an error ----------------------------------------

BAD_PLACES = [
    pytest.param(
        policy(rest="defaults: {deadline: '${KEY}'}\n"),
        "defaults.deadline: ${KEY} is not a duration (expected e.g. 250ms, 2s, 1m)",
        id="duration",
    ),
    pytest.param(
        policy("  a: {url: 'http://a', format: '${KEY}'}\n"),
        "upstreams.a.format: ${KEY} is not one of 'openai', 'anthropic'",
        id="enum",
    ),
    pytest.param(
        policy("  a: {url: '${KEY}', format: openai}\n"),
        "upstreams.a.url: ${KEY} is not an http(s) URL",
        id="url-pattern",
    ),
    pytest.param(
        policy("  a: {url: 'ftp://${KEY}/v1', format: openai}\n"),
        "upstreams.a.url: 'ftp://${KEY}/v1' is not an http(s) URL",
        id="url-pattern-inside-text",
    ),
    pytest.param(
        policy(rest="defaults:\n  retry:\n    attempts: ${KEY}\n"),
        "defaults.retry.attempts: ${KEY} is not of type 'integer'",
        id="integer",
    ),
    pytest.param(
        policy(rest="defaults:\n  validate: {max_body: '${KEY}'}\n"),
        "defaults.validate.max_body: ${KEY} is not a size (expected e.g. 1MiB, 512KiB, 1000000)",
        id="size",
    ),
    pytest.param(
        policy(rest="defaults:\n  match: {path: '${KEY}'}\n"),
        "defaults.match: unknown key 'match'",
        id="unknown-key-of-an-interpolated-block",
    ),
    pytest.param(
        "version: ${KEY}\n" + policy()[len("version: 1\n") :],
        "version: must be 1, got ${KEY}",
        id="const",
    ),
    pytest.param(
        policy(rest="defaults:\n  timeouts: ['${KEY}']\n"),
        "defaults.timeouts: [${KEY}] is not of type 'object'",
        id="inside-a-list",
    ),
    pytest.param(
        policy().replace("fallback: [{upstream: a}]", "fallback: [{upstream: '${KEY}'}]"),
        "routes[0].fallback[0].upstream: unknown upstream ${KEY}; defined: a",
        id="unknown-upstream",
    ),
    pytest.param(
        policy(rest="defaults:\n  access: {keys_file: '/nonexistent/${KEY}'}\n"),
        "defaults.access.keys_file: cannot read /nonexistent/${KEY}: No such file or directory",
        id="keys-file",
    ),
]


@pytest.mark.parametrize(("text", "expected"), BAD_PLACES)
def test_a_variables_value_is_never_echoed_by_check_or_explain(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expected: str
) -> None:
    (tmp_path / "p.yaml").write_text(text)
    for command in ("check", "explain"):
        code, output = run(command, tmp_path, capsys)
        assert code == 1
        assert SECRET not in output
        assert expected in output, output


def test_a_route_name_from_a_variable_is_not_echoed_by_another_file(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(policy().replace("name: chat", "name: '${KEY}'"))
    (tmp_path / "b.yaml").write_text(
        f"version: 1\nroutes:\n{ROUTE.replace('name: chat', 'name: later')}"
    )
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path, ENV)
    (issue,) = caught.value.issues
    assert str(issue).endswith("never matches: route '${KEY}' before it has the same match")
    assert SECRET not in str(caught.value)


def test_a_value_that_yaml_cannot_construct_is_named_by_its_variable(tmp_path: Path) -> None:
    """A plain scalar is typed after interpolation: 2024-13-01 reads as a bad timestamp."""
    (tmp_path / "p.yaml").write_text(policy(rest="defaults:\n  deadline: ${DAY}\n"))
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path, {"DAY": "2024-13-01"})
    assert [issue.message for issue in caught.value.issues] == [
        "invalid value ${DAY}: not a valid timestamp"
    ]


# --- no error quotes more than an excerpt of a file ----------------------------------------

PASSWD = "".join(f"user{n}:x:{n}:{n}::/home/user{n}:/bin/sh\n" for n in range(200))


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        pytest.param(PASSWD, "a text of several lines is not of type 'object'", id="a-text-file"),
        pytest.param(policy(rest=f"{'k' * 1000}: 1\n"), "unknown key 'kkkkk", id="long-key"),
        pytest.param(
            policy(rest=f"defaults: {{deadline: '{'9' * 5000}'}}\n"), "'99999", id="long-value"
        ),
        pytest.param(
            policy(rest=f"defaults: {{deadline: '${{{'A' * 5000}'}}\n"),
            "malformed ${...} reference in '${AAAA",
            id="long-reference",
        ),
        pytest.param(f"x: !{'t' * 5000} 1\n", "for the tag '!tttt", id="long-tag"),
    ],
)
def test_an_error_quotes_at_most_an_excerpt(tmp_path: Path, text: str, quoted: str) -> None:
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(PolicyError) as caught:
        load_policy(tmp_path, {})
    issues = [str(issue) for issue in caught.value.issues]
    assert any(quoted in issue for issue in issues), issues
    for issue in issues:
        assert len(issue) - len(str(tmp_path / "p.yaml")) < 300, issue
    assert "user0:" not in str(caught.value)  # not even the start of a text file
