"""Scrubbing a policy's secrets out of text it did not write (an exception's message)."""

from __future__ import annotations

from pathlib import Path

from sidecar.policy.loader import load_policy
from sidecar.policy.model import REDACTED
from sidecar.policy.redaction import scrub, secret_values

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
