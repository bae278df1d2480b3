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


@pytest.mark.parametrize(
    "name", ["unbuilt", "float16 input", "mixed policy, no scope", "activity regularizer"]
)
def test_falls_back_to_keras_call_when_it_would_do_work(name, call_counts):
    """Each condition under which `__call__` does something: the sublayer is called
    through it, and the result (dtype, losses) is what Keras gives."""
    x = ops.convert_to_tensor(_normal(2, 4))
    if name == "unbuilt":
        layer = keras.layers.Dense(3)
    elif name == "float16 input":
        layer, x = _dense(), ops.convert_to_tensor(_normal(2, 4, dtype="float16"))
    elif name == "mixed policy, no scope":
        layer = _dense(dtype="mixed_bfloat16")
    else:
        layer = _dense(activity_regularizer="l2")
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


class _Parent(keras.layers.Layer):
    """A parent whose `__call__` opens its policy's autocast scope around `call_sublayer`."""

    def __init__(self, child, **kwargs):
        super().__init__(**kwargs)
        self.child = child

    def build(self, x_shape):
        self.child.build(x_shape)

    def call(self, x):
        return sublayers.call_sublayer(self.child, ops.cast(x, self.child.input_dtype))


@pytest.mark.parametrize(
    "parent_dtype, child, direct",
    [
        # The parent's scope (bfloat16) is the one the child's `__call__` would open.
        ("mixed_bfloat16", "dense mixed_bfloat16", True),
        ("float32", "dense float32", True),
        # A float32 child in a bfloat16 scope: its kernel would read as bfloat16.
        ("mixed_bfloat16", "dense float32", False),
        # A mixed child with no scope open: its kernel would read as float32.
        ("float32", "dense mixed_bfloat16", False),
        # Its variables never autocast, so no read tells which scope is open.
        ("mixed_bfloat16", "layer_norm mixed_bfloat16", False),
    ],
)
def test_direct_only_when_variables_read_as_under_keras_call(
    parent_dtype, child, direct, call_counts
):
    """Against Keras' own autocasting: the child's output (values and dtype) inside the
    parent equals the child called through `__call__` on the same input."""
    kind, child_dtype = child.split()
    make = keras.layers.Dense if kind == "dense" else keras.layers.LayerNormalization
    layer = make(3, dtype=child_dtype) if kind == "dense" else make(dtype=child_dtype)
    parent = _Parent(layer, dtype=parent_dtype)
    x = ops.convert_to_tensor(_normal(2, 3))
    parent.build((2, 3))
    call_counts.clear()
    inside = parent(x)
    assert call_counts.get(type(layer).__name__, 0) == (0 if direct else 1)
    reference = layer(ops.cast(ops.cast(x, parent.compute_dtype), layer.input_dtype))
    assert ops.dtype(inside) == ops.dtype(reference) == layer.compute_dtype
    np.testing.assert_array_equal(
        to_numpy(ops.cast(inside, "float32")), to_numpy(ops.cast(reference, "float32"))
    )


@pytest.mark.parametrize("block", ["encoder", "decoder", "attention", "feed_forward"])
def test_keras_masks_on_the_inputs_give_what_keras_call_gives(block, monkeypatch):
    """Inputs carrying a Keras mask (from `Embedding(mask_zero=True)`) in a functional
    model: the direct path ignores attached masks, so the parent must pass them on itself.
    The model's output, mask-weighted pooling included, equals the all-`__call__` run."""
    token_ids = np.array([[3, 4, 5, 0, 0], [6, 7, 8, 9, 0]], "int32")
    results = []
    for direct in (True, False):
        with monkeypatch.context() as patch:
            if not direct:
                _never_direct(patch)
            keras.utils.set_random_seed(5)
            ids = keras.Input((None,), dtype="int32")
            x = keras.layers.Embedding(20, 8, mask_zero=True)(ids)
            if block == "encoder":
                x = TransformerEncoderBlock(num_heads=2, intermediate_dim=16, normalize_first=True)(x)
            elif block == "decoder":
                memory = keras.layers.Embedding(20, 8, mask_zero=True)(ids)
                x = TransformerDecoderBlock(num_heads=2, intermediate_dim=16)(x, memory)
            elif block == "attention":
                x = MultiHeadAttention(num_heads=2, key_dim=4)(x)
            else:
                x = FeedForward(intermediate_dim=16)(x)
            pooled = keras.layers.GlobalAveragePooling1D()(x)  # averages unmasked rows
            model = keras.Model(ids, [x, pooled])
            results.append([to_numpy(y) for y in model(token_ids)])
    for direct, reference in zip(*results):
        np.testing.assert_array_equal(direct, reference)


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
