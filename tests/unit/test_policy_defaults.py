"""Every default is written once, in model.py: the compiler takes it from there.

The test rewrites model.py so that every default differs (numbers grow, flags
flip, strings and collections gain a marker; a nested default such as
``Route.retry = Retry()`` is changed once more on top of its class's), imports
the policy package afresh against that model, and compiles a policy that writes
as little as it can. Every compiled field the policy did not write must hold
the rewritten default. A default the compiler spells out itself (a literal in
``spec.get("open_for", 30.0)``, a constant of its own, ``Timeouts()`` instead of
the route's default) keeps the old value and fails here, whatever its spelling.
"""

from __future__ import annotations

import ast
import dataclasses
import sys
import types
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

import sidecar.policy.loader  # noqa: F401 - the package as the rest of the tests import it
from sidecar.policy import model

PACKAGE = "sidecar.policy"

# Compiles with every default changed: each route has one target that says
# `when: always` (else "every target is 'when: context_length_exceeded'").
POLICY = """\
version: 1
state: {url: "redis://127.0.0.1:1"}
upstreams:
  a: {url: http://a, format: openai, rate_limit: {requests_per_minute: 1}}
  b: {url: http://b, format: anthropic}
routes:
  - {name: bare, match: {path: /bare}, fallback: [{upstream: a, when: always}, {upstream: b}]}
  - name: blocks
    match: {path: /blocks}
    rate_limit: {requests_per_minute: 1}
    cache: {}
    fallback:
      - {upstream: a, when: always}
      - {tier: {targets: [{upstream: a}, {upstream: b}]}}
"""

# Compiled values the policy above decides, by path in the PolicySet.
WRITTEN = {
    "state.url",
    "routes[0].fallback[0].when",
    "routes[1].fallback[0].when",
    "routes[1].cache.enabled",  # a cache block turns caching on
}

# Fields with a default that the compiler derives from what is written.
DERIVED = {
    "Match.prefix": "`path` or `prefix` in the match",
    "Route.tiers": "the tier steps of the fallback list",
}


def perturbed(value: object, where: str) -> object:
    """A different value for the default *value* of *where* (``Class.field``...)."""
    if value is None or where in DERIVED:
        return value  # None is "not set"; nothing to tell apart
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 1.5
    if isinstance(value, str):
        return f"{value}~"
    if isinstance(value, frozenset):
        return value | {f"perturbed {where}"}
    if isinstance(value, tuple):
        return (*value, f"perturbed {where}")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        changes = {
            field.name: perturbed(getattr(value, field.name), f"{where}.{field.name}")
            for field in dataclasses.fields(value)
        }
        return dataclasses.replace(value, **changes)
    raise AssertionError(f"{where}: no perturbation for {value!r}; add one here")


def install_perturbed_model() -> tuple[types.ModuleType, set[str]]:
    """model.py, every default passed through ``perturbed``, in sys.modules; the fields changed."""
    filename = model.__file__ or "model.py"
    tree = ast.parse(Path(filename).read_text())
    changed: set[str] = set()
    for node in tree.body:
        if not isinstance(node, ast.ClassDef):
            continue
        for statement in node.body:
            if not isinstance(statement, ast.AnnAssign) or statement.value is None:
                continue
            assert isinstance(statement.target, ast.Name)
            where = f"{node.name}.{statement.target.id}"
            value = statement.value
            if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "field":
                assert not value.keywords or all(
                    keyword.arg not in ("default", "default_factory") for keyword in value.keywords
                ), f"{where}: teach this test field(default=...)"
                continue
            statement.value = ast.Call(
                ast.Name("_perturbed", ast.Load()), [value, ast.Constant(where)], []
            )
            changed.add(where)
    ast.fix_missing_locations(tree)
    module = types.ModuleType(model.__name__)
    module.__file__ = model.__file__
    module.__dict__["_perturbed"] = perturbed
    sys.modules[module.__name__] = module  # dataclass() looks its module up there
    exec(compile(tree, filename, "exec"), module.__dict__)
    unset = {where for where in changed if _default(module, where) is None}
    return module, changed - unset - set(DERIVED)


def _default(module: types.ModuleType, where: str) -> object:
    cls, name = where.split(".")
    return getattr(module, cls).__dataclass_fields__[name].default


@pytest.fixture
def fresh_package() -> Iterator[None]:
    """``sidecar.policy.*`` imported anew for one test, then the originals put back."""
    package = sys.modules[PACKAGE]
    saved = {name: module for name, module in sys.modules.items() if name.startswith(PACKAGE + ".")}
    for name in saved:
        del sys.modules[name]
    try:
        yield
    finally:
        for name in [name for name in sys.modules if name.startswith(PACKAGE + ".")]:
            del sys.modules[name]
            short = name.rsplit(".", 1)[1]
            if hasattr(package, short) and name not in saved:
                delattr(package, short)
        sys.modules.update(saved)
        for name, module in saved.items():
            setattr(package, name.rsplit(".", 1)[1], module)


def mismatches(value: object, path: str, seen: set[str]) -> Iterator[str]:
    """Fields of compiled *value* (at *path*) that differ from their model.py default."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from mismatches(item, f"{path}[{key!r}]", seen)
    elif isinstance(value, tuple):
        for index, item in enumerate(value):
            yield from mismatches(item, f"{path}[{index}]", seen)
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        for field in dataclasses.fields(value):
            got = getattr(value, field.name)
            here = f"{path}.{field.name}" if path else field.name
            name = f"{type(value).__name__}.{field.name}"
            if field.default is dataclasses.MISSING or field.default is None or name in DERIVED:
                yield from mismatches(got, here, seen)  # required, unset by default, or derived
            else:
                yield from differences(got, field.default, here, name, seen)


def differences(
    got: object, default: object, path: str, name: str, seen: set[str]
) -> Iterator[str]:
    """Where *got* differs from *default* (field by field for a nested default)."""
    seen.add(name)
    if path in WRITTEN:
        return
    if dataclasses.is_dataclass(default) and not isinstance(default, type):
        for field in dataclasses.fields(default):
            yield from differences(
                getattr(got, field.name),
                getattr(default, field.name),
                f"{path}.{field.name}",
                f"{type(default).__name__}.{field.name}",
                seen,
            )
    elif got != default:
        yield f"{path} is {got!r}; model.py says {default!r}"


def test_every_default_comes_from_the_model(fresh_package: None) -> None:
    module, changed = install_perturbed_model()
    from sidecar.policy.loader import load_files  # imported anew, against the rewritten model

    policy = load_files([("p.yaml", POLICY.encode())], {})
    assert type(policy) is module.PolicySet
    seen: set[str] = set()
    wrong = list(mismatches(policy, "", seen))
    assert wrong == [], "the compiler wrote its own default:\n" + "\n".join(wrong)
    missed = changed - seen
    assert not missed, f"extend POLICY so that it compiles these too: {sorted(missed)}"
