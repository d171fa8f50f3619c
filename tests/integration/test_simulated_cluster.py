"""The simulated compute adapter drives the real controller, lifecycles and engine (bench in small)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.integration.conftest import ROOT

pytestmark = pytest.mark.timeout(300)


def test_a_small_simulated_cluster_runs_every_job(tmp_path):
    out = tmp_path / "figures.json"
    done = subprocess.run(
        [sys.executable, "bench/simulated_cluster.py", "--nodes", "20", "--jobs", "120", "--max-seconds", "1", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    figures = json.loads(out.read_text())
    assert figures["succeeded"] == 120 and figures["jobsPerSecond"] > 0
