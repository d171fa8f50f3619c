"""The README's first command: the demo runs end to end (CI runs it from a clean clone)."""

from __future__ import annotations

import subprocess

from tests.integration.conftest import ROOT


def test_demo_trains_on_two_nodes_and_lists_outputs():
    done = subprocess.run(["bash", "scripts/demo.sh"], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          stdin=subprocess.DEVNULL)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "[stdout-0.txt] rank 0 epoch 5 loss" in out and "[stdout-1.txt] rank 1 epoch 5 loss" in out
    assert "succeeded" in out and "model.json" in out and "checkpoint-5.json" in out
