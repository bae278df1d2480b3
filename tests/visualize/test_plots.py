"""The pictures: PNG files are written and show something; the positional picture is the formula."""

import os

import numpy as np
import pytest

from keras_transformers import visualize


def _check_png(path):
    import matplotlib.image

    assert os.path.getsize(path) > 5000, path
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels[..., :3].std() > 0.05, "an empty picture"


def _scores(rng, heads=3, length=6):
    return rng.dirichlet(np.ones(length), size=(heads, length)).astype("float32")


def test_plot_attention_and_maps(tmp_path):
    rng = np.random.default_rng(0)
    tokens = ["The_", "animal_", "didn't_", "cross_", "because_", "it_"]
    figure = visualize.plot_attention(_scores(rng), tokens, tokens, tmp_path / "a.png", title="t")
    _check_png(tmp_path / "a.png")
    assert len([axis for axis in figure.axes if axis.images]) == 3
    scores = {f"block_{i}": _scores(rng)[None] for i in range(2)}
    figure = visualize.plot_attention_maps(scores, tokens, tokens, tmp_path / "maps" / "m.png")
    _check_png(tmp_path / "maps" / "m.png")
    assert len([axis for axis in figure.axes if axis.images]) == 6
    np.testing.assert_allclose(figure.axes[4].images[0].get_array(), scores["block_1"][0, 1])
    # Each row names its layer once (first column); long names must not run into each other.
    titles = [axis.get_title() for axis in figure.axes]
    assert titles == ["block_0\nhead 0", "head 1", "head 2", "block_1\nhead 0", "head 1", "head 2"]


def test_plot_token_attention_and_image_attention(tmp_path):
    rng = np.random.default_rng(0)
    tokens = ["The_", "animal_", "didn't_", "cross_", "because_", "it_"]
    visualize.plot_token_attention(_scores(rng), tokens, -1, tmp_path / "it.png")
    _check_png(tmp_path / "it.png")
    image = rng.random((28, 28))
    visualize.plot_image_attention(image, rng.random((2, 7, 7)), tmp_path / "image.png")
    _check_png(tmp_path / "image.png")


def test_bad_arguments_raise(tmp_path):
    scores = np.full((2, 3, 3), 1 / 3, "float32")
    with pytest.raises(ValueError, match="`query_tokens` must have one token per query position"):
        visualize.plot_attention(scores, ["a"], list("abc"), tmp_path / "x.png")
    with pytest.raises(ValueError, match="`scores` must be"):
        visualize.plot_attention(np.zeros((1, 2, 3, 3)), None, None, tmp_path / "x.png")
    with pytest.raises(ValueError, match="`query_index`"):
        visualize.plot_token_attention(scores, list("abc"), 3, tmp_path / "x.png")
    with pytest.raises(ValueError, match="same"):
        visualize.plot_attention_maps(
            {"a": np.zeros((1, 2, 3, 3)), "b": np.zeros((1, 2, 3, 4))}, None, None, tmp_path / "x.png")


def test_positional_encoding_picture_is_the_papers_formula(tmp_path):
    figure = visualize.plot_positional_encoding(tmp_path / "pe.png", length=20, depth=512)
    _check_png(tmp_path / "pe.png")
    drawn = np.asarray(figure.axes[0].images[0].get_array())
    # Vaswani et al. (2017), section 3.5: PE(pos, 2i) = sin(pos / 10000^(2i/d)),
    # PE(pos, 2i+1) = cos(pos / 10000^(2i/d)).
    position = np.arange(20)[:, None]
    i = np.arange(256)[None, :]
    angle = position / 10000 ** (2 * i / 512)
    expected = np.zeros((20, 512))
    expected[:, 0::2] = np.sin(angle)
    expected[:, 1::2] = np.cos(angle)
    np.testing.assert_allclose(drawn, expected, atol=1e-4)
    with pytest.raises(ValueError, match="`depth` must be a positive int"):
        visualize.plot_positional_encoding(tmp_path / "x.png", depth=0)
