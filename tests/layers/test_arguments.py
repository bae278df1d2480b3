"""`gradient_computed_once`: the identity, whose gradient XLA computes once.

References: the input itself (forward), the incoming gradient (backward), the same model
trained with the function switched off, and the compiled backward pass of JAX without it.
"""

import keras
import numpy as np
import pytest

from keras_transformers.layers import arguments
from keras_transformers.models import bert, gpt2
from tests.testing import to_numpy

SPECIAL = np.array([[1.5, -0.0, 0.0, np.inf], [-np.inf, np.nan, 3e-39, -7.25]], "float32")


def _tiny_gpt2():
    keras.utils.set_random_seed(0)
    return gpt2.gpt2(
        vocabulary_size=64, num_layers=4, num_heads=2, hidden_dim=16, intermediate_dim=32,
        max_sequence_length=16, dropout=0.1,
    )


def _switch_off(monkeypatch):
    monkeypatch.setattr(arguments, "gradient_computed_once", lambda x: x)


def test_forward_is_the_input():
    x = keras.ops.convert_to_tensor(SPECIAL)
    np.testing.assert_array_equal(to_numpy(arguments.gradient_computed_once(x)), SPECIAL)


@pytest.mark.skipif(keras.backend.backend() == "jax", reason="JAX takes the custom gradient")
def test_other_backends_return_the_input_itself():
    x = keras.ops.convert_to_tensor(SPECIAL)
    assert arguments.gradient_computed_once(x) is x


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="only JAX has the custom gradient")
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_gradient_is_the_incoming_gradient(dtype):
    """The gradient through the function is the incoming one: infinities, NaN and both zeros
    pass unchanged. A subnormal number (below float32's smallest normal, 1.2e-38) may become
    zero: XLA on the CPU flushes them in any arithmetic, as in the sums of the residual
    stream's gradient that the function takes."""
    import jax
    import jax.numpy as jnp

    upstream = jnp.asarray(SPECIAL, dtype)
    expected = np.asarray(upstream, "float32")
    x = jnp.ones(SPECIAL.shape, dtype)
    subnormal = (expected != 0) & (np.abs(expected) < np.finfo("float32").tiny)
    assert subnormal.sum() == 1
    for transform in (lambda f: f, jax.jit):
        grad = transform(jax.grad(lambda x: jnp.sum(upstream * arguments.gradient_computed_once(x))))
        got = np.asarray(grad(x), "float32")
        np.testing.assert_array_equal(got[~subnormal], expected[~subnormal])
        assert np.all((got[subnormal] == 0) | (got[subnormal] == expected[subnormal]))


def _tiny_bert_masked_lm():
    keras.utils.set_random_seed(0)
    backbone = bert.bert(
        vocabulary_size=64, num_layers=3, num_heads=2, hidden_dim=16, intermediate_dim=32,
        max_sequence_length=16, dropout=0.1,
    )
    return bert.bert_masked_lm(backbone)


@pytest.mark.parametrize("kind", ["gpt2", "bert_masked_lm"])
def test_training_step_unchanged(monkeypatch, kind):
    """A pre-norm model (GPT-2) and a post-norm one (BERT's masked LM), dropout on, take the
    same SGD steps with the function as without it."""
    padding_mask = np.array([[1] * 16, [1] * 16, [1] * 10 + [0] * 6, [1] * 5 + [0] * 11], "int32")
    x = {
        "token_ids": np.random.default_rng(0).integers(1, 64, (4, 16)).astype("int32"),
        "padding_mask": padding_mask,
    }
    y = np.random.default_rng(1).integers(0, 64, (4, 16)).astype("int32")
    if kind == "bert_masked_lm":
        x["segment_ids"] = np.zeros((4, 16), "int32")
        x["mask_positions"] = np.array([[1, 5, 9], [0, 2, 15], [3, 4, 9], [0, 1, 4]], "int32")
        y = y[:, :3]
    build = _tiny_gpt2 if kind == "gpt2" else _tiny_bert_masked_lm
    trained = []
    for switched_off in (False, True):
        if switched_off:
            _switch_off(monkeypatch)
        model = build()  # same seed: same weights and dropout masks
        model.compile(
            optimizer=keras.optimizers.SGD(0.5),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        model.fit(x, y, batch_size=2, epochs=2, verbose=0)
        trained.append({w.path: to_numpy(w) for w in model.weights})
    for path, value in trained[1].items():
        np.testing.assert_allclose(trained[0][path], value, rtol=1e-6, atol=1e-7, err_msg=path)


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="XLA compiles JAX's backward pass")
def test_xla_fuses_the_gradient_chain_once(monkeypatch):
    """Without the function, XLA copies the residual stream's gradient chain into each
    consumer: the compiled backward pass of a 4-block GPT-2 has fused computations of over
    300 instructions. With it, none is longer than a quarter of the longest without."""
    import jax

    from keras_transformers.layers import dropout

    # Keras' dropout masks here: our Dropout's unrolled Threefry hash (130 instructions,
    # recomputed where the backward pass needs the mask) would lengthen both sides alike.
    monkeypatch.setattr(dropout, "_jax_draws_a_rolled_threefry", lambda: False)

    def longest_fusion():
        model = _tiny_gpt2()
        x = {"token_ids": np.ones((2, 16), "int32"), "padding_mask": np.ones((2, 16), "int32")}
        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]

        def loss(trainable):
            logits, _ = model.stateless_call(trainable, non_trainable, x, training=True)
            return (logits**2).mean()

        text = jax.jit(jax.grad(loss)).lower(trainable).compile().as_text()
        computations = [block.strip().splitlines() for block in text.split("\n\n")]
        return max(len(lines) for lines in computations if lines and "fused_computation" in lines[0])

    with_function = longest_fusion()
    _switch_off(monkeypatch)
    without = longest_fusion()
    assert without > 300, without
    assert with_function < without / 4, (with_function, without)


@pytest.mark.parametrize("on_cpu", [True, False])
def test_post_norm_blocks_call_it_on_the_cpu_only(monkeypatch, on_cpu):
    """Pre-norm blocks call the function whenever they train; post-norm blocks only where
    JAX computes on the CPU (on an H100 it made BERT's step slower)."""
    calls = []
    monkeypatch.setattr(arguments, "gradient_computed_once", lambda x: calls.append(x) or x)
    monkeypatch.setattr(arguments, "_jax_on_cpu", lambda: on_cpu)
    x = {"token_ids": np.ones((2, 16), "int32"), "padding_mask": np.ones((2, 16), "int32")}
    _tiny_gpt2()(x, training=True)
    assert len(calls) == 8  # 4 blocks x 2 sub-blocks
    calls.clear()
    masked_lm = _tiny_bert_masked_lm()
    inputs = dict(x, segment_ids=np.zeros((2, 16), "int32"), mask_positions=np.ones((2, 3), "int32"))
    masked_lm(inputs, training=False)
    assert not calls
    masked_lm(inputs, training=True)
    assert len(calls) == (6 if on_cpu else 0)  # 3 blocks x 2 sub-blocks
