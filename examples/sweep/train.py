"""A stand-in for training, for the example sweep: 20 steps of a loss that falls towards
(log10(lr) + 3)^2 / 4 + 0.1 * (layers - 2)^2, best at lr = 1e-3 with 2 layers. Each step is reported
with `batchai metric` semantics: a JSON line appended to $AZ_BATCHAI_METRICS_FILE."""

import argparse
import json
import math
import os
import time

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
parser.add_argument("--layers", type=int, required=True)
args = parser.parse_args()
floor = (math.log10(args.lr) + 3) ** 2 / 4 + 0.1 * (args.layers - 2) ** 2
with open(os.environ["AZ_BATCHAI_METRICS_FILE"], "a") as metrics:
    for step in range(1, 21):
        time.sleep(0.05)
        metrics.write(json.dumps({"step": step, "loss": floor + 2.0 / step}) + "\n")
        metrics.flush()
print(f"lr={args.lr} layers={args.layers} final loss {floor + 0.1:.4f}")
