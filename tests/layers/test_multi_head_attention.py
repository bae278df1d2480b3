import keras
import numpy as np
import pytest
from keras import ops

from keras_transformers.layers import MultiHeadAttention
from tests.testing import run_layer_test, to_numpy

RNG = np.random.default_rng(0)


def _normal(*shape):
    return RNG.normal(size=shape).astype("float32")


def _padding(lengths, total):
    return np.arange(total)[None, :] < np.asarray(lengths)[:, None]  # (B, S) bool


def test_layer_contract_self_attention(tmp_path):
    run_layer_test(
        MultiHeadAttention,
        {"num_heads": 2, "key_dim": 4, "dropout": 0.1},
        {"query": _normal(2, 5, 8), "padding_mask": _padding([5, 3], 5)},
        call_kwargs={"use_causal_mask": True},
        expected_output_shape=(2, 5, 8),
        # softmax is invariant to a constant per query row: the key bias gets no gradient.
        allow_unchanged_weights=("key/bias",),
        tmp_path=tmp_path,
    )


def test_layer_contract_cross_attention_with_scores(tmp_path):
    _, (output, scores) = run_layer_test(
        MultiHeadAttention,
        {"num_heads": 3, "key_dim": 4, "value_dim": 5, "output_dim": 6},
        {"query": _normal(2, 4, 8), "value": _normal(2, 7, 10)},
        call_kwargs={"return_attention_scores": True},
        expected_output_shape=(2, 4, 6),
        allow_unchanged_weights=("key/bias",),
        tmp_path=tmp_path,
    )
    assert tuple(scores.shape) == (2, 3, 4, 7)
    np.testing.assert_allclose(to_numpy(scores).sum(-1), 1.0, atol=1e-5)


def _pair(num_heads=2, key_dim=4, query_dim=8, value_dim=None, dropout=0.0):
    """Our layer and Keras' MultiHeadAttention with the same weights."""
    ours = MultiHeadAttention(num_heads, key_dim, dropout=dropout)
    theirs = keras.layers.MultiHeadAttention(num_heads, key_dim, dropout=dropout)
    value_dim = value_dim or query_dim
    ours.build((None, None, query_dim), (None, None, value_dim))
    theirs.build((None, None, query_dim), (None, None, value_dim))
    their_weights = {w.path.split("/", 1)[1]: w for w in theirs.weights}
    for weight in ours.weights:
        weight.assign(their_weights[weight.path.split("/", 1)[1]])
    return ours, theirs


@pytest.mark.parametrize("case", ["no_mask", "padding", "causal", "causal_padding", "cross"])
def test_matches_keras_multi_head_attention(case):
    query = _normal(2, 6, 8)
    value = _normal(2, 9, 12) if case == "cross" else query
    ours, theirs = _pair(value_dim=value.shape[-1])
    padding = _padding([6, 4], 6) if "padding" in case else None
    causal = "causal" in case
    expected, expected_scores = theirs(
        query,
        value,
        attention_mask=None if padding is None else np.repeat(padding[:, None, :], 6, axis=1),
        use_causal_mask=causal,
        return_attention_scores=True,
    )
    got = ours(query, None if case != "cross" else value, padding_mask=padding, use_causal_mask=causal)
    got_with_scores, scores = ours(
        query,
        None if case != "cross" else value,
        padding_mask=padding,
        use_causal_mask=causal,
        return_attention_scores=True,
    )
    np.testing.assert_allclose(to_numpy(got), to_numpy(expected), atol=1e-5)
    np.testing.assert_allclose(to_numpy(got_with_scores), to_numpy(expected), atol=1e-5)
    np.testing.assert_allclose(to_numpy(scores), to_numpy(expected_scores), atol=1e-6)


class _MaskProbe(keras.layers.Layer):
    """Returns the Keras mask it receives, as floats."""

    def __init__(self):
        super().__init__()
        self.supports_masking = True

    def call(self, inputs, mask=None):
        return ops.cast(mask, "float32")

    def compute_mask(self, inputs, mask=None):
        return None


def test_keras_masks_match_keras_layer_and_propagate():
    token_ids = np.array([[5, 3, 2, 7, 1], [4, 6, 9, 0, 0]], dtype="int32")
    inputs = keras.Input((None,), dtype="int32")
    embedded = keras.layers.Embedding(10, 8, mask_zero=True)(inputs)
    attention = MultiHeadAttention(2, 4)
    outputs = attention(embedded)
    model = keras.Model(inputs, outputs)
    got = to_numpy(model(token_ids))

    embeddings = model.layers[1](token_ids)
    explicit = to_numpy(attention(embeddings, padding_mask=token_ids != 0))
    valid = token_ids != 0
    np.testing.assert_allclose(got[valid], explicit[valid], atol=1e-6)
    # Padded queries have nothing to attend to once the query mask applies: zeros.
    np.testing.assert_array_equal(got[~valid], 0.0)

    # The output mask reaches the next layer.
    mask_probe = _MaskProbe()
    probe_model = keras.Model(inputs, mask_probe(outputs))
    np.testing.assert_array_equal(to_numpy(probe_model(token_ids)), valid.astype("float32"))


