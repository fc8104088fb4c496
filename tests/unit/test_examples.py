"""Every example policy under examples/policies/ loads, compiles and says what it is for.

Each top-level ``*.yaml`` / ``*.yml`` file is a policy on its own; each
subdirectory is a policy directory. Each is copied into a temporary directory
and loaded with an environment that sets every ``${VAR}`` the files need
(variables with a ``:-default`` keep their default), exactly as
``sidecar check <dir>`` does. Then each example's point is asserted: the
chain order, the breakers, continuation, what needs no key at all.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from sidecar.cli import check
from sidecar.policy.errors import PolicyError
from sidecar.policy.explain import explain
from sidecar.policy.loader import load_policy
from sidecar.policy.model import PolicySet, Route

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "policies"
EXPECTED = (
    "openai-only.yaml",
    "anthropic-only.yaml",
    "multi-provider.yaml",
    "production-fallback.yaml",
    "ollama-local.yaml",
    "replicas-on-redis.yaml",
)
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-[^}]*)?\}")
_COMMENT = re.compile(r"(^|\s)#.*$")
_SECRET = re.compile(r"(KEY|TOKEN|SECRET|PASSWORD)$")
# Variables that may have no default although they are not secrets: each one
# names something only its owner knows (an Azure resource's own endpoint).
_NO_SENSIBLE_DEFAULT = {"AZURE_EASTUS_URL", "AZURE_SWEDEN_URL"}
_POLICY_SUFFIXES = (".yaml", ".yml")
CHAT = "/v1/chat/completions"


def _examples() -> list[Path]:
    if not EXAMPLES.is_dir():
        return []
    return sorted(
        entry
        for entry in EXAMPLES.iterdir()
        if not entry.name.startswith(".") and (entry.is_dir() or entry.suffix in _POLICY_SUFFIXES)
    )


def _files(example: Path) -> list[Path]:
    if example.is_file():
        return [example]
    return sorted(p for p in example.iterdir() if p.suffix in _POLICY_SUFFIXES)


def _references(files: list[Path]) -> list[tuple[str, bool]]:
    """Every ``${VAR}`` of *files* as (name, has a default); comments left out."""
    return [
        (name, bool(default))
        for file in files
        for line in file.read_text().splitlines()
        for name, default in _REFERENCE.findall(_COMMENT.sub("", line))
    ]


def _environ(files: list[Path]) -> dict[str, str]:
    """A value for every variable referenced without a default: a URL for *_URL names."""
    return {
        name: "http://127.0.0.1:9" if name.endswith("_URL") else f"test-{name}"
        for name, has_default in _references(files)
        if not has_default
    }


def _copy(example: Path, tmp_path: Path) -> Path:
    for file in _files(example):
        shutil.copy(file, tmp_path / file.name)
    return tmp_path


def _load(example: Path, tmp_path: Path, environ: dict[str, str] | None = None) -> PolicySet:
    files = _files(example)
    return load_policy(_copy(example, tmp_path), _environ(files) if environ is None else environ)


def _route(policy: PolicySet, path: str, model: str | None, **headers: str) -> Route:
    route = policy.route_for("POST", path, model, headers)
    assert route is not None, f"no route for {path} {model} {headers}"
    return route


def _chain(route: Route) -> list[str]:
    """The regular fallback chain, in order (context-length targets left out)."""
    return [target.upstream.name for target in route.fallback if target.when == "always"]


def _larger(route: Route) -> list[tuple[str, str | None]]:
    return [
        (target.upstream.name, target.model)
        for target in route.fallback
        if target.when == "context_length_exceeded"
    ]


# -- every example ------------------------------------------------------------------------


def test_there_are_examples() -> None:
    names = {example.name for example in _examples()}
    assert set(EXPECTED) <= names


@pytest.mark.parametrize("example", _examples(), ids=lambda path: path.name)
def test_example_compiles(example: Path, tmp_path: Path) -> None:
    policy = _load(example, tmp_path)
    assert policy.routes
    assert len(policy.files) == len(_files(example))


@pytest.mark.parametrize("example", _examples(), ids=lambda path: path.name)
def test_example_passes_sidecar_check(
    example: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for name, value in _environ(_files(example)).items():
        monkeypatch.setenv(name, value)
    assert check(_copy(example, tmp_path)) == 0
    assert capsys.readouterr().out.startswith("ok: ")


@pytest.mark.parametrize("example", _examples(), ids=lambda path: path.name)
def test_example_says_when_to_use_it(example: Path) -> None:
    for file in _files(example):
        header = []
        for line in file.read_text().splitlines():
            if not line.startswith("#"):
                break
            header.append(line)
        assert header, f"{file.name} must start with a comment"
        assert any(line.startswith("# When to use:") for line in header), file.name


@pytest.mark.parametrize("example", _examples(), ids=lambda path: path.name)
def test_secrets_have_no_defaults_and_the_rest_do(example: Path) -> None:
    for name, has_default in _references(_files(example)):
        if _SECRET.search(name):
            assert not has_default, f"{name}: a secret must never have a default"
        else:
            assert has_default or name in _NO_SENSIBLE_DEFAULT, f"{name}: give it a :-default"


@pytest.mark.parametrize("example", _examples(), ids=lambda path: path.name)
def test_a_missing_secret_is_reported_not_defaulted(example: Path, tmp_path: Path) -> None:
    files = _files(example)
    required = sorted({name for name, has_default in _references(files) if not has_default})
    if not required:  # loads with an empty environment
        assert _load(example, tmp_path, environ={}).routes
        return
    with pytest.raises(PolicyError) as refused:
        _load(example, tmp_path, environ={})
    text = "\n".join(str(issue) for issue in refused.value.issues)
    for name in required:
        assert f"environment variable {name} is not set" in text


@pytest.mark.parametrize("example", _examples(), ids=lambda path: path.name)
def test_explain_redacts_every_secret(example: Path, tmp_path: Path) -> None:
    environ = _environ(_files(example))
    shown = explain(_load(example, tmp_path, environ))
    for name, value in environ.items():
        if _SECRET.search(name):
            assert value not in shown


# -- what each one is for -----------------------------------------------------------------


def test_openai_only_stays_on_openai(tmp_path: Path) -> None:
    policy = _load(EXAMPLES / "openai-only.yaml", tmp_path)
    assert list(policy.upstreams) == ["openai"]
    assert policy.upstreams["openai"].url == "https://api.openai.com"
    chat = _route(policy, CHAT, "gpt-4o")
    assert _chain(chat) == ["openai", "openai"]
    sibling = chat.fallback[1]
    assert sibling.model_for("gpt-4o") == "gpt-4.1"
    assert sibling.model_for("gpt-4o-mini") == "gpt-4.1-mini"
    assert chat.breaker.key == "upstream_model"  # the sibling model has its own breaker
    assert _larger(chat) == [("openai", "gpt-4.1")]
    assert policy.route_for("POST", "/v1/messages", "claude-sonnet-4-6", {}) is None
    assert _chain(_route(policy, "/v1/embeddings", "text-embedding-3-small")) == ["openai"]


def test_anthropic_only_answers_both_sdks_with_claude(tmp_path: Path) -> None:
    policy = _load(EXAMPLES / "anthropic-only.yaml", tmp_path)
    assert list(policy.upstreams) == ["anthropic"]
    anthropic = policy.upstreams["anthropic"]
    assert anthropic.format == "anthropic"
    assert anthropic.prefill
    messages = _route(policy, "/v1/messages", "claude-sonnet-4-6")
    assert _chain(messages) == ["anthropic", "anthropic"]
    assert messages.fallback[0].model_for("claude-sonnet-4-6") == "claude-sonnet-4-6"
    assert messages.fallback[1].model_for("claude-sonnet-4-6") == "claude-haiku-4-5"
    assert messages.continuation.enabled
    assert messages.continuation.target == "same"  # prefill: Claude finishes its own answer
    assert 529 in messages.retry.on
    # An OpenAI SDK client is answered by Claude, its model names mapped.
    chat = _route(policy, CHAT, "gpt-4o")
    first = chat.fallback[0]
    assert first.upstream.name == "anthropic"
    assert first.model_for("gpt-4o") == "claude-sonnet-4-6"
    assert first.model_for("gpt-4o-mini") == "claude-haiku-4-5"
    assert first.model_for("claude-haiku-4-5") == "claude-haiku-4-5"  # passed on as is
    assert chat.translate.unsupported == "error"


def test_multi_provider_spreads_tenants_over_deployments(tmp_path: Path) -> None:
    policy = _load(EXAMPLES / "multi-provider.yaml", tmp_path)
    assert {upstream.format for upstream in policy.upstreams.values()} == {"openai"}
    interactive = _route(policy, CHAT, "gpt-4o")
    batch = _route(policy, CHAT, "gpt-4o", **{"x-tenant": "batch-nightly"})
    assert interactive.name == "chat"
    assert batch.name == "chat-batch"
    assert _chain(interactive) == ["azure-eastus", "azure-sweden", "openai"]
    assert _chain(batch) == ["azure-sweden", "azure-eastus", "openai"]
    # Per deployment and model: a throttled gpt-4o leaves gpt-4o-mini alone.
    assert interactive.breaker.key == batch.breaker.key == "upstream_model"
    # A long Retry-After moves on to the next deployment instead of waiting.
    assert interactive.retry.retry_after.max_wait == 1.0
    assert _chain(_route(policy, "/v1/embeddings", "text-embedding-3-small")) == _chain(interactive)
    header = (EXAMPLES / "multi-provider.yaml").read_text().split("\nversion:")[0]
    assert "NOT IMPLEMENTED" in header  # says plainly that weighted balancing is to come


def test_production_fallback_chain(tmp_path: Path) -> None:
    policy = _load(EXAMPLES / "production-fallback.yaml", tmp_path)
    chat = _route(policy, CHAT, "gpt-4o")
    assert _chain(chat) == ["openai", "anthropic", "ollama"]
    assert _larger(chat) == [("openai", "gpt-4.1")]  # the 1M-token model for too-long prompts
    anthropic, ollama = chat.fallback[1], chat.fallback[2]
    assert anthropic.model_for("gpt-4o-mini") == "claude-haiku-4-5"
    assert anthropic.model_for("gpt-4o") == "claude-sonnet-4-6"
    assert anthropic.upstream.prefill
    assert ollama.upstream.format == "openai"
    assert ollama.upstream.url == "http://127.0.0.1:11434"  # the default when OLLAMA_URL is unset
    assert ollama.upstream.auth is None
    assert ollama.upstream.client_auth == "drop"  # the app's key stays with the app
    assert ollama.model_for("gpt-4o") == "llama3.1"
    assert chat.continuation.enabled
    assert chat.continuation.target == "next"
    assert chat.breaker.window is not None
    assert chat.breaker.key == "upstream_model"
    assert chat.retry.budget.ratio == pytest.approx(0.10)
    assert chat.validate.max_prompt_tokens == 1_000_000
    messages = _route(policy, "/v1/messages", "claude-sonnet-4-6")
    assert _chain(messages) == ["anthropic", "openai", "ollama"]
    assert messages.fallback[1].model_for("claude-haiku-4-5") == "gpt-4o-mini"
    assert _larger(messages) == [("openai", "gpt-4.1")]
    assert _chain(_route(policy, "/v1/embeddings", "text-embedding-3-small")) == ["openai"]


def test_production_fallback_urls_can_be_overridden(tmp_path: Path) -> None:
    environ = {
        "OPENAI_API_KEY": "k",
        "ANTHROPIC_API_KEY": "k",
        "OLLAMA_URL": "http://ollama:11434",
        "OLLAMA_MODEL": "qwen2.5",
    }
    policy = _load(EXAMPLES / "production-fallback.yaml", tmp_path, environ)
    assert policy.upstreams["ollama"].url == "http://ollama:11434"
    assert _route(policy, CHAT, "gpt-4o").fallback[2].model_for("gpt-4o") == "qwen2.5"


def test_ollama_local_needs_no_key_and_falls_back_to_the_cloud(tmp_path: Path) -> None:
    policy = _load(EXAMPLES / "ollama-local.yaml", tmp_path, environ={})
    assert all(upstream.auth is None for upstream in policy.upstreams.values())
    # The app's own OpenAI key goes to OpenAI only, never to Ollama.
    assert policy.upstreams["openai"].client_auth == "pass"
    assert policy.upstreams["ollama"].client_auth == "drop"
    assert policy.upstreams["ollama"].url == "http://127.0.0.1:11434"
    # A local model name stays on the laptop.
    local = _route(policy, CHAT, "llama3.1")
    assert _chain(local) == ["ollama"]
    assert local.fallback[0].model_for("llama3.1") == "llama3.1"
    # An OpenAI model name: a local model first, the cloud second.
    cloud = _route(policy, CHAT, "gpt-4o")
    assert _chain(cloud) == ["ollama", "openai"]
    assert cloud.fallback[0].model_for("gpt-4o") == "llama3.1"
    assert cloud.fallback[0].model_for("gpt-4o-mini") == "llama3.2"
    assert cloud.fallback[1].model_for("gpt-4o") == "gpt-4o"
    # The Anthropic SDK is answered by the local model too, translated.
    messages = _route(policy, "/v1/messages", "claude-sonnet-4-6")
    assert _chain(messages) == ["ollama"]
    assert messages.fallback[0].upstream.format == "openai"
    assert messages.fallback[0].model_for("claude-sonnet-4-6") == "llama3.1"


def test_ollama_local_models_can_be_chosen(tmp_path: Path) -> None:
    environ = {"OLLAMA_MODEL": "qwen2.5:14b", "OLLAMA_SMALL_MODEL": "qwen2.5:3b"}
    policy = _load(EXAMPLES / "ollama-local.yaml", tmp_path, environ)
    ollama = _route(policy, CHAT, "gpt-4o").fallback[0]
    assert ollama.model_for("gpt-4o") == "qwen2.5:14b"
    assert ollama.model_for("gpt-4o-mini") == "qwen2.5:3b"


def test_replicas_on_redis_shares_state_and_balances_a_tier(tmp_path: Path) -> None:
    policy = _load(EXAMPLES / "replicas-on-redis.yaml", tmp_path)
    assert policy.state.backend == "redis"
    assert policy.state.prefix == "myapp"
    (chat,) = policy.routes
    assert chat.rate_limit is not None
    assert chat.rate_limit.key == "header:x-tenant"
    assert chat.cache.enabled
    assert chat.cache.when == "deterministic"
    assert chat.hedge is not None
    assert [tier.strategy for tier in chat.tiers] == ["lowest_latency"]
    assert [t.upstream.name for t in chat.tiers[0].targets] == ["openai-east", "openai-west"]
    assert all(policy.upstreams[n].rate_limit for n in ("openai-east", "openai-west"))


@pytest.mark.parametrize(
    ("path", "model", "first"),
    [
        ("/v1/chat/completions", "gpt-4o", "openai"),
        ("/v1/chat/completions", "claude-sonnet-4-6", "anthropic"),
        ("/v1/messages", "claude-haiku-4-5", "anthropic"),
        ("/v1/messages", "gpt-4o-mini", "openai"),
    ],
)
def test_the_default_policy_routes_by_model_family(path: str, model: str, first: str) -> None:
    policy = load_policy(EXAMPLES.parents[1] / "policies", {})
    route = policy.route_for("POST", path, model, {})
    assert route is not None
    assert route.fallback[0].upstream.name == first  # the model's own provider first
    other = route.fallback[1]
    assert other.upstream.name != first
    assert other.model_for(model) != model  # the fallback gets a model it serves
