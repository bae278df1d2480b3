"""The smoke run of examples/train_vit.py: trains, draws, exports both signatures (JAX only in CI)."""

import os

import numpy as np
import pytest

from tests.examples.run_example import (
    assert_finite, assert_pictures, load_export, read_metrics, run_example, run_through_tfds,
    smoke_marks,
)
from tests.testing import SHARED_DATA

pytestmark = smoke_marks("mnist-test", reason="no local MNIST")


def test_train_vit_smoke(tmp_path):
    output = tmp_path / "run"
    run_example("train_vit.py", output, "--export-dir", str(tmp_path / "export"))
    metrics = read_metrics(output)
    assert metrics["smoke"] and metrics["backend"] == "jax" and metrics["initial_step"] == 0
    assert_finite(metrics, "validation_loss", "validation_accuracy")
    assert 0 <= metrics["validation_accuracy"] <= 1
    # The smoke subset keeps the 8:2 stratified split of 1,000 digits.
    assert (metrics["data"]["train_size"], metrics["data"]["validation_size"]) == (800, 200)
    assert metrics["history"]["loss"][-1] < metrics["history"]["loss"][0]
    assert "attention_maps" in metrics["pictures"] and "class_token_attention_0" in metrics["pictures"]
    assert_pictures(metrics)
    loaded = load_export(metrics, signatures=("serving_default", "classify"))
    assert metrics["export"]["labels_match"]
    outputs = loaded.signatures["classify"](images=np.zeros((2, 28, 28, 1), "float32"))
    assert outputs["probabilities"].shape == (2, 10)
    np.testing.assert_allclose(outputs["probabilities"].numpy().sum(-1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_train_vit_smoke_reads_the_same_digits_through_tfds(tmp_path):
    """--tfds: the digits come through the local_mnist TFDS builder, split as from the files."""
    from keras_transformers.data import mnist

    output, metrics = run_through_tfds("train_vit.py", tmp_path, "local_mnist")
    _, _, info = mnist.mnist_datasets(SHARED_DATA, max_examples=1000)
    assert metrics["data"] == {k: v for k, v in info.items() if k != "validation_indices"}
    assert_finite(metrics, "validation_loss", "validation_accuracy")
