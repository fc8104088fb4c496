"""The deployment files: Dockerfile, docker-compose.yml, examples/k8s/, the compose Make targets.

Docker cannot run here, so these are checked three ways: by the real validators (hadolint,
the compose spec, the Kubernetes schemas; PyPI packages that work offline, from the dev
extra), by reading the files for what the validators cannot know (ports, mounts, probes,
health-check chains), and by running the image's very commands outside a container.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from sidecar.policy.errors import PolicyError
from sidecar.policy.loader import load_policy

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
K8S = ROOT / "examples" / "k8s"
DEPLOY = ROOT / "examples" / "deploy"
LOCK_FILES = ("requirements.lock", "app-requirements.lock", "build-requirements.lock")
PYPI = "https://pypi.org/simple"
REFERENCE = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?::-([^}]*))?\}")
FINAL_STAGES = ("runtime", "app")


# ---- helpers ------------------------------------------------------------------------------


def tool(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a validator from this virtualenv's bin directory (the dev extra installs them)."""
    path = BIN / name
    if not path.exists():
        pytest.fail(f"{path} is missing: `make install` installs the dev extra")
    return subprocess.run(
        [str(path), *args], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its (INSTRUCTION, arguments) in order; continuation lines joined."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    pending = ""
    for raw in (ROOT / "Dockerfile").read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        line, pending = pending + line, ""
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].lower() == "as" else str(len(stages))
            current = [("FROM", parts[0])]
            stages[name] = current
        elif stages:
            current.append((instruction, rest.strip()))
    return stages


def effective(stage: str) -> list[tuple[str, str]]:
    """A stage's instructions including those inherited through ``FROM <stage>``."""
    stages = dockerfile_stages()
    instructions = stages[stage]
    parent = instructions[0][1]
    inherited = effective(parent) if parent in stages else []
    return inherited + instructions[1:]


def last(stage: str, instruction: str) -> str:
    found = [rest for name, rest in effective(stage) if name == instruction]
    assert found, f"stage {stage!r} has no {instruction}"
    return found[-1]


def exec_form(arguments: str) -> list[str]:
    value = json.loads(arguments)
    assert isinstance(value, list), arguments
    return [str(item) for item in value]


def healthcheck_command() -> list[str]:
    options, _, command = last("runtime", "HEALTHCHECK").partition("CMD")
    assert "--timeout" in options, options
    return exec_form(command.strip())


def compose() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert isinstance(document, dict)
    return document


def default(value: str) -> str:
    """``${VAR:-default}`` references replaced by their defaults (compose without a .env)."""
    return REFERENCE.sub(lambda match: match.group(2) or "", value)


def k8s_documents() -> list[dict[str, Any]]:
    documents: list[dict[str, Any]] = []
    for path in sorted(K8S.glob("*.yaml")):
        documents.extend(doc for doc in yaml.safe_load_all(path.read_text()) if doc)
    return documents


def k8s(kind: str) -> dict[str, Any]:
    (found,) = [doc for doc in k8s_documents() if doc["kind"] == kind]
    return found


def pod_spec() -> dict[str, Any]:
    spec = k8s("Deployment")["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def container(name: str) -> dict[str, Any]:
    spec = pod_spec()
    (found,) = [c for c in spec.get("initContainers", []) + spec["containers"] if c["name"] == name]
    return found


def option(argv: list[str], name: str) -> str:
    for index, item in enumerate(argv):
        if item == name:
            return argv[index + 1]
        if item.startswith(name + "="):
            return item.split("=", 1)[1]
    raise AssertionError(f"{name} not in {argv}")


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m)", duration)
    assert match, duration
    return float(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60}[match.group(2)]


def deploy_script(name: str) -> ModuleType:
    """A script of examples/deploy/ imported as a module (they are not a package)."""
    spec = importlib.util.spec_from_file_location(f"deploy_{name}", DEPLOY / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


LOCK = deploy_script("lock")


def lock_entries(name: str) -> dict[str, tuple[str, list[str]]]:
    """A lock file's requirements: canonical name -> (pinned version, sha256 hashes)."""
    entries: dict[str, tuple[str, list[str]]] = {}
    for line in (DEPLOY / name).read_text().replace("\\\n", " ").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        pin, *options = line.split()
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)==([A-Za-z0-9_.+!-]+)", pin)
        assert match, f"{name}: not an exact pin: {line}"
        for item in options:
            assert re.fullmatch(r"--hash=sha256:[0-9a-f]{64}", item), f"{name}: {item}"
        key = canonicalize_name(match.group(1))
        assert key not in entries, f"{name}: {key} twice"
        entries[key] = (match.group(2), [item.split(":", 1)[1] for item in options])
    return entries


