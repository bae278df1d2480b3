import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from keras import ops

from keras_transformers.layers import TransformerDecoderBlock
from tests.testing import BACKEND, run_layer_test, to_numpy

RNG = np.random.default_rng(0)
REPO_ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def _normal(*shape):
    return RNG.normal(size=shape).astype("float32")


def _padding(lengths, total):
    return np.arange(total)[None, :] < np.asarray(lengths)[:, None]  # (B, S) bool


def test_layer_contract_with_cross_attention(tmp_path):
    # Encoder longer than the decoder and with another hidden size.
    run_layer_test(
        TransformerDecoderBlock,
        {"num_heads": 2, "intermediate_dim": 16, "dropout": 0.1},
        {
            "decoder_sequence": _normal(2, 4, 8),
            "encoder_sequence": _normal(2, 6, 12),
            "decoder_padding_mask": _padding([4, 3], 4),
            "encoder_padding_mask": _padding([6, 2], 6),
        },
        expected_output_shape=(2, 4, 8),
        # softmax is invariant to a constant per query row: key biases get no gradient.
        allow_unchanged_weights=("key/bias",),
        tmp_path=tmp_path,
    )


def test_layer_contract_without_cross_attention(tmp_path):
    # GPT-2 style: pre-norm, tanh GELU, no encoder.
    run_layer_test(
        TransformerDecoderBlock,
        {
            "num_heads": 2,
            "intermediate_dim": 16,
            "activation": "gelu_approximate",
            "normalize_first": True,
            "use_cross_attention": False,
        },
        {"decoder_sequence": _normal(2, 5, 8), "decoder_padding_mask": _padding([5, 3], 5)},
        expected_output_shape=(2, 5, 8),
        allow_unchanged_weights=("key/bias",),
        tmp_path=tmp_path,
    )


def test_sublayer_names():
    block = TransformerDecoderBlock(2, 16)
    block(_normal(1, 3, 8), _normal(1, 4, 8))
    names = {layer.name for layer in block._flatten_layers(include_self=False, recursive=False)}
    assert names == {
        "self_attention",
        "self_attention_layer_norm",
        "self_attention_dropout",
        "cross_attention",
        "cross_attention_layer_norm",
        "cross_attention_dropout",
        "feedforward",
        "feedforward_layer_norm",
        "feedforward_dropout",
    }


@pytest.mark.parametrize(
    "init_kwargs",
    [{}, {"normalize_first": True, "use_cross_attention": False}],
    ids=["post_norm_cross", "pre_norm_gpt2"],
)
def test_causality_bit_for_bit(init_kwargs):
    block = TransformerDecoderBlock(2, 16, **init_kwargs)
    encoder = _normal(2, 5, 8) if block.use_cross_attention else None
    x = _normal(2, 7, 8)
    changed = x.copy()
    changed[:, 4] += 3.0
    a = to_numpy(block(x, encoder))
    b = to_numpy(block(changed, encoder))
    np.testing.assert_array_equal(a[:, :4], b[:, :4])
    assert not np.allclose(a[:, 4:], b[:, 4:])


def test_encoder_padding_invariance():
    block = TransformerDecoderBlock(2, 16)
    x, encoder = _normal(2, 4, 8), _normal(2, 6, 8)
    encoder_padding_mask = _padding([6, 3], 6)
    changed = encoder.copy()
    changed[1, 3:] = _normal(3, 8)
    a = to_numpy(block(x, encoder, encoder_padding_mask=encoder_padding_mask))
    b = to_numpy(block(x, changed, encoder_padding_mask=encoder_padding_mask))
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert not np.allclose(to_numpy(block(x, encoder))[1], to_numpy(block(x, changed))[1])


