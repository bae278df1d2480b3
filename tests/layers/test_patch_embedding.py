import numpy as np
import pytest

from keras_transformers.layers import PatchEmbedding
from tests.testing import run_layer_test, to_numpy


def _images(batch=2, height=8, width=12, channels=3):
    rng = np.random.default_rng(0)
    return rng.normal(size=(batch, height, width, channels)).astype("float32")


def numpy_patch_embedding(images, kernel, bias, class_token, positions, patch_size):
    """Equation 1 of the ViT paper with explicit patch extraction, in float64."""
    batch, height, width, channels = images.shape
    ph, pw = patch_size
    patches = images.reshape(batch, height // ph, ph, width // pw, pw, channels)
    patches = patches.transpose(0, 1, 3, 2, 4, 5)  # (B, gh, gw, ph, pw, C), row-major grid
    patches = patches.reshape(batch, -1, ph * pw * channels)  # (B, N, P*P*C)
    embedded = patches.astype("float64") @ kernel.reshape(ph * pw * channels, -1) + bias
    if class_token is not None:
        tokens = np.broadcast_to(class_token, (batch, 1, embedded.shape[-1]))
        embedded = np.concatenate([tokens, embedded], axis=1)
    return embedded + positions


def test_layer_contract(tmp_path):
    run_layer_test(
        PatchEmbedding,
        {"image_size": (8, 12), "patch_size": (4, 3), "hidden_dim": 6},
        {"images": _images()},
        expected_output_shape=(2, 9, 6),
        tmp_path=tmp_path,
    )


def test_layer_contract_without_class_token(tmp_path):
    run_layer_test(
        PatchEmbedding,
        {
            "image_size": 8,
            "patch_size": 4,
            "hidden_dim": 5,
            "use_class_token": False,
            "num_channels": 1,
            "kernel_initializer": "glorot_uniform",
            "bias_initializer": "random_normal",
            "embeddings_initializer": "zeros",
        },
        {"images": _images(width=8, channels=1)},
        expected_output_shape=(2, 4, 5),
        tmp_path=tmp_path,
    )


@pytest.mark.parametrize("use_class_token", [True, False])
def test_matches_numpy_reference(use_class_token):
    layer = PatchEmbedding((8, 12), (4, 3), hidden_dim=6, use_class_token=use_class_token)
    images = _images()
    layer(images)
    kernel = to_numpy(layer.patch_projection.kernel)
    assert kernel.shape == (4, 3, 3, 6)
    # A nonzero bias, so that a missing bias would show.
    layer.patch_projection.bias.assign(np.linspace(-1, 1, 6).astype("float32"))
    got = to_numpy(layer(images))
    expected = numpy_patch_embedding(
        images,
        kernel,
        to_numpy(layer.patch_projection.bias),
        to_numpy(layer.class_token) if use_class_token else None,
        to_numpy(layer.position_embedding),
        (4, 3),
    )
    assert got.shape == (2, 8 + use_class_token, 6)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)


def test_weights():
    layer = PatchEmbedding(16, 4, hidden_dim=8, name="patches")
    layer(_images(height=16, width=16))
    shapes = {w.path: tuple(w.shape) for w in layer.weights}
    assert shapes == {
        "patches/patch_projection/kernel": (4, 4, 3, 8),
        "patches/patch_projection/bias": (8,),
        "patches/class_token": (1, 1, 8),
        "patches/position_embedding": (17, 8),
    }
    assert layer.compute_output_shape((None, 16, 16, 3)) == (None, 17, 8)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (
            {"image_size": 8, "patch_size": 3},
            "patch_size.*image_size.*Received: image_size=\\(8, 8\\), patch_size=\\(3, 3\\)",
        ),
        (
            {"image_size": (8, 12), "patch_size": (4, 5)},
            "Received: image_size=\\(8, 12\\), patch_size=\\(4, 5\\)",
        ),
        ({"image_size": 0}, "image_size.*Received: image_size=0"),
        ({"image_size": True}, "image_size.*Received: image_size=True"),
        ({"image_size": (8,)}, "image_size.*Received: image_size=\\(8,\\)"),
        ({"patch_size": (4, 2.0)}, "patch_size.*Received: patch_size=\\(4, 2.0\\)"),
        ({"hidden_dim": 0}, "hidden_dim.*Received: hidden_dim=0"),
        ({"num_channels": -1}, "num_channels.*Received: num_channels=-1"),
    ],
)
def test_bad_constructor_arguments(kwargs, match):
    arguments = {"image_size": 8, "patch_size": 4, "hidden_dim": 6, **kwargs}
    with pytest.raises(ValueError, match=match):
        PatchEmbedding(**arguments)


def test_bad_images():
    layer = PatchEmbedding((8, 12), (4, 3), hidden_dim=6, num_channels=3)
    with pytest.raises(ValueError, match="images.*8x12.*image_size.*shape=\\(2, 12, 8, 3\\)"):
        layer(_images(height=12, width=8))  # caught when building
    with pytest.raises(
        ValueError, match="images.*3 channels.*num_channels.*shape=\\(2, 8, 12, 1\\)"
    ):
        layer(_images(channels=1))
    layer(_images())
    with pytest.raises(ValueError, match="images.*8x12.*image_size.*shape=\\(2, 16, 24, 3\\)"):
        layer(_images(height=16, width=24))
    with pytest.raises(ValueError, match="images.*3 channels.*shape=\\(2, 8, 12, 4\\)"):
        layer(_images(channels=4))
    with pytest.raises(ValueError, match="images.*rank 4.*shape=\\(8, 12, 3\\)"):
        layer(_images()[0])
    inferred = PatchEmbedding(8, 4, hidden_dim=6)
    inferred(_images(width=8, channels=2))
    with pytest.raises(ValueError, match="images.*2 channels.*shape=\\(2, 8, 8, 3\\)"):
        inferred(_images(width=8, channels=3))
