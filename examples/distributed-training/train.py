"""Data-parallel training over MPI: a small two-layer network on generated data, numpy only.

Launched by the Horovod toolkit's plan: `mpirun` starts `processCount` ranks over the job's
nodes (2 nodes x 2 ranks here). Every rank trains on its own shard of the data; after each
step the ranks sum their gradients with an MPI allreduce and divide by the world size, so all
ranks apply the same update and hold the same model. Rank 0 prints the loss of the whole
dataset per epoch, writes `checkpoint-<epoch>.npz` and, at the end, `model.json` to
$AZ_BATCHAI_OUTPUT_MODEL.
"""

from __future__ import annotations

import json
import os
import socket

import numpy as np
from mpi4py import MPI

FEATURES, HIDDEN = 10, 16
SAMPLES = 8000
EPOCHS = int(os.environ.get("EPOCHS", "5"))
BATCH = 64
LEARNING_RATE = 0.5


def make_data(seed: int = 7):
    """A nonlinear binary task every rank generates identically, then shards."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(SAMPLES, FEATURES))
    y = ((x[:, 0] * x[:, 1] + np.sin(x[:, 2]) + 0.3 * x[:, 3]) > 0).astype(np.float64)
    return x, y


def init_params(seed: int = 1) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)  # the same seed on every rank: identical starting models
    return {
        "w1": rng.normal(scale=0.5, size=(FEATURES, HIDDEN)),
        "b1": np.zeros(HIDDEN),
        "w2": rng.normal(scale=0.5, size=HIDDEN),
        "b2": np.zeros(1),
    }


def forward(p, x):
    h = np.tanh(x @ p["w1"] + p["b1"])
    return h, 1 / (1 + np.exp(-(h @ p["w2"] + p["b2"])))


def loss_sum(p, x, y) -> float:
    _, out = forward(p, x)
    out = np.clip(out, 1e-9, 1 - 1e-9)
    return float(-(y * np.log(out) + (1 - y) * np.log(1 - out)).sum())


def gradients(p, x, y) -> dict[str, np.ndarray]:
    """Summed (not averaged) gradients of the cross-entropy over this batch."""
    h, out = forward(p, x)
    d_out = out - y
    d_h = np.outer(d_out, p["w2"]) * (1 - h**2)
    return {"w1": x.T @ d_h, "b1": d_h.sum(0), "w2": h.T @ d_out, "b2": np.array([d_out.sum()])}


def allreduce_sum(comm, value):
    total = np.zeros_like(value)
    comm.Allreduce(np.ascontiguousarray(value), total, op=MPI.SUM)
    return total


def main() -> None:
    comm = MPI.COMM_WORLD
    rank, size = comm.rank, comm.size
    out_dir = os.environ.get("AZ_BATCHAI_OUTPUT_MODEL", ".")
    print(f"rank {rank} of {size} on {os.environ.get('AZ_BATCHAI_NODE_NAME', socket.gethostname())}", flush=True)
    x, y = make_data()
    shard = slice(rank * SAMPLES // size, (rank + 1) * SAMPLES // size)
    xs, ys = x[shard], y[shard]
    params = init_params()
    steps = len(xs) // BATCH
    for epoch in range(1, EPOCHS + 1):
        order = np.random.default_rng(epoch * 100 + rank).permutation(len(xs))
        for step in range(steps):
            batch = order[step * BATCH : (step + 1) * BATCH]
            local = gradients(params, xs[batch], ys[batch])
            for name, grad in local.items():
                params[name] -= LEARNING_RATE * allreduce_sum(comm, grad) / (BATCH * size)
        total_loss = allreduce_sum(comm, np.array([loss_sum(params, xs, ys)]))[0] / SAMPLES
        _, out = forward(params, xs)
        correct = allreduce_sum(comm, np.array([float(((out > 0.5) == ys).sum())]))[0]
        if rank == 0:
            print(f"epoch {epoch} loss {total_loss:.4f} accuracy {correct / SAMPLES:.3f}", flush=True)
            np.savez(os.path.join(out_dir, f"checkpoint-{epoch}.npz"), **params)
    if rank == 0:
        with open(os.path.join(out_dir, "model.json"), "w") as f:
            json.dump({k: v.tolist() for k, v in params.items()} | {"epochs": EPOCHS, "ranks": size}, f)
        print("model written", flush=True)


if __name__ == "__main__":
    main()
