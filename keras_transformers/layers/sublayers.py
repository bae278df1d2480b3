"""Calling a built sublayer from inside its parent's `call` without Keras' per-call work.

`Layer.__call__` converts and casts the inputs, binds the call signature, resolves
`training`, fills and propagates Keras masks, opens name and autocast scopes, applies
activity regularizers and output layouts, and (on PyTorch) runs `torch.nn.Module.__call__`:
about 150 us of Python per call on PyTorch (Keras 3.15), against ~10 us for a small matmul.
A GPT-2 block makes ~15 nested calls, and eager PyTorch (all of its training and inference)
pays for them at every step.

Inside our own layers' `call`, that work has already been done by the parent's `__call__`
(inputs converted, `training` resolved, autocast scope open) or does not apply.
`call_sublayer` checks that this holds for the call at hand and then runs `sublayer.call`
directly; otherwise it calls `sublayer(...)`, so the results are the same either way. On
JAX and TensorFlow the saving is only at trace time; the same rule applies there so that
all three backends run, and test, the same code.

Measured (benchmarks/nested_calls.py: the throughput benchmark's GPT-2, BERT and ViT, batch
8 x 128, alternating in one process), on an H100 with PyTorch, two runs: steps 1.08-1.44x
faster in training and 1.15-1.75x in inference than with every nested call through
`__call__`.
"""

import itertools

from keras import backend
from keras import ops
from keras.distribution import distribution as current_distribution

# The one exception to "no keras.src" (STYLE.md): `__call__` reads the autocast scope in
# force and a tensor's Keras mask through these two functions, and Keras has no public
# accessor for either. Without them (a Keras that moved them) every nested call goes
# through `__call__`: slower, never different.
try:
    from keras.src.backend import get_autocast_scope, get_keras_mask
except ImportError:  # pragma: no cover - depends on the installed Keras
    get_autocast_scope = get_keras_mask = None


def call_sublayer(layer, *args, **kwargs):
    """`layer(*args, **kwargs)`, as `layer.call(*args, **kwargs)` when that is the same.

    The direct call is taken only when `__call__` would change nothing: the layer is
    built, not quantized, rematerialized, regularized or hooked; no distribution is set
    (it may relayout outputs); every tensor argument is a backend tensor without a Keras
    mask, and every float one already has the layer's input dtype; the autocast scope in
    force is the one the layer would open. Pass `training` explicitly where the sublayer
    takes it (the caller's own resolved value).
    """
    if not _is_direct_call_safe(layer, args, kwargs):
        return layer(*args, **kwargs)
    return layer.call(*args, **kwargs)


def _is_direct_call_safe(layer, args, kwargs):
    if get_keras_mask is None:
        return False
    if not layer.built or layer.activity_regularizer is not None:
        return False
    if getattr(layer, "_remat_mode", None) is not None:
        return False
    if getattr(layer, "quantization_mode", None) is not None or getattr(layer, "mask_zero", False):
        return False
    if getattr(layer, "_forward_hooks", None) or getattr(layer, "_forward_pre_hooks", None):
        return False  # PyTorch module hooks run only through `__call__`.
    if current_distribution() is not None:
        return False
    input_dtype = None
    # One level only (a nested structure goes through `__call__`): `keras.tree` would
    # cost more than the direct call saves.
    for value in itertools.chain(args, kwargs.values()):
        if value is None or isinstance(value, (bool, int, float, str)):
            continue
        if backend.is_keras_tensor(value) or not ops.is_tensor(value):
            return False
        if get_keras_mask(value) is not None:
            return False
        dtype = backend.standardize_dtype(value.dtype)
        if layer.autocast and backend.is_float_dtype(dtype):
            input_dtype = input_dtype or layer.input_dtype
            if dtype != input_dtype:
                return False
    return _autocast_unchanged(layer)


def _autocast_unchanged(layer):
    """True when `__call__` would keep the current autocast scope (see its step 7)."""
    scope = get_autocast_scope()
    if scope is None:
        return layer.compute_dtype == layer.variable_dtype
    return (
        layer.autocast
        and backend.is_float_dtype(layer.compute_dtype)
        and scope.dtype == layer.compute_dtype
    )
