"""Trains gpt2_tiny on every device: the README's "Scaling past one device" script, verbatim.

The test suite runs it on 8 virtual CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8).

    KERAS_BACKEND=jax python train_gpt2.py                      # data parallel, one host
    KERAS_BACKEND=jax python train_gpt2.py --model-parallel 4   # 4-way tensor parallel
    KERAS_BACKEND=jax python train_gpt2.py --coordinator HOST0:1234 --num-processes 2 --process-id I
"""

import argparse

parser = argparse.ArgumentParser()
parser.add_argument("--model-parallel", type=int, default=1, help="size of the mesh's model axis")
parser.add_argument("--coordinator", help="HOST:PORT of process 0, for several hosts")
parser.add_argument("--num-processes", type=int, default=1)
parser.add_argument("--process-id", type=int, default=0)
parser.add_argument("--steps", type=int, default=20)
args = parser.parse_args()

import keras
import numpy as np

if args.coordinator:
    # Before any JAX computation. Runs jax.distributed.initialize(coordinator_address,
    # num_processes, process_id), after which the devices are every host's, then agrees
    # on one random seed so that every process creates the same initial weights.
    keras.distribution.initialize(args.coordinator, args.num_processes, args.process_id)

from keras_transformers import distribution, models

num_devices = len(keras.distribution.list_devices())
if args.model_parallel == 1:
    strategy = keras.distribution.DataParallel()
else:
    # Raises a ValueError naming both sizes if the model axis does not divide the heads.
    strategy = distribution.model_parallel(
        "gpt2_tiny", mesh_shape=(num_devices // args.model_parallel, args.model_parallel)
    )
strategy.auto_shard_dataset = False  # each process passes its own rows (below)
keras.distribution.set_distribution(strategy)  # before the model: weights are created sharded

model = models.from_preset("gpt2_tiny")
model.compile(
    optimizer=keras.optimizers.AdamW(1e-3),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
)

# A global batch of 4 sequences per data-parallel replica; each process feeds its share.
replicas = num_devices // args.model_parallel
global_batch_size = 4 * replicas
tokens = np.random.default_rng(0).integers(1, 1024, size=(args.steps * global_batch_size, 65))
tokens = tokens[args.process_id :: args.num_processes].astype("int32")  # this process's rows
x = {"token_ids": tokens[:, :-1], "padding_mask": np.ones_like(tokens[:, :-1])}
history = model.fit(x, tokens[:, 1:], batch_size=global_batch_size // args.num_processes, verbose=0)
print(f"process {args.process_id}: {num_devices} devices, loss {history.history['loss'][-1]:.4f}")
