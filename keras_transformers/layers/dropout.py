"""Inverted dropout (Srivastava et al., 2014): Keras' `Dropout`, with a faster mask on PyTorch's CPU.

Keras' `Dropout` on PyTorch calls `torch.nn.functional.dropout` when the layer has no seed.
On a CPU that draws its mask with `bernoulli_`, one value at a time from the Mersenne
Twister: 5.5 ns an element on the 2-core CPU, 13% of a BERT training step there (the
attention probabilities alone are 8 x 4 x 128 x 128 values per layer). `uniform_` draws
from the same generator in half the time; the mask is then `u >= rate` (probability
`1 - rate`, as a 24-bit uniform allows), scaled by `1 / (1 - rate)` in place.
`benchmarks/dropout.py` times both.
"""

import keras

_torch = None
if keras.backend.backend() == "torch":
    # Only on PyTorch, so that importing this module on another backend does not import it.
    import torch as _torch


@keras.saving.register_keras_serializable(package="keras_transformers")
class Dropout(keras.layers.Dropout):
    """`keras.layers.Dropout`, with the same arguments, config and behaviour.

    Each input value is set to 0 with probability `rate` and the others are scaled by
    `1 / (1 - rate)`, in training only. On PyTorch's CPU, without a seed and a
    `noise_shape` (Keras itself then draws from PyTorch's global generator, unseeded), the
    mask is drawn with `uniform_` from that generator, in float32 whatever the input's
    dtype. Everywhere else this is Keras' `Dropout`.

    Args:
        rate: the fraction of values to drop, in [0, 1].
        noise_shape: shape of the mask, broadcast over the input (Keras' meaning).
        seed: seed of the mask's random draws.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: a tensor of any shape.
        training: whether to drop values.

    Returns:
        A tensor of the input's shape and dtype.

    Example:

    >>> import numpy as np
    >>> layer = Dropout(0.5)
    >>> outputs = layer(np.ones((2, 1000), "float32"), training=True)
    >>> values = sorted(set(np.round(keras.ops.convert_to_numpy(outputs), 4).ravel()))
    >>> [float(v) for v in values]
    [0.0, 2.0]
    """

    def call(self, inputs, training=False):
        if (
            _torch is not None
            and training
            and 0 < self.rate < 1
            and self.seed is None
            and self.noise_shape is None
            and inputs.device.type == "cpu"
            and inputs.is_floating_point()
        ):
            return _dropout_on_torch_cpu(inputs, self.rate)
        return super().call(inputs, training=training)


def _dropout_on_torch_cpu(inputs, rate):
    """`inputs * mask`, mask = (u >= rate) / (1 - rate) for u uniform in [0, 1).

    The same product as `torch.nn.functional.dropout` on a CPU (its mask is a Bernoulli
    draw divided by 1 - rate), so its gradient is the upstream gradient times the mask.
    """
    mask = _torch.empty(inputs.shape, dtype=_torch.float32).uniform_()
    mask = mask.ge_(rate).div_(1.0 - rate)  # (..., ) in {0, 1 / (1 - rate)}
    return inputs * mask.to(inputs.dtype)