def pip_commands() -> Iterator[tuple[str, list[str]]]:
    """(stage, argv) of each pip command the Dockerfile runs, in order."""
    for stage, instructions in dockerfile_stages().items():
        for name, rest in instructions:
            if name == "RUN":
                for command in rest.split("&&"):
                    argv = shlex.split(command)
                    if argv and argv[0] == "pip":
                        yield stage, argv


def base_image() -> str:
    match = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert match, "the Dockerfile has no ARG PYTHON_IMAGE default"
    return match.group(1)


def project_version() -> str:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert isinstance(version, str)
    return version


def pip_env() -> dict[str, str]:
    """This environment without this machine's pip configuration: PyPI only, as in a build."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


@pytest.fixture
def pypi() -> str:
    """PyPI's index once it answers; skipped where it does not, except under CI=true."""
    try:
        with urllib.request.urlopen(f"{PYPI}/pip/", timeout=10):
            return PYPI
    except OSError as exc:
        reason = f"PyPI does not answer here: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (CI=true: the lock files must be checked against PyPI)")
        pytest.skip(reason)


# ---- the validators ---------------------------------------------------------------------


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    result = tool("hadolint", "--format", "json", "--failure-threshold", "style", "Dockerfile")
    assert result.returncode == 0, result.stdout + result.stderr
    assert json.loads(result.stdout) == [], result.stdout
    assert result.stderr == ""


