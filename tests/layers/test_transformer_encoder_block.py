import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_transformers.layers import TransformerEncoderBlock
from tests.testing import assert_same_sgd_step, run_layer_test, to_numpy

RNG = np.random.default_rng(0)


def _normal(*shape):
    return RNG.normal(size=shape).astype("float32")


def _padding(lengths, total):
    return np.arange(total)[None, :] < np.asarray(lengths)[:, None]  # (B, T) bool


@pytest.mark.parametrize(
    "init_kwargs, call_kwargs",
    [
        ({"num_heads": 2, "intermediate_dim": 16, "dropout": 0.1}, {}),
        (
            {
                "num_heads": 4,
                "intermediate_dim": 16,
                "activation": "gelu",
                "normalize_first": True,
                "attention_dropout": 0.0,
            },
            {"use_causal_mask": True},
        ),
    ],
    ids=["post_norm", "pre_norm"],
)
def test_layer_contract(tmp_path, init_kwargs, call_kwargs):
    run_layer_test(
        TransformerEncoderBlock,
        init_kwargs,
        {"inputs": _normal(2, 5, 8), "padding_mask": _padding([5, 3], 5)},
        call_kwargs=call_kwargs,
        expected_output_shape=(2, 5, 8),
        # softmax is invariant to a constant per query row: the key bias gets no gradient.
        allow_unchanged_weights=("key/bias",),
        tmp_path=tmp_path,
    )


# A numpy forward pass written from the paper, reading the block's weights.


def _layer_norm(x, layer, epsilon):
    gamma, beta = to_numpy(layer.gamma), to_numpy(layer.beta)
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + epsilon) * gamma + beta


def _attention(x, layer, padding_mask):
    def project(dense):  # (B, T, D) x (D, N, H) -> (B, T, N, H)
        return np.einsum("btd,dnh->btnh", x, to_numpy(dense.kernel)) + to_numpy(dense.bias)

    query, key, value = (
        project(dense) for dense in (layer.query_dense, layer.key_dense, layer.value_dense)
    )
    logits = np.einsum("btnh,bsnh->bnts", query, key) / math.sqrt(query.shape[-1])
    logits = np.where(padding_mask[:, None, None, :], logits, -np.inf)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    context = np.einsum("bnts,bsnh->btnh", weights, value)
    output = layer.output_dense
    return np.einsum("btnh,nhd->btd", context, to_numpy(output.kernel)) + to_numpy(output.bias)


def _feedforward(x, layer, activation):
    hidden = x @ to_numpy(layer.intermediate_dense.kernel) + to_numpy(layer.intermediate_dense.bias)
    if activation == "relu":
        hidden = np.maximum(hidden, 0.0)
    else:
        hidden = 0.5 * hidden * (1.0 + np.vectorize(math.erf)(hidden / math.sqrt(2.0)))
    return hidden @ to_numpy(layer.output_dense.kernel) + to_numpy(layer.output_dense.bias)


def _numpy_encoder_block(x, block, padding_mask, activation, normalize_first, epsilon):
    def attention(h):
        return _attention(h, block.self_attention, padding_mask)

    def feedforward(h):
        return _feedforward(h, block.feedforward, activation)

    for branch, norm in (
        (attention, block.self_attention_layer_norm),
        (feedforward, block.feedforward_layer_norm),
    ):
        if normalize_first:
            x = x + branch(_layer_norm(x, norm, epsilon))
        else:
            x = _layer_norm(x + branch(x), norm, epsilon)
    return x


@pytest.mark.parametrize(
    "normalize_first, activation", [(False, "relu"), (True, "gelu")], ids=["post_norm", "pre_norm"]
)
def test_matches_numpy_forward_pass(normalize_first, activation):
    block = TransformerEncoderBlock(
        num_heads=2,
        intermediate_dim=16,
        activation=activation,
        layer_norm_epsilon=1e-6,
        normalize_first=normalize_first,
    )
    x = _normal(2, 6, 8)
    padding_mask = _padding([6, 4], 6)
    block(x)
    # Every weight random, gamma around 1, so that no term of the formula is trivial.
    for weight in block.weights:
        value = RNG.normal(size=weight.shape, scale=0.3)
        weight.assign(value + 1.0 if weight.path.endswith("gamma") else value)
    got = to_numpy(block(x, padding_mask=padding_mask))
    expected = _numpy_encoder_block(
        x.astype("float64"), block, padding_mask, activation, normalize_first, 1e-6
    )
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_post_norm_and_pre_norm_differ():
    x = _normal(2, 5, 8)
    outputs = []
    for normalize_first in (False, True):
        keras.utils.set_random_seed(1)
        outputs.append(to_numpy(TransformerEncoderBlock(2, 16, normalize_first=normalize_first)(x)))
    assert not np.allclose(outputs[0], outputs[1])


