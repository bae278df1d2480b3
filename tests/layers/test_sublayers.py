"""`call_sublayer`: nested calls skip Keras' `__call__` only where it would change nothing.

The reference is Keras' own `Layer.__call__`: every case compares against the same layer
called normally (or the model run with the direct path switched off).
"""

import keras
import numpy as np
import pytest
from keras import ops

from keras_transformers.layers import (
    FeedForward,
    MultiHeadAttention,
    PatchEmbedding,
    TokenAndPositionEmbedding,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
    sublayers,
)
from keras_transformers.models import gpt2, transformer
from tests.testing import to_numpy

RNG = np.random.default_rng(0)


def _normal(*shape, dtype="float32"):
    return RNG.normal(size=shape).astype(dtype)


@pytest.fixture
def call_counts(monkeypatch):
    """Counts `Layer.__call__` per layer class name."""
    counts = {}
    original = keras.layers.Layer.__call__

    def counting(self, *args, **kwargs):
        counts[type(self).__name__] = counts.get(type(self).__name__, 0) + 1
        return original(self, *args, **kwargs)

    monkeypatch.setattr(keras.layers.Layer, "__call__", counting)
    return counts


def _never_direct(monkeypatch):
    monkeypatch.setattr(sublayers, "_is_direct_call_safe", lambda *args: False)


def _layer_cases():
    x = _normal(2, 5, 8)
    encoder = _normal(2, 3, 8)
    ids = RNG.integers(1, 20, size=(2, 5)).astype("int32")
    padding = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], "bool")
    return {
        "feed_forward": (FeedForward(intermediate_dim=16), (x,), {}),
        "attention": (
            MultiHeadAttention(num_heads=2, key_dim=4),
            (x, encoder),
            {"padding_mask": padding[:, :3]},
        ),
        "encoder_block": (
            TransformerEncoderBlock(num_heads=2, intermediate_dim=16),
            (x,),
            {"padding_mask": padding},
        ),
        "decoder_block": (
            TransformerDecoderBlock(num_heads=2, intermediate_dim=16, normalize_first=True),
            (x, encoder),
            {"decoder_padding_mask": padding},
        ),
        "embedding": (
            TokenAndPositionEmbedding(20, 8, 8, num_segments=2),
            (ids,),
            {"segment_ids": np.ones_like(ids)},
        ),
        "patches": (PatchEmbedding(image_size=8, patch_size=4, hidden_dim=8), (_normal(2, 8, 8, 3),), {}),
    }


@pytest.mark.parametrize("case", sorted(_layer_cases()))
def test_nested_calls_are_direct_and_equal_keras_call(case, call_counts, monkeypatch):
    layer, args, kwargs = _layer_cases()[case]
    layer(*args, **kwargs)  # builds every sublayer
    call_counts.clear()
    direct = to_numpy(layer(*args, **kwargs))
    # Only the outer call went through `Layer.__call__`: every sublayer was called directly.
    assert call_counts == {type(layer).__name__: 1}

    _never_direct(monkeypatch)
    call_counts.clear()
    through_keras = to_numpy(layer(*args, **kwargs))
    assert sum(call_counts.values()) > 1  # the reference went through the sublayers' `__call__`
    np.testing.assert_array_equal(direct, through_keras)


def test_models_equal_keras_call_in_training_and_mixed_precision(monkeypatch):
    """GPT-2 and the Transformer, with dropout off, in float32 and mixed_bfloat16: the
    same logits, and the same weights after a training step, as with every nested call
    going through `Layer.__call__` (up to the float rounding of a compiled step)."""
    token_ids = RNG.integers(1, 30, size=(2, 6)).astype("int32")
    padding = np.array([[1] * 6, [1] * 4 + [0] * 2], "int32")
    batches = {
        "gpt2": {"token_ids": token_ids, "padding_mask": padding},
        "transformer": {
            "encoder_token_ids": token_ids,
            "encoder_padding_mask": padding,
            "decoder_token_ids": token_ids[:, ::-1].copy(),
            "decoder_padding_mask": padding,
        },
    }

    def build(name, dtype):
        keras.utils.set_random_seed(3)
        if name == "gpt2":
            return gpt2.gpt2(30, 2, 2, 8, 16, max_sequence_length=8, dropout=0.0, dtype=dtype)
        return transformer.transformer(
            30, 30, 2, 2, 8, 16, max_sequence_length=8, dropout=0.0, dtype=dtype
        )

    for name, batch in batches.items():
        for dtype in (None, "mixed_bfloat16"):
            results = []
            for direct in (True, False):
                with monkeypatch.context() as patch:
                    if not direct:
                        _never_direct(patch)
                    model = build(name, dtype)
                    logits = to_numpy(ops.cast(model(batch, training=True), "float32"))
                    # SGD: the step is the gradient itself (Adam would magnify the
                    # rounding differences of XLA's fusions in near-zero gradients).
                    model.compile(
                        optimizer=keras.optimizers.SGD(0.1),
                        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    )
                    model.train_on_batch(batch, token_ids)
                    weights = [to_numpy(ops.cast(w, "float32")) for w in model.weights]
                    results.append((logits, weights))
            (logits, weights), (reference_logits, reference_weights) = results
            np.testing.assert_array_equal(logits, reference_logits, err_msg=f"{name} {dtype}")
            assert len(weights) == len(reference_weights)
            for w, ref in zip(weights, reference_weights):
                np.testing.assert_allclose(w, ref, rtol=1e-5, atol=1e-6, err_msg=f"{name} {dtype}")


