"""The builders' `Model` checks its inputs on every path: direct calls, `fit`, `predict`,
and after a `.keras` round trip."""

import os

import keras
import numpy as np
import pytest

from keras_transformers.models import Model, validate_inputs
from keras_transformers.models.gpt2 import gpt2
from tests.testing import to_numpy

CONFIG = dict(vocabulary_size=20, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16,
              max_sequence_length=8, dropout=0.0)


def _compiled(jit_compile="auto", **kwargs):
    model = gpt2(**CONFIG)
    model.compile(
        optimizer="sgd",
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
        **kwargs,
    )
    return model


@pytest.fixture(scope="module")
def model():
    return _compiled()


def _inputs(dtype="int32"):
    rng = np.random.default_rng(0)
    return {
        "token_ids": rng.integers(0, 20, (4, 6)).astype(dtype),
        "padding_mask": np.ones((4, 6), "int32"),
    }


def test_builders_return_the_checking_model(model):
    assert isinstance(model, Model) and isinstance(model, keras.Model)


def test_fit_and_predict_refuse_float_token_ids(model):
    # Without the check, Keras would cast these to int32 and train on truncated ids.
    floats = _inputs("float32")
    labels = np.zeros((4, 6), "int32")
    with pytest.raises(ValueError, match="`token_ids` must be an integer tensor"):
        model.fit(floats, labels, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="`token_ids` must be an integer tensor"):
        model.predict(floats, verbose=0)
    # The refused calls left the model usable (on JAX, an error inside Keras' loop
    # would leave its variables purged).
    history = model.fit(_inputs(), labels, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert model.predict(_inputs(), verbose=0).shape == (4, 6, 20)


def test_fit_refuses_a_dataset_of_float_token_ids(model):
    tf = pytest.importorskip("tensorflow")
    dataset = tf.data.Dataset.from_tensor_slices(
        (_inputs("float32"), np.zeros((4, 6), "int32"))
    ).batch(2)
    with pytest.raises(ValueError, match="`token_ids` must be an integer tensor"):
        model.fit(dataset, epochs=1, verbose=0)


def test_out_of_vocabulary_ids_are_refused_not_clipped(model):
    inputs = _inputs()
    inputs["token_ids"][0, 0] = 20
    with pytest.raises(ValueError, match=r"`token_ids` must be in \[0, 20\). .*\[\d+, 20\]"):
        model(inputs)


def test_boolean_padding_mask_equals_integer_mask(model):
    inputs = _inputs()
    inputs["padding_mask"][:, 4:] = 0
    boolean = dict(inputs, padding_mask=inputs["padding_mask"].astype(bool))
    np.testing.assert_allclose(to_numpy(model(boolean)), to_numpy(model(inputs)), atol=1e-6)


def test_checks_survive_saving(model, tmp_path):
    path = os.path.join(tmp_path, "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is Model
    np.testing.assert_allclose(to_numpy(loaded(_inputs())), to_numpy(model(_inputs())), atol=1e-6)
    with pytest.raises(ValueError, match="`token_ids` must be an integer tensor"):
        loaded(_inputs("float32"))


def test_validate_inputs_errors():
    model = gpt2(**CONFIG)
    with pytest.raises(ValueError, match="`inputs` must be a dict"):
        validate_inputs(model, [np.zeros((1, 2), "int32")])
    with pytest.raises(ValueError, match="`token_ids` must be an array or tensor"):
        validate_inputs(model, {"token_ids": [[1, 2]], "padding_mask": np.ones((1, 2), "int32")})
    with pytest.raises(ValueError, match="same batch size"):
        validate_inputs(
            model, {"token_ids": np.ones((2, 3), "int32"), "padding_mask": np.ones((3, 3), "int32")}
        )
    x = keras.Input((3,))
    functional = keras.Model(x, keras.layers.Dense(2)(x))
    with pytest.raises(ValueError, match="`model` must take a dict of named inputs"):
        validate_inputs(functional, np.zeros((1, 3)))


def test_auto_jit_compile_is_xla_except_on_torch():
    # Keras' "auto" is XLA on JAX and eager on torch; on TensorFlow it is XLA only with a
    # GPU, and ours picks XLA on a CPU too.
    assert _compiled().jit_compile is (keras.backend.backend() != "torch")
    assert _compiled(jit_compile=False).jit_compile is False
    assert _compiled(run_eagerly=True).jit_compile is False


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="TensorFlow's rules")
def test_auto_jit_compile_keeps_keras_exclusions_on_tensorflow(monkeypatch):
    import tensorflow as tf

    from keras_transformers.models import model as model_module

    assert model_module._op_determinism_enabled() is False  # TensorFlow's getter exists
    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        assert _compiled().jit_compile is False
    monkeypatch.setattr(model_module, "_op_determinism_enabled", lambda: True)
    assert _compiled().jit_compile is False
    monkeypatch.undo()
    unsupported = gpt2(**CONFIG)
    unsupported.layers[-1].supports_jit = False
    unsupported.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(True))
    assert unsupported.jit_compile is False


def test_auto_jit_compile_trains_as_jit_compile_false(tmp_path):
    # The same weights, three SGD steps compiled with "auto" and without XLA (XLA orders
    # float sums differently, so the values agree to float32 round-off), then a `.keras`
    # round trip keeps the compiled setting and the optimizer's state.
    auto, plain = _compiled(), _compiled(jit_compile=False)
    plain.set_weights(auto.get_weights())
    labels = np.roll(_inputs()["token_ids"], -1, axis=1)
    for _ in range(3):
        losses = [float(m.train_on_batch(_inputs(), labels)) for m in (auto, plain)]
        np.testing.assert_allclose(losses[0], losses[1], rtol=1e-5)
    for a, b in zip(auto.get_weights(), plain.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    path = os.path.join(tmp_path, "auto.keras")
    auto.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.jit_compile is auto.jit_compile
    assert int(loaded.optimizer.iterations) == 3
    np.testing.assert_allclose(
        float(loaded.train_on_batch(_inputs(), labels)),
        float(auto.train_on_batch(_inputs(), labels)),
        rtol=1e-5,
    )
