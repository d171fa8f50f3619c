"""The README's first command: the demo runs end to end (CI runs it from a clean clone)."""

from __future__ import annotations

import subprocess

from tests.integration.conftest import ROOT


def test_demo_trains_on_two_nodes_and_lists_outputs():
    done = subprocess.run(["bash", "scripts/demo.sh"], cwd=ROOT, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert all(f"rank {r} of 4 on node-{r // 2}" in out for r in range(4)), out[-4000:]  # 2 nodes x 2 MPI ranks
    losses = [float(line.split(" loss ")[1].split()[0]) for line in out.splitlines() if line.startswith("[stdout.txt] epoch ")]
    assert len(losses) == 5 and losses[-1] < losses[0]  # it learns
    assert "succeeded" in out and "model.json" in out and "checkpoint-5.npz" in out
