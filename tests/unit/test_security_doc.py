"""docs/security.md ties every line of its threat model to a test: each one it names exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAMED = re.compile(r"`(test_[a-z0-9_]+)::(test_[a-z0-9_]+\*?)")  # a trailing * is a prefix


def test_every_test_the_security_page_names_exists() -> None:
    page = (ROOT / "docs" / "security.md").read_text()
    named = set(NAMED.findall(page))
    assert len(named) > 50
    missing = []
    for module, function in sorted(named):
        files = list((ROOT / "tests").rglob(f"{module}.py"))
        name = function.removesuffix("*") + ("[a-z0-9_]*" if function.endswith("*") else "")
        defined = re.compile(rf"^(async )?def {name}\(", re.M)
        if not any(defined.search(path.read_text()) for path in files):
            missing.append(f"{module}::{function}")
    assert missing == []


def test_the_threat_model_names_every_actor() -> None:
    page = (ROOT / "docs" / "security.md").read_text()
    model = page.split("## Threat model", 1)[1].split("\\n## ", 1)[0]
    for actor in (
        "a client with a key",
        "a client without a key",
        "a hostile or compromised upstream",
        "a web page in a browser",
        "a policy author",
    ):
        assert actor in model
