import keras
import numpy as np
import pytest
from keras import ops

from keras_transformers.layers import Dropout
from keras_transformers.layers import dropout as dropout_module
from keras_transformers.models import bert, gpt2, transformer, vit
from tests.testing import run_layer_test, to_numpy

RNG = np.random.default_rng(0)
BACKEND = keras.backend.backend()
ON_TORCH = BACKEND == "torch"


def _normal(*shape):
    return RNG.normal(size=shape).astype("float32")


def test_layer_contract(tmp_path):
    run_layer_test(
        Dropout,
        {"rate": 0.25},
        {"inputs": _normal(2, 5, 8)},
        expected_output_shape=(2, 5, 8),
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("rate", [0.1, 0.5])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_drops_at_the_rate_and_scales_the_rest(rate, dtype):
    # Inverted dropout (Srivastava et al., 2014, as Keras defines it): each value is
    # zeroed with probability `rate`, the others divided by 1 - rate.
    x = np.abs(_normal(400, 2500)) + 0.5  # no zeros of its own; 10**6 values
    inputs = ops.cast(x, dtype)
    outputs = Dropout(rate, dtype=dtype)(inputs, training=True)
    assert keras.backend.standardize_dtype(outputs.dtype) == dtype
    outputs = to_numpy(ops.cast(outputs, "float32"))
    dropped = outputs == 0
    # The number dropped is Binomial(n, rate): within 6 standard deviations.
    n = dropped.size
    assert abs(dropped.sum() - n * rate) < 6 * np.sqrt(n * rate * (1 - rate)), dropped.mean()
    expected = to_numpy(ops.cast(inputs, "float32")) / (1 - rate)
    tolerance = 1e-6 if dtype == "float32" else 2e-2  # bfloat16 rounds the scaled value
    np.testing.assert_allclose(outputs[~dropped], expected[~dropped], rtol=tolerance)
    # Rows and columns are dropped alike (no position is favoured by the draw).
    assert abs(dropped.mean(axis=0).mean() - rate) < 0.01 and dropped.mean(axis=1).std() < 0.02


def test_a_new_mask_at_each_call_and_none_outside_training():
    layer = Dropout(0.5)
    x = np.ones((64, 64), "float32")
    first, second = (to_numpy(layer(x, training=True)) for _ in range(2))
    assert not np.array_equal(first == 0, second == 0)
    np.testing.assert_array_equal(to_numpy(layer(x, training=False)), x)
    np.testing.assert_array_equal(to_numpy(layer(x)), x)
    np.testing.assert_array_equal(to_numpy(Dropout(0.0)(x, training=True)), x)


def test_the_global_seed_fixes_the_mask():
    x = np.ones((32, 32), "float32")
    masks = []
    for _ in range(2):
        keras.utils.set_random_seed(7)
        masks.append(to_numpy(Dropout(0.3)(x, training=True)) == 0)
    np.testing.assert_array_equal(masks[0], masks[1])


@pytest.mark.parametrize(
    "init_kwargs",
    [{"rate": 0.3, "seed": 5}, {"rate": 0.5, "noise_shape": (4, 1), "seed": 2}],
)
def test_a_seed_or_a_noise_shape_is_keras_own_dropout(init_kwargs):
    x = _normal(4, 16)
    ours = Dropout(**init_kwargs)(x, training=True)
    theirs = keras.layers.Dropout(**init_kwargs)(x, training=True)
    np.testing.assert_array_equal(to_numpy(ours), to_numpy(theirs))


@pytest.mark.skipif(not ON_TORCH, reason="the uniform_ mask is drawn on PyTorch's CPU only")
def test_torch_cpu_draws_with_uniform_and_differentiates_through_the_mask(monkeypatch):
    import torch

    def not_expected(*args, **kwargs):
        raise AssertionError("torch.nn.functional.dropout was called")

    monkeypatch.setattr(torch.nn.functional, "dropout", not_expected)
    x = torch.tensor(_normal(64, 64) + 3.0, requires_grad=True)
    upstream = torch.tensor(_normal(64, 64))
    outputs = Dropout(0.2)(x, training=True)
    outputs.backward(upstream)
    kept = (outputs != 0).float()
    # d(x * mask) / dx = mask = kept / (1 - rate).
    np.testing.assert_allclose(to_numpy(x.grad), to_numpy(upstream * kept / 0.8), rtol=1e-6)
    # A seeded layer is Keras' own, which on PyTorch goes through bernoulli, not uniform_.
    monkeypatch.setattr(torch.Tensor, "uniform_", not_expected)
    Dropout(0.2, seed=1)(x, training=True)


@pytest.mark.skipif(ON_TORCH, reason="PyTorch lacks uint32 shifts; its mask is uniform_'s")
@pytest.mark.parametrize(
    "shape, keep_prob",
    [((3, 5, 7), 0.9), ((8, 4, 16, 16), 0.5), ((1000,), 0.123456), ((2, 1, 9), 0.999), ((), 0.7)],
)
def test_threefry_mask_is_jax_random_bernoulli_bit_for_bit(shape, keep_prob):
    # The reference is JAX's own sampler, run by JAX whatever Keras' backend.
    jax = pytest.importorskip("jax")
    for key in RNG.integers(0, 2**32, size=(3, 2), dtype=np.uint64).astype(np.uint32):
        expected = np.asarray(jax.random.bernoulli(key, keep_prob, shape))
        mask = to_numpy(dropout_module._threefry_keep_mask(key, shape, keep_prob))
        np.testing.assert_array_equal(mask, expected)


def _spy_on_threefry(monkeypatch):
    calls = []

    def spy(*args):
        calls.append(args[1])
        return threefry(*args)

    threefry = dropout_module._threefry_keep_mask
    monkeypatch.setattr(dropout_module, "_threefry_keep_mask", spy)
    return calls


@pytest.mark.skipif(BACKEND != "jax", reason="JAX's rolled Threefry loop")
@pytest.mark.parametrize("init_kwargs", [{"rate": 0.3}, {"rate": 0.5, "noise_shape": (4, 1, None), "seed": 2}])
def test_jax_compiled_training_step_is_keras_own_dropout(monkeypatch, init_kwargs):
    # On JAX the mask is Keras' own, hashed by our unrolled Threefry: a jitted forward and
    # backward pass gives Keras' outputs, gradients and next seed state, bit for bit.
    import jax

    calls = _spy_on_threefry(monkeypatch)
    x, upstream = _normal(4, 8, 16), _normal(4, 8, 16)

    def step(layer):
        def loss(x, state):
            y, state = layer.stateless_call([], state, x, training=True)
            return (y * upstream).sum(), (y, state)

        state = [v.value for v in layer.non_trainable_variables]
        return jax.jit(jax.grad(loss, has_aux=True))(x, state)

    keras.utils.set_random_seed(3)
    ours = Dropout(**init_kwargs)
    keras.utils.set_random_seed(3)
    theirs = keras.layers.Dropout(**init_kwargs)
    (grad, (y, state)), (grad_k, (y_k, state_k)) = step(ours), step(theirs)
    assert calls == [(4, 1, 16) if "noise_shape" in init_kwargs else (4, 8, 16)]
    assert 0 < np.mean(np.asarray(y) == 0) < 1
    for a, b in [(y, y_k), (grad, grad_k), *zip(state, state_k)]:
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.skipif(BACKEND != "tensorflow", reason="TensorFlow's XLA-compiled masks")
def test_tensorflow_under_xla_draws_unseeded_masks_from_the_hash(monkeypatch):
    import tensorflow as tf

    calls = _spy_on_threefry(monkeypatch)
    rate = 0.1
    x = np.abs(_normal(400, 2500)) + 0.5  # 10**6 values, no zeros of their own
    layer = Dropout(rate)
    compiled = tf.function(lambda x: layer(x, training=True), jit_compile=True)
    first, second = to_numpy(compiled(x)), to_numpy(compiled(x))
    assert calls == [(400, 2500)]  # traced once, with the hash
    dropped = first == 0
    n = dropped.size
    assert abs(dropped.sum() - n * rate) < 6 * np.sqrt(n * rate * (1 - rate)), dropped.mean()
    np.testing.assert_allclose(first[~dropped], x[~dropped] / (1 - rate), rtol=1e-6)
    assert not np.array_equal(dropped, second == 0)  # the seed state moves on
    # The gradient is the upstream gradient times the mask.
    x_tensor = tf.constant(x[:4, :8])

    @tf.function(jit_compile=True)
    def outputs_and_gradient():
        with tf.GradientTape() as tape:
            tape.watch(x_tensor)
            y = layer(x_tensor, training=True)
        return y, tape.gradient(y, x_tensor, output_gradients=tf.ones_like(y) * 2.0)

    y, grad = (to_numpy(t) for t in outputs_and_gradient())
    np.testing.assert_allclose(grad, np.where(y == 0, 0.0, 2.0 / (1 - rate)), rtol=1e-6)
    # Eagerly, and with a seed under XLA, it is Keras' own dropout (its stream, not the hash).
    calls.clear()
    np.testing.assert_array_equal(to_numpy(Dropout(rate, seed=4)(x, training=True)), to_numpy(keras.layers.Dropout(rate, seed=4)(x, training=True)))
    seeded = tf.function(lambda layer: layer(x, training=True), jit_compile=True)
    np.testing.assert_array_equal(to_numpy(seeded(Dropout(rate, seed=4))), to_numpy(seeded(keras.layers.Dropout(rate, seed=4))))
    Dropout(rate)(x, training=True)
    # A batch size known only when run (as `fit` may trace): Keras' draw.
    dynamic = tf.function(
        lambda x: layer(x, training=True), jit_compile=True, input_signature=[tf.TensorSpec([None, 8])]
    )
    assert 0 < np.mean(to_numpy(dynamic(x[:5, :8])) == 0) < 1
    assert calls == []


def _fusions_hashing(hlo_text):
    """How many computations of optimized HLO run the Threefry hash (its xor rounds)."""
    import re

    return sum(" xor(" in body for body in re.split(r"\n(?=%|ENTRY)", hlo_text))


@pytest.mark.skipif(ON_TORCH, reason="XLA's fusion of the hashed mask (JAX, TensorFlow)")
def test_a_compiled_step_hashes_each_mask_once():
    # The forward select and the backward pass both read the mask; XLA would copy the hash
    # into each of their fusions (twice here) unless the mask is computed once, into memory.
    x, w = _normal(8, 64, 64), _normal(8, 64, 64)
    layer = Dropout(0.1)
    layer.build(x.shape)
    if BACKEND == "jax":
        import jax

        def loss(x, w, state):
            y, _ = layer.stateless_call([], state, x, training=True)
            return ops.sum(ops.tanh(y) * w)

        state = [v.value for v in layer.non_trainable_variables]
        hlo = jax.jit(jax.grad(loss, argnums=(0, 1))).lower(x, w, state).compile().as_text()
    else:
        import tensorflow as tf

        @tf.function(jit_compile=True)
        def gradients(x, w):
            with tf.GradientTape() as tape:
                tape.watch([x, w])
                loss = tf.reduce_sum(tf.tanh(layer(x, training=True)) * w)
            return tape.gradient(loss, [x, w])

        x, w = tf.constant(x), tf.constant(w)
        hlo = gradients.experimental_get_compiler_ir(x, w)(stage="optimized_hlo")
    assert _fusions_hashing(hlo) == 1


@pytest.mark.parametrize(
    "model",
    [
        lambda: gpt2.gpt2(**gpt2.CONFIGS["gpt2_tiny"], dropout=0.1),
        lambda: bert.bert_classifier(bert.bert(**bert.CONFIGS["bert_tiny"], dropout=0.1), 2),
        lambda: vit.vit(**vit.CONFIGS["vit_tiny"], dropout=0.1),
        lambda: transformer.transformer(**transformer.CONFIGS["transformer_tiny"], dropout=0.1),
    ],
    ids=["gpt2", "bert", "vit", "transformer"],
)
def test_models_drop_out_with_our_layer(model):
    layers, stack = [], [model()]
    while stack:
        layer = stack.pop()
        layers.append(layer)
        stack.extend(getattr(layer, "_layers", []))
    dropouts = [layer for layer in layers if isinstance(layer, keras.layers.Dropout)]
    assert dropouts and all(type(layer) is Dropout for layer in dropouts)
