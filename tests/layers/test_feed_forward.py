import math

import numpy as np
import pytest

from keras_transformers.layers import FeedForward
from tests.testing import run_layer_test, to_numpy

RNG = np.random.default_rng(0)


def _normal(*shape):
    return RNG.normal(size=shape).astype("float32")


@pytest.mark.parametrize(
    "init_kwargs, output_dim",
    [
        ({"intermediate_dim": 16, "activation": "relu", "dropout": 0.1}, 8),
        ({"intermediate_dim": 12, "activation": "gelu_approximate", "output_dim": 6}, 6),
    ],
)
def test_layer_contract(tmp_path, init_kwargs, output_dim):
    run_layer_test(
        FeedForward,
        init_kwargs,
        {"inputs": _normal(2, 5, 8)},
        expected_output_shape=(2, 5, output_dim),
        tmp_path=tmp_path,
    )


def _numpy_activation(x, name):
    if name == "relu":
        return np.maximum(x, 0.0)
    if name == "gelu":  # Hendrycks & Gimpel (2016), the exact form.
        return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))
    # The tanh approximation GPT-2 uses.
    return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_approximate"])
def test_matches_numpy(activation):
    layer = FeedForward(
        intermediate_dim=16, activation=activation, bias_initializer="random_normal"
    )
    x = _normal(2, 5, 8)
    got = to_numpy(layer(x))
    w1 = to_numpy(layer.intermediate_dense.kernel).astype("float64")
    b1 = to_numpy(layer.intermediate_dense.bias).astype("float64")
    w2 = to_numpy(layer.output_dense.kernel).astype("float64")
    b2 = to_numpy(layer.output_dense.bias).astype("float64")
    assert np.abs(b1).max() > 0  # the biases take part in the check
    expected = _numpy_activation(x.astype("float64") @ w1 + b1, activation) @ w2 + b2
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_activations_differ():
    # Guards the numpy test against all three names silently mapping to one function.
    x = _normal(2, 5, 8)
    outputs = []
    for activation in ("relu", "gelu", "gelu_approximate"):
        layer = FeedForward(16, activation=activation, kernel_initializer="ones")
        outputs.append(to_numpy(layer(x)))
    assert not np.allclose(outputs[0], outputs[1])
    assert not np.allclose(outputs[1], outputs[2], atol=1e-6)


def test_dropout_honours_training():
    layer = FeedForward(32, dropout=0.5)
    x = _normal(2, 5, 8)
    inference = to_numpy(layer(x, training=False))
    np.testing.assert_array_equal(inference, to_numpy(layer(x, training=False)))
    np.testing.assert_array_equal(inference, to_numpy(layer(x)))
    assert not np.allclose(to_numpy(layer(x, training=True)), inference)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"intermediate_dim": 0}, "intermediate_dim.*Received: intermediate_dim=0"),
        (
            {"intermediate_dim": 8, "activation": "swish"},
            "activation.*Received: activation='swish'",
        ),
        ({"intermediate_dim": 8, "dropout": 1.0}, "dropout.*Received: dropout=1.0"),
        ({"intermediate_dim": 8, "output_dim": -1}, "output_dim.*Received: output_dim=-1"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        FeedForward(**kwargs)
