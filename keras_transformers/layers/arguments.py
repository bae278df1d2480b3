"""Helpers shared by the layers: argument checks, initializer cloning, the residual sub-block.

Each check raises a ValueError that names the argument and the value received, before
any work is done.
"""

from keras_transformers.layers.sublayers import call_sublayer


def check_positive_int(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"`{name}` must be a positive int. Received: {name}={value!r}")


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


def check_choice(value, name, choices):
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {list(choices)}. Received: {name}={value!r}")


def check_rank(x, rank, name):
    """Checks a tensor's (static) rank."""
    if len(x.shape) != rank:
        raise ValueError(
            f"`{name}` must have rank {rank}. Received: {name} with shape={tuple(x.shape)}"
        )


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
    x = x + call_sublayer(dropout, outputs[0], training=training)
    return (x if normalize_first else call_sublayer(layer_norm, x)), outputs[1:]
