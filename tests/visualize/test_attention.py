"""attention_scores against softmax(QK^T / sqrt(d)) recomputed in numpy, masks, and rollout."""

import numpy as np
import pytest

from keras_transformers import visualize
from keras_transformers.models.bert import bert, bert_classifier
from keras_transformers.models.gpt2 import gpt2
from keras_transformers.models.transformer import transformer
from keras_transformers.models.vit import vit
from tests.testing import to_numpy


def _gpt2():
    return gpt2(vocabulary_size=20, num_layers=2, num_heads=2, hidden_dim=8,
                intermediate_dim=16, max_sequence_length=8, dropout=0.1)


def _gpt2_inputs():
    token_ids = np.array([[3, 1, 4, 1, 5], [9, 2, 6, 0, 0]], "int32")
    padding_mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], "int32")
    return {"token_ids": token_ids, "padding_mask": padding_mask}


def _layer_norm(x, gamma, beta, epsilon):
    mean = x.mean(-1, keepdims=True)
    variance = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


def test_gpt2_first_layer_equals_softmax_of_scaled_dot_products():
    model, inputs = _gpt2(), _gpt2_inputs()
    scores = visualize.attention_scores(model, inputs)
    assert list(scores) == ["decoder_block_0/self_attention", "decoder_block_1/self_attention"]

    # Independent reference from the weights: x = E[ids] + P[:T]; pre-norm; Q, K; softmax.
    embeddings = to_numpy(model.get_layer("token_embedding").embeddings)
    positions = to_numpy(model.get_layer("position_embedding").embeddings)
    x = embeddings[inputs["token_ids"]] + positions[None, :5]  # (B, T, D)
    block = model.get_layer("decoder_block_0")
    norm = block.self_attention_layer_norm
    h = _layer_norm(x, to_numpy(norm.gamma), to_numpy(norm.beta), norm.epsilon)
    attention = block.self_attention
    query = np.einsum("btd,dnh->btnh", h, to_numpy(attention.query_dense.kernel)) + to_numpy(
        attention.query_dense.bias)
    key = np.einsum("btd,dnh->btnh", h, to_numpy(attention.key_dense.kernel)) + to_numpy(
        attention.key_dense.bias)
    logits = np.einsum("btnh,bsnh->bnts", query, key) / np.sqrt(attention.key_dim)
    allowed = np.tril(np.ones((5, 5), bool))[None, None] & inputs["padding_mask"].astype(bool)[:, None, None, :]
    logits = np.where(allowed, logits, -np.inf)
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)

    got = scores["decoder_block_0/self_attention"]
    np.testing.assert_allclose(got, expected, atol=1e-5)
    for value in scores.values():
        np.testing.assert_allclose(value.sum(-1), 1.0, atol=1e-5)
        assert np.all(value[1, :, :, 3:] == 0)  # padded keys
        assert np.all(np.triu(value[0, 0], k=1) == 0)  # future keys


def test_transformer_self_and_cross_attention_hide_padding():
    model = transformer(13, 11, num_layers=1, num_heads=2, hidden_dim=8, intermediate_dim=16)
    inputs = {
        "encoder_token_ids": np.array([[5, 6, 7, 8], [5, 6, 0, 0]], "int32"),
        "encoder_padding_mask": np.array([[1, 1, 1, 1], [1, 1, 0, 0]], "int32"),
        "decoder_token_ids": np.array([[1, 2, 3], [1, 4, 0]], "int32"),
        "decoder_padding_mask": np.array([[1, 1, 1], [1, 1, 0]], "int32"),
    }
    scores = visualize.attention_scores(model, inputs)
    assert list(scores) == [
        "encoder_block_0/self_attention",
        "decoder_block_0/self_attention",
        "decoder_block_0/cross_attention",
    ]
    assert scores["decoder_block_0/cross_attention"].shape == (2, 2, 3, 4)
    for value in scores.values():
        np.testing.assert_allclose(value.sum(-1), 1.0, atol=1e-5)
    assert np.all(scores["encoder_block_0/self_attention"][1, :, :, 2:] == 0)
    assert np.all(scores["decoder_block_0/cross_attention"][1, :, :, 2:] == 0)
    assert np.all(scores["decoder_block_0/self_attention"][1, :, :, 2:] == 0)


def test_bert_heads_and_vit():
    backbone = bert(vocabulary_size=30, num_layers=2, num_heads=2, hidden_dim=8,
                    intermediate_dim=16, max_sequence_length=8)
    inputs = {"token_ids": np.array([[2, 7, 9, 0]], "int32"),
              "segment_ids": np.zeros((1, 4), "int32"),
              "padding_mask": np.array([[1, 1, 1, 0]], "int32")}
    for model in (backbone, bert_classifier(backbone, num_classes=2)):
        scores = visualize.attention_scores(model, inputs)
        assert [v.shape for v in scores.values()] == [(1, 2, 4, 4)] * 2
        assert np.all(scores["encoder_block_1/self_attention"][..., 3] == 0)
        np.testing.assert_allclose(scores["encoder_block_0/self_attention"].sum(-1), 1.0, atol=1e-5)

    model = vit(image_size=8, patch_size=4, num_layers=1, num_heads=2, hidden_dim=8,
                intermediate_dim=16, num_classes=3)
    images = np.random.default_rng(0).random((2, 8, 8, 3)).astype("float32")
    scores = visualize.attention_scores(model, {"images": images})
    assert scores["encoder_block_0/self_attention"].shape == (2, 2, 5, 5)  # class token + 4 patches


def test_unknown_model_and_bad_inputs_raise():
    import keras

    inputs = keras.Input((3,))
    with pytest.raises(ValueError, match="`model` must be built by keras_transformers"):
        visualize.attention_scores(keras.Model(inputs, inputs), {"x": np.zeros((1, 3))})
    with pytest.raises(ValueError, match="padding_mask"):
        visualize.attention_scores(_gpt2(), {"token_ids": np.zeros((1, 3), "int32")})


def test_rollout_is_the_product_of_residual_mixed_attention():
    rng = np.random.default_rng(0)
    layers = [rng.dirichlet(np.ones(4), size=(1, 2, 4)).astype("float32") for _ in range(3)]
    mixed = [0.5 * np.eye(4) + 0.5 * a[0].mean(0) for a in layers]
    expected = mixed[2] @ mixed[1] @ mixed[0]
    rollout = visualize.attention_rollout(layers)
    np.testing.assert_allclose(rollout[0], expected, atol=1e-5)
    np.testing.assert_allclose(rollout.sum(-1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="residual_weight"):
        visualize.attention_rollout(layers, residual_weight=2)
