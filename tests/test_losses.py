import json
import re

import keras
import numpy as np
import pytest

from keras_transformers.losses import SparseCategoricalCrossentropy
from tests.testing import to_numpy


def _data(batch=3, length=5, classes=7):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(batch, length, classes)).astype("float32")
    labels = rng.integers(0, classes, size=(batch, length))
    return logits, labels


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
@pytest.mark.parametrize("from_logits", [True, False])
def test_equals_keras_categorical_crossentropy_on_one_hot(smoothing, from_logits):
    logits, labels = _data()
    y_pred = logits if from_logits else to_numpy(keras.ops.softmax(logits))
    ours = SparseCategoricalCrossentropy(smoothing, from_logits=from_logits, reduction=None)
    reference = keras.losses.CategoricalCrossentropy(
        label_smoothing=smoothing, from_logits=from_logits, reduction=None
    )
    np.testing.assert_allclose(
        to_numpy(ours(labels, y_pred)),
        to_numpy(reference(np.eye(7)[labels], y_pred)),
        rtol=1e-5, atol=1e-6,
    )


def test_matches_the_formula_in_numpy():
    logits, labels = _data()
    log_p = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = -np.take_along_axis(log_p, labels[..., None], -1)[..., 0]
    expected = 0.9 * nll - 0.1 * log_p.mean(-1)
    loss = SparseCategoricalCrossentropy(0.1, from_logits=True, reduction=None)
    np.testing.assert_allclose(to_numpy(loss(labels, logits)), expected, rtol=1e-5)


def test_padding_weights_are_left_out_of_the_mean():
    logits, labels = _data()
    weights = np.ones(labels.shape, "float32")
    weights[:, 3:] = 0  # padded positions
    loss = SparseCategoricalCrossentropy(0.1, from_logits=True)
    per_position = to_numpy(SparseCategoricalCrossentropy(0.1, True, reduction=None)(labels, logits))
    expected = per_position[:, :3].mean()
    np.testing.assert_allclose(float(to_numpy(loss(labels, logits, weights))), expected, rtol=1e-5)
    # Changing the logits at padded positions does not move the loss.
    logits[:, 3:] += 100.0
    np.testing.assert_allclose(float(to_numpy(loss(labels, logits, weights))), expected, rtol=1e-5)


def test_serialization_and_fit():
    loss = SparseCategoricalCrossentropy(0.1, from_logits=True)
    restored = keras.losses.deserialize(json.loads(json.dumps(keras.losses.serialize(loss))))
    assert isinstance(restored, SparseCategoricalCrossentropy)
    assert restored.get_config() == loss.get_config()

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    model.compile("sgd", loss=loss)
    rng = np.random.default_rng(0)
    history = model.fit(
        rng.normal(size=(8, 4)), rng.integers(0, 3, size=(8,)), epochs=1, verbose=0
    )
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("value", [-0.1, 1.0, True, "0.1"])
def test_bad_label_smoothing_raises(value):
    with pytest.raises(ValueError, match="`label_smoothing` must be a float in"):
        SparseCategoricalCrossentropy(value)


# 2**17 classes: PyTorch's forward goes over blocks of 2**20 // 2**17 = 8 rows (two blocks
# of the 15 rows, the second one short).
@pytest.mark.parametrize("shape", [(3, 5, 7), (4, 7), (3, 5, 2**17)])
def test_from_logits_equals_keras_sparse_crossentropy(shape):
    """The unsmoothed path (its own formulation per backend) against Keras' loss."""
    rng = np.random.default_rng(1)
    logits = (4 * rng.normal(size=shape)).astype("float32")
    labels = rng.integers(0, shape[-1], size=shape[:-1])
    ours = SparseCategoricalCrossentropy(from_logits=True, reduction=None)(labels, logits)
    reference = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)(
        labels, logits
    )
    assert tuple(ours.shape) == shape[:-1]
    # The formula in float64: log-sum-exp minus the label's logit.
    z = logits.astype("float64")
    top = z.max(axis=-1, keepdims=True)
    exact = np.log(np.exp(z - top).sum(axis=-1)) + top[..., 0]
    exact -= np.take_along_axis(z, labels[..., None], axis=-1)[..., 0]
    np.testing.assert_allclose(to_numpy(ours), exact, rtol=1e-6, atol=1e-5)
    # Over 2**17 classes float32 sums differ in their last digits with the order of the
    # additions (Keras' own loss is 9e-6 relative off the float64 value on PyTorch).
    rtol = 1e-6 if shape[-1] < 1000 else 2e-5
    np.testing.assert_allclose(to_numpy(ours), to_numpy(reference), rtol=rtol, atol=1e-6)


@pytest.mark.parametrize("classes", [7, 2**17])
def test_from_logits_trains_like_keras_sparse_crossentropy(classes):
    """Same gradients: one SGD step with either loss moves the weights the same way."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=(3, 5, 4)).astype("float32")
    labels = rng.integers(0, classes, size=(3, 5))
    weights = []
    for loss in (
        SparseCategoricalCrossentropy(from_logits=True, reduction="sum_over_batch_size"),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    ):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((5, 4)), keras.layers.Dense(classes)])
        model.compile(keras.optimizers.SGD(1.0), loss=loss)
        model.train_on_batch(x, labels)
        weights.append([to_numpy(w) for w in model.weights])
    for ours, reference in zip(*weights):
        np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_labels_with_a_trailing_axis_of_one_equal_plain_labels(label_smoothing):
    logits, labels = _data()
    loss = SparseCategoricalCrossentropy(
        label_smoothing=label_smoothing, from_logits=True, reduction=None
    )
    np.testing.assert_allclose(
        to_numpy(loss(labels[..., None], logits)), to_numpy(loss(labels, logits)), rtol=1e-6
    )


@pytest.mark.parametrize(
    "logits_shape, labels_shape",
    [
        ((3, 5, 7), (3, 4)),
        ((3, 5, 7), (3, 5, 2)),
        ((3, 5, 7), (15,)),
        # 16 rows of 2**17 classes are two blocks of 8 on PyTorch, and 32 labels four: they
        # must not be paired off block by block.
        ((2, 8, 2**17), (2, 16)),
    ],
)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_labels_of_another_shape_raise(logits_shape, labels_shape, label_smoothing):
    loss = SparseCategoricalCrossentropy(label_smoothing=label_smoothing, from_logits=True)
    with pytest.raises(ValueError, match=r"`y_true` must have the shape of `y_pred`.*shape=\("):
        loss(np.zeros(labels_shape, "int32"), np.zeros(logits_shape, "float32"))


@pytest.mark.parametrize("labels, received", [([[1, 2, 5]], "[1, 5]"), ([[1, -1, 0]], "[-1, 1]")])
def test_host_labels_outside_the_classes_raise(labels, received):
    # JAX's gather would give NaN for 5 and wrap -1 to the last class; TensorFlow and
    # PyTorch would fail inside their kernels. The edges of [0, K) are fine.
    logits = np.zeros((1, 3, 5), "float32")
    loss = SparseCategoricalCrossentropy(from_logits=True)
    with pytest.raises(ValueError, match=f"y_true.*\\[0, 5\\).*values in {re.escape(received)}"):
        loss(np.array(labels), logits)
    assert np.isclose(float(loss(np.array([[0, 4, 2]]), logits)), np.log(5.0))
