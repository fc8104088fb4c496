"""The CI-sized chaos soak (bench/soak.py): 1,000 requests at concurrency 64 through
random upstream faults, live policy edits and a SIGHUP, with the full soak's
zero-tolerance checks: nothing truncated, malformed, lost or hung; no upstream
request, task or file descriptor left behind; no secret in any output."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import soak


@pytest.mark.timeout(150)
async def test_ci_sized_soak_loses_nothing_and_leaks_nothing(tmp_path: Path) -> None:
    report = await soak.run_soak(requests=1000, concurrency=64, seed=2026, workdir=tmp_path)
    assert soak.failures(report) == [], report
    assert report["requests"] == 1000
    # The faults really happened and were really survived.
    assert report["upstream_attempts"] > report["requests"]
    assert report["complete_successes"] > 900
    assert report["client_hang_ups"] > 0
    assert report["sidecar_client_cancellations"] > 0
    assert report["policy_edits"]["reloads"]["loaded"] >= 2
    assert report["policy_edits"]["sighups"] == 1
    assert report["attempts_per_request"]["max"] <= 8  # no hammering
