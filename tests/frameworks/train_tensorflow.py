"""Real TensorFlow MultiWorkerMirroredStrategy, cluster from TF_CONFIG (the tensorFlow toolkit's plan)."""

import json
import os

import numpy as np
import tensorflow as tf

config = json.loads(os.environ["TF_CONFIG"])
strategy = tf.distribute.MultiWorkerMirroredStrategy()
with strategy.scope():
    model = tf.keras.Sequential([tf.keras.Input(shape=(4,)), tf.keras.layers.Dense(1)])
    model.compile(optimizer=tf.keras.optimizers.SGD(0.1), loss="mse")
x = np.random.default_rng(0).normal(size=(256, 4)).astype("float32")
y = x @ np.array([1.0, -2.0, 0.5, 3.0], dtype="float32")
history = model.fit(x, y, batch_size=32, epochs=3, verbose=0)
index = config["task"]["index"]
print(f"worker {index} of {strategy.num_replicas_in_sync} loss {history.history['loss'][-1]:.4f}", flush=True)
with open(os.path.join(os.environ["AZ_BATCHAI_OUTPUT_OUT"], f"worker-{index}.txt"), "w") as f:
    f.write(f"{strategy.num_replicas_in_sync}\n")
