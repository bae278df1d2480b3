"""Losses that Keras does not ship: cross-entropy with label smoothing for sparse labels.

Label smoothing: Szegedy et al., "Rethinking the Inception Architecture for Computer
Vision" (2016), section 7; used with 0.1 by Vaswani et al. (2017), section 5.4.
"""

import keras
from keras import ops

from keras_transformers.layers.arguments import check_id_range


@keras.saving.register_keras_serializable(package="keras_transformers")
class SparseCategoricalCrossentropy(keras.losses.Loss):
    """Cross-entropy for integer labels, with optional label smoothing.

    Keras' `SparseCategoricalCrossentropy` takes no `label_smoothing`; this loss
    equals `keras.losses.CategoricalCrossentropy(label_smoothing=...)` on the
    one-hot labels: the target distribution is
    q = (1 - label_smoothing) * onehot(y) + label_smoothing / K over K classes, so

        loss = -(1 - label_smoothing) * log p_y - label_smoothing / K * sum_k log p_k.

    Masking: pass a `sample_weight` of 0 at padded positions (for example the
    decoder padding mask). With `reduction="mean_with_sample_weight"` (the
    default here) the loss is the mean over the weighted positions only, so
    padding neither counts in the numerator nor dilutes the denominator.

    Args:
        label_smoothing: float in [0, 1).
        from_logits: whether `y_pred` holds logits (True) or probabilities.
        reduction: a Keras loss reduction.
        name: the loss name.
        dtype: the dtype of the loss computation (default float32).

    Call arguments:
        y_true: int (...) class ids; NumPy ids are checked to be in [0, K).
        y_pred: (..., K) logits or probabilities.
        sample_weight: optional (...) weights.

    Returns:
        The reduced loss (a scalar unless `reduction` is None or "none").

    Example:

    >>> import numpy as np
    >>> loss = SparseCategoricalCrossentropy(label_smoothing=0.1, from_logits=True)
    >>> logits = np.array([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]], "float32")
    >>> labels, weights = np.array([[0, 1]]), np.array([[1.0, 0.0]])
    >>> round(float(loss(labels, logits, sample_weight=weights)), 4)  # the first position only
    0.3729
    """

    def __init__(
        self,
        label_smoothing=0.0,
        from_logits=False,
        reduction="mean_with_sample_weight",
        name="sparse_categorical_crossentropy",
        dtype=None,
    ):
        if (
            isinstance(label_smoothing, bool)
            or not isinstance(label_smoothing, (int, float))
            or not 0 <= label_smoothing < 1
        ):
            raise ValueError(
                "`label_smoothing` must be a float in [0, 1). "
                f"Received: label_smoothing={label_smoothing!r}"
            )
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.label_smoothing = label_smoothing
        self.from_logits = from_logits

    def __call__(self, y_true, y_pred, sample_weight=None):
        # NumPy labels are range-checked first (tensors are not read back): past the
        # class axis JAX's gather returns NaN and wraps a negative label, and TensorFlow
        # and PyTorch fail inside their kernels.
        num_classes = tuple(getattr(y_pred, "shape", (None,)))[-1:]
        if num_classes and num_classes[0] is not None:
            check_id_range(y_true, "y_true", num_classes[0])
        return super().__call__(y_true, y_pred, sample_weight=sample_weight)

    def call(self, y_true, y_pred):
        y_true = _labels_for(y_true, y_pred)
        y_pred = ops.cast(y_pred, "float32")
        if self.from_logits and not self.label_smoothing:
            return _cross_entropy_from_logits(y_true, y_pred)
        if self.from_logits:
            log_probabilities = ops.log_softmax(y_pred, axis=-1)
        else:
            log_probabilities = ops.log(ops.clip(y_pred, 1e-7, 1.0))
        y_true = ops.cast(y_true, "int32")
        # -log p_y without materialising the one-hot labels (K may be a large vocabulary).
        nll = -ops.squeeze(
            ops.take_along_axis(log_probabilities, ops.expand_dims(y_true, -1), axis=-1), -1
        )
        if not self.label_smoothing:
            return nll
        uniform = -ops.mean(log_probabilities, axis=-1)  # -1/K sum_k log p_k
        return (1.0 - self.label_smoothing) * nll + self.label_smoothing * uniform

    def get_config(self):
        config = super().get_config()
        config.update(label_smoothing=self.label_smoothing, from_logits=self.from_logits)
        return config


def _labels_for(y_true, y_pred):
    """`y_true` checked against `y_pred` (..., K): the same shape without the class axis,
    or with a trailing axis of 1 (dropped here, as Keras' sparse losses accept it).

    Before any work: a mismatch would otherwise fail deep in a backend kernel, or, where
    labels and rows are paired off in blocks (PyTorch), pair the wrong ones. Unknown
    (traced) sizes are not compared.
    """
    labels_shape, rows_shape = tuple(y_true.shape), tuple(y_pred.shape)[:-1]
    if len(labels_shape) == len(rows_shape) + 1 and labels_shape[-1] == 1:
        y_true, labels_shape = ops.squeeze(y_true, -1), labels_shape[:-1]
    if len(labels_shape) != len(rows_shape) or any(
        a is not None and b is not None and a != b for a, b in zip(labels_shape, rows_shape)
    ):
        raise ValueError(
            "`y_true` must have the shape of `y_pred` without its last (class) axis. "
            f"Received: y_true with shape={labels_shape} and y_pred with "
            f"shape={tuple(y_pred.shape)}"
        )
    return y_true


