"""The same weights give the same outputs on TensorFlow, JAX and PyTorch.

The test process saves a small model's weights and inputs once; then this file, run as a
script in one subprocess per backend, rebuilds the model, loads the weights and writes its
outputs. The backend is fixed when Keras is imported, hence the subprocesses.

    python -m tests.test_cross_backend FOLDER   # with KERAS_BACKEND set: FOLDER/outputs_<backend>.npy
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_transformers import layers
from tests.testing import BACKEND

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("tensorflow", "jax", "torch")
VOCABULARY_SIZE, SEQUENCE_LENGTH, HIDDEN_DIM = 11, 7, 16


def build_model():
    """Embedding (with a padding mask) -> encoder block -> causal attention -> logits."""
    token_ids = keras.Input(shape=(SEQUENCE_LENGTH,), dtype="int32", name="token_ids")
    x = layers.TokenAndPositionEmbedding(
        VOCABULARY_SIZE, SEQUENCE_LENGTH, HIDDEN_DIM, mask_zero=True, name="embedding"
    )(token_ids)  # (B, T, D), with a Keras mask where token_ids == 0
    x = layers.TransformerEncoderBlock(num_heads=2, intermediate_dim=32, name="encoder_block_0")(x)
    x = x + layers.MultiHeadAttention(num_heads=4, key_dim=4, name="attention")(
        x, use_causal_mask=True
    )
    logits = keras.layers.Dense(VOCABULARY_SIZE, name="logits")(x)  # (B, T, V)
    return keras.Model(token_ids, logits)


def write_outputs(folder):
    model = build_model()
    model.load_weights(os.path.join(folder, "model.weights.h5"))
    token_ids = np.load(os.path.join(folder, "token_ids.npy"))
    outputs = keras.ops.convert_to_numpy(model(token_ids, training=False))
    np.save(os.path.join(folder, f"outputs_{keras.backend.backend()}.npy"), outputs)


@pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="covers all three backends in subprocesses; runs once, in the tensorflow run",
)
def test_same_outputs_on_every_backend(tmp_path):
    rng = np.random.default_rng(0)
    token_ids = rng.integers(1, VOCABULARY_SIZE, size=(3, SEQUENCE_LENGTH)).astype("int32")
    token_ids[1, 4:] = 0  # padding
    np.save(tmp_path / "token_ids.npy", token_ids)
    model = build_model()
    for weight in model.weights:  # Non-zero biases too, so every weight matters.
        weight.assign(rng.normal(scale=0.3, size=weight.shape).astype("float32"))
    model.save_weights(str(tmp_path / "model.weights.h5"))

    for backend in BACKENDS:
        result = subprocess.run(
            [sys.executable, "-m", "tests.test_cross_backend", str(tmp_path)],
            cwd=REPO_ROOT,
            env=dict(os.environ, KERAS_BACKEND=backend),
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, f"{backend}:\n{result.stdout}{result.stderr}"

    outputs = {b: np.load(tmp_path / f"outputs_{b}.npy") for b in BACKENDS}
    assert outputs["tensorflow"].shape == (3, SEQUENCE_LENGTH, VOCABULARY_SIZE)
    assert outputs["tensorflow"].dtype == np.float32
    assert np.all(np.isfinite(outputs["tensorflow"]))
    for backend in ("jax", "torch"):
        np.testing.assert_allclose(
            outputs[backend], outputs["tensorflow"], atol=1e-5, rtol=0, err_msg=backend
        )


if __name__ == "__main__":
    write_outputs(sys.argv[1])
