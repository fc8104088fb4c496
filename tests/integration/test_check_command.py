"""``sidecar check`` / ``explain`` as an operator runs them: files, directories,
``--env-file``, ``--allow-unset``, and the pre-commit hook this repo ships."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SECRET = "sk-env-file-SECRET"

UPSTREAMS = """\
version: 1
upstreams:
  openai:
    url: ${OPENAI_URL}
    format: openai
    auth: {header: Authorization, value: "Bearer ${OPENAI_API_KEY}"}
"""
ROUTES = """\
version: 1
routes:
  - name: chat
    match: {path: /v1/chat/completions}
    fallback:
      - upstream: openai
"""


def sidecar(
    *args: str | Path, env: dict[str, str] | None = None, cwd: Path = ROOT
) -> tuple[int, str, str]:
    """Run ``python -m sidecar ARGS`` with only *env* (and PATH) set."""
    done = subprocess.run(
        [sys.executable, "-m", "sidecar", *map(str, args)],
        capture_output=True,
        text=True,
        env={
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(ROOT),
            **(env or {}),
        },
        cwd=cwd,
        timeout=60,
        check=False,
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode, done.stdout, done.stderr


def split_policy(directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    upstreams, routes = directory / "upstreams.yaml", directory / "routes.yml"
    upstreams.write_text(UPSTREAMS)
    routes.write_text(ROUTES)
    return upstreams, routes


ENV = {"OPENAI_URL": "https://api.example.com", "OPENAI_API_KEY": SECRET}


def test_two_files_are_one_policy_set(tmp_path: Path) -> None:
    upstreams, routes = split_policy(tmp_path / "p")
    code, out, err = sidecar("check", upstreams, routes, env=ENV)
    assert (code, err) == (0, "")
    assert out.startswith("ok: 2 files — 2 file(s), 1 upstream(s), 1 route(s), hash ")


def test_a_single_file_is_checked_alone(tmp_path: Path) -> None:
    _, routes = split_policy(tmp_path / "p")
    code, out, err = sidecar("check", routes, env=ENV)
    assert (code, out) == (1, "")
    assert "unknown upstream 'openai'" in err
    assert err.splitlines()[-1] == f"1 error(s) in {routes}"
    upstreams = tmp_path / "p" / "upstreams.yaml"
    code, out, err = sidecar("check", upstreams, env=ENV)
    assert (code, out) == (1, "")
    assert err.splitlines() == [f"{upstreams}: no routes defined", f"1 error(s) in {upstreams}"]


def test_a_directory_works_as_before(tmp_path: Path) -> None:
    split_policy(tmp_path / "p")
    code, out, err = sidecar("check", tmp_path / "p", env=ENV)
    assert (code, err) == (0, "")
    assert out.startswith(f"ok: {tmp_path / 'p'} — 2 file(s), 1 upstream(s), 1 route(s)")
    code, out, _ = sidecar("check", env={**ENV, "SIDECAR_POLICIES": str(tmp_path / "p")})
    assert code == 0
    assert out.startswith(f"ok: {tmp_path / 'p'} — 2 file(s)")


def test_explain_takes_files(tmp_path: Path) -> None:
    upstreams, routes = split_policy(tmp_path / "p")
    code, out, err = sidecar("explain", upstreams, routes, env=ENV)
    assert (code, err) == (0, "")
    assert "route 1 'chat': /v1/chat/completions" in out
    assert SECRET not in out


def test_bad_arguments_are_errors_not_tracebacks(tmp_path: Path) -> None:
    upstreams, _routes = split_policy(tmp_path / "p")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    code, _, err = sidecar("check", upstreams, tmp_path / "p", env=ENV)
    assert code == 1
    assert "give one policy directory or policy files, not both" in err
    code, _, err = sidecar("check", notes, tmp_path / "gone.yaml", env=ENV)
    assert code == 1
    assert err.splitlines() == [
        f"{notes}: not a *.yaml / *.yml policy file",
        f"{tmp_path / 'gone.yaml'}: no such file",
        "2 error(s) in 2 files",
    ]


def test_a_named_symlink_may_not_leave_its_directory(tmp_path: Path) -> None:
    secret = tmp_path / "private.yaml"
    secret.write_text(f"key: {SECRET}\n")
    policy = tmp_path / "p"
    upstreams, routes = split_policy(policy)
    (policy / "leak.yaml").symlink_to(secret)
    code, _, err = sidecar("check", upstreams, routes, policy / "leak.yaml", env=ENV)
    assert code == 1
    assert f"{policy / 'leak.yaml'}: a symlink to a file outside the policy directory" in err
    assert SECRET not in err
    (policy / "leak.yaml").unlink()
    (policy / "data").mkdir()
    upstreams.rename(policy / "data" / "upstreams.yaml")
    (policy / "linked.yaml").symlink_to(policy / "data" / "upstreams.yaml")
    code, _out, err = sidecar("check", policy / "linked.yaml", routes, env=ENV)
    assert (code, err) == (0, ""), err


def test_env_file_extends_and_overrides_the_environment(tmp_path: Path) -> None:
    upstreams, routes = split_policy(tmp_path / "p")
    env_file = tmp_path / "ci.env"
    env_file.write_text(
        f"# CI values\n\nexport OPENAI_URL=https://ci.example.com\nOPENAI_API_KEY='{SECRET}'\n"
    )
    code, out, err = sidecar("check", upstreams, routes, "--env-file", env_file, env={})
    assert (code, err) == (0, "")
    # The file wins over the process environment.
    env = {"OPENAI_URL": "not a url", "OPENAI_API_KEY": "x"}
    code, out, err = sidecar("explain", tmp_path / "p", "--env-file", env_file, env=env)
    assert (code, err) == (0, "")
    assert "https://ci.example.com" in out
    assert SECRET not in out
    code, out, err = sidecar("check", tmp_path / "p", env=env)
    assert code == 1
    assert "upstreams.openai.url" in err


def test_a_bad_env_file_exits_2_without_quoting_it(tmp_path: Path) -> None:
    split_policy(tmp_path / "p")
    env_file = tmp_path / "bad.env"
    env_file.write_text(f"OPENAI_URL=https://x\n{SECRET}\n")
    code, out, err = sidecar("check", tmp_path / "p", "--env-file", env_file, env=ENV)
    assert (code, out) == (2, "")
    assert err == f"sidecar: --env-file {env_file}:2: expected KEY=VALUE (KEY a variable name)\n"
    code, _, err = sidecar("check", tmp_path / "p", "--env-file", tmp_path / "none.env", env=ENV)
    assert code == 2
    assert "cannot read: No such file or directory" in err


def test_unset_variables_are_errors_by_default(tmp_path: Path) -> None:
    split_policy(tmp_path / "p")
    code, out, err = sidecar("check", tmp_path / "p", env={})
    assert (code, out) == (1, "")
    assert "environment variable OPENAI_URL is not set (and has no default)" in err
    assert "environment variable OPENAI_API_KEY is not set (and has no default)" in err


def test_allow_unset_reports_them_as_warnings(tmp_path: Path) -> None:
    upstreams, _ = split_policy(tmp_path / "p")
    code, out, err = sidecar(
        "check", "--allow-unset", tmp_path / "p", env={"OPENAI_URL": "https://a.example"}
    )
    assert code == 0, err
    assert err.splitlines() == [
        f"warning: {upstreams}:6:42: upstreams.openai.auth.value: environment variable "
        "OPENAI_API_KEY is not set: checked as empty"
    ]
    assert out.startswith(f"ok: {tmp_path / 'p'} — 2 file(s), 1 upstream(s), 1 route(s), hash ")
    assert out.rstrip().endswith(", 1 warning(s)")


def test_allow_unset_where_the_empty_value_fails_a_check(tmp_path: Path) -> None:
    """An unset url reads as empty, which the schema refuses: a warning about the
    stand-in, and the cross-field checks are skipped (they would see it too)."""
    upstreams, _ = split_policy(tmp_path / "p")
    code, out, err = sidecar("check", "--allow-unset", tmp_path / "p", env={})
    assert code == 0, err
    warnings = err.splitlines()
    assert all(line.startswith("warning: ") for line in warnings)
    assert (
        f"warning: {upstreams}:4:10: upstreams.openai.url: environment variable OPENAI_URL "
        "is not set: checked as empty" in warnings
    )
    assert any(
        "upstreams.openai.url:" in line and line.endswith("(unset ${OPENAI_URL})")
        for line in warnings[1:]
    )
    skipped = "partly checked: some values come from unset variables"
    assert out == f"ok: {tmp_path / 'p'} — {skipped}, {len(warnings)} warning(s)\n"


def test_allow_unset_still_reports_real_errors(tmp_path: Path) -> None:
    upstreams, routes = split_policy(tmp_path / "p")
    routes.write_text(ROUTES.replace("- upstream: openai", "- upstream: opneai"))
    code, out, err = sidecar(
        "check", "--allow-unset", upstreams, routes, env={"OPENAI_URL": "https://a.example"}
    )
    assert (code, out) == (1, "")
    lines = err.splitlines()
    assert lines[0].startswith("warning: ")
    assert "OPENAI_API_KEY" in lines[0]
    assert "unknown upstream 'opneai' (did you mean 'openai'?)" in lines[1]
    assert lines[-1] == "1 error(s) in 2 files"
    # An error in a value that holds an unset variable but fails for another reason
    # (a duration field) is only a warning; a wrong value without one stays an error.
    upstreams.write_text(UPSTREAMS + "    connect_timeout: ${CONNECT}s\n    format2: x\n")
    code, _, err = sidecar("check", "--allow-unset", upstreams, routes, env={})
    assert code == 1
    errors = [line for line in err.splitlines() if not line.startswith("warning: ")]
    assert any("format2" in line for line in errors)
    assert not any("connect_timeout" in line for line in errors)


def test_pre_commit_hook_shape_and_entry(tmp_path: Path) -> None:
    """The shipped hook parses, has pre-commit's required keys, and its entry run the
    way pre-commit runs it (entry + args + the changed file names) checks the policy."""
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    assert isinstance(hooks, list)
    assert len(hooks) == 1
    hook = hooks[0]
    assert {"id", "name", "entry", "language"} <= hook.keys()
    assert hook["id"] == "sidecar-check"
    assert hook["language"] == "python"
    assert hook["pass_filenames"] is True
    assert hook["entry"].split()[:2] == ["sidecar", "check"]
    pattern = re.compile(hook["files"])
    assert pattern.search("policies/a.yaml")
    assert pattern.search("b.yml")
    assert not pattern.search("README.md")
    repo = tmp_path / "repo"
    _upstreams, routes = split_policy(repo / "policies")
    changed = [str(routes.relative_to(repo))]  # pre-commit passes the changed files only
    entry = hook["entry"].split()[1:]
    code, out, err = sidecar(*entry, *hook.get("args", []), *changed, env=ENV, cwd=repo)
    assert (code, err) == (0, ""), err
    assert out.startswith("ok: policies — 2 file(s), 1 upstream(s), 1 route(s)")
    routes.write_text(ROUTES.replace("- upstream: openai", "- upstream: nope"))
    code, _, err = sidecar(*entry, *hook.get("args", []), *changed, env=ENV, cwd=repo)
    assert code == 1
    assert "unknown upstream 'nope'" in err


def test_allow_unset_turns_a_cross_field_error_on_a_stand_in_into_a_warning(
    tmp_path: Path,
) -> None:
    upstreams, routes = split_policy(tmp_path / "p")
    # "open" passes the schema's name pattern; only the cross-field check sees it.
    routes.write_text(ROUTES.replace("- upstream: openai", "- upstream: open${UPSTREAM}"))
    code, out, err = sidecar("check", "--allow-unset", upstreams, routes, env=ENV)
    assert code == 0, err
    assert err.splitlines() == [
        f"warning: {routes}:6:19: routes[0].fallback[0].upstream: environment variable "
        "UPSTREAM is not set: checked as empty",
        f"warning: {routes}:6:19: routes[0].fallback[0].upstream: unknown upstream "
        "'open${UPSTREAM}' (did you mean 'openai'?); defined: openai (unset ${UPSTREAM})",
    ]
    skipped = "partly checked: some values come from unset variables"
    assert out == f"ok: 2 files — {skipped}, 2 warning(s)\n"


def test_whole_directory_checks_each_files_directory(tmp_path: Path) -> None:
    _, good = split_policy(tmp_path / "good")
    _, bad = split_policy(tmp_path / "bad")
    bad.write_text(ROUTES.replace("- upstream: openai", "- upstream: nope"))
    code, out, err = sidecar("check", "--whole-directory", good, bad, env=ENV)
    assert code == 1
    assert out.startswith(f"ok: {tmp_path / 'good'} — 2 file(s), 1 upstream(s), 1 route(s)")
    assert "unknown upstream 'nope'" in err
    assert err.splitlines()[-1] == f"1 error(s) in {tmp_path / 'bad'}"
    code, out, err = sidecar("check", "--whole-directory", good, good.parent / "upstreams.yaml")
    assert code == 1  # the one directory, once: its variables are unset here
    assert out == ""
    assert err.count("error(s) in") == 1
