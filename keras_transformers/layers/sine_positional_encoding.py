"""Fixed sinusoidal positional encoding, computed on the fly for any length.

Vaswani et al., "Attention Is All You Need" (2017), section 3.5.
"""

import math

import keras
from keras import ops

from keras_transformers.layers.arguments import check_index, check_rank


@keras.saving.register_keras_serializable(package="keras_transformers")
class SinePositionalEncoding(keras.layers.Layer):
    """The paper's sinusoidal positional encoding for inputs of shape (B, T, D).

    PE(pos, 2i) = sin(pos / max_wavelength^(2i / D)) and
    PE(pos, 2i + 1) = cos(pos / max_wavelength^(2i / D)): sines on the even
    channels, cosines on the odd ones, interleaved. An odd D ends on a sine. The
    layer returns the encoding only; the caller adds it to the inputs. It has no
    weights and no table, so any sequence length works. The angles are computed in
    float32 (positions times small frequencies lose digits in half precision) and
    cast to the compute dtype at the end.

    Masking: the output carries the inputs' Keras mask.

    Args:
        max_wavelength: the base of the geometric progression of wavelengths
            (10000 in the paper).
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: (B, T, D); only its shape is used.
        start_index: int or scalar tensor, the position of the first step (for
            cached decoding): positions are start_index .. start_index + T - 1.

    Returns:
        The (B, T, D) encoding, in the compute dtype.

    Example:

    >>> import numpy as np
    >>> layer = SinePositionalEncoding()
    >>> encoding = layer(np.zeros((1, 2, 4), "float32"))
    >>> np.asarray(encoding, "float64").round(3).tolist()
    [[[0.0, 1.0, 0.0, 1.0], [0.841, 0.54, 0.01, 1.0]]]
    """

    def __init__(self, max_wavelength=10000, **kwargs):
        super().__init__(**kwargs)
        if (
            isinstance(max_wavelength, bool)
            or not isinstance(max_wavelength, (int, float))
            or not max_wavelength > 1
        ):
            raise ValueError(
                "`max_wavelength` must be a number greater than 1. "
                f"Received: max_wavelength={max_wavelength!r}"
            )
        self.max_wavelength = max_wavelength
        self.supports_masking = True

    def build(self, inputs_shape, start_index_shape=None):
        if len(inputs_shape) != 3 or inputs_shape[-1] is None:
            raise ValueError(
                "`inputs` must have rank 3 and a known last dimension. "
                f"Received: inputs with shape={tuple(inputs_shape)}"
            )
        self.built = True

    def call(self, inputs, start_index=0):
        check_rank(inputs, 3, "inputs")
        check_index(start_index, "start_index")
        hidden_dim = inputs.shape[-1]
        length = ops.shape(inputs)[1]
        positions = ops.cast(ops.arange(length), "float32") + ops.cast(
            start_index, "float32"
        )  # (T,)
        channels = ops.arange(hidden_dim)  # (D,)
        # Channels 2i and 2i + 1 share the frequency 1 / max_wavelength^(2i / D).
        even_channels = ops.cast(channels - channels % 2, "float32")
        frequencies = ops.exp(even_channels * (-math.log(self.max_wavelength) / hidden_dim))
        angles = ops.expand_dims(positions, 1) * ops.expand_dims(frequencies, 0)  # (T, D)
        encoding = ops.where(ops.equal(channels % 2, 0), ops.sin(angles), ops.cos(angles))
        encoding = ops.cast(encoding, self.compute_dtype)
        return ops.broadcast_to(ops.expand_dims(encoding, 0), ops.shape(inputs))  # (B, T, D)

    def compute_output_shape(self, inputs_shape, start_index_shape=None):
        return tuple(inputs_shape)

    def get_config(self):
        config = super().get_config()
        config.update({"max_wavelength": self.max_wavelength})
        return config