@pytest.mark.parametrize(
    "init_kwargs",
    [{}, {"normalize_first": True, "use_cross_attention": False}],
    ids=["post_norm_cross", "pre_norm_gpt2"],
)
def test_cached_decoding_equals_full_pass(init_kwargs):
    block = TransformerDecoderBlock(2, 16, **init_kwargs)
    batch, length = 2, 7
    x = _normal(batch, length, 8)
    cross = block.use_cross_attention
    encoder = _normal(batch, 5, 12) if cross else None
    encoder_padding_mask = _padding([5, 3], 5) if cross else None
    full = to_numpy(block(x, encoder, encoder_padding_mask=encoder_padding_mask))

    cache = block.self_attention.init_cache(batch, length)
    cross_cache = block.compute_cross_attention_cache(encoder) if cross else None
    # Prefill two tokens at once, then one token per step.
    steps = []
    for start, stop in [(0, 2)] + [(i, i + 1) for i in range(2, length)]:
        outputs = block(
            x[:, start:stop],
            encoder,
            encoder_padding_mask=encoder_padding_mask,
            self_attention_cache=cache,
            self_attention_cache_update_index=start,
            cross_attention_cache=cross_cache,
        )
        if cross:
            output, cache, returned_cross_cache = outputs
            np.testing.assert_array_equal(to_numpy(returned_cross_cache), to_numpy(cross_cache))
        else:
            output, cache = outputs
        steps.append(to_numpy(output))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)


def test_cross_attention_cache_matches_encoder_sequence():
    block = TransformerDecoderBlock(2, 16)
    x, encoder = _normal(2, 4, 8), _normal(2, 6, 12)
    padding = _padding([6, 4], 6)
    expected = to_numpy(block(x, encoder, encoder_padding_mask=padding))
    cross_cache = block.compute_cross_attention_cache(encoder)
    assert tuple(cross_cache.shape) == (2, 2, 6, 2, 4)
    # The cache is used as is: a different encoder_sequence beside it changes nothing.
    got, _ = block(
        x, _normal(2, 6, 12), encoder_padding_mask=padding, cross_attention_cache=cross_cache
    )
    np.testing.assert_allclose(to_numpy(got), expected, atol=1e-6)