def test_causality_bit_for_bit():
    layer = MultiHeadAttention(2, 4)
    x = _normal(1, 8, 8)
    changed = x.copy()
    changed[:, 5] += 3.0
    for scores in (False, True):
        a = layer(x, use_causal_mask=True, return_attention_scores=scores)
        b = layer(changed, use_causal_mask=True, return_attention_scores=scores)
        a, b = (a[0], b[0]) if scores else (a, b)
        np.testing.assert_array_equal(to_numpy(a)[:, :5], to_numpy(b)[:, :5])
        assert not np.allclose(to_numpy(a)[:, 5:], to_numpy(b)[:, 5:])


def test_padding_invariance():
    layer = MultiHeadAttention(2, 4)
    x = _normal(2, 6, 8)
    padding = _padding([6, 3], 6)
    changed = x.copy()
    changed[1, 3:] = _normal(3, 8)
    a = to_numpy(layer(x, padding_mask=padding))
    b = to_numpy(layer(changed, padding_mask=padding))
    np.testing.assert_allclose(a[1, :3], b[1, :3], atol=1e-6)
    np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.parametrize("policy", ["float32", "mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("scores", [False, True])
def test_fully_masked_rows_are_zero_and_finite(policy, scores):
    layer = MultiHeadAttention(2, 4, dtype=policy)
    x = _normal(2, 4, 8)
    attention_mask = np.ones((2, 4, 4), dtype=bool)
    attention_mask[0, 1] = False  # query 1 of example 0 may attend to nothing
    padding = np.array([[True] * 4, [False] * 4])  # example 1 has no keys at all
    result = layer(x, attention_mask=attention_mask, padding_mask=padding, return_attention_scores=scores)
    output = to_numpy(ops.cast(result[0] if scores else result, "float32"))
    assert np.all(np.isfinite(output))
    np.testing.assert_array_equal(output[0, 1], 0.0)
    np.testing.assert_array_equal(output[1], 0.0)
    assert np.abs(output[0, [0, 2, 3]]).min() > 0
    if scores:
        probabilities = to_numpy(ops.cast(result[1], "float32"))
        assert np.all(np.isfinite(probabilities))
        np.testing.assert_array_equal(probabilities[0, :, 1], 0.0)
        np.testing.assert_allclose(probabilities[0, :, 0].sum(-1), 1.0, atol=1e-2)


def test_cached_decoding_equals_full_pass():
    layer = MultiHeadAttention(2, 4)
    x = _normal(2, 7, 8)
    padding = np.ones((2, 7), dtype=bool)
    full = to_numpy(layer(x, use_causal_mask=True, padding_mask=padding))

    cache = layer.init_cache(batch_size=2, max_length=7)
    # Prefill three tokens at once, then one token per step.
    out, cache = layer(x[:, :3], use_causal_mask=True, cache=cache, cache_update_index=0)
    steps = [to_numpy(out)]
    for index in range(3, 7):
        out, cache = layer(
            x[:, index : index + 1], use_causal_mask=True, cache=cache, cache_update_index=index
        )
        steps.append(to_numpy(out))
    np.testing.assert_allclose(np.concatenate(steps, axis=1), full, atol=1e-5)

    # The cache holds exactly the keys and values of the full sequence.
    np.testing.assert_allclose(to_numpy(cache[:, 0]), to_numpy(layer.key_dense(x)), atol=1e-6)


def test_cross_attention_cache_is_used_as_is():
    layer = MultiHeadAttention(2, 4)
    query, memory = _normal(2, 3, 8), _normal(2, 5, 8)
    padding = _padding([5, 2], 5)
    full = to_numpy(layer(query, memory, padding_mask=padding))
    cache = ops.stack([layer.key_dense(memory), layer.value_dense(memory)], axis=1)
    cached, returned_cache = layer(query, memory, padding_mask=padding, cache=cache)
    np.testing.assert_allclose(to_numpy(cached), full, atol=1e-6)
    np.testing.assert_array_equal(to_numpy(returned_cache), to_numpy(cache))


def test_dropout_honours_training_and_inference_takes_fast_path(monkeypatch):
    layer = MultiHeadAttention(2, 4, dropout=0.5)
    no_dropout = MultiHeadAttention(2, 4)
    x = _normal(2, 6, 8)
    layer(x)
    no_dropout(x)
    for source, target in zip(layer.weights, no_dropout.weights):
        target.assign(source)

    calls = []
    original = keras.ops.dot_product_attention

    def counting(*args, **kwargs):
        calls.append(kwargs.get("is_causal"))
        return original(*args, **kwargs)

    monkeypatch.setattr(keras.ops, "dot_product_attention", counting)

    inference = to_numpy(layer(x, use_causal_mask=True, training=False))
    assert calls == [True], "dropout layer at inference must use the fused kernel, mask-free"
    np.testing.assert_array_equal(inference, to_numpy(layer(x, use_causal_mask=True, training=False)))
    reference = to_numpy(no_dropout(x, use_causal_mask=True))
    np.testing.assert_allclose(inference, reference, atol=1e-6)
    calls.clear()
    training = to_numpy(layer(x, use_causal_mask=True, training=True))
    assert calls == [], "training with dropout needs the explicit-probabilities path"
    assert not np.allclose(training, inference)
    layer(x, return_attention_scores=True)
    assert calls == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_heads": 0, "key_dim": 4}, "num_heads.*Received: num_heads=0"),
        ({"num_heads": 2, "key_dim": 2.5}, "key_dim.*Received: key_dim=2.5"),
        ({"num_heads": 2, "key_dim": 4, "dropout": 1.5}, "dropout.*Received: dropout=1.5"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MultiHeadAttention(**kwargs)


def test_bad_call_arguments():
    layer = MultiHeadAttention(2, 4)
    x = _normal(2, 5, 8)
    layer(x)
    with pytest.raises(ValueError, match="query.*rank 3.*shape=\\(5, 8\\)"):
        layer(x[0])
    with pytest.raises(ValueError, match="query.*hidden size 6.*built for 8"):
        layer(_normal(2, 5, 6))
    with pytest.raises(ValueError, match="padding_mask.*boolean.*int"):
        layer(x, padding_mask=np.ones((2, 5), dtype="int32"))
    with pytest.raises(ValueError, match="padding_mask.*rank 2"):
        layer(x, padding_mask=np.ones((2, 1, 5), dtype=bool))
    with pytest.raises(ValueError, match="padding_mask.*5 positions.*shape=\\(2, 4\\)"):
        layer(x, padding_mask=np.ones((2, 4), dtype=bool))
    with pytest.raises(ValueError, match="attention_mask.*5 positions.*shape=\\(2, 3, 5\\)"):
        layer(x, attention_mask=np.ones((2, 3, 5), dtype=bool))
    with pytest.raises(ValueError, match="cache.*Received: cache with shape=\\(2, 2, 5, 3, 4\\)"):
        layer(x, cache=np.zeros((2, 2, 5, 3, 4), "float32"), cache_update_index=0)


@pytest.mark.parametrize("argument", ["query", "value", "key"])
def test_wrong_rank_on_first_call_is_a_value_error(argument):
    # The first call builds the layer before `call` runs: the check must come first there.
    x = _normal(2, 5, 8)
    inputs = {"query": x, "value": x, "key": x, argument: x[0]}
    with pytest.raises(ValueError, match=f"`{argument}` must have rank 3.*shape=\\(5, 8\\)"):
        MultiHeadAttention(2, 4)(inputs["query"], inputs["value"], inputs["key"])


def test_batch_sizes_must_agree():
    layer, x = MultiHeadAttention(2, 4), _normal(2, 5, 8)
    with pytest.raises(ValueError, match="one batch size.*query with batch size 2.*value with "
                       "batch size 1"):
        layer(x, _normal(1, 5, 8))
    cache = np.zeros((1, 2, 6, 2, 4), "float32")
    with pytest.raises(ValueError, match="one batch size.*cache with batch size 1"):
        layer(x[:, :1], cache=cache, cache_update_index=0)


def test_cache_update_index_must_fit_the_cache():
    layer, x = MultiHeadAttention(2, 4), _normal(2, 2, 8)
    cache = layer.init_cache(2, 6)
    # Positions 4 and 5 are the last two: fine. Past them the kernels would clamp the
    # write to the end of the cache, silently.
    assert layer(x, cache=cache, cache_update_index=4)[1].shape == (2, 2, 6, 2, 4)
    with pytest.raises(ValueError, match="2 new positions.*cache's 6.*cache_update_index=5"):
        layer(x, cache=cache, cache_update_index=5)
    with pytest.raises(ValueError, match="non-negative.*cache_update_index=-1"):
        layer(x, cache=cache, cache_update_index=-1)
    with pytest.raises(ValueError, match="needs a `cache`.*cache_update_index=0"):
        layer(x, cache_update_index=0)


def test_fused_path_mask_spells_out_the_query_axis(monkeypatch):
    # cuDNN's fused attention (JAX, half precision on a GPU) rejects a mask whose query
    # axis is broadcast (seen on an H200: "Bias must have same seq length as QKV, got 1
    # and 128") and falls back to the unfused kernel; a padding-only mask must reach
    # dot_product_attention as (B, 1, T, S).
    layer = MultiHeadAttention(2, 4)
    x = _normal(2, 6, 8)
    padding = np.ones((2, 6), bool)
    padding[1, 4:] = False
    reference = to_numpy(layer(x, padding_mask=padding, return_attention_scores=True)[0])
    shapes = []
    original = keras.ops.dot_product_attention

    def recording(*args, **kwargs):
        shapes.append(tuple(kwargs["mask"].shape))
        return original(*args, **kwargs)

    monkeypatch.setattr(keras.ops, "dot_product_attention", recording)
    fused = to_numpy(layer(x, padding_mask=padding))
    assert shapes == [(2, 1, 6, 6)]
    np.testing.assert_allclose(fused, reference, atol=1e-6)
