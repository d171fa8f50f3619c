"""Data-parallel logistic regression on generated data: a real distributed training job.

Each rank (RANK of WORLD_SIZE, set by the pyTorch toolkit's launch plan) trains on its own
shard; after every step the ranks average their gradients through rank 0 over TCP at
MASTER_ADDR:MASTER_PORT (a hand-rolled allreduce, standard library only), so every rank holds
the same model. Rank 0 writes a checkpoint per epoch and the final model to
$AZ_BATCHAI_OUTPUT_MODEL.
"""

from __future__ import annotations

import json
import math
import os
import random
import socket
import struct
import sys
import time

FEATURES = 8
SAMPLES = 4000
EPOCHS = int(os.environ.get("EPOCHS", "5"))
BATCH = 100
LEARNING_RATE = 0.5


def make_data(seed: int = 7):
    rng = random.Random(seed)
    truth = [rng.uniform(-2, 2) for _ in range(FEATURES)]
    rows = []
    for _ in range(SAMPLES):
        x = [rng.gauss(0, 1) for _ in range(FEATURES)]
        p = 1 / (1 + math.exp(-sum(w * v for w, v in zip(truth, x))))
        rows.append((x, 1.0 if rng.random() < p else 0.0))
    return rows


def send(sock, values):
    payload = struct.pack(f"!{len(values)}d", *values)
    sock.sendall(struct.pack("!I", len(payload)) + payload)


def receive(sock):
    size = struct.unpack("!I", _exact(sock, 4))[0]
    data = _exact(sock, size)
    return list(struct.unpack(f"!{size // 8}d", data))


def _exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed")
        buf += chunk
    return buf


class AllReduce:
    """Rank 0 gathers every rank's vector, averages, and sends the mean back."""

    def __init__(self, rank: int, world: int, host: str, port: int):
        self.rank, self.world = rank, world
        if world == 1:
            return
        if rank == 0:
            server = socket.socket()
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("0.0.0.0", port))
            server.listen(world)
            self.peers = [server.accept()[0] for _ in range(world - 1)]
        else:
            deadline = time.time() + 60
            while True:
                try:
                    self.conn = socket.create_connection((host, port))
                    break
                except OSError:
                    if time.time() > deadline:
                        raise
                    time.sleep(0.2)

    def mean(self, values):
        if self.world == 1:
            return values
        if self.rank == 0:
            total = list(values)
            for peer in self.peers:
                for i, v in enumerate(receive(peer)):
                    total[i] += v
            mean = [v / self.world for v in total]
            for peer in self.peers:
                send(peer, mean)
            return mean
        send(self.conn, values)
        return receive(self.conn)


def gradient(weights, batch):
    grad = [0.0] * (FEATURES + 1)
    loss = 0.0
    for x, y in batch:
        z = weights[-1] + sum(w * v for w, v in zip(weights, x))
        p = 1 / (1 + math.exp(-max(min(z, 30), -30)))
        loss -= y * math.log(p + 1e-12) + (1 - y) * math.log(1 - p + 1e-12)
        for i, v in enumerate(x):
            grad[i] += (p - y) * v
        grad[-1] += p - y
    n = len(batch)
    return [g / n for g in grad], loss / n


def main() -> int:
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    out_dir = os.environ.get("AZ_BATCHAI_OUTPUT_MODEL", ".")
    reducer = AllReduce(rank, world, os.environ.get("MASTER_ADDR", "127.0.0.1"), int(os.environ.get("MASTER_PORT", "29500")))
    shard = make_data()[rank::world]
    weights = [0.0] * (FEATURES + 1)
    print(f"rank {rank}/{world} on {os.environ.get('AZ_BATCHAI_NODE_NAME', socket.gethostname())}: {len(shard)} samples", flush=True)
    for epoch in range(1, EPOCHS + 1):
        losses = []
        for start in range(0, len(shard), BATCH):
            grad, loss = gradient(weights, shard[start:start + BATCH])
            grad = reducer.mean(grad + [loss])
            losses.append(grad.pop())
            weights = [w - LEARNING_RATE * g for w, g in zip(weights, grad)]
        epoch_loss = sum(losses) / len(losses)
        print(f"rank {rank} epoch {epoch} loss {epoch_loss:.4f}", flush=True)
        if rank == 0:
            with open(os.path.join(out_dir, f"checkpoint-{epoch}.json"), "w") as f:
                json.dump({"epoch": epoch, "loss": epoch_loss, "weights": weights}, f)
    correct = sum((weights[-1] + sum(w * v for w, v in zip(weights, x)) > 0) == (y > 0.5) for x, y in shard)
    print(f"rank {rank} training accuracy {correct / len(shard):.3f}", flush=True)
    if rank == 0:
        with open(os.path.join(out_dir, "model.json"), "w") as f:
            json.dump({"weights": weights, "features": FEATURES, "world_size": world}, f)
        print(f"model written to {out_dir}/model.json", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
