"""Inverted dropout (Srivastava et al., 2014): Keras' `Dropout`, with faster masks on a CPU.

PyTorch: Keras' `Dropout` calls `torch.nn.functional.dropout` when the layer has no seed.
On a CPU that draws its mask with `bernoulli_`, one value at a time from the Mersenne
Twister: 5.5 ns an element on the 2-core CPU, 13% of a BERT training step there (the
attention probabilities alone are 8 x 4 x 128 x 128 values per layer). `uniform_` draws
from the same generator in half the time; the mask is then `u >= rate` (probability
`1 - rate`, as a 24-bit uniform allows), scaled by `1 / (1 - rate)` in place.

JAX: Keras' `Dropout` calls `jax.random.bernoulli`, whose Threefry hash JAX lowers on a CPU
as a rolled loop (five passes, each writing two uint32 arrays to memory, for short compile
times): 4.5 ns an element, 18% of a GPT-2 training step on the 2-core CPU. The same hash of
the same counters written out (`_threefry_keep_mask`) is one element-wise computation that
XLA fuses, computed once (`_computed_once`), 3.7-6.3x faster; the mask is bit for bit
`jax.random.bernoulli`'s, so the outputs are exactly Keras'.

TensorFlow under XLA (our models compile with it on a CPU): Keras draws the mask with
`stateless_dropout`, whose random numbers took 8-17% of a training step; unseeded layers draw
it from `_threefry_keep_mask` instead (the mask JAX would draw with the same key, a
different stream from Keras' TensorFlow one). Seeded layers keep Keras' stream.

`benchmarks/dropout.py` times each against Keras' on its backend.
"""

import math

import keras
import numpy as np
from keras import ops

_torch = _jax = _tf = None
if keras.backend.backend() == "torch":
    # Only on their backend, so that importing this module elsewhere imports none of them.
    import torch as _torch
elif keras.backend.backend() == "jax":
    import jax as _jax
elif keras.backend.backend() == "tensorflow":
    import tensorflow as _tf

    try:  # TensorFlow marks graphs traced for XLA here; no public API tells (TF 2.21)
        from tensorflow.python.ops import control_flow_util as _tf_control_flow
    except ImportError:
        _tf_control_flow = None