def test_padding_invariance():
    block = TransformerEncoderBlock(2, 16)
    x = _normal(2, 6, 8)
    padding_mask = _padding([6, 3], 6)
    changed = x.copy()
    changed[1, 3:] = _normal(3, 8)
    a = to_numpy(block(x, padding_mask=padding_mask))
    b = to_numpy(block(changed, padding_mask=padding_mask))
    np.testing.assert_allclose(a[1, :3], b[1, :3], atol=1e-6)
    np.testing.assert_array_equal(a[0], b[0])
    # Without the mask, the change reaches the unpadded positions.
    assert not np.allclose(to_numpy(block(x))[1, :3], to_numpy(block(changed))[1, :3])


def test_causal_mask_is_passed_on():
    block = TransformerEncoderBlock(2, 16, normalize_first=True)
    x = _normal(1, 6, 8)
    changed = x.copy()
    changed[:, 4] += 2.0
    a = to_numpy(block(x, use_causal_mask=True))
    b = to_numpy(block(changed, use_causal_mask=True))
    np.testing.assert_array_equal(a[:, :4], b[:, :4])
    assert not np.allclose(a[:, 4:], b[:, 4:])


class MaskProbe(keras.layers.Layer):
    """Outputs the Keras mask it receives, as float32."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs, mask=None):
        return ops.cast(mask, "float32")

    def compute_mask(self, inputs, previous_mask=None):
        return None


@pytest.mark.parametrize("second_tensor", [False, True], ids=["inputs_only", "with_attention_mask"])
def test_keras_mask_is_used_and_propagated(second_tensor):
    # Keras fills `mask` when `inputs` is the only tensor, `inputs_mask` otherwise.
    token_ids = np.array([[5, 3, 2, 7, 1], [4, 6, 9, 0, 0]], dtype="int32")
    valid = token_ids != 0
    ids = keras.Input((None,), dtype="int32")
    attention_input = keras.Input((None, None), dtype="bool")
    embedding = keras.layers.Embedding(10, 8, mask_zero=True)
    block = TransformerEncoderBlock(2, 16)
    if second_tensor:
        outputs = block(embedding(ids), attention_mask=attention_input)
        model_inputs = [ids, attention_input]
        data = [token_ids, np.ones((2, 5, 5), dtype=bool)]
    else:
        outputs = block(embedding(ids))
        model_inputs, data = ids, token_ids
    model = keras.Model(model_inputs, [outputs, MaskProbe()(outputs)])
    got, output_mask = (to_numpy(t) for t in model(data))

    np.testing.assert_array_equal(output_mask, valid.astype("float32"))
    embedded = to_numpy(embedding.embeddings)[token_ids]  # a numpy array: no Keras mask
    explicit = to_numpy(block(embedded, padding_mask=valid))
    np.testing.assert_allclose(got[valid], explicit[valid], atol=1e-6)
    assert not np.allclose(to_numpy(block(embedded))[valid], explicit[valid])
    # The Keras mask arguments, given directly.
    for keras_mask in ({"mask": valid}, {"inputs_mask": valid}):
        np.testing.assert_allclose(
            to_numpy(block(embedded, **keras_mask))[valid], explicit[valid], atol=1e-6
        )


def test_attention_scores():
    block = TransformerEncoderBlock(2, 16)
    x = _normal(2, 5, 8)
    padding_mask = _padding([5, 3], 5)
    output, scores = block(x, padding_mask=padding_mask, return_attention_scores=True)
    np.testing.assert_allclose(
        to_numpy(output), to_numpy(block(x, padding_mask=padding_mask)), atol=1e-6
    )
    scores = to_numpy(scores)
    assert scores.shape == (2, 2, 5, 5)
    np.testing.assert_allclose(scores.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(scores[1, :, :, 3:], 0.0)


def test_fully_padded_example_stays_finite():
    block = TransformerEncoderBlock(2, 16)
    padding_mask = np.array([[True] * 4, [False] * 4])
    output = to_numpy(block(_normal(2, 4, 8), padding_mask=padding_mask))
    assert np.all(np.isfinite(output))


@pytest.mark.parametrize(
    "dropout, attention_dropout",
    [(0.3, 0.0), (0.0, 0.3), (0.3, None)],
    ids=["residual_only", "attention_only", "attention_defaults_to_dropout"],
)
def test_dropout_honours_training(dropout, attention_dropout):
    block = TransformerEncoderBlock(2, 16, dropout=dropout, attention_dropout=attention_dropout)
    x = _normal(2, 5, 8)
    inference = to_numpy(block(x, training=False))
    np.testing.assert_array_equal(inference, to_numpy(block(x, training=False)))
    np.testing.assert_array_equal(inference, to_numpy(block(x)))
    assert not np.allclose(to_numpy(block(x, training=True)), inference)
    expected = dropout if attention_dropout is None else attention_dropout
    assert block.self_attention.dropout == expected


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_heads": 0, "intermediate_dim": 8}, "num_heads.*Received: num_heads=0"),
        (
            {"num_heads": 2, "intermediate_dim": None},
            "intermediate_dim.*Received: intermediate_dim=None",
        ),
        (
            {"num_heads": 2, "intermediate_dim": 8, "dropout": -0.1},
            "dropout.*Received: dropout=-0.1",
        ),
        (
            {"num_heads": 2, "intermediate_dim": 8, "attention_dropout": 1},
            "attention_dropout.*Received: attention_dropout=1",
        ),
        (
            {"num_heads": 2, "intermediate_dim": 8, "activation": "tanh"},
            "activation.*Received: activation='tanh'",
        ),
        (
            {"num_heads": 2, "intermediate_dim": 8, "layer_norm_epsilon": 0},
            "layer_norm_epsilon.*Received: layer_norm_epsilon=0",
        ),
        (
            {"num_heads": 2, "intermediate_dim": 8, "normalize_first": "yes"},
            "normalize_first.*Received: normalize_first='yes'",
        ),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TransformerEncoderBlock(**kwargs)


def test_bad_inputs():
    x = _normal(2, 5, 10)
    with pytest.raises(ValueError, match="num_heads.*Received: num_heads=3.*hidden size 10"):
        TransformerEncoderBlock(3, 16)(x)
    with pytest.raises(ValueError, match="inputs.*rank 3.*shape=\\(5, 10\\)"):
        TransformerEncoderBlock(2, 16)(x[0])
    block = TransformerEncoderBlock(2, 16)
    block(x)
    with pytest.raises(ValueError, match="inputs.*rank 3.*shape=\\(5, 10\\)"):
        block(x[0])
    with pytest.raises(ValueError, match="inputs.*hidden size 12.*built for 10"):
        block(_normal(2, 5, 12))
    with pytest.raises(ValueError, match="padding_mask.*boolean.*int32"):
        block(x, padding_mask=np.ones((2, 5), dtype="int32"))
    with pytest.raises(ValueError, match="padding_mask.*rank 2"):
        block(x, padding_mask=np.ones((2, 1, 5), dtype=bool))
    with pytest.raises(ValueError, match="attention_mask.*boolean"):
        block(x, attention_mask=np.ones((2, 5, 5), dtype="float32"))


@pytest.mark.parametrize("normalize_first", [False, True], ids=["post_norm", "pre_norm"])
@pytest.mark.parametrize(
    "masks",
    ["none", "padding", "explicit", "causal"],
)
def test_output_rows_are_the_full_outputs_rows(normalize_first, masks):
    block = TransformerEncoderBlock(2, 16, normalize_first=normalize_first)
    x = _normal(2, 5, 8)
    kwargs = {
        "none": {},
        "padding": {"padding_mask": _padding([5, 3], 5)},
        "explicit": {
            "attention_mask": RNG.random((2, 5, 5)) > 0.3,
            "padding_mask": _padding([5, 4], 5),
        },
        "causal": {"use_causal_mask": True},
    }[masks]
    full, full_scores = block(x, return_attention_scores=True, **kwargs)
    for length in (1, 3, 5, 7):
        output, scores = block(x, output_length=length, return_attention_scores=True, **kwargs)
        rows = min(length, 5)
        assert tuple(output.shape) == (2, rows, 8)
        np.testing.assert_allclose(to_numpy(output), to_numpy(full)[:, :length], atol=1e-5)
        np.testing.assert_allclose(to_numpy(scores), to_numpy(full_scores)[:, :, :length], atol=1e-6)
    positions = np.array([[0, 4, 2, 2], [3, 1, 0, 4]], "int32")
    output, scores = block(x, output_positions=positions, return_attention_scores=True, **kwargs)
    assert tuple(output.shape) == (2, 4, 8)
    np.testing.assert_allclose(
        to_numpy(output), np.take_along_axis(to_numpy(full), positions[..., None], 1), atol=1e-5
    )
    np.testing.assert_allclose(
        to_numpy(scores),
        np.take_along_axis(to_numpy(full_scores), positions[:, None, :, None], 2),
        atol=1e-6,
    )
    symbolic = block(keras.Input((5, 8)), output_length=2)
    assert tuple(symbolic.shape) == (None, 2, 8)
    positions = keras.Input((3,), dtype="int32")
    assert tuple(block(keras.Input((5, 8)), output_positions=positions).shape) == (None, 3, 8)


@pytest.mark.parametrize("rows", ["output_length", "output_positions"])
def test_output_rows_train_as_the_full_block(rows):
    # The same SGD step from the same weights: a head on two rows of the full block's
    # output, and the same head on the block computing those rows alone.
    block = TransformerEncoderBlock(2, 16, normalize_first=True)
    head = keras.layers.Dense(3)
    inputs = keras.Input((5, 8))
    padding = keras.Input((5,), dtype="bool")
    positions = keras.Input((2,), dtype="int32")
    if rows == "output_length":
        chosen = block(inputs, padding_mask=padding, output_length=2)
        full = block(inputs, padding_mask=padding)[:, :2]
    else:
        chosen = block(inputs, padding_mask=padding, output_positions=positions)
        full = ops.take_along_axis(
            block(inputs, padding_mask=padding), ops.expand_dims(positions, -1), axis=1
        )
    leading = keras.Model([inputs, padding, positions], head(chosen))
    sliced = keras.Model([inputs, padding, positions], head(full))
    data = [
        _normal(4, 5, 8),
        _padding([5, 4, 2, 1], 5),
        np.array([[4, 0], [1, 3], [0, 0], [2, 0]], "int32"),
    ]
    targets = _normal(4, 2, 3)
    assert_same_sgd_step(leading, sliced, data, targets, "mse", leading.weights[0].path, 4)


def test_bad_output_length():
    block = TransformerEncoderBlock(2, 16)
    x = _normal(2, 5, 8)
    for value in (0, -1, 1.0, True, "1"):
        with pytest.raises(ValueError, match=f"output_length.*Received: output_length={value!r}"):
            block(x, output_length=value)
    for value in (np.zeros((2,), "int32"), np.zeros((2, 1), "float32"), [[0]]):
        with pytest.raises(ValueError, match="output_positions.*integer tensor.*Received"):
            block(x, output_positions=value)
    with pytest.raises(ValueError, match="at most one of `output_length` and `output_positions`"):
        block(x, output_length=1, output_positions=np.zeros((2, 1), "int32"))
    embedded = keras.layers.Embedding(10, 8, mask_zero=True)(np.array([[1, 2, 0]]))
    with pytest.raises(ValueError, match="output_length.*Keras mask.*padding_mask"):
        block(embedded, output_length=1)
    with pytest.raises(ValueError, match="output_positions.*Keras mask.*padding_mask"):
        block(embedded, output_positions=np.zeros((1, 1), "int32"))
