"""The README's TensorFlow MirroredStrategy snippet, verbatim; tf_script.py runs it on 4 logical CPUs."""

import keras
import numpy as np
import tensorflow as tf

from keras_transformers import models

tokens = np.random.default_rng(0).integers(1, 1024, size=(64, 65)).astype("int32")
x = {"token_ids": tokens[:, :-1], "padding_mask": np.ones_like(tokens[:, :-1])}
y = tokens[:, 1:]

strategy = tf.distribute.MirroredStrategy()  # every visible GPU
with strategy.scope():
    model = models.from_preset("gpt2_tiny")
    model.compile(
        optimizer=keras.optimizers.AdamW(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
history = model.fit(x, y, batch_size=8 * strategy.num_replicas_in_sync, verbose=0)
print(f"{strategy.num_replicas_in_sync} replicas, loss {history.history['loss'][-1]:.4f}")
