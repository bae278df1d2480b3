import keras
import numpy as np
import pytest
from keras import ops

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
    with pytest.raises(
        ValueError, match="images.*multiples of `patch_size`=\\(4, 3\\).*shape=\\(2, 12, 8, 3\\)"
    ):
        layer(_images(height=12, width=8))  # caught when building
    with pytest.raises(
        ValueError, match="images.*3 channels.*num_channels.*shape=\\(2, 8, 12, 1\\)"
    ):
        layer(_images(channels=1))
    layer(_images())
    with pytest.raises(ValueError, match="images.*multiples of.*shape=\\(2, 10, 12, 3\\)"):
        layer(_images(height=10))
    with pytest.raises(ValueError, match="images.*3 channels.*shape=\\(2, 8, 12, 4\\)"):
        layer(_images(channels=4))
    with pytest.raises(ValueError, match="images.*rank 4.*shape=\\(8, 12, 3\\)"):
        layer(_images()[0])
    inferred = PatchEmbedding(8, 4, hidden_dim=6)
    inferred(_images(width=8, channels=2))
    with pytest.raises(ValueError, match="images.*2 channels.*shape=\\(2, 8, 8, 3\\)"):
        inferred(_images(width=8, channels=3))


def _torch_bicubic(grid, size):
    """PyTorch's bicubic resize of a (h, w, D) grid, as Hugging Face's
    `ViTEmbeddings.interpolate_pos_encoding` calls it."""
    import torch

    resized = torch.nn.functional.interpolate(
        torch.tensor(grid).permute(2, 0, 1)[None],
        size=size,
        mode="bicubic",
        align_corners=False,
    )  # (1, D, h', w')
    return resized[0].permute(1, 2, 0).reshape(-1, grid.shape[-1]).numpy()


@pytest.mark.parametrize("use_class_token", [True, False])
def test_interpolated_position_embedding(use_class_token):
    layer = PatchEmbedding((8, 12), (2, 3), hidden_dim=6, use_class_token=use_class_token)
    layer(_images())
    table = to_numpy(layer.position_embedding)  # a 4x4 grid (+ class token)
    prefix = int(use_class_token)
    # At the grid it was learned for, the interpolation gives the table back.
    np.testing.assert_allclose(
        to_numpy(layer.interpolated_position_embedding((4, 4))), table, atol=1e-6, rtol=0
    )
    grid = table[prefix:].reshape(4, 4, 6)
    for size in [(6, 5), (2, 7)]:  # up- and down-sampling on each axis
        got = to_numpy(layer.interpolated_position_embedding(size))
        assert got.shape == (size[0] * size[1] + prefix, 6)
        np.testing.assert_array_equal(got[:prefix], table[:prefix])
        np.testing.assert_allclose(got[prefix:], _torch_bicubic(grid, size), atol=1e-6, rtol=0)
    # Sizes as tensors, as in a graph traced for any resolution.
    dynamic = layer.interpolated_position_embedding(tuple(ops.convert_to_tensor(n) for n in size))
    np.testing.assert_allclose(to_numpy(dynamic), got, atol=1e-6, rtol=0)


def test_other_resolutions():
    layer = PatchEmbedding((8, 12), (2, 3), hidden_dim=6)
    images = _images()
    layer(images)
    layer.patch_projection.bias.assign(np.linspace(-1, 1, 6).astype("float32"))
    kernel, bias = to_numpy(layer.patch_projection.kernel), to_numpy(layer.patch_projection.bias)
    class_token = to_numpy(layer.class_token)
    for height, width in [(12, 9), (4, 24), (8, 12)]:
        other = _images(height=height, width=width)
        positions = to_numpy(layer.interpolated_position_embedding((height // 2, width // 3)))
        expected = numpy_patch_embedding(other, kernel, bias, class_token, positions, (2, 3))
        got = to_numpy(layer(other))
        assert got.shape == (2, (height // 2) * (width // 3) + 1, 6)
        np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    assert layer.compute_output_shape((None, 12, 9, 3)) == (None, 19, 6)
    assert layer.compute_output_shape((None, None, None, 3)) == (None, None, 6)


def test_any_resolution_in_a_functional_model():
    """Input (None, None, C): one model, traced (fit, predict) at several resolutions."""
    images = keras.Input((None, None, 3), name="images")
    layer = PatchEmbedding(8, 4, hidden_dim=6)
    embeddings = layer(images)
    assert tuple(embeddings.shape) == (None, None, 6)
    model = keras.Model(images, keras.layers.GlobalAveragePooling1D()(embeddings))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    for height, width in [(8, 8), (12, 16), (4, 8)]:
        batch = _images(batch=4, height=height, width=width)
        expected = to_numpy(layer(batch)).mean(axis=1)
        np.testing.assert_allclose(model.predict(batch, verbose=0), expected, atol=1e-5)
        loss = model.fit(batch, np.zeros((4, 6), "float32"), verbose=0).history["loss"][0]
        assert np.isfinite(loss)
