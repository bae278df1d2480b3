"""Trains GPT-2 on one CPU device, then under tf.distribute.MirroredStrategy over 4 logical CPUs.

Run by tests/distribution/test_layout_map.py in a subprocess (logical devices must be
configured before TensorFlow initializes its runtime):

    KERAS_BACKEND=tensorflow python -m tests.distribution.tf_script OUT.json

Writes the replica count, both runs' per-step losses and the largest difference between
their final weights. The test does the asserting.
"""

import contextlib
import io
import json
import os
import runpy
import sys

import tensorflow as tf

NUM_REPLICAS = 4

_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * NUM_REPLICAS
)

import keras  # noqa: E402

from tests.distribution.jax_script import BATCH_SIZE, STEPS, build  # noqa: E402


def train(kind, strategy, weights):
    """(model, initial weights, losses): built and compiled inside `strategy.scope()`."""
    with strategy.scope():
        model, x, y, loss = build(kind)
        if weights is not None:
            model.set_weights(weights)
        initial = model.get_weights()
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss=loss)
    history = model.fit(x, y, batch_size=BATCH_SIZE, epochs=STEPS, shuffle=False, verbose=0)
    return model, initial, history.history["loss"]


def main(path, kinds):
    devices = [device.name for device in tf.config.list_logical_devices("CPU")]
    results = {"devices": devices}
    for kind in kinds or ["gpt2"]:
        if kind == "readme":  # the README's snippet on this process's 4 logical CPUs
            output = io.StringIO()
            with contextlib.redirect_stdout(output):
                runpy.run_path(os.path.join(os.path.dirname(__file__), "train_gpt2_mirrored.py"))
            results["readme"] = output.getvalue()
            continue
        single, initial, single_losses = train(kind, tf.distribute.get_strategy(), None)
        mirrored = tf.distribute.MirroredStrategy(devices)
        model, _, mirrored_losses = train(kind, mirrored, initial)
        results[kind] = {
            "num_replicas": mirrored.num_replicas_in_sync,
            "variable_type": type(model.weights[0].value).__name__,
            "losses": {"single": single_losses, "mirrored": mirrored_losses},
            "weight_difference": max(
                float(abs(a - b).max()) for a, b in zip(single.get_weights(), model.get_weights())
            ),
        }
    with open(path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