@keras.saving.register_keras_serializable(package="keras_transformers")
class Dropout(keras.layers.Dropout):
    """`keras.layers.Dropout`, with the same arguments, config and behaviour.

    Each input value is set to 0 with probability `rate` and the others are scaled by
    `1 / (1 - rate)`, in training only. On PyTorch's CPU, without a seed and a
    `noise_shape` (Keras itself then draws from PyTorch's global generator, unseeded), the
    mask is drawn with `uniform_` from that generator, in float32 whatever the input's
    dtype. On JAX's CPU the mask is Keras' own (`jax.random.bernoulli`'s), computed by a
    Threefry hash that XLA fuses. On TensorFlow under XLA on a CPU, a layer without a seed
    draws its mask from that hash too (the layer's seed generator gives the key). Everywhere
    else this is Keras' `Dropout`.

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
        if training and 0 < self.rate < 1:
            if (
                _torch is not None
                and self.seed is None
                and self.noise_shape is None
                and inputs.device.type == "cpu"
                and inputs.is_floating_point()
            ):
                return _dropout_on_torch_cpu(inputs, self.rate)
            if (_jax is not None and _jax_draws_a_rolled_threefry()) or (
                _tf is not None and self.seed is None and _tensorflow_compiles_on_a_cpu()
            ):
                return self._dropout_with_threefry(inputs)
        return super().call(inputs, training=training)

    def _dropout_with_threefry(self, inputs):
        """Keras' JAX `dropout` (same mask, same arithmetic), the mask from
        `_threefry_keep_mask`."""
        keep_prob = 1.0 - self.rate
        shape = tuple(inputs.shape)
        if self.noise_shape is not None:  # Keras' reading: None takes the input's size
            shape = tuple(shape[i] if n is None else n for i, n in enumerate(self.noise_shape))
        if None in shape or math.prod(shape) >= 2**31:
            # A shape known only when run (TensorFlow graphs), or past the hash's 32-bit
            # counters (and int32 iotas): Keras' draw.
            return super().call(inputs, training=True)
        key = self.seed_generator.next()  # JAX: the uint32 pair Keras hands to bernoulli
        if _tf is not None:  # int64 state on TensorFlow: its low 32 bits as the key
            key = ops.cast(_tf.math.floormod(key, 2**32), "uint32")
        with keras.name_scope("threefry"):  # profile_step.py counts these ops as dropout's
            mask = _computed_once(_threefry_keep_mask(key, shape, keep_prob))
            mask = ops.broadcast_to(mask, inputs.shape)
        return ops.where(mask, inputs / keep_prob, ops.zeros_like(inputs))


def _computed_once(mask):
    """`mask` itself (boolean), computed once into memory by a compiled step.

    XLA copies cheap element-wise producers into each of their consumers, and it counts the
    hash (about 190 operations a value) as cheap: a training step computed it again in each
    fusion that reads the mask, the forward select and one or two in the backward pass. A
    reduction is never copied into its consumers (and `optimization_barrier` is expanded
    before fusion on a CPU), so the mask is OR-ed with False over a new axis of two: the
    same values, one fusion computes them, the others read 1 byte a value. Our models'
    training steps on the 2-core CPU, paired with and without it in one process
    (benchmarks/dropout.py's `mask_once_speedup`): TensorFlow 1.02-1.05x, JAX 0.98-1.04x
    (BERT-MLM 0.98x, the others 1.02x or more).
    """
    return ops.any(ops.stack([mask, ops.zeros_like(mask)], axis=-1), axis=-1)


def _dropout_on_torch_cpu(inputs, rate):
    """`inputs * mask`, mask = (u >= rate) / (1 - rate) for u uniform in [0, 1).

    The same product as `torch.nn.functional.dropout` on a CPU (its mask is a Bernoulli
    draw divided by 1 - rate), so its gradient is the upstream gradient times the mask.
    """
    mask = _torch.empty(inputs.shape, dtype=_torch.float32).uniform_()
    mask = mask.ge_(rate).div_(1.0 - rate)  # (..., ) in {0, 1 / (1 - rate)}
    return inputs * mask.to(inputs.dtype)


def _jax_draws_a_rolled_threefry():
    """Whether Keras' mask comes from a Threefry hash that JAX lowers as a rolled loop: JAX's
    default keys are Threefry keys with partitionable counters (what our hash reproduces), on
    a CPU (GPUs unroll the hash already)."""
    config = _jax.config
    return (
        _jax.default_backend() == "cpu"
        and config.jax_default_prng_impl == "threefry2x32"
        and config.jax_threefry_partitionable
    )


def _tensorflow_compiles_on_a_cpu():
    """Whether this call is being traced for XLA (`jit_compile=True`) with no GPU present:
    outside XLA the hash's rounds would each run as a separate TensorFlow op."""
    if _tf_control_flow is None:
        return False
    graph = _tf.compat.v1.get_default_graph()
    return _tf_control_flow.GraphOrParentsInXlaContext(graph) and not _tf.config.list_logical_devices("GPU")


# Threefry-2x32 (Salmon et al., 2011, "Parallel random numbers: as easy as 1, 2, 3"), 20
# rounds, with JAX's rotation constants, key schedule and counters. Written out here because
# JAX lowers its own as a rolled loop on a CPU; `tests/layers/test_dropout.py` checks the
# masks against `jax.random.bernoulli` bit for bit.
_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_THREEFRY_PARITY = np.uint32(0x1BD11BDA)


def _threefry_keep_mask(key, shape, keep_prob):
    """`jax.random.bernoulli(key, keep_prob, shape)` for a Threefry key (two uint32 words) and
    fewer than 2**31 values, in `keras.ops`.

    JAX hashes each value's flat index (a 64-bit counter, high word 0 here) with the key,
    XORs the two output words, keeps the 23 high bits as a float32 u = m / 2**23 in [0, 1)
    and returns u < keep_prob, which is m < ceil(keep_prob * 2**23) in integers.
    """
    key = ops.convert_to_tensor(key, "uint32")
    schedule = (key[0], key[1], ops.bitwise_xor(ops.bitwise_xor(key[0], key[1]), _THREEFRY_PARITY))
    index, stride = None, 1  # the flat index, as a sum of one broadcast iota per axis
    for axis in reversed(range(len(shape))):
        iota = ops.cast(ops.arange(shape[axis], dtype="int32"), "uint32") * np.uint32(stride)
        iota = ops.reshape(iota, [-1 if a == axis else 1 for a in range(len(shape))])
        index = iota if index is None else index + iota
        stride *= shape[axis]
    x0 = ops.broadcast_to(schedule[0], shape)
    x1 = ops.broadcast_to(np.uint32(0) if index is None else index, shape) + schedule[1]
    for group in range(5):
        for rotation in _THREEFRY_ROTATIONS[group % 2]:
            x0 = x0 + x1
            x1 = ops.bitwise_or(
                ops.left_shift(x1, np.uint32(rotation)), ops.right_shift(x1, np.uint32(32 - rotation))
            )
            x1 = ops.bitwise_xor(x0, x1)
        x0 = x0 + schedule[(group + 1) % 3]
        x1 = x1 + schedule[(group + 2) % 3] + np.uint32(group + 1)
    mantissa = ops.right_shift(ops.bitwise_xor(x0, x1), np.uint32(9))
    threshold = math.ceil(float(np.float32(keep_prob)) * 2**23)  # keep_prob as JAX compares it
    return mantissa < np.uint32(threshold)
