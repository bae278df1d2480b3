import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_transformers.layers import MultiHeadAttention, TokenAndPositionEmbedding
from tests.layers.test_sine_positional_encoding import paper_encoding
from tests.testing import run_layer_test, to_numpy

TOKEN_IDS = np.array([[5, 3, 2, 7, 1], [4, 6, 9, 0, 0]], dtype="int32")
SEGMENT_IDS = np.array([[0, 0, 1, 1, 1], [0, 1, 1, 0, 0]], dtype="int32")


def test_layer_contract_learned_with_segments(tmp_path):
    run_layer_test(
        TokenAndPositionEmbedding,
        {
            "vocabulary_size": 10,
            "max_sequence_length": 8,
            "hidden_dim": 6,
            "num_segments": 2,
            "scale_embeddings": True,
            "mask_zero": True,
            "embeddings_initializer": "random_normal",
            "dropout": 0.1,
        },
        {"token_ids": TOKEN_IDS, "segment_ids": SEGMENT_IDS},
        expected_output_shape=(2, 5, 6),
        tmp_path=tmp_path,
    )


def test_layer_contract_sinusoidal(tmp_path):
    run_layer_test(
        TokenAndPositionEmbedding,
        {
            "vocabulary_size": 10,
            "max_sequence_length": 8,
            "hidden_dim": 6,
            "position_kind": "sinusoidal",
        },
        {"token_ids": TOKEN_IDS},
        call_kwargs={"start_index": 2},
        expected_output_shape=(2, 5, 6),
        tmp_path=tmp_path,
    )


def test_learned_sum_matches_numpy():
    layer = TokenAndPositionEmbedding(10, 8, 6, num_segments=3, scale_embeddings=True)
    got = to_numpy(layer(TOKEN_IDS[:, 1:], segment_ids=SEGMENT_IDS[:, 1:] + 1, start_index=2))
    tokens = to_numpy(layer.token_embedding.embeddings)
    positions = to_numpy(layer.position_embedding.embeddings)
    segments = to_numpy(layer.segment_embedding.embeddings)
    expected = (
        tokens[TOKEN_IDS[:, 1:]] * math.sqrt(6)
        + positions[2:6][None]
        + segments[SEGMENT_IDS[:, 1:] + 1]
    )
    np.testing.assert_allclose(got, expected, atol=1e-6, rtol=0)
    # Without segment_ids, every token is in segment 0 (BERT's default).
    np.testing.assert_allclose(
        to_numpy(layer(TOKEN_IDS)),
        to_numpy(layer(TOKEN_IDS, segment_ids=np.zeros_like(TOKEN_IDS))),
        atol=0,
    )


def test_sinusoidal_sum_matches_paper_and_may_exceed_max_sequence_length():
    layer = TokenAndPositionEmbedding(10, 4, 7, position_kind="sinusoidal")
    token_ids = np.tile(TOKEN_IDS, (1, 3))  # 15 positions, more than max_sequence_length
    got = to_numpy(layer(token_ids, start_index=3))
    tokens = to_numpy(layer.token_embedding.embeddings)
    expected = tokens[token_ids] + paper_encoding(15, 7, start=3)[None]
    np.testing.assert_allclose(got, expected, atol=2e-5, rtol=0)
    assert not layer.position_embedding.weights


@pytest.mark.parametrize("position_kind", ["learned", "sinusoidal"])
def test_start_index_matches_full_pass(position_kind):
    layer = TokenAndPositionEmbedding(10, 8, 6, position_kind=position_kind)
    full = to_numpy(layer(TOKEN_IDS))
    step = to_numpy(layer(TOKEN_IDS[:, 3:4], start_index=ops.convert_to_tensor(3, "int32")))
    np.testing.assert_allclose(step, full[:, 3:4], atol=1e-6, rtol=0)
    assert not np.allclose(to_numpy(layer(TOKEN_IDS[:, 3:4])), full[:, 3:4])


def test_weight_paths_and_tying_handle():
    layer = TokenAndPositionEmbedding(10, 8, 6, num_segments=2, name="embeddings")
    assert isinstance(layer.token_embedding, keras.layers.Embedding)
    layer(TOKEN_IDS, segment_ids=SEGMENT_IDS)
    assert sorted(w.path for w in layer.weights) == [
        "embeddings/position_embedding/embeddings",
        "embeddings/segment_embedding/embeddings",
        "embeddings/token_embedding/embeddings",
    ]
    assert tuple(layer.token_embedding.embeddings.shape) == (10, 6)


