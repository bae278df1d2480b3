import json

import keras
import numpy as np
import pytest

from keras_transformers.optimizers import AdamW
from tests.testing import to_numpy

ON_TORCH = keras.backend.backend() == "torch"
SHAPES = [(16, 8), (8,), (5, 3, 4)]


def _run(optimizer_cls, kwargs, steps=5):
    """Weights after `steps` updates from the same start and gradient sequence, and the
    optimizer (whose moments the caller may read)."""
    rng = np.random.default_rng(0)
    weights = [
        keras.Variable(rng.normal(size=shape).astype("float32"), name=f"w{i}")
        for i, shape in enumerate(SHAPES)
    ]
    optimizer = optimizer_cls(**kwargs)
    for _ in range(steps):
        grads = [keras.ops.convert_to_tensor(rng.normal(size=s).astype("float32")) for s in SHAPES]
        optimizer.apply(grads, weights)
    return [to_numpy(w) for w in weights], optimizer


@pytest.mark.parametrize(
    "kwargs",
    [
        {"learning_rate": 1e-2},
        {"learning_rate": 3e-2, "weight_decay": 0.1, "beta_2": 0.99, "epsilon": 1e-6},
        {
            "learning_rate": keras.optimizers.schedules.ExponentialDecay(1e-2, 2, 0.5),
            "weight_decay": 0.05,
        },
        {"learning_rate": 1e-2, "amsgrad": True},  # not the fused kernel: Adam's foreach passes
        {"learning_rate": 1e-2, "global_clipnorm": 0.5},
    ],
    ids=["defaults", "decay_beta_epsilon", "schedule", "amsgrad", "clipnorm"],
)
def test_updates_as_keras_adamw(kwargs):
    ours, ours_optimizer = _run(AdamW, kwargs)
    theirs, theirs_optimizer = _run(keras.optimizers.AdamW, kwargs)
    for a, b in zip(ours, theirs):
        # Float32 rounding apart (PyTorch's kernels order the arithmetic otherwise).
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    for a, b in zip(ours_optimizer.variables, theirs_optimizer.variables):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-5, atol=1e-7, err_msg=a.path)


def test_epsilon_is_keras_placement():
    # With tiny gradients epsilon dominates the denominator: PyTorch's placement (after
    # the bias correction) would give updates sqrt(1 - beta_2) ~ 0.03 times as large at step 1.
    kwargs = {"learning_rate": 1.0, "epsilon": 1e-3}
    rng = np.random.default_rng(1)
    start = rng.normal(size=(4, 4)).astype("float32")
    results = []
    for cls in (AdamW, keras.optimizers.AdamW):
        weight = keras.Variable(start)
        cls(**kwargs).apply([keras.ops.full((4, 4), 1e-6)], [weight])
        results.append(to_numpy(weight) - start)
    np.testing.assert_allclose(results[0], results[1], rtol=1e-4)


@pytest.mark.skipif(not ON_TORCH, reason="the fused kernel runs on PyTorch only")
def test_torch_float32_on_the_cpu_runs_the_fused_kernel(monkeypatch):
    import torch

    calls = []
    fused = torch._fused_adam_
    monkeypatch.setattr(torch, "_fused_adam_", lambda *a, **k: calls.append(1) or fused(*a, **k))
    _run(AdamW, {"learning_rate": 1e-2}, steps=2)
    assert len(calls) == 2
    _run(AdamW, {"learning_rate": 1e-2, "amsgrad": True}, steps=2)
    assert len(calls) == 2


def test_config_and_saved_model_round_trip(tmp_path):
    optimizer = AdamW(learning_rate=2e-3, weight_decay=0.02, beta_2=0.98)
    config = json.loads(json.dumps(keras.saving.serialize_keras_object(optimizer)))
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is AdamW and restored.get_config() == optimizer.get_config()

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)).astype("float32"), rng.normal(size=(16, 1)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert type(reloaded.optimizer) is AdamW
    for a, b in zip(model.optimizer.variables, reloaded.optimizer.variables):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))
    # Training on from the reloaded state takes the same steps.
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    reloaded.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False)
    for a, b in zip(model.weights, reloaded.weights):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-6, atol=1e-7)


def test_compiled_training_steps_as_keras_adamw():
    # jit_compile=True: XLA on TensorFlow and JAX; torch.compile on PyTorch, where the fused
    # kernel cannot be traced and the foreach passes run instead.
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(16, 4)).astype("float32"), rng.normal(size=(16, 1)).astype("float32")
    results = []
    for cls in (AdamW, keras.optimizers.AdamW):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(1)])
        model.compile(optimizer=cls(1e-2, weight_decay=0.1), loss="mse", jit_compile=True)
        history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False)
        results.append((history.history["loss"], [to_numpy(w) for w in model.weights]))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