def _cross_entropy_from_logits(y_true, logits):
    """-log softmax(logits)[y_true], per position: (...) from (..., K) float32 logits.

    Keras' own `SparseCategoricalCrossentropy` computes the same, but slowly for the
    (batch, sequence, vocabulary) logits of a language model: on PyTorch it moves the
    class axis to position 1 (a full copy, and a log-softmax over a strided axis), and on
    JAX it builds one-hot labels of the vocabulary's width. Forward + backward of
    (8, 128, 8192) logits on the 2-core CPU (benchmarks/loss.py): PyTorch 95 -> 22 ms
    (Keras' `cross_entropy` kernel on 2-D logits, which this used before
    `_torch_cross_entropy`: 36 ms), JAX 44 -> 24 ms, TensorFlow 31 -> 31 ms. The
    per-position losses and gradients agree with Keras' to float32 rounding
    (tests/test_losses.py).
    """
    if keras.backend.backend() == "torch" and _TorchCrossEntropyFromLogits is not None:
        return _torch_cross_entropy(y_true, logits)
    if keras.backend.backend() == "jax":
        # log-sum-exp minus the label's logit: XLA fuses both reductions, and no
        # (..., K) one-hot or log-probabilities tensor is materialised.
        label_logits = ops.take_along_axis(
            logits, ops.expand_dims(ops.cast(y_true, "int32"), -1), axis=-1
        )
        return ops.logsumexp(logits, axis=-1) - ops.squeeze(label_logits, -1)
    # Keras' fused kernel (TensorFlow's sparse softmax cross-entropy; PyTorch's
    # `cross_entropy` if the backend was switched to PyTorch after this module was
    # imported) on 2-D (N, K) logits, where the class axis is already in place.
    num_classes = logits.shape[-1]
    losses = ops.sparse_categorical_crossentropy(
        ops.reshape(ops.cast(y_true, "int32"), (-1,)),  # (N,)
        ops.reshape(logits, (-1, num_classes)),  # (N, K)
        from_logits=True,
    )  # (N,)
    return ops.reshape(losses, ops.shape(logits)[:-1])


def _torch_cross_entropy(y_true, logits):
    """PyTorch: -log softmax(logits)[y_true] with its own backward, softmax(logits) -
    onehot(y_true) computed in place.

    `torch.nn.functional.cross_entropy` (Keras' kernel) keeps the (N, K) log-probabilities
    for its backward, which then zero-fills an (N, K) gradient for `nll_loss`, scatters
    into it and runs `log_softmax`'s backward over it: three passes over the largest
    tensor of a language model's step, and one more (N, K) tensor alive until then. This
    keeps only the logits (alive anyway), computes the loss a block of rows at a time,
    and the gradient as one softmax, a scatter of -1 at the labels and a scale by the
    incoming gradient. PyTorch has no fused kernel that returns this gradient, so it is
    written here.
    """
    num_classes = logits.shape[-1]
    labels = ops.reshape(ops.cast(y_true, "int64"), (-1,))
    losses = _TorchCrossEntropyFromLogits.apply(ops.reshape(logits, (-1, num_classes)), labels)
    return ops.reshape(losses, ops.shape(logits)[:-1])


_TorchCrossEntropyFromLogits = None
if keras.backend.backend() == "torch":
    # Defined at import (so that `torch.compile` sees a plain class), and only on PyTorch
    # (so that importing this module on another backend does not import torch).
    import torch

    class _TorchCrossEntropyFromLogits(torch.autograd.Function):
        @staticmethod
        def forward(ctx, logits, labels):  # (N, K) float, (N,) int64 -> (N,)
            ctx.save_for_backward(logits, labels)
            # In blocks of rows of at most 2**20 values (4 MiB in float32): on a CPU a
            # fresh (N, K) tensor is a new memory mapping whose page faults cost more than
            # the log-softmax itself (8 x 128 x 8192 logits: 13.5 -> 3.2 ms), and only the
            # label's entry of each row is kept anyway.
            rows = max(1, 2**20 // logits.shape[-1])
            return torch.cat(
                [
                    -torch.log_softmax(block, dim=-1).gather(-1, block_labels[:, None]).squeeze(-1)
                    for block, block_labels in zip(logits.split(rows), labels.split(rows))
                ]
            )

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, grad):  # (N,) -> (N, K)
            logits, labels = ctx.saved_tensors
            grad_logits = torch.softmax(logits, dim=-1)
            minus_one = torch.full_like(labels[:, None], -1, dtype=grad_logits.dtype)
            grad_logits.scatter_add_(-1, labels[:, None], minus_one)
            return grad_logits.mul_(grad[:, None]), None