def test_mask_zero_reaches_multi_head_attention():
    embedding = TokenAndPositionEmbedding(10, 8, 8, mask_zero=True)
    attention = MultiHeadAttention(2, 4)
    inputs = keras.Input((None,), dtype="int32")
    model = keras.Model(inputs, attention(embedding(inputs)))
    got = to_numpy(model(TOKEN_IDS))

    valid = TOKEN_IDS != 0
    np.testing.assert_array_equal(to_numpy(embedding.compute_mask(TOKEN_IDS)), valid)
    explicit = to_numpy(attention(embedding(TOKEN_IDS), padding_mask=valid))
    np.testing.assert_allclose(got[valid], explicit[valid], atol=1e-6)
    # As a query mask, padded rows output zeros; without any mask they would not.
    np.testing.assert_array_equal(got[~valid], 0.0)
    assert np.abs(to_numpy(attention(to_numpy(embedding(TOKEN_IDS))))[~valid]).min() > 0
    # Eager calls carry the mask too.
    np.testing.assert_allclose(to_numpy(attention(embedding(TOKEN_IDS))), got, atol=1e-6)

    unmasked = TokenAndPositionEmbedding(10, 8, 8)
    assert unmasked.compute_mask(TOKEN_IDS) is None


def test_dropout_follows_training():
    layer = TokenAndPositionEmbedding(10, 8, 6, dropout=0.5)
    inference = to_numpy(layer(TOKEN_IDS, training=False))
    np.testing.assert_array_equal(inference, to_numpy(layer(TOKEN_IDS)))
    training = to_numpy(layer(TOKEN_IDS, training=True))
    dropped = training == 0
    assert dropped.any() and not dropped.all()
    np.testing.assert_allclose(training[~dropped], 2 * inference[~dropped], rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"vocabulary_size": 0}, "vocabulary_size.*Received: vocabulary_size=0"),
        ({"max_sequence_length": -3}, "max_sequence_length.*Received: max_sequence_length=-3"),
        ({"hidden_dim": 4.0}, "hidden_dim.*Received: hidden_dim=4.0"),
        ({"num_segments": 0}, "num_segments.*Received: num_segments=0"),
        ({"position_kind": "rotary"}, "position_kind.*Received: position_kind='rotary'"),
        ({"dropout": 1.0}, "dropout.*Received: dropout=1.0"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    arguments = {"vocabulary_size": 10, "max_sequence_length": 8, "hidden_dim": 6, **kwargs}
    with pytest.raises(ValueError, match=match):
        TokenAndPositionEmbedding(**arguments)


def test_bad_call_arguments():
    layer = TokenAndPositionEmbedding(10, 8, 6)
    with pytest.raises(ValueError, match="token_ids.*integer.*dtype=float32"):
        layer(TOKEN_IDS.astype("float32"))
    with pytest.raises(ValueError, match="token_ids.*integer.*dtype=float32"):
        layer(keras.Input((None,)))  # keras.Input is float32 unless told otherwise
    with pytest.raises(ValueError, match="token_ids.*rank 2.*shape=\\(2, 5, 1\\)"):
        layer(TOKEN_IDS[..., None])
    with pytest.raises(ValueError, match="segment_ids.*num_segments=None"):
        layer(TOKEN_IDS, segment_ids=SEGMENT_IDS)
    with pytest.raises(ValueError, match="max_sequence_length` is 8.*sequence length 10"):
        layer(np.tile(TOKEN_IDS, (1, 2)))
    with pytest.raises(ValueError, match="start_index.*Received: start_index=-1"):
        layer(TOKEN_IDS, start_index=-1)
    segmented = TokenAndPositionEmbedding(10, 8, 6, num_segments=2)
    with pytest.raises(ValueError, match="segment_ids.*integer.*dtype=float32"):
        segmented(TOKEN_IDS, segment_ids=SEGMENT_IDS.astype("float32"))
    with pytest.raises(ValueError, match="segment_ids.*shape of `token_ids`.*shape=\\(2, 4\\)"):
        segmented(TOKEN_IDS, segment_ids=SEGMENT_IDS[:, :4])


def test_host_ids_out_of_range_are_value_errors():
    # Past the table, a gather returns NaN on JAX and wraps a negative id to the last row;
    # TensorFlow and PyTorch fail inside the kernel. NumPy ids are checked before that.
    layer = TokenAndPositionEmbedding(10, 8, 6, num_segments=2)
    with pytest.raises(ValueError, match="token_ids.*\\[0, 10\\).*values in \\[1, 10\\]"):
        layer(np.array([[1, 10]]))
    with pytest.raises(ValueError, match="token_ids.*\\[0, 10\\).*values in \\[-1, 1\\]"):
        layer(np.array([[1, -1]]))
    with pytest.raises(ValueError, match="segment_ids.*\\[0, 2\\).*values in \\[1, 2\\]"):
        layer(TOKEN_IDS, SEGMENT_IDS + 1)
    # The edges of the tables are in range.
    assert layer(np.array([[0, 9]]), np.array([[0, 1]])).shape == (1, 2, 6)
