"""The arithmetic of one cached decoding step, in `keras.ops` (JAX and TensorFlow).

`generate.py` writes a decoder block's step once, against this namespace of small
functions; `torch_primitives.py` has the same functions in plain PyTorch, which
`generate.py` uses on the torch backend (there Keras' per-op dispatch costs more than
the arithmetic of a small model). Both take the weights of `generate._weights` (a
Dense kernel as an (in, out) matrix and a bias or None) through their `dense`, and
a LayerNormalization's as (gamma, beta). Shapes: B batch, T new positions, L cache
length, S source length, N heads, H head size, D model width, V vocabulary.
"""

import typing

import keras
import numpy as np
from keras import ops

from keras_transformers.generation import backend as backend_lib
from keras_transformers.generation import samplers as samplers_lib

# The decoding loop over a step (torch_primitives has a PyTorch one).
token_loop = samplers_lib.token_loop


def positions(token_ids, index):
    """The positions index .. index + T - 1 of `token_ids` (B, T): int32 (T,).

    Example:

    >>> ops.convert_to_numpy(positions(ops.zeros((2, 3), "int32"), 4)).tolist()
    [4, 5, 6]
    """
    return ops.arange(ops.shape(token_ids)[1], dtype="int32") + ops.cast(index, "int32")


def causal_mask(positions, length):
    """(T, L) bool: query position t may attend to cache positions <= positions[t].

    Example:

    >>> ops.convert_to_numpy(causal_mask(ops.convert_to_tensor([1], "int32"), 3)).tolist()
    [[True, True, False]]
    """
    return ops.arange(length, dtype="int32")[None, :] <= positions[:, None]


def take(table, indices, axis=0):
    """`table`'s slices at `indices` along `axis` (an embedding lookup on axis 0)."""
    return ops.take(table, indices, axis=axis)


class Fused(typing.NamedTuple):
    """Several Dense projections of one input as one: the kernels side by side."""

    kernel: typing.Any  # (in, sum of outs)
    bias: typing.Any  # (sum of outs,) or None
    sizes: tuple  # the output width of each projection


def dense(*weights, rows=None):
    """The weights of one or more Dense projections of the same input, as `project`
    (one: the (kernel, bias) pair as it is) and `project_heads` (several) read them.

    Several become one `Fused` matmul on JAX: a block's query, key and value in one
    (D, 3D) matmul ran `generate` on the benchmark's GPT-2 10-16% faster at batch 1
    and 0-7% at batch 8 (2-core CPU, in-process A/Bs; on an H100, 8% faster at batch
    1 and 5% slower at batch 8). On TensorFlow (XLA, CPU) the fused matmul gained 3%
    at batch 1 and lost 5-7% at batch 8, so there they stay separate pairs. The concatenation runs once per `generate` call, before the
    token loop. `rows` is unused here (see `torch_primitives.dense`).

    Example:

    >>> kernel = ops.ones((2, 4))
    >>> dense((kernel, None))[0] is kernel
    True
    >>> fused = dense((kernel, None), (kernel[:, :1], ops.ones((1,))))
    >>> isinstance(fused, Fused) == (keras.backend.backend() == "jax")
    True
    """
    if len(weights) == 1:
        return weights[0]
    if keras.backend.backend() != "jax":
        return weights
    sizes = tuple(int(kernel.shape[1]) for kernel, _ in weights)
    kernel = ops.concatenate([kernel for kernel, _ in weights], axis=1)
    bias = None
    if any(bias is not None for _, bias in weights):
        bias = ops.concatenate([
            ops.zeros((size,), kernel.dtype) if bias is None else bias
            for (_, bias), size in zip(weights, sizes)
        ])
    return Fused(kernel, bias, sizes)


def project(x, weights, heads=None):
    """x (B, T, in) times the kernel, plus the bias; split into `heads` if given.

    Example:

    >>> kernel, bias = ops.ones((2, 4)), ops.arange(4, dtype="float32")
    >>> tuple(project(ops.ones((1, 3, 2)), (kernel, bias), heads=2).shape)
    (1, 3, 2, 2)
    """
    kernel, bias = weights
    y = ops.matmul(x, kernel)
    y = y if bias is None else y + bias
    if heads is None:
        return y
    return ops.reshape(y, (ops.shape(x)[0], ops.shape(x)[1], heads, -1))  # (B, T, N, H)


