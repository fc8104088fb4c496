"""Scrubbing a policy's secrets out of text it did not write: an exception's message, and
what an upstream echoes back (``Scrubber``)."""

from __future__ import annotations

import base64
from pathlib import Path
from urllib.parse import quote

from sidecar.policy.loader import load_policy
from sidecar.policy.model import REDACTED
from sidecar.policy.redaction import MIN_ECHOED, Scrubber, make_scrubber, scrub, secret_values

POLICY = """\
version: 1
upstreams:
  a: {url: 'http://user:up-pass-1@a', format: openai, auth: {header: k, value: sk-auth-2}}
state: {backend: redis, url: 'redis://:redis-pass-3@h:6379/0'}
routes:
  - name: chat
    match: {path: /v1/chat/completions}
    access: {keys: [client-key-4]}
    fallback: [{upstream: a}]
"""


def test_every_secret_of_a_policy_is_scrubbed(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(POLICY)
    policy = load_policy(tmp_path, {})
    assert secret_values(policy) == {
        "user:up-pass-1",  # the whole user info of a URL, and each part of it
        "user",
        "up-pass-1",
        "sk-auth-2",
        "redis://:redis-pass-3@h:6379/0",
        ":redis-pass-3",
        "redis-pass-3",
        "client-key-4",
    }
    text = "failed with redis://:redis-pass-3@h:6379/0, key client-key-4, pass up-pass-1"
    assert scrub(text, policy) == f"failed with {REDACTED}, key {REDACTED}, pass {REDACTED}"
    assert scrub("nothing secret here: chat, a, k", policy) == "nothing secret here: chat, a, k"


ECHOED = """\
version: 1
upstreams:
  a: {url: 'http://key-in-user-name:pass-in-url-1@a', format: openai,
      auth: {header: Authorization, value: 'Bearer sk-auth/+"2'}}
  b: {url: 'http://b', format: anthropic, auth: {header: x-api-key, value: short}}
state: {backend: redis, url: 'redis://:redis-pass-3@h:6379/0'}
routes:
  - name: chat
    match: {path: /v1/chat/completions}
    access: {keys: [client-key-4]}
    fallback: [{upstream: a}, {upstream: b}]
"""


def test_every_secret_an_upstream_may_echo_is_redacted(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(ECHOED)
    scrubber = make_scrubber(load_policy(tmp_path, {}))
    basic = base64.b64encode(b"key-in-user-name:pass-in-url-1").decode()
    echoes = [
        'Bearer sk-auth/+"2',  # the auth value as sent
        'sk-auth/+"2',  # the credential after its scheme
        quote('sk-auth/+"2', safe=""),  # percent-encoded (a URL, a cookie)
        'sk-auth/+\\"2',  # JSON-escaped (inside an error message)
        "client-key-4",  # a route's access key
        "redis-pass-3",  # the state URL's password
        "pass-in-url-1",  # a password in an upstream URL
        "key-in-user-name",  # a key written as a URL's user name
        basic,  # the URL's user info as the Basic credentials (Authorization: Basic ...)
    ]
    for echo in echoes:
        assert scrubber.text(f"<{echo}>") == f"<{REDACTED}>", echo
        assert scrubber.bytes(f"<{echo}>".encode()) == f"<{REDACTED}>".encode(), echo


def test_short_values_and_ordinary_text_are_left_alone(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(ECHOED)
    scrubber = make_scrubber(load_policy(tmp_path, {}))
    text = "a short answer: chat, redis, gpt-4o, sk-auth, client-key, h:6379"
    assert len("short") < MIN_ECHOED  # b's key: too short to tell from an ordinary word
    assert scrubber.text(text) == text
    assert scrubber.bytes(text.encode()) == text.encode()


def test_the_longest_secret_wins_and_nothing_is_left_of_it() -> None:
    scrubber = Scrubber(["sk-abcdefgh", "sk-abcdefgh-longer", "sk-zzzzzzzz"])
    text = "sk-abcdefgh-longer sk-abcdefgh sk-zzzzzzzz sk-abcdefg"
    assert scrubber.text(text) == f"{REDACTED} {REDACTED} {REDACTED} sk-abcdefg"
    assert not Scrubber([])
    assert Scrubber([]).text("sk-x") == "sk-x"


def test_a_thousand_keys_are_one_fast_pattern() -> None:
    keys = [f"client-key-{n:06d}" for n in range(1000)]
    scrubber = Scrubber(keys)
    body = ("x" * 1000 + keys[-1]) * 64  # 64 KiB, the largest error body read
    assert scrubber.text(body).count(REDACTED) == 64


def test_text_that_is_not_plain_utf_8_passes_untouched_but_for_the_secret() -> None:
    scrubber = Scrubber(["sk-\u00e9t\u00e9-key-1"])  # non-ASCII in the key itself
    text = "\udcff caf\u00e9 \U0001f600 sk-\u00e9t\u00e9-key-1 \ud800"  # lone surrogates too
    assert scrubber.text(text) == f"\udcff caf\u00e9 \U0001f600 {REDACTED} \ud800"
