import numpy as np
import pytest

from keras_transformers.layers import MultiHeadAttention
from tests.testing import run_layer_test

def test_layer_contract(tmp_path):
    x = np.random.default_rng(0).normal(size=(2, 5, 8)).astype("float32")
    run_layer_test(
        MultiHeadAttention,
        {"num_heads": 2, "key_dim": 4, "dropout": 0.1},
        {"query": x},
        call_kwargs={"use_causal_mask": True},
        expected_output_shape=(2, 5, 8),
        allow_unchanged_weights=("key/bias",),
        tmp_path=tmp_path,
    )
