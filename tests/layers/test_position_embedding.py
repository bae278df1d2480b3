import numpy as np
import pytest
from keras import ops

from keras_transformers.layers import PositionEmbedding
from tests.testing import run_layer_test, to_numpy


def _inputs(batch=2, length=5, hidden_dim=8):
    return np.random.default_rng(0).normal(size=(batch, length, hidden_dim)).astype("float32")


@pytest.mark.parametrize("call_kwargs", [{}, {"start_index": 5}])
def test_layer_contract(tmp_path, call_kwargs):
    run_layer_test(
        PositionEmbedding,
        {"max_sequence_length": 10, "initializer": "random_normal"},
        {"inputs": _inputs()},
        call_kwargs=call_kwargs,
        expected_output_shape=(2, 5, 8),
        tmp_path=tmp_path,
    )


def test_reads_the_table_from_start_index():
    layer = PositionEmbedding(max_sequence_length=10, name="position_embedding")
    full = to_numpy(layer(_inputs(length=10)))
    table = to_numpy(layer.embeddings)
    assert layer.embeddings.path.endswith("position_embedding/embeddings")
    assert table.shape == (10, 8)
    np.testing.assert_array_equal(full, np.broadcast_to(table, (2, 10, 8)))
    for start_index in (4, ops.convert_to_tensor(4, dtype="int32")):
        part = to_numpy(layer(_inputs(length=3), start_index=start_index))
        np.testing.assert_array_equal(part, np.broadcast_to(table[4:7], (2, 3, 8)))
    # The last positions fit exactly.
    np.testing.assert_array_equal(to_numpy(layer(_inputs(length=2), start_index=8))[0], table[8:])


def test_output_ignores_input_values():
    layer = PositionEmbedding(max_sequence_length=6)
    a = to_numpy(layer(_inputs(length=4)))
    b = to_numpy(layer(_inputs(length=4) + 3.0))
    np.testing.assert_array_equal(a, b)


def test_too_long_raises_instead_of_clipping():
    layer = PositionEmbedding(max_sequence_length=6)
    with pytest.raises(ValueError, match="up to 7.*max_sequence_length` is 6.*sequence length 7"):
        layer(_inputs(length=7))  # caught when building
    layer(_inputs(length=6))
    with pytest.raises(ValueError, match="up to 9.*max_sequence_length` is 6.*sequence length 9"):
        layer(_inputs(length=9))
    with pytest.raises(
        ValueError, match="up to 7.*max_sequence_length` is 6.*sequence length 3 and start_index=4"
    ):
        layer(_inputs(length=3), start_index=4)


def test_bad_arguments():
    for value in (0, -1, 2.0, None):
        match = f"max_sequence_length.*Received: max_sequence_length={value!r}"
        with pytest.raises(ValueError, match=match):
            PositionEmbedding(max_sequence_length=value)
    layer = PositionEmbedding(max_sequence_length=6)
    with pytest.raises(ValueError, match="inputs.*rank 3.*shape=\\(5, 8\\)"):
        layer(np.zeros((5, 8), "float32"))
    layer(_inputs())
    with pytest.raises(ValueError, match="inputs.*rank 3.*shape=\\(2, 5, 8, 1\\)"):
        layer(np.zeros((2, 5, 8, 1), "float32"))
    with pytest.raises(ValueError, match="inputs.*hidden size 4.*built for 8"):
        layer(_inputs(hidden_dim=4))
    with pytest.raises(ValueError, match="start_index.*Received: start_index=-2"):
        layer(_inputs(), start_index=-2)
