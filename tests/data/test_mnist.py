"""MNIST: the idx reader, the stratified seeded 8,000 / 2,000 split, the tf.data batches."""

import os

import numpy as np
import pytest

from keras_transformers.data import mnist
from tests.testing import SHARED_DATA

needs_data = pytest.mark.skipif(
    not os.path.isdir(os.path.join(SHARED_DATA, "mnist-test")), reason="needs ../shared/data/mnist-test"
)


@needs_data
def test_idx_files():
    images, labels = mnist.load_mnist_test(SHARED_DATA)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (10000,) and set(np.unique(labels)) == set(range(10))
    # Published class counts of the MNIST test set.
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert images.max() == 255 and images.min() == 0


def test_stratified_split_is_exact_proportional_and_seeded():
    labels = np.repeat(np.arange(10), [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009])
    train, validation = mnist.stratified_split(labels, 2000, seed=0)
    assert len(train) == 8000 and len(validation) == 2000
    assert not set(train) & set(validation)
    share = np.bincount(labels[validation], minlength=10) / np.bincount(labels)
    np.testing.assert_allclose(share, 0.2, atol=1e-3)
    again, _ = mnist.stratified_split(labels, 2000, seed=0)
    other, _ = mnist.stratified_split(labels, 2000, seed=1)
    np.testing.assert_array_equal(train, again)
    assert not np.array_equal(train, other)
    with pytest.raises(ValueError, match="`num_validation`"):
        mnist.stratified_split(labels, 0)


def test_read_idx_rejects_other_files(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="idx file"):
        mnist.read_idx(str(path))


@needs_data
def test_datasets():
    train, validation, info = mnist.mnist_datasets(SHARED_DATA, batch_size=100, augment=True)
    assert (info["train_size"], info["validation_size"]) == (8000, 2000)
    inputs, labels = next(iter(train))
    images = inputs["images"].numpy()
    assert images.shape == (100, 28, 28, 1) and images.dtype == np.float32
    assert 0 <= images.min() and images.max() <= 1
    assert labels.dtype == np.int32
    assert sum(int(y.shape[0]) for _, y in validation) == 2000
