"""PolicyStore: hash-gated reloads, atomic swap, last good policy kept on error."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from sidecar.policy.model import PolicySet
from sidecar.policy.store import PolicyStore, ReloadError, ReloadResult

GOOD = """\
version: 1
upstreams:
  a: {url: http://a, format: openai}
routes:
  - {name: chat, match: {path: /v1/chat/completions}, fallback: [{upstream: a}]}
"""
BETTER = GOOD.replace("name: chat", "name: chat2")
BAD = GOOD.replace("upstream: a}", "upstream: b}")
BAD_ERROR = "policy.yaml:5:77: routes[0].fallback[0].upstream: unknown upstream 'b'; defined: a"


class Harness:
    """A store whose runtime is a string naming the policy; ``failure`` makes builds raise."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.store = PolicyStore(directory, {}, self.build, wall_clock=lambda: 1000.0)
        self.swapped: list[PolicySet] = []  # every policy built (and so swapped in)
        self.failure: Exception | None = None
        self.attempts = 0

    def build(self, policy: PolicySet) -> str:
        self.attempts += 1
        if self.failure is not None:
            raise self.failure
        self.swapped.append(policy)
        return f"runtime of {policy.hash}"

    def write(self, text: str, name: str = "policy.yaml") -> None:
        (self.directory / name).write_text(text)

    def reload(self) -> ReloadResult:
        return self.store.reload("test")


@pytest.fixture
def harness(tmp_path: Path) -> Harness:
    return Harness(tmp_path)


def stripped(errors: tuple[str, ...], directory: Path) -> list[str]:
    return [error.replace(f"{directory}/", "") for error in errors]


def test_first_load(harness: Harness) -> None:
    assert harness.store.active is None
    harness.write(GOOD)
    result = harness.reload()
    assert result.outcome == "loaded"
    assert result.errors == ()
    active = harness.store.active
    assert active is not None
    assert result.hash == active.hash
    assert [route.name for route in active.routes] == ["chat"]
    assert harness.store.loaded_at == 1000.0
    assert harness.store.last_error is None
    assert harness.swapped == [active]
    assert harness.store.counts == {"loaded": 1, "unchanged": 0, "refused": 0}


def test_unchanged_content_is_not_reloaded(harness: Harness) -> None:
    harness.write(GOOD)
    first = harness.reload()
    active = harness.store.active
    (harness.directory / "policy.yaml").write_text(GOOD)  # rewritten, same bytes
    result = harness.reload()
    assert result == ReloadResult("unchanged", first.hash)
    assert harness.store.active is active
    assert harness.swapped == [active]
    assert harness.store.counts == {"loaded": 1, "unchanged": 1, "refused": 0}


def test_valid_change_is_swapped_in_and_announced(harness: Harness) -> None:
    harness.write(GOOD)
    harness.reload()
    old = harness.store.active
    harness.write(BETTER)
    result = harness.reload()
    new = harness.store.active
    assert result.outcome == "loaded"
    assert new is not None
    assert new is not old
    assert result.hash == new.hash != (old.hash if old else None)
    assert harness.swapped == [old, new]
    assert [route.name for route in new.routes] == ["chat2"]
    # A request that started on the old policy still holds a complete, unchanged object.
    assert old is not None
    assert [route.name for route in old.routes] == ["chat"]


def test_invalid_change_is_refused_and_the_last_good_policy_kept(harness: Harness) -> None:
    harness.write(GOOD)
    harness.reload()
    good = harness.store.active
    harness.write(BAD)
    result = harness.reload()
    assert result.outcome == "refused"
    assert result.hash is not None
    assert stripped(result.errors, harness.directory) == [BAD_ERROR]
    assert harness.store.active is good
    assert harness.swapped == [good]
    error = harness.store.last_error
    assert isinstance(error, ReloadError)
    assert error.hash == result.hash
    assert error.at == 1000.0
    assert error.errors == result.errors


def test_same_invalid_content_again_is_unchanged(harness: Harness) -> None:
    harness.write(GOOD)
    harness.reload()
    harness.write(BAD)
    refused = harness.reload()
    again = harness.reload()
    assert again == ReloadResult("unchanged", refused.hash, refused.errors)
    assert harness.store.counts == {"loaded": 1, "unchanged": 1, "refused": 1}


def test_fixing_the_error_loads_and_clears_it(harness: Harness) -> None:
    harness.write(GOOD)
    harness.reload()
    harness.write(BAD)
    harness.reload()
    harness.write(BETTER)
    result = harness.reload()
    assert result.outcome == "loaded"
    assert harness.store.last_error is None
    assert harness.store.active is not None
    assert harness.store.active.hash == result.hash
    assert len(harness.swapped) == 2
    assert harness.store.counts == {"loaded": 2, "unchanged": 0, "refused": 1}


def test_invalid_first_load_leaves_no_policy(harness: Harness) -> None:
    harness.write(BAD)
    result = harness.reload()
    assert result.outcome == "refused"
    assert harness.store.active is None
    assert harness.store.loaded_at is None
    assert harness.swapped == []
    harness.write(GOOD)
    assert harness.reload().outcome == "loaded"
    assert harness.store.active is not None


def test_unreadable_directory_is_refused_without_a_hash(tmp_path: Path) -> None:
    harness = Harness(tmp_path / "missing")
    result = harness.reload()
    assert result.outcome == "refused"
    assert result.hash is None
    assert result.errors == (f"{tmp_path / 'missing'}: not a directory",)
    assert harness.store.last_error == ReloadError(None, 1000.0, result.errors)


def test_emptied_directory_keeps_the_last_good_policy(harness: Harness) -> None:
    harness.write(GOOD)
    harness.reload()
    good = harness.store.active
    (harness.directory / "policy.yaml").unlink()
    result = harness.reload()
    assert result.outcome == "refused"
    assert result.errors == (f"{harness.directory}: no *.yaml policy files found",)
    assert harness.store.active is good


def test_adding_a_file_is_a_change(harness: Harness) -> None:
    harness.write(GOOD)
    harness.reload()
    harness.write(
        "routes:\n  - {name: other, match: {path: /other}, fallback: [{upstream: a}]}\n",
        name="zz-more.yaml",
    )
    assert harness.reload().outcome == "loaded"
    assert harness.store.active is not None
    assert [route.name for route in harness.store.active.routes] == ["chat", "other"]


def test_environment_is_the_one_given(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(GOOD.replace("http://a", "'${A_URL}'"))
    store = PolicyStore(tmp_path, {"A_URL": "http://from-env"}, str, wall_clock=lambda: 1000.0)
    assert store.reload().outcome == "loaded"
    assert store.active is not None
    assert store.active.upstreams["a"].url == "http://from-env"


# --- transactional reload: the runtime is built before the swap -------------------------


def test_a_failing_build_refuses_the_reload_and_keeps_policy_and_runtime(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness.write(GOOD)
    harness.reload()
    good = harness.store.current
    assert good is not None
    assert good.runtime == f"runtime of {good.policy.hash}"
    harness.failure = ValueError("Port could not be\n cast to integer")
    harness.write(BETTER)
    with caplog.at_level(logging.ERROR, "sidecar.policy"):
        result = harness.reload()
    assert result.outcome == "refused"
    assert result.errors == (
        "building the runtime failed: ValueError: Port could not be cast to integer",
    )
    assert harness.store.current is good  # the policy and its runtime, unchanged together
    assert harness.store.active is good.policy
    assert harness.store.last_error == ReloadError(result.hash, 1000.0, result.errors)
    (record,) = caplog.records  # one record, no traceback
    assert record.exc_info is None
    assert isinstance(record.msg, dict)
    assert record.msg["kept"] == good.policy.hash
    assert record.msg["where"].startswith("test_policy_store.py:")
    # The same content is not built again at every poll...
    assert harness.reload() == ReloadResult("unchanged", result.hash, result.errors)
    assert harness.attempts == 2
    # ...and the next edit, once it builds, is live.
    harness.failure = None
    harness.write(BETTER.replace("http://a", "http://a2"))
    fixed = harness.reload()
    assert fixed.outcome == "loaded"
    assert harness.store.current is not None
    assert harness.store.current.runtime == f"runtime of {fixed.hash}"
    assert harness.store.last_error is None


def test_a_build_error_never_echoes_a_secret(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    secret = "sk-live-4f3c2b1a"
    harness.write(
        GOOD.replace("format: openai}", f"format: openai, auth: {{header: k, value: {secret}}}}}")
    )
    harness.failure = RuntimeError(f"upstream a rejected header k={secret}")
    with caplog.at_level(logging.ERROR, "sidecar.policy"):
        result = harness.reload()
    assert result.errors == (
        "building the runtime failed: RuntimeError: upstream a rejected header k=***redacted***",
    )
    assert secret not in caplog.text


def test_an_unexpected_error_while_loading_is_a_refusal_without_its_message(
    harness: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    harness.write(GOOD)
    harness.reload()
    good = harness.store.current

    def broken(*args: object) -> PolicySet:
        raise KeyError("value-from-the-file")

    monkeypatch.setattr("sidecar.policy.store.compile_policy", broken)
    harness.write(BETTER)
    result = harness.reload()
    assert result.errors == ("loading the policy failed: KeyError",)
    assert harness.store.current is good


# --- files a policy reads besides its own ------------------------------------------------


@pytest.mark.parametrize("where", ["route", "defaults"])
def test_a_rewritten_keys_file_is_a_change(
    harness: Harness, tmp_path_factory: pytest.TempPathFactory, where: str
) -> None:
    keys = tmp_path_factory.mktemp("secret") / "keys.txt"  # outside the policy directory
    keys.write_text("key-a-000001\n")
    access = f"{{keys_file: '{keys}'}}"
    if where == "route":
        harness.write(GOOD.replace("fallback:", f"access: {access}, fallback:"))
    else:
        harness.write(GOOD + f"defaults: {{access: {access}}}\n")

    def accepted() -> list[str]:
        assert harness.store.active is not None
        return [key.reveal() for key in harness.store.active.routes[0].access.keys]

    first = harness.reload()
    assert accepted() == ["key-a-000001"]
    assert harness.reload() == ReloadResult("unchanged", first.hash)
    keys.write_text("key-b-000002\n")
    rotated = harness.reload()
    assert rotated.outcome == "loaded"
    assert rotated.hash != first.hash
    assert accepted() == ["key-b-000002"]
    keys.unlink()  # gone: refused once, the rotated keys stay
    gone = harness.reload()
    assert gone.outcome == "refused"
    assert gone.errors[0].endswith(
        f"access.keys_file: cannot read {keys}: No such file or directory"
    )
    assert harness.reload() == ReloadResult("unchanged", gone.hash, gone.errors)
    keys.write_text("key-b-000002\n")  # back as it was: nothing to load, nothing wrong
    assert harness.reload() == ReloadResult("unchanged", rotated.hash)
    assert harness.store.last_error is None
    assert accepted() == ["key-b-000002"]


def test_a_fix_after_a_refused_reload_logs_policy_recovered_once(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, "sidecar.policy")
    harness.write(GOOD)
    harness.reload()
    harness.write(BAD)
    harness.reload()
    harness.write(BETTER)  # fixed by a new edit
    harness.reload()
    harness.write(BAD)
    harness.reload()
    harness.write(BETTER)  # and by going back to the good content
    harness.reload()
    harness.reload()  # nothing changed: nothing to say
    recovered = [
        r.msg
        for r in caplog.records
        if isinstance(r.msg, dict) and r.msg.get("event") == "policy_recovered"
    ]
    assert [r["reason"] for r in recovered] == ["test", "reverted"]
    assert all(r["refused_errors"] == 1 for r in recovered)


def test_several_errors_of_a_refused_reload_are_one_per_line_in_text_logs(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    from sidecar.observability.logs import TextLineFormatter

    harness.write(GOOD.replace("format: openai}", "format: x}\n  b: {url: http://b, format: y}"))
    harness.reload()
    (record,) = [
        r
        for r in caplog.records
        if isinstance(r.msg, dict) and r.msg.get("event") == "policy_refused"
    ]
    assert len(record.msg["errors"]) >= 2
    lines = TextLineFormatter().format(record).split("\n")
    assert f"errors={len(record.msg['errors'])}" in lines[0]
    assert len(lines) == 1 + len(record.msg["errors"])
    assert all(line.startswith("    ") for line in lines[1:])
