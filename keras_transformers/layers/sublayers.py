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
8 x 128, alternating in one process), on an H100 with PyTorch: float32 steps 1.08-1.44x
faster in training and 1.15-1.75x in inference than with every nested call through
`__call__` (three runs), mixed_bfloat16 1.02-1.31x and 1.12-1.46x (one run).
"""

import itertools
import weakref

from keras import backend
from keras import ops
from keras.distribution import distribution as current_distribution

# layer -> its float variables (its own and its sublayers'), listed the first time it is
# called directly (built by then); a layer with none is listed again at each call.
_FLOAT_VARIABLES = weakref.WeakKeyDictionary()


def call_sublayer(layer, *args, **kwargs):
    """`layer(*args, **kwargs)`, as `layer.call(*args, **kwargs)` when that is the same.

    The direct call is taken only when `__call__` would change nothing: the layer is
    built, not quantized, rematerialized, regularized or hooked; no distribution is set
    (it may relayout outputs); every tensor argument is a backend tensor, and every float
    one already has the layer's input dtype; the layer's variables read in the dtypes that
    `__call__`'s autocast scope would give them.

    Masks: the direct call does not read Keras masks attached to the arguments (nor attach
    one to its output), so callers pass every mask explicitly, as our layers do: their own
    `__call__` has already turned an attached mask into their `mask`/`*_mask` arguments, and
    sets their outputs' masks from their `compute_mask`. Pass `training` explicitly where
    the sublayer takes it (the caller's own resolved value).
    """
    if not _is_direct_call_safe(layer, args, kwargs):
        return layer(*args, **kwargs)
    return layer.call(*args, **kwargs)


def _is_direct_call_safe(layer, args, kwargs):
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
        dtype = backend.standardize_dtype(value.dtype)
        if layer.autocast and backend.is_float_dtype(dtype):
            input_dtype = input_dtype or layer.input_dtype
            if dtype != input_dtype:
                return False
    return _reads_as_under_keras_call(layer)


def _reads_as_under_keras_call(layer):
    """True when the layer's variables read now as they would inside its `__call__`.

    The autocast scope in force only changes the dtype an autocasting float variable
    reads as, and Keras reports that dtype, scope applied, as the public
    `Variable.dtype`. `__call__` would run a mixed layer (compute dtype differs from
    variable dtype) under a scope of its compute dtype, and a non-mixed one under no
    scope or one of its own dtype. So: a mixed layer is called directly when one of its
    variables already reads as its compute dtype (a scope of that dtype is open: the
    parent's `__call__` opened it); a non-mixed one when every variable reads as its
    compute dtype (no scope of another dtype is open). Otherwise, or for a layer whose
    variables never autocast (Keras' `LayerNormalization` under mixed precision), through
    `__call__`.
    """
    variables = _FLOAT_VARIABLES.get(layer)
    if variables is None:
        variables = tuple(v for v in layer.weights if backend.is_float_dtype(v.dtype))
        if not variables:
            return True  # no scope changes what it reads (listed again next call)
        _FLOAT_VARIABLES[layer] = variables
    compute_dtype = layer.compute_dtype
    if not backend.is_float_dtype(compute_dtype):
        return False
    if compute_dtype != layer.variable_dtype:
        return layer.autocast and any(v.dtype == compute_dtype for v in variables)
    return all(v.dtype == compute_dtype for v in variables)
