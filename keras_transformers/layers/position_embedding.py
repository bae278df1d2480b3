"""Learned absolute position embeddings: one trained vector per position.

Gehring et al., "Convolutional Sequence to Sequence Learning" (2017), section 3.1; found
by Vaswani et al. (2017), section 3.5, to match sinusoids.
"""

import keras
from keras import ops

from keras_transformers.layers.arguments import (
    check_index,
    check_last_dim,
    check_positive_int,
    check_rank,
    clone_initializer,
)


@keras.saving.register_keras_serializable(package="keras_transformers")
class PositionEmbedding(keras.layers.Layer):
    """A learned (max_sequence_length, D) table, read at positions start_index...

    D comes from the inputs' last dimension when the layer is built. The layer
    returns the embeddings only; the caller adds them to the inputs.

    Length: positions past `max_sequence_length` have no embedding and raise a
    ValueError whenever the sequence length (and an int `start_index`) is known
    statically, which is always the case in eager mode and under JAX. With a
    tensor `start_index` the check cannot run before the gather, which then fails
    or (JAX) yields NaN instead of clipping silently.

    Masking: the output carries the inputs' Keras mask.

    Args:
        max_sequence_length: number of positions in the table.
        initializer: initializer of the table.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: (B, T, D); only its shape is used.
        start_index: int or scalar tensor, the position of the first step (for
            cached decoding).

    Returns:
        The (B, T, D) embeddings of positions start_index .. start_index + T - 1,
        in the compute dtype.

    Example:

    >>> import numpy as np
    >>> layer = PositionEmbedding(max_sequence_length=16)
    >>> tuple(layer(np.zeros((2, 5, 8), "float32"), start_index=3).shape)
    (2, 5, 8)
    >>> tuple(layer.embeddings.shape)
    (16, 8)
    """

    def __init__(self, max_sequence_length, initializer="glorot_uniform", **kwargs):
        super().__init__(**kwargs)
        check_positive_int(max_sequence_length, "max_sequence_length")
        self.max_sequence_length = max_sequence_length
        self.initializer = keras.initializers.get(initializer)
        self.supports_masking = True

    def build(self, inputs_shape, start_index_shape=None):
        if len(inputs_shape) != 3 or inputs_shape[-1] is None:
            raise ValueError(
                "`inputs` must have rank 3 and a known last dimension. "
                f"Received: inputs with shape={tuple(inputs_shape)}"
            )
        self._check_length(inputs_shape[1], 0)
        self.embeddings = self.add_weight(
            shape=(self.max_sequence_length, inputs_shape[-1]),
            initializer=clone_initializer(self.initializer),
            name="embeddings",
        )
        self.built = True

    def _check_length(self, length, start_index):
        if length is None or not isinstance(start_index, int):
            return
        if start_index + length > self.max_sequence_length:
            raise ValueError(
                f"The inputs need positions up to {start_index + length} but "
                f"`max_sequence_length` is {self.max_sequence_length}. Received: inputs "
                f"with sequence length {length} and start_index={start_index}"
            )

    def call(self, inputs, start_index=0):
        check_rank(inputs, 3, "inputs")
        check_last_dim(inputs, self.embeddings.shape[-1], "inputs")
        check_index(start_index, "start_index")
        self._check_length(inputs.shape[1], start_index)
        positions = ops.arange(ops.shape(inputs)[1], dtype="int32") + ops.cast(
            start_index, "int32"
        )  # (T,)
        # A gather, not a slice: an out-of-range slice would be clipped silently.
        embeddings = ops.cast(ops.take(self.embeddings, positions, axis=0), self.compute_dtype)
        return ops.broadcast_to(ops.expand_dims(embeddings, 0), ops.shape(inputs))  # (B, T, D)

    def compute_output_shape(self, inputs_shape, start_index_shape=None):
        return tuple(inputs_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "max_sequence_length": self.max_sequence_length,
                "initializer": keras.initializers.serialize(self.initializer),
            }
        )
        return config
