import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_transformers.layers import SinePositionalEncoding
from tests.testing import run_layer_test, to_numpy


def paper_encoding(length, hidden_dim, start=0, max_wavelength=10000):
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)),
    written out position by position from section 3.5 of the paper, in float64."""
    encoding = np.zeros((length, hidden_dim))
    for row, pos in enumerate(range(start, start + length)):
        for i in range((hidden_dim + 1) // 2):
            angle = pos / max_wavelength ** (2 * i / hidden_dim)
            encoding[row, 2 * i] = math.sin(angle)
            if 2 * i + 1 < hidden_dim:
                encoding[row, 2 * i + 1] = math.cos(angle)
    return encoding


@pytest.mark.parametrize("call_kwargs", [{}, {"start_index": 3}])
def test_layer_contract(tmp_path, call_kwargs):
    x = np.random.default_rng(0).normal(size=(2, 5, 7)).astype("float32")
    run_layer_test(
        SinePositionalEncoding,
        {"max_wavelength": 10000},
        {"inputs": x},
        call_kwargs=call_kwargs,
        expected_output_shape=(2, 5, 7),
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("hidden_dim", [8, 7, 1])
@pytest.mark.parametrize("max_wavelength", [10000, 100])
def test_matches_paper_formula(hidden_dim, max_wavelength):
    layer = SinePositionalEncoding(max_wavelength=max_wavelength)
    got = to_numpy(layer(np.zeros((3, 50, hidden_dim), "float32")))
    expected = paper_encoding(50, hidden_dim, max_wavelength=max_wavelength)
    for row in got:  # every batch row holds the same encoding
        np.testing.assert_allclose(row, expected, atol=2e-5, rtol=0)


def test_start_index_continues_a_longer_encoding():
    layer = SinePositionalEncoding()
    longer = to_numpy(layer(np.zeros((2, 30, 6), "float32")))
    for start_index in (7, ops.convert_to_tensor(7, dtype="int32")):
        part = to_numpy(layer(np.zeros((2, 5, 6), "float32"), start_index=start_index))
        np.testing.assert_allclose(part, longer[:, 7:12], atol=1e-6, rtol=0)
    np.testing.assert_allclose(
        part[0], paper_encoding(5, 6, start=7), atol=2e-5, rtol=0
    )
    assert not np.allclose(part, longer[:, :5], atol=1e-3)


def test_far_positions_and_half_precision():
    expected = paper_encoding(4, 16, start=5000)
    got = to_numpy(SinePositionalEncoding()(np.zeros((1, 4, 16), "float32"), start_index=5000))
    # float32 angles of size ~5000 carry ~5e-4 absolute rounding.
    np.testing.assert_allclose(got[0], expected, atol=2e-3, rtol=0)
    half = SinePositionalEncoding(dtype="mixed_bfloat16")(
        np.zeros((1, 4, 16), "float32"), start_index=5000
    )
    assert keras.backend.standardize_dtype(half.dtype) == "bfloat16"
    # Angles are float32 and only the result is rounded: bfloat16 keeps ~3 digits.
    np.testing.assert_allclose(to_numpy(ops.cast(half, "float32"))[0], expected, atol=1e-2, rtol=0)


def test_bad_arguments():
    for value in (1, 0.5, "10000", True):
        with pytest.raises(ValueError, match=f"max_wavelength.*Received: max_wavelength={value!r}"):
            SinePositionalEncoding(max_wavelength=value)
    layer = SinePositionalEncoding()
    with pytest.raises(ValueError, match="inputs.*rank 3.*shape=\\(5, 8\\)"):
        layer(np.zeros((5, 8), "float32"))
    layer(np.zeros((2, 5, 8), "float32"))
    with pytest.raises(ValueError, match="inputs.*rank 3.*shape=\\(2, 5, 2, 4\\)"):
        layer(np.zeros((2, 5, 2, 4), "float32"))
    with pytest.raises(ValueError, match="start_index.*Received: start_index=-1"):
        layer(np.zeros((2, 5, 8), "float32"), start_index=-1)
    with pytest.raises(ValueError, match="start_index.*scalar"):
        layer(np.zeros((2, 5, 8), "float32"), start_index=np.array([1, 2]))