def test_compose_file_matches_the_compose_spec() -> None:
    result = tool(
        "check-jsonschema", "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "ok -- validation done"
    assert result.stderr == ""


def test_k8s_manifests_pass_strict_validation() -> None:
    files = sorted(str(path.relative_to(ROOT)) for path in K8S.glob("*.yaml"))
    assert len(files) >= 3
    result = tool("kubernetes-validate", "--strict", *files)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = (result.stdout + result.stderr).splitlines()
    assert [line for line in lines if not line.startswith("INFO ")] == []
    assert len([line for line in lines if " passed for resource " in line]) == len(k8s_documents())


def test_prometheus_config_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (.ci/run installs it where it can)")
    result = subprocess.run(
        [promtool, "check", "config", "examples/deploy/prometheus.yml"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
    assert "WARNING" not in (result.stdout + result.stderr).upper()


# ---- the Dockerfile -----------------------------------------------------------------------


@pytest.mark.parametrize("stage", FINAL_STAGES)
def test_final_images_run_as_a_non_root_user_with_health_check_and_stop_signal(
    stage: str,
) -> None:
    user = last(stage, "USER")
    assert user.split(":")[0] not in ("root", "0"), user
    assert "HEALTHCHECK_URL=" in " ".join(rest for name, rest in effective(stage) if name == "ENV")
    assert last(stage, "HEALTHCHECK").startswith("--")
    assert last(stage, "STOPSIGNAL") == "SIGTERM"
    # Nothing is built or fetched in a final image: no package manager, no compiler, no pip.
    runs = " ".join(rest for name, rest in dockerfile_stages()[stage] if name == "RUN")
    assert not re.search(r"apt-get|apk |gcc|build-essential|pip ", runs), runs
    copies = [rest for name, rest in dockerfile_stages()[stage] if name == "COPY"]
    assert any(rest.startswith("--from=") and "/opt/venv" in rest for rest in copies)


def test_the_default_target_runs_the_sidecar_on_all_interfaces() -> None:
    stages = list(dockerfile_stages())
    assert stages[-1] == "runtime"  # `docker build .` builds the last stage
    assert dockerfile_stages()["base"][0] == ("FROM", "${PYTHON_IMAGE}")
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in (ROOT / "Dockerfile").read_text()
    argv = exec_form(last("runtime", "CMD"))
    assert argv[:2] == ["sidecar", "run"]
    assert option(argv, "--host") == "0.0.0.0"
    assert option(argv, "--port") == "8080"
    assert option(argv, "--policies") == "/policies"
    # The admin API keeps its loopback default: nothing in the image moves it.
    assert "--admin-host" not in argv
    assert not any("SIDECAR_ADMIN" in rest for name, rest in effective("runtime") if name == "ENV")


@pytest.mark.parametrize("stage", FINAL_STAGES)
def test_final_images_carry_oci_labels_from_build_args(stage: str) -> None:
    labels: dict[str, str] = {}
    args: dict[str, str | None] = {}
    for name, rest in effective(stage):
        if name == "ARG":
            arg, has_default, value = rest.partition("=")
            args[arg] = value if has_default else None
        elif name == "LABEL":
            # Each ${ARG} a label uses is declared in the stage before it (else it is empty).
            for item in shlex.split(rest):
                key, _, value = item.partition("=")
                labels[key] = value
                for used in re.findall(r"\$\{(\w+)\}", value):
                    assert used in args, (key, used)
    oci = "org.opencontainers.image."
    assert labels[oci + "title"] == "llm-sidecar"  # what `make prune` filters on
    assert labels[oci + "version"] == "${VERSION}"
    assert args["VERSION"] == project_version()
    assert labels[oci + "revision"] == "${REVISION}"
    assert labels[oci + "source"] == "${SOURCE}"
    assert labels[oci + "base.name"] == "${PYTHON_IMAGE}"


GLIBC = {"bookworm": (2, 36), "trixie": (2, 41)}


def test_every_stage_starts_from_the_one_base_image_the_locks_are_made_for() -> None:
    stages = list(dockerfile_stages().items())
    for index, (name, instructions) in enumerate(stages):
        parent = instructions[0][1]
        assert parent == "${PYTHON_IMAGE}" or parent in dict(stages[:index]), name
    match = re.fullmatch(r"python:3\.11-slim-(\w+)(@sha256:[0-9a-f]{64})?", base_image())
    assert match, base_image()
    # The lock's hashes are chosen for this Python and this Debian release's glibc.
    assert LOCK.IMAGE_PYTHON == (3, 11)
    assert GLIBC[match.group(1)] == LOCK.IMAGE_GLIBC


def test_base_image_is_pinned_by_digest() -> None:
    assert re.search(r"@sha256:[0-9a-f]{64}$", base_image()), base_image()


def test_dependencies_are_installed_from_the_lock_files_only() -> None:
    text = (ROOT / "Dockerfile").read_text()
    installs = re.findall(r"pip [^\n]*install[^\n]*(?:\n\s+[^\n]*)?", text)
    assert installs
    for install in installs:
        assert "--no-deps" in install, install
    locked = {name: version for name, (version, _) in lock_entries("requirements.lock").items()}
    # Every runtime dependency of the package is pinned, within pyproject's bounds...
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for requirement in map(Requirement, project["dependencies"]):
        name = canonicalize_name(requirement.name)
        assert name in locked, name
        assert requirement.specifier.contains(locked[name], prereleases=True), name
    # ...and nothing from the dev extra.
    assert not locked.keys() & {"pytest", "mypy", "ruff", "openai", "llm-sidecar"}
    # The app's lock adds to the runtime lock: openai, and no second pin of anything.
    app = lock_entries("app-requirements.lock")
    assert "openai" in app
    assert not app.keys() & locked.keys()
    # The build backend's lock satisfies [build-system].requires, and holds nothing else.
    build = lock_entries("build-requirements.lock")
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    assert {canonicalize_name(Requirement(item).name) for item in requires} == set(build)
    for requirement in map(Requirement, requires):
        version = build[canonicalize_name(requirement.name)][0]
        assert requirement.specifier.contains(version), requirement


@pytest.mark.parametrize("name", LOCK_FILES)
def test_every_pin_in_the_lock_files_carries_sha256_hashes(name: str) -> None:
    entries = lock_entries(name)
    assert entries
    for requirement, (_, hashes) in entries.items():
        assert hashes, f"{name}: {requirement} has no --hash=sha256:"
        assert len(set(hashes)) == len(hashes), requirement
    assert {path.name for path in DEPLOY.glob("*.lock")} == set(LOCK_FILES)


def test_every_pip_install_checks_hashes_and_builds_nothing_from_source() -> None:
    installed: list[str] = []
    for stage, argv in pip_commands():
        command = next(item for item in argv if item in ("install", "wheel", "check"))
        if command == "install" and "--requirement" in argv:
            installed.append(option(argv, "--requirement"))
            assert "--require-hashes" in argv, argv
            assert "--only-binary=:all:" in argv, argv
            assert "--no-deps" in argv, argv
        elif command == "install":  # the package itself: the wheel this stage just built
            assert "--no-deps" in argv, argv
            assert argv[-1] == "/tmp/dist/*.whl", argv
        elif command == "wheel":
            # The build backend is the locked one already installed, never fetched by pip.
            assert "--no-build-isolation" in argv, argv
            assert "--no-deps" in argv, argv
            assert "build-requirements.lock" in installed, (stage, installed)
    assert sorted(installed) == sorted(LOCK_FILES)


def test_lock_takes_the_hash_of_every_wheel_the_image_can_install() -> None:
    def file(filename: str, digest: str) -> dict[str, Any]:
        return {"filename": filename, "hashes": {"sha256": digest * 64}, "yanked": False}

    files = [
        file("demo-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", "a"),
        file("demo-1.0-cp311-cp311-manylinux_2_28_aarch64.whl", "b"),
        file("demo-1.0-cp310-abi3-manylinux_2_17_x86_64.whl", "c"),
        file("demo-1.0-py3-none-any.whl", "d"),
        file("demo-1.0-cp311-cp311-musllinux_1_2_x86_64.whl", "e"),  # slim is glibc
        file("demo-1.0-cp312-cp312-manylinux_2_17_x86_64.whl", "f"),  # another Python
        file("demo-1.0-cp311-cp311-manylinux_2_99_x86_64.whl", "0"),  # a newer glibc
        file("demo-1.0-cp311-cp311-win_amd64.whl", "1"),
        file("demo-1.0-cp311-cp311-manylinux_2_17_ppc64le.whl", "2"),
        file("demo-1.0.tar.gz", "3"),  # never built from source
        file("demo-1.1-py3-none-any.whl", "4"),  # another version
    ]
    assert LOCK.wheel_hashes("Demo==1.0", files) == [c * 64 for c in "abcd"]


def test_lock_refuses_a_pin_with_no_wheel_for_an_image_architecture() -> None:
    files = [
        {"filename": "demo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", "hashes": {"sha256": "a"}},
        {"filename": "demo-1.0.tar.gz", "hashes": {"sha256": "b"}},
    ]
    with pytest.raises(
        SystemExit, match=r"demo==1\.0 has no wheel for CPython 3\.11 on Linux aarch64"
    ):
        LOCK.wheel_hashes("demo==1.0", files)
    yanked = [{"filename": "demo-1.0-py3-none-any.whl", "hashes": {"sha256": "a"}, "yanked": True}]
    with pytest.raises(SystemExit, match=r"demo==1\.0 is yanked"):
        LOCK.wheel_hashes("demo==1.0", yanked)


@pytest.mark.slow
@pytest.mark.parametrize("arch", LOCK.IMAGE_ARCHES)
def test_pip_installs_every_lock_with_require_hashes_on_each_image_platform(
    arch: str, tmp_path: Path, pypi: str
) -> None:
    """The image's pip run against PyPI: each pin found for the platform, its hash checked."""
    platforms = [flag for name in LOCK.image_platforms(arch) for flag in ("--platform", name)]
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed",
         "--no-cache-dir", "--no-deps", "--require-hashes", "--only-binary=:all:",
         "--index-url", pypi, "--target", str(tmp_path / "target"), *platforms,
         "--python-version", "3.11", "--implementation", "cp", "--abi", "cp311",
         *(f"--requirement={DEPLOY / name}" for name in LOCK_FILES)],
        env=pip_env(),
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (line,) = [item for item in result.stdout.splitlines() if item.startswith("Would install ")]
    would = {
        canonicalize_name(name): version
        for name, version in (item.rsplit("-", 1) for item in line.split()[2:])
    }
    expected = {
        name: version for lock in LOCK_FILES for name, (version, _) in lock_entries(lock).items()
    }
    assert would == expected


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies() -> None:
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    assert "*" in lines
    assert ".venv" not in allowed
    assert ".env" not in allowed
    sources: set[str] = set()
    for stage in dockerfile_stages().values():
        for name, rest in stage:
            if name == "COPY" and not rest.startswith("--from="):
                sources.update(item.removeprefix("./").rstrip("/") for item in rest.split()[:-1])
    assert sources == allowed
    for source in sources:
        assert (ROOT / source).exists(), source


# ---- docker-compose.yml ------------------------------------------------------------------


def test_compose_services_health_checks_and_start_order() -> None:
    services = compose()["services"]
    assert set(services) == {
        "app",
        "sidecar",
        "mock-openai",
        "mock-anthropic",
        "redis",
        "prometheus",
    }
    for name, service in services.items():
        assert service["healthcheck"]["test"][0] == "CMD", name
        assert service["restart"] in ("unless-stopped", "always", "on-failure"), name
        assert service["networks"] == ["llm"], name
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services
            assert condition == {"condition": "service_healthy"}, (name, dependency)
    assert set(services["app"]["depends_on"]) == {"sidecar"}
    assert set(services["sidecar"]["depends_on"]) == {"mock-openai", "mock-anthropic"}
    assert set(services["prometheus"]["depends_on"]) == {"sidecar"}
    assert services["redis"]["image"].startswith("redis:7")
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert compose()["networks"]["llm"]["name"] == "llm-sidecar"


def test_compose_sidecar_runs_the_image_command_on_read_only_policies() -> None:
    sidecar = compose()["services"]["sidecar"]
    argv = [default(item) for item in sidecar["command"]]
    image_cmd = exec_form(last("runtime", "CMD"))
    assert argv[: len(image_cmd)] == image_cmd
    assert default(sidecar["ports"][0]) == "127.0.0.1:8080:8080"
    (volume,) = sidecar["volumes"]
    assert volume == {
        "type": "bind",
        "source": "./policies",  # the directory, so edits (and editors' renames) reload
        "target": "/policies",
        "read_only": True,
    }
    env = {key: default(value) for key, value in sidecar["environment"].items()}
    assert env["OPENAI_URL"] == "http://mock-openai:8001"
    assert env["ANTHROPIC_URL"] == "http://mock-anthropic:8002"
    assert env["SIDECAR_ADMIN_HOST"] == "127.0.0.1"
    assert env["SIDECAR_ADMIN_TOKEN"] == ""
    assert seconds(default(sidecar["stop_grace_period"])) > float(env["SIDECAR_GRACE"])
    assert compose()["services"]["app"]["environment"]["OPENAI_BASE_URL"] == (
        "http://sidecar:8080/v1"
    )


@pytest.mark.parametrize(
    ("service", "name", "port"),
    [("mock-openai", "openai", "8001"), ("mock-anthropic", "anthropic", "8002")],
)
def test_compose_mock_providers(service: str, name: str, port: str) -> None:
    mock = compose()["services"][service]
    argv = [default(item) for item in mock["command"]]
    assert argv[0] == "mock-provider"
    assert option(argv, "--name") == name
    assert option(argv, "--port") == port
    assert option(argv, "--host") == "0.0.0.0"
    assert [default(p) for p in mock["ports"]] == [f"127.0.0.1:{port}:{port}"]
    assert f"127.0.0.1:{port}/health" in mock["healthcheck"]["test"][-1]


def test_prometheus_scrapes_the_sidecar_with_the_config_in_the_repo() -> None:
    prometheus = compose()["services"]["prometheus"]
    mounts = {v["target"]: v for v in prometheus["volumes"] if isinstance(v, dict)}
    config = mounts["/etc/prometheus/prometheus.yml"]
    assert config["read_only"] is True
    scrape = yaml.safe_load((ROOT / config["source"]).read_text())["scrape_configs"]
    sidecar = next(job for job in scrape if job["job_name"] == "sidecar")
    assert sidecar["metrics_path"] == "/metrics"
    assert sidecar["static_configs"][0]["targets"] == ["sidecar:8080"]


def test_every_compose_variable_is_documented_in_env_example() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    used = {match.group(1) for match in REFERENCE.finditer(text)}
    lines = (ROOT / ".env.example").read_text().splitlines()
    documented: dict[str, str] = {}
    for index, line in enumerate(lines):
        if re.match(r"^[A-Z_][A-Z0-9_]*=", line):
            name, value = line.split("=", 1)
            documented[name] = value
            above = lines[:index]
            assert any(prior.startswith("#") for prior in above[-12:]), f"{name} has no comment"
    assert used == set(documented)
    # The example's values are the compose file's defaults: copying it changes nothing.
    defaults = {match.group(1): match.group(2) or "" for match in REFERENCE.finditer(text)}
    assert defaults == documented
    assert ".env" in (ROOT / ".gitignore").read_text().splitlines()


# ---- examples/k8s ------------------------------------------------------------------------


@pytest.fixture
def configmap_volume(tmp_path: Path) -> Path:
    """The ConfigMap as the kubelet mounts it: files behind a ``..data`` symlink."""
    data = k8s("ConfigMap")["data"]
    stamp = tmp_path / "..2025_01_01_00_00_00.000000001"
    stamp.mkdir()
    for name, content in data.items():
        (stamp / name).write_text(content)
        (tmp_path / name).symlink_to(Path("..data") / name)
    (tmp_path / "..data").symlink_to(stamp.name)
    return tmp_path


POD_ENV: Mapping[str, str] = {"OPENAI_API_KEY": "sk-test", "ANTHROPIC_API_KEY": "sk-ant-test"}


def test_configmap_policy_loads_and_keeps_the_default_routes(configmap_volume: Path) -> None:
    policy = load_policy(configmap_volume, POD_ENV)
    default_policy = load_policy(ROOT / "policies", {})
    assert [route.name for route in policy.routes] == [r.name for r in default_policy.routes]
    assert set(policy.upstreams) == set(default_policy.upstreams)
    assert all(route.access.localhost_only for route in policy.routes)
    urls = {name: upstream.url for name, upstream in policy.upstreams.items()}
    assert urls == {"openai": "https://api.openai.com", "anthropic": "https://api.anthropic.com"}


def test_configmap_policy_refuses_to_start_without_provider_keys(configmap_volume: Path) -> None:
    with pytest.raises(PolicyError) as error:
        load_policy(configmap_volume, {})
    text = "\n".join(str(issue) for issue in error.value.issues)
    assert "OPENAI_API_KEY" in text
    assert "ANTHROPIC_API_KEY" in text


def test_deployment_pod_runs_app_and_sidecar() -> None:
    spec = pod_spec()
    sidecar, app = container("sidecar"), container("app")
    assert sidecar.get("restartPolicy") == "Always"  # a native sidecar: up before the app
    argv = sidecar["args"]
    assert argv[:2] == ["sidecar", "run"]
    assert option(argv, "--host") == "0.0.0.0"
    assert option(argv, "--port") == "8080"
    assert option(argv, "--policies") == "/policies"
    assert spec["terminationGracePeriodSeconds"] > float(option(argv, "--grace"))
    env = {item["name"]: item.get("value") for item in app["env"]}
    assert env["OPENAI_BASE_URL"] == "http://127.0.0.1:8080/v1"
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == int(last("runtime", "USER").split(":")[0])
    for each in (sidecar, app):
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(each["resources"][kind]), (each["name"], kind)


def test_policies_are_a_configmap_directory_mount_never_subpath() -> None:
    spec = pod_spec()
    (mount,) = container("sidecar")["volumeMounts"]
    assert mount["mountPath"] == "/policies"
    assert mount.get("readOnly") is True
    assert "subPath" not in mount
    assert "subPathExpr" not in mount
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert volume["configMap"]["name"] == k8s("ConfigMap")["metadata"]["name"]


def test_sidecar_probes_and_scrape_annotations() -> None:
    sidecar = container("sidecar")
    port = sidecar["ports"][0]
    assert port["containerPort"] == 8080
    assert sidecar["livenessProbe"]["httpGet"] == {"path": "/health", "port": port["name"]}
    assert sidecar["readinessProbe"]["httpGet"] == {"path": "/ready", "port": port["name"]}
    annotations = k8s("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == "8080"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert "PodMonitor" in (K8S / "service.yaml").read_text()


def test_service_selects_the_pods() -> None:
    service = k8s("Service")
    labels = k8s("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    ports = {p["name"] for p in container("app")["ports"]}
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= ports


# ---- the image's commands, run outside a container -------------------------------------


def start(
    argv: list[str], ready: str, env: Mapping[str, str] | None = None
) -> tuple[subprocess.Popen[str], str]:
    """Start *argv*; return it and its first stdout line containing *ready*."""
    process = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    assert process.stdout is not None
    selector = selectors.DefaultSelector()
    selector.register(process.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + 20
    seen: list[str] = []
    while time.monotonic() < deadline:
        if not selector.select(timeout=deadline - time.monotonic()):
            break
        line = process.stdout.readline()
        if not line:
            break
        seen.append(line)
        if ready in line:
            selector.close()
            return process, line
    process.kill()
    process.wait()
    process.stdout.close()
    raise AssertionError(f"{argv} did not print {ready!r}:\n{''.join(seen)}")


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()


def localized(argv: list[str], port: str) -> list[str]:
    """The image's argv with loopback and a free port, run by this interpreter."""
    argv = [("127.0.0.1" if item == "0.0.0.0" else item) for item in argv]
    argv[argv.index("--port") + 1] = port
    module = {"sidecar": "sidecar", "mock-provider": "mock_provider"}[argv[0]]
    return [sys.executable, "-m", module, *argv[1:]]


def bound_port(line: str) -> int:
    match = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    assert match, line
    return int(match.group(1))


def run_check(argv: list[str], env: Mapping[str, str] | None = None) -> int:
    assert argv[0] == "python"
    return subprocess.run(
        [sys.executable, *argv[1:]],
        env={**os.environ, **(env or {})},
        capture_output=True,
        timeout=20,
        check=False,
    ).returncode


@pytest.mark.slow
def test_image_default_command_serves_health_passes_its_healthcheck_and_stops_on_sigterm(
    processes: list[subprocess.Popen[str]],
) -> None:
    argv = localized(exec_form(last("runtime", "CMD")), "0")
    argv[argv.index("--policies") + 1] = "policies"
    sidecar, line = start([*argv, "--admin-port", "0"], "sidecar listening on")
    processes.append(sidecar)
    port = bound_port(line)
    health = f"http://127.0.0.1:{port}/health"
    with urllib.request.urlopen(health, timeout=5) as response:
        assert response.status == 200
    # The image's HEALTHCHECK, and compose's health check for the sidecar, against it.
    assert run_check(healthcheck_command(), {"HEALTHCHECK_URL": health}) == 0
    compose_check = compose()["services"]["sidecar"]["healthcheck"]["test"][1:]
    assert run_check([item.replace(":8080/", f":{port}/") for item in compose_check]) == 0
    sidecar.send_signal(signal.SIGTERM)
    assert sidecar.wait(timeout=15) == 0
    # ...and the same check fails once nothing answers.
    assert run_check(healthcheck_command(), {"HEALTHCHECK_URL": health}) != 0


@pytest.mark.slow
def test_compose_mock_command_passes_its_health_check(
    processes: list[subprocess.Popen[str]],
) -> None:
    service = compose()["services"]["mock-openai"]
    argv = localized([default(item) for item in service["command"]], "0")
    mock, line = start(argv, "listening on")
    processes.append(mock)
    port = bound_port(line)
    check = [item.replace(":8001/", f":{port}/") for item in service["healthcheck"]["test"][1:]]
    assert run_check(check) == 0
    mock.send_signal(signal.SIGTERM)
    assert mock.wait(timeout=15) == 0


@pytest.mark.slow
def test_app_image_command_serves_health_and_passes_its_healthcheck(
    processes: list[subprocess.Popen[str]],
) -> None:
    argv = exec_form(last("app", "CMD"))
    assert argv[:3] == ["python", "-m", "examples.app"]
    with socket.socket() as probe:  # the app prints no address: pick a free port first
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    argv = [("127.0.0.1" if item == "0.0.0.0" else item) for item in argv]
    argv[argv.index("--port") + 1] = str(port)
    app = subprocess.Popen(
        [sys.executable, *argv[1:]],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"},
    )
    processes.append(app)
    health = f"http://127.0.0.1:{port}/health"
    deadline = time.monotonic() + 20
    while run_check(healthcheck_command(), {"HEALTHCHECK_URL": health}) != 0:
        assert app.poll() is None, app.communicate()[0]
        assert time.monotonic() < deadline, "the app never answered /health"
        time.sleep(0.1)
    app.send_signal(signal.SIGTERM)
    assert app.wait(timeout=15) == 0


@pytest.mark.slow
@pytest.mark.usefixtures("pypi")
def test_the_build_stages_commands_build_a_venv_from_the_hashed_locks(tmp_path: Path) -> None:
    """The build stage's COPY and RUN, in order, with the base image's Python played by a
    fresh venv: the hashed installs, the package built with the locked backend. (The app's
    lock is installed the same way; the dry run above checks it, to keep this one short.)"""
    base, workdir = tmp_path / "base", tmp_path / "src"
    subprocess.run([sys.executable, "-m", "venv", str(base)], check=True, timeout=120)
    workdir.mkdir()
    env = {**pip_env(), "PATH": f"{base / 'bin'}:{os.environ['PATH']}"}
    paths = {"/opt/venv": str(tmp_path / "opt-venv"), "/tmp/dist": str(tmp_path / "dist")}
    for name, rest in dockerfile_stages()["build"][1:]:
        if name == "WORKDIR":
            assert rest == "/src"
        elif name == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(rest))
        elif name == "COPY":
            *sources, target = rest.split()
            for source in sources:
                destination = workdir / target
                if target.endswith("/"):  # a directory: the source keeps its name
                    destination /= Path(source).name
                if (ROOT / source).is_dir():
                    shutil.copytree(
                        ROOT / source, destination, ignore=shutil.ignore_patterns("__pycache__")
                    )
                else:
                    shutil.copy(ROOT / source, destination)
        elif name == "RUN":
            for old, new in paths.items():
                rest = rest.replace(old, new)
            result = subprocess.run(
                ["sh", "-ec", rest], cwd=workdir, env=env, capture_output=True, text=True,
                timeout=240, check=False,
            )  # fmt: skip
            assert result.returncode == 0, f"RUN {rest}\n{result.stdout}{result.stderr}"
    venv = Path(paths["/opt/venv"])
    site = {path.name.lower() for path in venv.glob("lib/python3.11/site-packages/*")}
    # The final images copy this venv: nothing in it to build or install with.
    assert not {"pip", "setuptools"} & site
    version = subprocess.run(
        [str(venv / "bin" / "sidecar"), "--version"], capture_output=True, text=True, check=True
    )
    assert project_version() in version.stdout + version.stderr
    listed = subprocess.run(
        [str(base / "bin" / "pip"), "--python", str(venv / "bin" / "python"), "list",
         "--format=json"],
        env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    installed = {canonicalize_name(item["name"]): item["version"] for item in json.loads(listed)}
    locked = {name: version for name, (version, _) in lock_entries("requirements.lock").items()}
    assert installed == {**locked, "llm-sidecar": project_version()}


# ---- the compose Make targets --------------------------------------------------------------

FAKE_DOCKER = """#!/bin/sh
echo "docker $*" >> "$CALLS"
case "$1" in
  info) exit "${DOCKER_INFO_RC:-0}" ;;
  compose) [ "$2" = version ] && exit "${COMPOSE_PLUGIN_RC:-0}"; exit 0 ;;
esac
exit 0
"""
FAKE_STANDALONE = """#!/bin/sh
echo "docker-compose $*" >> "$CALLS"
exit 0
"""


def make(
    tmp_path: Path, *args: str, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """``make ARGS`` with fake docker / docker-compose first on PATH; (result, their calls)."""
    bin_dir = tmp_path / "bin"
    if not bin_dir.exists():
        bin_dir.mkdir()
        for name, script in (("docker", FAKE_DOCKER), ("docker-compose", FAKE_STANDALONE)):
            (bin_dir / name).write_text(script)
            (bin_dir / name).chmod(0o755)
    calls = tmp_path / "calls"
    calls.write_text("")
    # Not a sub-make of `make test`: no inherited level or flags.
    clean = {k: v for k, v in os.environ.items() if k not in ("MAKELEVEL", "MAKEFLAGS", "MFLAGS")}
    result = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), *args],
        env={**clean, "PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(calls), **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    recorded = [line for line in calls.read_text().splitlines() if "version" not in line]
    return result, [line for line in recorded if line != "docker info"]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_compose_targets_say_clearly_when_no_docker_engine_runs(tmp_path: Path) -> None:
    for target in ("up", "down", "logs", "rebuild", "prune", "reset"):
        result, calls = make(tmp_path, target, DOCKER_INFO_RC="1")
        assert result.returncode != 0, target
        assert result.stdout == "", target
        first, *rest = result.stderr.splitlines()
        assert first == "no Docker engine is running here: use `make run` for the local stack"
        assert all(re.match(r"make(\[\d+\])?: \*\*\* ", line) for line in rest), result.stderr
        assert calls == [], target


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.parametrize(
    ("plugin_rc", "compose_cmd"), [("0", "docker compose"), ("1", "docker-compose")]
)
def test_make_compose_targets_run_compose(tmp_path: Path, plugin_rc: str, compose_cmd: str) -> None:
    expected = {
        ("up",): [f"{compose_cmd} up -d --build", f"{compose_cmd} ps"],
        ("down",): [f"{compose_cmd} down --remove-orphans"],
        ("logs",): [f"{compose_cmd} logs --tail=200"],
        ("logs", "SERVICE=sidecar", "FOLLOW=1"): [
            f"{compose_cmd} logs --tail=200 --follow sidecar"
        ],
        ("rebuild", "SERVICE=sidecar", "NOCACHE=1"): [
            f"{compose_cmd} build --no-cache --pull sidecar",
            f"{compose_cmd} up -d sidecar",
        ],
        ("rebuild",): [f"{compose_cmd} build", f"{compose_cmd} up -d"],
        ("prune",): [
            f"{compose_cmd} rm --force",
            "docker image prune --force --filter label=org.opencontainers.image.title=llm-sidecar",
        ],
        ("reset",): [f"{compose_cmd} down --volumes --remove-orphans"],
    }
    for args, commands in expected.items():
        result, calls = make(tmp_path, *args, COMPOSE_PLUGIN_RC=plugin_rc)
        assert result.returncode == 0, (args, result.stderr)
        assert calls == commands, args
    label = last("base", "LABEL")
    assert "org.opencontainers.image.title=llm-sidecar" in label