def project_heads(x, weights, heads):
    """Each projection in `weights` (from `dense`) of x (B, T, in), split into heads:
    a tuple of (B, T, N, H), in `dense`'s order (one matmul if `Fused`).

    Example:

    >>> weights = dense((ops.ones((2, 4)), None), (ops.ones((2, 2)), None))
    >>> [tuple(part.shape) for part in project_heads(ops.ones((1, 3, 2)), weights, 2)]
    [(1, 3, 2, 2), (1, 3, 2, 1)]
    """
    if not isinstance(weights, Fused):
        return tuple(project(x, part, heads) for part in weights)
    y = project(x, (weights.kernel, weights.bias))
    parts = ops.split(y, np.cumsum(weights.sizes[:-1]).tolist(), axis=-1)
    shape = (ops.shape(x)[0], ops.shape(x)[1], heads, -1)
    return tuple(ops.reshape(part, shape) for part in parts)  # (B, T, N, H) each


def layer_norm(x, weights, epsilon):
    """Layer normalization over the last axis with weights (gamma, beta)."""
    gamma, beta = weights
    return ops.layer_normalization(x, gamma, beta, axis=-1, epsilon=epsilon)


def activation(x, name):
    """The feedforward activation of a block: "relu", "gelu" or "gelu_approximate"."""
    if name == "relu":
        return ops.relu(x)
    return ops.gelu(x, approximate=name == "gelu_approximate")


def write_heads(cache, values, index, positions):
    """The (B, N, L, H) `cache` with `values` (B, T, N, H) written at positions index...

    `positions` (from `positions`) is unused here (a slice update takes the first
    position); torch_primitives writes at `positions`. On PyTorch the cache is
    updated in place (see `backend.write_positions`).
    """
    values = ops.transpose(values, (0, 2, 1, 3))  # (B, N, T, H)
    return backend_lib.write_positions(cache, index, values, axis=2)


def attend(query, keys, values, mask, key_dim, output_weights):
    """softmax(Q K^T / sqrt(d)) V, then W^O: (B, T, D).

    query (B, T, N, H); keys, values (B, N, S, H); mask broadcastable to (B, N, T, S),
    True = may attend.
    """
    scores = ops.einsum(
        "btnh,bnsh->bnts", ops.cast(query, "float32"), ops.cast(keys, "float32")
    ) / float(np.sqrt(key_dim))  # (B, N, T, S)
    # Softmax in float32 (half-precision logits overflow); -1e9, not -inf: a fully
    # masked row stays finite (cross_attend zeroes its output).
    scores = ops.where(mask, scores, -1e9)
    probabilities = ops.cast(ops.softmax(scores, axis=-1), values.dtype)
    context = ops.einsum("bnts,bnsh->btnh", probabilities, values)  # (B, T, N, H)
    context = ops.reshape(context, (ops.shape(context)[0], ops.shape(context)[1], -1))
    return project(context, output_weights)  # (B, T, D)


def cross_attend(query, keys, values, encoder_mask, key_dim, output_weights):
    """`attend` over a source with padding mask (B, S) bool: (B, T, D).

    A source with no real token gives zeros, as MultiHeadAttention does.
    """
    mask = encoder_mask[:, None, None, :]  # (B, 1, 1, S)
    output = attend(query, keys, values, mask, key_dim, output_weights)
    return ops.where(ops.any(encoder_mask, axis=1)[:, None, None], output, 0)


def next_logits(x, output_weights):
    """float32 logits (B, V) of the first position of x (B, T, D)."""
    kernel, bias = output_weights
    logits = ops.matmul(ops.cast(x, kernel.dtype), kernel)
    if bias is not None:
        logits = logits + bias
    return ops.cast(logits[:, 0, :], "float32")