def _dense(**kwargs):
    layer = keras.layers.Dense(3, **kwargs)
    layer.build((None, 4))
    return layer


def _mask_carrying(x):
    """`x` with the Keras mask `keras.layers.Masking` attaches (rows not all zero)."""
    x[0, -1] = 0.0
    return keras.layers.Masking(mask_value=0.0)(ops.convert_to_tensor(x))


@pytest.mark.parametrize(
    "name",
    ["unbuilt", "float16 input", "mixed policy, no scope", "activity regularizer", "keras mask"],
)
def test_falls_back_to_keras_call_when_it_would_do_work(name, call_counts):
    """Each condition under which `__call__` does something: the sublayer is called
    through it, and the result (dtype, mask, losses) is what Keras gives."""
    x = ops.convert_to_tensor(_normal(2, 4))
    if name == "unbuilt":
        layer, reference = keras.layers.Dense(3), None
    elif name == "float16 input":
        layer, x = _dense(), ops.convert_to_tensor(_normal(2, 4, dtype="float16"))
    elif name == "mixed policy, no scope":
        layer = _dense(dtype="mixed_bfloat16")
    elif name == "activity regularizer":
        layer = _dense(activity_regularizer="l2")
    else:
        layer = _dense()
        x = _mask_carrying(_normal(2, 3, 4))  # mask (2, 3)
    assert not sublayers._is_direct_call_safe(layer, (x,), {})
    call_counts.clear()
    result = sublayers.call_sublayer(layer, x)
    assert call_counts.get("Dense") == 1
    if name == "unbuilt":
        assert layer.built
        return
    call_counts.clear()
    reference = layer(x)
    assert ops.dtype(result) == ops.dtype(reference) == layer.compute_dtype
    np.testing.assert_array_equal(to_numpy(result), to_numpy(reference))
    if name == "activity regularizer":
        assert len(layer.losses) == 1  # each `__call__` records its own loss
    if name == "keras mask":
        from keras.src.backend import get_keras_mask

        np.testing.assert_array_equal(
            to_numpy(get_keras_mask(result)), to_numpy(get_keras_mask(x))
        )


def test_direct_when_the_parents_autocast_scope_is_the_sublayers():
    """Mixed precision inside a parent: the parent's `__call__` opened the bfloat16 scope,
    so the direct call reads the float32 kernel as bfloat16, as `__call__` would."""
    layer = _dense(dtype="mixed_bfloat16")
    x = ops.convert_to_tensor(_normal(2, 4, dtype="float32"))
    x16 = ops.cast(x, "bfloat16")
    from keras.src.backend import AutocastScope

    with AutocastScope("bfloat16"):
        assert sublayers._is_direct_call_safe(layer, (x16,), {})
        direct = sublayers.call_sublayer(layer, x16)
    reference = layer(x)
    assert ops.dtype(direct) == ops.dtype(reference) == "bfloat16"
    np.testing.assert_array_equal(to_numpy(ops.cast(direct, "float32")), to_numpy(ops.cast(reference, "float32")))


def test_stateless_call_of_a_mixed_precision_block_equals_its_call():
    """`stateless_call` runs the block's `call` without `__call__`, so no autocast scope is
    open: its sublayers must then go through their own `__call__` (which opens it)."""
    block = TransformerDecoderBlock(
        num_heads=2, intermediate_dim=16, use_cross_attention=False, dtype="mixed_bfloat16"
    )
    x = ops.convert_to_tensor(_normal(2, 5, 8))
    reference = block(x)
    outputs, _ = block.stateless_call(
        [v.value for v in block.trainable_variables],
        [v.value for v in block.non_trainable_variables],
        ops.cast(x, "bfloat16"),
    )
    assert ops.dtype(outputs) == ops.dtype(reference) == "bfloat16"
    np.testing.assert_array_equal(
        to_numpy(ops.cast(outputs, "float32")), to_numpy(ops.cast(reference, "float32"))
    )
