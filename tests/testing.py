"""Shared test helpers. `run_layer_test` is the one check every public layer goes through."""

import json
import os

import keras
import numpy as np
from keras import ops

BACKEND = keras.backend.backend()
SHARED_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")


def to_numpy(x):
    return np.asarray(ops.convert_to_numpy(x))


def assert_same_sgd_step(model, reference, x, y, loss, moved, batch_size=None):
    """One SGD step of `model` and of `reference` from the same weights (matched by
    path) leaves every weight equal; the weight at path `moved` must have moved."""
    start = {w.path: to_numpy(w).copy() for w in model.weights}
    assert set(start) == {w.path for w in reference.weights}
    after = []
    for trained in (model, reference):
        for weight in trained.weights:
            weight.assign(start[weight.path])
        trained.compile(optimizer=keras.optimizers.SGD(0.5), loss=loss)
        trained.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
        after.append({w.path: to_numpy(w) for w in trained.weights})
    assert not np.allclose(after[0][moved], start[moved])
    for path, value in after[1].items():
        np.testing.assert_allclose(after[0][path], value, atol=1e-5, err_msg=path)


def _first(outputs):
    return outputs[0] if isinstance(outputs, (tuple, list)) else outputs


def _symbolic_inputs(input_data):
    return {
        name: keras.Input(
            shape=value.shape[1:], batch_size=None, dtype=str(value.dtype), name=name
        )
        for name, value in input_data.items()
    }


def _check_config_round_trip(layer_cls, init_kwargs):
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    json.dumps(config)
    missing = set(init_kwargs) - set(config)
    assert not missing, f"get_config lacks constructor arguments: {missing}"
    restored = layer_cls.from_config(layer.get_config())
    assert restored.get_config() == layer.get_config()
    unknown = set(layer.get_config()) - _constructor_args(layer_cls)
    assert not unknown, f"get_config has keys the constructor does not take: {unknown}"
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is layer_cls
    assert revived.get_config() == layer.get_config()


def _constructor_args(layer_cls):
    import inspect

    names = set()
    for cls in layer_cls.__mro__:
        if "__init__" in vars(cls):
            names |= set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    # keras.layers.Layer takes these through **kwargs.
    return names | {"name", "trainable", "dtype", "autocast", "input_dim", "input_shape"}


def _check_policies(layer, policy_name):
    for sublayer in layer._flatten_layers(include_self=True, recursive=True):
        assert sublayer.dtype_policy.name == policy_name, (
            f"{sublayer.name} has policy {sublayer.dtype_policy.name}, expected {policy_name}"
        )


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_data,
    call_kwargs=None,
    expected_output_shape=None,
    run_training=True,
    run_mixed_precision=True,
    allow_unchanged_weights=(),
    tmp_path=None,
):
    """Checks config, symbolic and eager calls, saving, one fit step and mixed precision.

    Args:
        layer_cls: the layer class.
        init_kwargs: constructor arguments.
        input_data: dict from `call` argument name to a numpy array (batch first).
        call_kwargs: non-tensor `call` arguments (`use_causal_mask=True`, ...).
        expected_output_shape: shape of the (first) eager output.
        run_training: whether to run one `fit` step.
        run_mixed_precision: whether to rerun under mixed_bfloat16 and mixed_float16.
        allow_unchanged_weights: names (substrings of variable paths) that may keep
            their value through a fit step (for example a key bias, which softmax
            ignores).
        tmp_path: folder for the `.keras` file.
    """
    call_kwargs = call_kwargs or {}
    _check_config_round_trip(layer_cls, init_kwargs)

    # Eager call.
    layer = layer_cls(**init_kwargs)
    eager_output = layer(**input_data, **call_kwargs)
    eager_first = to_numpy(_first(eager_output))
    if expected_output_shape is not None:
        assert eager_first.shape == tuple(expected_output_shape), eager_first.shape
    assert np.all(np.isfinite(eager_first))

    # Symbolic call inside a functional model; then the same model saved and reloaded.
    symbolic = _symbolic_inputs(input_data)
    model_layer = layer_cls(**init_kwargs)
    symbolic_output = model_layer(**symbolic, **call_kwargs)
    assert tuple(_first(symbolic_output).shape)[1:] == eager_first.shape[1:]
    model = keras.Model(symbolic, _first(symbolic_output))
    before = to_numpy(model(input_data, training=False))
    if tmp_path is not None:
        path = os.path.join(str(tmp_path), "layer_test.keras")
        model.save(path)
        reloaded = keras.saving.load_model(path)
        after = to_numpy(reloaded(input_data, training=False))
        np.testing.assert_allclose(after, before, atol=1e-6, rtol=0)
        reloaded_layer = reloaded.get_layer(model_layer.name)
        assert type(reloaded_layer) is layer_cls

    if run_training and model.trainable_weights:
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        start = [to_numpy(w) for w in model.trainable_weights]
        target = np.ones_like(before) if before.dtype.kind == "f" else None
        history = model.fit(input_data, target, batch_size=len(next(iter(input_data.values()))), epochs=1, verbose=0)
        assert np.isfinite(history.history["loss"][0])
        for weight, value in zip(model.trainable_weights, start):
            if any(name in weight.path for name in allow_unchanged_weights):
                continue
            assert not np.array_equal(to_numpy(weight), value), f"{weight.path} did not train"

    if run_mixed_precision:
        for policy in ("mixed_bfloat16", "mixed_float16"):
            mixed = layer_cls(**init_kwargs, dtype=policy)
            output = _first(mixed(**input_data, **call_kwargs))
            _check_policies(mixed, policy)
            assert keras.backend.standardize_dtype(output.dtype) == policy.split("_")[1]
            assert np.all(np.isfinite(to_numpy(ops.cast(output, "float32"))))
            for weight in mixed.weights:
                assert keras.backend.standardize_dtype(weight.dtype) == "float32", weight.path
    return layer, eager_output
