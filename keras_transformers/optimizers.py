"""AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization", 2019) as Keras
computes it, with one fused update kernel on PyTorch's CPU.
"""

import math

import keras

_torch = None
if keras.backend.backend() == "torch":
    # Only on PyTorch, so that importing this module on another backend does not import it.
    import torch as _torch


@keras.saving.register_keras_serializable(package="keras_transformers")
class AdamW(keras.optimizers.AdamW):
    """`keras.optimizers.AdamW`: the same arguments, config, variables and update.

    Why: Keras' update on PyTorch runs ten `torch._foreach_*` passes over every variable
    and its two moments, five of them into new tensors of the variables' size. PyTorch's
    fused Adam kernel (`torch._fused_adam_`, what `torch.optim.Adam(fused=True)` runs)
    reads and writes each value once, on all cores. On the 2-core CPU, one update of BERT's
    5.4 million weights took 28.7 ms with Keras' AdamW (about a fifth of its training step)
    and 5.3 ms with this one (`benchmarks/optimizer.py`).

    This optimizer runs that kernel where it applies: PyTorch, eager (not under
    `torch.compile`), every variable and gradient a float32 CPU tensor, `amsgrad` off.
    Keras adds epsilon to the second moment's square root before the bias correction,
    PyTorch after it, so the kernel gets `epsilon / sqrt(1 - beta_2**t)`, which makes the
    two updates the same (to float32 rounding). Weight decay stays Keras' own pass, before
    the update, as in Keras. Elsewhere on PyTorch (a GPU, other dtypes, `amsgrad`,
    `torch.compile`) Adam's update runs in foreach passes; on TensorFlow and JAX, where XLA
    fuses Keras' update, this is Keras' AdamW.

    Args: those of `keras.optimizers.AdamW`.

    Example:

    >>> import numpy as np
    >>> weight = keras.Variable(np.ones((2, 2), "float32"))
    >>> optimizer = AdamW(learning_rate=0.1, weight_decay=0.0)
    >>> optimizer.apply([np.ones((2, 2), "float32")], [weight])
    >>> np.round(keras.ops.convert_to_numpy(weight).astype("float64"), 4).tolist()
    [[0.9, 0.9], [0.9, 0.9]]
    """

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if _torch is None:
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        grads = [keras.ops.convert_to_tensor(g) for g in grads]  # NumPy ones included
        with _torch.no_grad():
            if _fused_kernel_applies(self, grads, trainable_variables):
                _fused_update(self, grads, trainable_variables, learning_rate)
            else:
                _foreach_update(self, grads, trainable_variables, learning_rate)


def _fused_kernel_applies(optimizer, grads, variables):
    # Under `torch.compile` (`jit_compile=True`) the kernel cannot be traced: it mutates
    # tensors that the compiler does not see as its inputs.
    if optimizer.amsgrad or _torch.compiler.is_compiling():
        return False
    tensors = [v.value for v in variables] + list(grads)
    return all(t.device.type == "cpu" and t.dtype == _torch.float32 for t in tensors)


def _moments(optimizer, variables):
    indices = [optimizer._get_variable_index(v) for v in variables]
    return (
        [optimizer._momentums[i].value for i in indices],
        [optimizer._velocities[i].value for i in indices],
    )


def _fused_update(optimizer, grads, variables, learning_rate):
    """One `torch._fused_adam_` call over all variables (float32, on the CPU)."""
    momentums, velocities = _moments(optimizer, variables)
    step = int(keras.ops.convert_to_numpy(optimizer.iterations)) + 1
    bias_correction_2 = 1.0 - optimizer.beta_2**step
    step_tensor = _torch.tensor(float(step))
    _torch._fused_adam_(
        [v.value for v in variables],
        list(grads),
        momentums,
        velocities,
        [],
        [step_tensor] * len(variables),  # the kernel only reads the step
        lr=float(keras.ops.convert_to_numpy(learning_rate)),
        beta1=optimizer.beta_1,
        beta2=optimizer.beta_2,
        weight_decay=0.0,  # applied by Keras' `_apply_weight_decay` before this
        eps=optimizer.epsilon / math.sqrt(bias_correction_2),
        amsgrad=False,
        maximize=False,
    )


def _foreach_update(optimizer, grads, variables, learning_rate):
    """Adam's update in `torch._foreach_*` passes over all variables (any device or float
    dtype, `amsgrad`): eight passes, two temporaries, and no host sync (the step's scale
    stays a tensor). Written here because a subclass of `keras.optimizers.AdamW` does not
    get Keras' PyTorch update: Keras swaps in its PyTorch class for that class itself only,
    and a subclass would otherwise update one variable at a time."""
    values = [v.value for v in variables]
    dtype = values[0].dtype
    step = keras.ops.cast(optimizer.iterations + 1, "float32")
    # The learning rate with both bias corrections: lr * sqrt(1 - b2^t) / (1 - b1^t).
    scale = keras.ops.cast(learning_rate, "float32") * keras.ops.sqrt(
        1 - keras.ops.power(optimizer.beta_2, step)
    ) / (1 - keras.ops.power(optimizer.beta_1, step))
    momentums, velocities = _moments(optimizer, variables)

    _torch._foreach_lerp_(momentums, grads, 1 - optimizer.beta_1)  # m += (g - m)(1 - b1)
    _torch._foreach_mul_(velocities, optimizer.beta_2)
    _torch._foreach_addcmul_(velocities, grads, grads, value=1 - optimizer.beta_2)
    if optimizer.amsgrad:
        maxima = [optimizer._velocity_hats[optimizer._get_variable_index(v)].value for v in variables]
        _torch._foreach_maximum_(maxima, velocities)
        velocities = maxima
    denominators = _torch._foreach_sqrt(velocities)
    _torch._foreach_add_(denominators, optimizer.epsilon)
    updates = _torch._foreach_div(momentums, denominators)
    _torch._foreach_mul_(updates, keras.ops.cast(scale, dtype))
    _torch._foreach_sub_(values, updates)