def test_attention_scores():
    block = TransformerDecoderBlock(2, 16)
    x, encoder = _normal(2, 4, 8), _normal(2, 6, 12)
    # Example 1 has no encoder tokens at all: its cross-attention rows are empty.
    encoder_padding_mask = np.array([[True] * 4 + [False] * 2, [False] * 6])
    output, self_scores, cross_scores = block(
        x, encoder, encoder_padding_mask=encoder_padding_mask, return_attention_scores=True
    )
    np.testing.assert_allclose(
        to_numpy(output),
        to_numpy(block(x, encoder, encoder_padding_mask=encoder_padding_mask)),
        atol=1e-6,
    )
    self_scores, cross_scores = to_numpy(self_scores), to_numpy(cross_scores)
    assert self_scores.shape == (2, 2, 4, 4)
    assert cross_scores.shape == (2, 2, 4, 6)
    assert np.all(np.isfinite(to_numpy(output)))
    np.testing.assert_allclose(self_scores.sum(-1), 1.0, atol=1e-5)
    future = np.triu(np.ones((4, 4), bool), k=1)
    np.testing.assert_array_equal(self_scores[..., future], 0.0)
    np.testing.assert_allclose(cross_scores[0].sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(cross_scores[0, :, :, 4:], 0.0)
    np.testing.assert_array_equal(cross_scores[1], 0.0)


def test_return_order_with_scores_and_caches():
    block = TransformerDecoderBlock(2, 16)
    x, encoder = _normal(2, 1, 8), _normal(2, 6, 12)
    block(x, encoder)
    cache = block.self_attention.init_cache(2, 3)
    cross_cache = block.compute_cross_attention_cache(encoder)
    outputs = block(
        x,
        encoder,
        self_attention_cache=cache,
        self_attention_cache_update_index=0,
        cross_attention_cache=cross_cache,
        return_attention_scores=True,
    )
    shapes = [tuple(t.shape) for t in outputs]
    assert shapes == [(2, 1, 8), (2, 2, 1, 3), (2, 2, 1, 6), (2, 2, 3, 2, 4), (2, 2, 6, 2, 4)]
    gpt2 = TransformerDecoderBlock(2, 16, use_cross_attention=False)
    output, scores = gpt2(_normal(2, 3, 8), return_attention_scores=True)
    assert tuple(scores.shape) == (2, 2, 3, 3)


class MaskProbe(keras.layers.Layer):
    """Outputs the Keras mask it receives, as float32."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        return ops.cast(mask, "float32")

    def compute_mask(self, inputs, previous_mask=None):
        return None


def test_keras_masks_are_used_and_propagated():
    decoder_ids = np.array([[5, 3, 2, 7], [4, 6, 0, 0]], dtype="int32")
    encoder_ids = np.array([[1, 2, 3, 4, 5], [7, 8, 9, 0, 0]], dtype="int32")
    decoder_valid, encoder_valid = decoder_ids != 0, encoder_ids != 0
    decoder_embedding = keras.layers.Embedding(10, 8, mask_zero=True)
    encoder_embedding = keras.layers.Embedding(10, 12, mask_zero=True)
    block = TransformerDecoderBlock(2, 16)
    decoder_input = keras.Input((None,), dtype="int32")
    encoder_input = keras.Input((None,), dtype="int32")
    outputs = block(decoder_embedding(decoder_input), encoder_embedding(encoder_input))
    model = keras.Model([decoder_input, encoder_input], [outputs, MaskProbe()(outputs)])
    got, output_mask = (to_numpy(t) for t in model([decoder_ids, encoder_ids]))
    np.testing.assert_array_equal(output_mask, decoder_valid.astype("float32"))

    # numpy arrays carry no Keras mask
    decoder = to_numpy(decoder_embedding.embeddings)[decoder_ids]
    encoder = to_numpy(encoder_embedding.embeddings)[encoder_ids]
    explicit = to_numpy(
        block(
            decoder,
            encoder,
            decoder_padding_mask=decoder_valid,
            encoder_padding_mask=encoder_valid,
        )
    )
    np.testing.assert_allclose(got[decoder_valid], explicit[decoder_valid], atol=1e-6)
    unmasked = to_numpy(block(decoder, encoder))
    assert not np.allclose(unmasked[1, :2], explicit[1, :2])


def test_keras_mask_without_cross_attention():
    # The decoder sequence is the only tensor: Keras fills `mask`. Left padding, so that
    # the causal mask alone does not hide the padded tokens.
    token_ids = np.array([[5, 3, 2, 7], [0, 0, 4, 6]], dtype="int32")
    valid = token_ids != 0
    embedding = keras.layers.Embedding(10, 8, mask_zero=True)
    block = TransformerDecoderBlock(2, 16, use_cross_attention=False)
    ids = keras.Input((None,), dtype="int32")
    outputs = block(embedding(ids))
    model = keras.Model(ids, [outputs, MaskProbe()(outputs)])
    got, output_mask = (to_numpy(t) for t in model(token_ids))
    np.testing.assert_array_equal(output_mask, valid.astype("float32"))
    embedded = to_numpy(embedding.embeddings)[token_ids]  # a numpy array: no Keras mask
    explicit = to_numpy(block(embedded, decoder_padding_mask=valid))
    np.testing.assert_allclose(got[valid], explicit[valid], atol=1e-6)
    # The Keras mask arguments, given directly.
    for keras_mask in ({"mask": valid}, {"decoder_sequence_mask": valid}):
        np.testing.assert_allclose(
            to_numpy(block(embedded, **keras_mask))[valid], explicit[valid], atol=1e-6
        )
    assert not np.allclose(to_numpy(block(embedded))[valid], explicit[valid])


@pytest.mark.parametrize(
    "dropout, attention_dropout",
    [(0.3, 0.0), (0.0, 0.3), (0.3, None)],
    ids=["residual_only", "attention_only", "attention_defaults_to_dropout"],
)
def test_dropout_honours_training(dropout, attention_dropout):
    block = TransformerDecoderBlock(2, 16, dropout=dropout, attention_dropout=attention_dropout)
    x, encoder = _normal(2, 4, 8), _normal(2, 5, 8)
    inference = to_numpy(block(x, encoder, training=False))
    np.testing.assert_array_equal(inference, to_numpy(block(x, encoder, training=False)))
    np.testing.assert_array_equal(inference, to_numpy(block(x, encoder)))
    assert not np.allclose(to_numpy(block(x, encoder, training=True)), inference)
    expected = dropout if attention_dropout is None else attention_dropout
    assert block.self_attention.dropout == block.cross_attention.dropout == expected


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_heads": -1, "intermediate_dim": 8}, "num_heads.*Received: num_heads=-1"),
        ({"num_heads": 2, "intermediate_dim": 8, "dropout": 2}, "dropout.*Received: dropout=2"),
        (
            {"num_heads": 2, "intermediate_dim": 8, "use_cross_attention": 1},
            "use_cross_attention.*Received: use_cross_attention=1",
        ),
        (
            {"num_heads": 2, "intermediate_dim": 8, "layer_norm_epsilon": -1e-5},
            "layer_norm_epsilon.*Received: layer_norm_epsilon=-1e-05",
        ),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TransformerDecoderBlock(**kwargs)


def test_bad_inputs():
    x, encoder = _normal(2, 4, 10), _normal(2, 5, 12)
    with pytest.raises(ValueError, match="num_heads.*Received: num_heads=4.*hidden size 10"):
        TransformerDecoderBlock(4, 16)(x, encoder)
    with pytest.raises(ValueError, match="decoder_sequence.*rank 3.*shape=\\(4, 10\\)"):
        TransformerDecoderBlock(2, 16)(x[0], encoder)
    with pytest.raises(ValueError, match="encoder_sequence.*required.*use_cross_attention=True"):
        TransformerDecoderBlock(2, 16)(x)
    with pytest.raises(ValueError, match="encoder_sequence.*None.*use_cross_attention=False"):
        TransformerDecoderBlock(2, 16, use_cross_attention=False)(x, encoder)

    block = TransformerDecoderBlock(2, 16)
    block(x, encoder)
    with pytest.raises(ValueError, match="encoder_sequence.*required"):
        block(x)
    with pytest.raises(ValueError, match="decoder_sequence.*rank 3"):
        block(x[0], encoder)
    with pytest.raises(ValueError, match="encoder_sequence.*hidden size 8.*built for 12"):
        block(x, _normal(2, 5, 8))
    with pytest.raises(ValueError, match="decoder_padding_mask.*boolean.*int32"):
        block(x, encoder, decoder_padding_mask=np.ones((2, 4), "int32"))
    with pytest.raises(ValueError, match="encoder_padding_mask.*boolean.*float32"):
        block(x, encoder, encoder_padding_mask=np.ones((2, 5), "float32"))
    with pytest.raises(ValueError, match="self_attention_cache.*together"):
        block(x, encoder, self_attention_cache=block.self_attention.init_cache(2, 4))
    with pytest.raises(ValueError, match="self_attention_cache.*together"):
        block(x, encoder, self_attention_cache_update_index=0)

    gpt2 = TransformerDecoderBlock(2, 16, use_cross_attention=False)
    gpt2(x)
    with pytest.raises(ValueError, match="encoder_padding_mask.*use_cross_attention=False"):
        gpt2(x, encoder_padding_mask=np.ones((2, 5), bool))
    with pytest.raises(ValueError, match="use_cross_attention=False"):
        gpt2.compute_cross_attention_cache(encoder)


@pytest.mark.skipif(BACKEND == "tensorflow", reason="checks the other backends")
def test_layers_do_not_import_tensorflow():
    # Building and calling only: `get_config` goes through keras.initializers.serialize,
    # which imports TensorFlow by itself.
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        from keras_transformers.layers import (
            FeedForward, TransformerDecoderBlock, TransformerEncoderBlock,
        )
        x = np.random.rand(2, 4, 8).astype("float32")
        mask = np.ones((2, 4), bool)
        FeedForward(16)(x)
        TransformerEncoderBlock(2, 16, normalize_first=True)(x, padding_mask=mask)
        decoder = TransformerDecoderBlock(2, 16)
        decoder(x, x, encoder_padding_mask=mask, return_attention_scores=True)
        decoder(
            x[:, :1], x,
            self_attention_cache=decoder.self_attention.init_cache(2, 4),
            self_attention_cache_update_index=0,
            cross_attention_cache=decoder.compute_cross_attention_cache(x),
        )
        print("tensorflow" in sys.modules)
        """
    )
    env = dict(os.environ, KERAS_BACKEND=BACKEND, PYTHONPATH=os.path.abspath(REPO_ROOT))
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False"
