"""Helpers shared by the layers: argument checks, initializer cloning, the residual sub-block.

Each check raises a ValueError that names the argument and the value received, before
any work is done.
"""

import functools

import keras
import numpy as np
from keras import ops

from keras_transformers.layers.sublayers import call_sublayer


def check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")


def check_positive_float(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"`{name}` must be a positive float. Received: {name}={value!r}")


def check_index(value, name):
    """Checks a position index (`start_index`, ...): a non-negative int or a scalar tensor."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return
    if not isinstance(value, (int, float)) and tuple(getattr(value, "shape", (None,))) == ():
        return
    raise ValueError(
        f"`{name}` must be a non-negative int or a scalar tensor. Received: {name}={value!r}"
    )


def check_rate(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"`{name}` must be a float in [0, 1). Received: {name}={value!r}")


def check_bool(value, name):
    """Raises unless `value` is a bool (not 0 or 1, which `if` would take too)."""
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be a bool. Received: {name}={value!r}")


def check_id_range(ids, name, size):
    """Checks host (NumPy) ids against [0, size). Out of range, an embedding's gather
    returns NaN (JAX), wraps a negative id (JAX) or fails deep in the backend. Tensors are
    left alone: reading them back would wait for the device every step."""
    if isinstance(ids, np.ndarray) and ids.size and (ids.min() < 0 or ids.max() >= size):
        raise ValueError(
            f"`{name}` must be in [0, {size}). Received: {name} with values in "
            f"[{ids.min()}, {ids.max()}]"
        )


def check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}. Received: {name}={value!r}")


def check_rank(x, rank, name):
    """Checks the (static) rank of a tensor, or of a shape (as `build` receives it)."""
    shape = tuple(getattr(x, "shape", x))
    if len(shape) != rank:
        raise ValueError(f"`{name}` must have rank {rank}. Received: {name} with shape={shape}")


def check_last_dim(x, expected, name):
    """Checks a tensor's last dimension against the size the layer was built for."""
    if x.shape[-1] is not None and expected is not None and x.shape[-1] != expected:
        raise ValueError(
            f"`{name}` has hidden size {x.shape[-1]} but the layer was built for "
            f"{expected}. Received: {name} with shape={tuple(x.shape)}"
        )


def clone_initializer(initializer):
    """A fresh instance per sublayer, so a seeded initializer does not give every
    sublayer the same weights. (Not `serialize`: on JAX and torch it imports TensorFlow.)"""
    return initializer.__class__.from_config(initializer.get_config())


def check_sequence_shape(shape, name, num_heads):
    """Checks a (batch, sequence, hidden) shape at build time, before any weight."""
    if len(shape) != 3:
        raise ValueError(
            f"`{name}` must have rank 3 (batch, sequence, hidden). "
            f"Received: {name} with shape={tuple(shape)}"
        )
    if shape[-1] is None or shape[-1] % num_heads != 0:
        raise ValueError(
            f"`num_heads` must divide the hidden size of `{name}`. "
            f"Received: num_heads={num_heads} and {name} with hidden size {shape[-1]}"
        )


def residual(x, branch, layer_norm, dropout, training, normalize_first):
    """One residual sub-block; the one place pre-norm and post-norm differ.

    Post-norm: LayerNorm(x + Dropout(branch(x))); pre-norm:
    x + Dropout(branch(LayerNorm(x))). `branch` returns its output, or a tuple of
    its output and extras (attention scores, caches), which come back beside `x`.
    """
    outputs = branch(call_sublayer(layer_norm, x) if normalize_first else x)
    outputs = tuple(outputs) if isinstance(outputs, (tuple, list)) else (outputs,)
    if normalize_first:
        x = x + call_sublayer(dropout, outputs[0], training=training)
        return (gradient_computed_once(x) if training else x), outputs[1:]
    # Post-norm: the branch output's gradient (layer norm's backward, then the dropout mask,
    # regenerated from its random bits) is computed once for the branch's two consumers. On
    # an H100 that made BERT's forward + backward 3-6% slower, so on the CPU only.
    once = training and _jax_on_cpu()
    branch_output = gradient_computed_once(outputs[0]) if once else outputs[0]
    x = x + call_sublayer(dropout, branch_output, training=training)
    return call_sublayer(layer_norm, x), outputs[1:]


@functools.cache
def _jax_on_cpu():
    """Whether the backend is JAX computing on the CPU (its first device; fixed for the
    process). Only JAX has `keras.distribution` and the custom gradient."""
    if keras.backend.backend() != "jax":
        return False
    return keras.distribution.list_devices()[0].lower().startswith("cpu")


def gradient_computed_once(x):
    """`x` itself; in the backward pass, its gradient is computed once, into memory.

    Why: the gradient of the residual stream is a chain of element-wise sums over every
    later sub-block (layer-norm backward terms, dropout masks, padding masks). XLA's fusion
    copies cheap element-wise producers into each of their consumers, so each sub-block's
    weight gradients recompute that whole chain: on the 2-core CPU, JAX GPT-2's backward
    pass ran fusions of ~240 operations, 3-15 ms each, and their number grows with depth
    squared. `optimization_barrier` cannot prevent it on the CPU (XLA expands barriers
    before fusion). A reduction is never copied into its consumers, so the gradient here
    is summed with zeros over a new axis of two: the same values (g + 0 = g; subnormal
    numbers may become zero, as in XLA's other CPU arithmetic), computed once. A JAX
    training step on that CPU: GPT-2 1.22x, ViT 1.24x faster (benchmarks/gradient_once.py).
    `residual` calls it on a pre-norm block's output, and on a post-norm block's branch
    output (before dropout): there XLA copied the layer norm's backward pass and the
    regenerated dropout mask into the transposed copy that feeds the weight gradient, 6.8 ms
    for a (256, 1024) array in BERT. BERT's and BERT-MLM's forward + backward became 1.05x
    faster. After dropout, or on the layer norm's output, it gained less or cost; on a GPU
    (H100) it cost 3-6% there, so post-norm blocks call it on the CPU only.

    JAX only: it always compiles with XLA. PyTorch runs eagerly: nothing is fused, and the
    extra sum is a cost. On TensorFlow it made no measurable difference with XLA (a GPT-2
    step 198 and 202 ms, one paired run) and cost 4% without. Elsewhere `x` is returned as
    is.
    """
    if keras.backend.backend() != "jax":
        return x
    return _identity_with_summed_gradient(x)


@ops.custom_gradient
def _identity_with_summed_gradient(x):
    def grad(upstream):
        return ops.sum(ops.stack([upstream, ops.zeros_like(upstream)], axis=-1), axis=-1)

    return x, grad
