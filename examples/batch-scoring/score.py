"""Batch scoring as an array job: task i of N scores every N-th line of the input list, from line i.

    batchai job create score -w WS -e EXP -c CLUSTER -f examples/batch-scoring/job.json -p EXAMPLE_DIR=$PWD/examples/batch-scoring

Each task writes `scores.csv` into its own `$AZ_BATCHAI_OUTPUT_SCORES` (outputs are per task:
`batchai job files score --task 2 --output-dir SCORES`). The "model" is a fixed linear scorer: the
point is the split, which needs no coordination between tasks and survives a task's retry.
"""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

WEIGHTS = (0.4, -1.3, 2.0)


def score(features: list[float]) -> float:
    return sum(w * x for w, x in zip(WEIGHTS, features, strict=True))


def main() -> int:
    index, count = int(os.environ["AZ_BATCHAI_TASK_INDEX"]), int(os.environ["AZ_BATCHAI_TASK_COUNT"])
    lines = Path(sys.argv[1]).read_text().splitlines()
    mine = lines[index::count]
    out = Path(os.environ["AZ_BATCHAI_OUTPUT_SCORES"]) / "scores.csv"
    with out.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "score"])
        for line in mine:
            item, *features = line.split(",")
            writer.writerow([item, f"{score([float(x) for x in features]):.4f}"])
    print(f"task {index} of {count}: scored {len(mine)} of {len(lines)} items into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
