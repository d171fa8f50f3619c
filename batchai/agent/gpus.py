"""The node's GPUs, as `nvidia-smi` (which every NVIDIA driver ships) reports them.

Standard library only. No `nvidia-smi` on PATH, or one that fails: no GPUs (a CPU node).
"""

from __future__ import annotations

import csv
import logging
import shutil
import subprocess

log = logging.getLogger("batchai.agent")

QUERY = ["--query-gpu=index,name,memory.total,uuid", "--format=csv,noheader,nounits"]
MAX_GPUS = 64  # the most a node reports (no machine has more)
MAX_TEXT = 128  # characters of a name or uuid
TIMEOUT = 20.0


def detect() -> list[dict]:
    """[{"index", "name", "memoryMiB", "uuid"}] of every GPU `nvidia-smi` lists."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        done = subprocess.run([smi, *QUERY], capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as e:
        log.warning("nvidia-smi failed: %s; reporting no GPUs", e)
        return []
    if done.returncode != 0:
        log.warning("nvidia-smi exited with %d: %s; reporting no GPUs", done.returncode, done.stderr.strip()[:200])
        return []
    return parse(done.stdout)


def parse(text: str) -> list[dict]:
    gpus = []
    for row in csv.reader(text.splitlines()):
        fields = [f.strip() for f in row]
        if len(fields) < 4 or not fields[0].isdigit():
            continue
        memory = fields[2]
        gpus.append(
            {
                "index": fields[0],
                "name": fields[1][:MAX_TEXT],
                "memoryMiB": int(memory) if memory.isdigit() else None,
                "uuid": fields[3][:MAX_TEXT],
            }
        )
    return gpus[:MAX_GPUS]
