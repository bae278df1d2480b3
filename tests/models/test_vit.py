"""ViT builder: parameter counts against Hugging Face `transformers`, pooling, saving, mixed
precision, training, other resolutions and input checks."""

import os

import keras
import numpy as np
import pytest

from keras_transformers.layers import PatchEmbedding, TransformerEncoderBlock
from keras_transformers.models import from_preset
from keras_transformers.models.vit import CONFIGS, vit
from tests.testing import assert_same_sgd_step, to_numpy

# Every model built here has the tiny preset's sizes (4 heads for MID_SIZE, the size of
# tests/convert/test_vit.py's checkpoint): on JAX each new weight or input shape costs
# compilations, so the tests share one family of shapes.
TINY = CONFIGS["vit_tiny"]
MID_SIZE = {**TINY, "num_heads": 4}
# Non-square images and patches, one channel: counted only (formula and Hugging Face).
NON_SQUARE = dict(
    image_size=(48, 32),
    patch_size=(8, 4),
    num_layers=3,
    num_heads=4,
    hidden_dim=96,
    intermediate_dim=160,
    num_classes=7,
    num_channels=1,
)
# Exact counts with a 1000-class head, as Hugging Face's ViTForImageClassification has them
# (google/vit-base-patch16-224: 86,567,656); the paper's table 1 lists 86M, 307M and 632M.
PINNED_COUNTS = {
    "vit_base_16": 86_567_656,
    "vit_large_16": 304_326_632,
    "vit_huge_14": 632_045_800,
}


def _pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def hf_config(config):
    import transformers

    return transformers.ViTConfig(
        image_size=config["image_size"],
        patch_size=config["patch_size"],
        num_channels=config.get("num_channels", 3),
        hidden_size=config["hidden_dim"],
        num_hidden_layers=config["num_layers"],
        num_attention_heads=config["num_heads"],
        intermediate_size=config["intermediate_dim"],
        num_labels=config["num_classes"],
    )


def hf_parameter_count(config):
    """Parameters of transformers.ViTForImageClassification, built on the meta device."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

    with torch.device("meta"):
        model = transformers.ViTForImageClassification(hf_config(config))
    return sum(p.numel() for p in model.parameters())


def formula_parameter_count(config):
    """Counted from the architecture: embeddings, blocks, final layer norm, head."""
    (height, width), (ph, pw) = _pair(config["image_size"]), _pair(config["patch_size"])
    c, d, f = config.get("num_channels", 3), config["hidden_dim"], config["intermediate_dim"]
    num_patches = (height // ph) * (width // pw)
    embeddings = ph * pw * c * d + d + d + (num_patches + 1) * d  # projection, class, positions
    attention = 4 * (d * d + d)  # query, key, value, output: kernels and biases
    feedforward = d * f + f + f * d + d
    layer_norms = 2 * 2 * d
    k = config.get("num_classes", 1000)
    head = 0 if k is None else d * k + k
    blocks = config["num_layers"] * (attention + feedforward + layer_norms)
    return embeddings + blocks + 2 * d + head  # 2 * d: the final layer norm


def images_for(batch_size=2, height=32, width=32, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch_size, height, width, channels)).astype("float32")


def randomize(model, seed=0):
    """Non-zero biases and non-unit layer norms too, so that every weight matters."""
    rng = np.random.default_rng(seed)
    for weight in model.weights:
        weight.assign(rng.normal(scale=0.1, size=weight.shape).astype("float32"))


def test_tiny_model():
    model = from_preset("vit_tiny")
    assert model.name == "vit"
    assert list(model.input) == ["images"]
    assert tuple(model.input["images"].shape) == (None, None, None, 3)
    assert model.input["images"].dtype == "float32"
    names = [layer.name for layer in model.layers]
    for name in ("patch_embedding", "encoder_block_0", "encoder_block_1", "final_layer_norm"):
        assert name in names
    assert "encoder_block_2" not in names
    block = model.get_layer("encoder_block_0")
    assert isinstance(block, TransformerEncoderBlock)
    assert block.normalize_first and block.activation == "gelu"
    assert block.layer_norm_epsilon == 1e-6
    assert isinstance(model.get_layer("patch_embedding"), PatchEmbedding)
    logits = model({"images": images_for()})
    assert tuple(logits.shape) == (2, 10)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert np.all(np.isfinite(to_numpy(logits)))


def _headless_twin(model):
    """`vit(num_classes=None)` of the tiny sizes with `model`'s weights: the whole sequence."""
    twin = vit(**{**TINY, "num_classes": None})
    for layer in twin.layers:
        if layer.weights:
            layer.set_weights(model.get_layer(layer.name).get_weights())
    return twin


def test_pooling():
    images = images_for()
    for pooling in ("token", "mean"):
        model = vit(**TINY, pooling=pooling)
        randomize(model)
        # The whole final sequence (the class-token model's last block computes its
        # class token alone; see test_class_token_head_runs_the_last_block_at_one_token).
        sequence = to_numpy(_headless_twin(model)({"images": images}))  # (B, N + 1, D)
        assert sequence.shape == (2, 65, 64)
        pooled = sequence[:, 0] if pooling == "token" else sequence[:, 1:].mean(axis=1)
        classifier = model.get_layer("classifier")
        expected = pooled @ to_numpy(classifier.kernel) + to_numpy(classifier.bias)
        np.testing.assert_allclose(to_numpy(model({"images": images})), expected, atol=1e-5)


def test_class_token_head_runs_the_last_block_at_one_token():
    images = {"images": images_for()}
    token, mean = vit(**TINY), vit(**TINY, pooling="mean")
    last_rows = keras.Model(token.input, token.get_layer("final_layer_norm").output)
    assert tuple(last_rows(images).shape) == (2, 1, 64)
    assert tuple(keras.Model(mean.input, mean.get_layer("final_layer_norm").output)(images).shape) == (
        2, 65, 64,
    )
    # One SGD step moves every weight as it does in the same model computing every token
    # (the headless model, then the same Dense on its class token).
    twin = _headless_twin(token)
    head = keras.layers.Dense(10, name="classifier")
    full = keras.Model(twin.input, head(twin.output[:, 0]))
    assert_same_sgd_step(
        token,
        full,
        images,
        np.array([1, 2]),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        moved=token.get_layer("encoder_block_1").weights[0].path,
    )


def test_without_head():
    model = vit(**{**TINY, "num_classes": None})
    assert "classifier" not in [layer.name for layer in model.layers]
    sequence = model({"images": images_for()})
    assert tuple(sequence.shape) == (2, 65, 64)  # class token + 8 x 8 patches
    assert model.count_params() == formula_parameter_count({**TINY, "num_classes": None})


def test_parameter_count_of_built_models():
    """The formula used for the big sizes, checked on built models and on Hugging Face."""
    for config in (TINY, MID_SIZE):
        model = vit(**config)
        assert model.count_params() == formula_parameter_count(config)
        assert model.count_params() == hf_parameter_count(config)
    assert formula_parameter_count(NON_SQUARE) == hf_parameter_count(NON_SQUARE)


def test_parameter_counts_match_transformers():
    # Counted, not built: building ViT-B takes ~10 s, ViT-H far more (see the slow test).
    for name, count in PINNED_COUNTS.items():
        assert formula_parameter_count(CONFIGS[name]) == count, name
        assert hf_parameter_count(CONFIGS[name]) == count, name


@pytest.mark.slow
def test_built_base_model_parameter_count():
    keras.config.set_dtype_policy("bfloat16")  # halves the memory; counts are the same
    assert from_preset("vit_base_16").count_params() == PINNED_COUNTS["vit_base_16"]


def test_save_and_load(tmp_path):
    model = vit(**TINY)
    randomize(model)
    images = {"images": images_for()}
    other = {"images": images_for(height=48, width=40, seed=1)}
    before, before_other = to_numpy(model(images)), to_numpy(model(other))
    path = os.path.join(str(tmp_path), "vit.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(to_numpy(reloaded(images)), before, atol=1e-6, rtol=0)
    np.testing.assert_allclose(to_numpy(reloaded(other)), before_other, atol=1e-6, rtol=0)
    assert isinstance(reloaded.get_layer("patch_embedding"), PatchEmbedding)


def test_mixed_bfloat16():
    reference = vit(**TINY)
    randomize(reference)
    model = vit(**TINY, dtype="mixed_bfloat16")
    model.set_weights(reference.get_weights())
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not isinstance(layer, keras.layers.InputLayer):
            assert layer.dtype_policy.name == "mixed_bfloat16", layer.name
    for weight in model.weights:
        assert keras.backend.standardize_dtype(weight.dtype) == "float32", weight.path
    images = {"images": images_for()}
    sequence = keras.Model(model.input, model.get_layer("final_layer_norm").output)
    assert keras.backend.standardize_dtype(sequence(images).dtype) == "bfloat16"
    logits = model(images)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    logits = to_numpy(logits)
    assert np.all(np.isfinite(logits))
    expected = to_numpy(reference(images))
    np.testing.assert_allclose(logits, expected, atol=0.05 * np.abs(expected).max())
    # The global policy reaches every layer too, and other resolutions run.
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = from_preset("vit_tiny")
    assert model.get_layer("encoder_block_1").dtype_policy.name == "mixed_bfloat16"
    logits = model({"images": images_for(height=16, width=24)})
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert np.all(np.isfinite(to_numpy(logits)))


def test_fit_step():
    model = vit(**{**TINY, "dropout": 0.1})
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    images = images_for(batch_size=4)
    labels = np.array([0, 3, 9, 3], "int32")
    start = [to_numpy(w) for w in model.trainable_weights]
    history = model.fit({"images": images}, labels, batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    changed = [
        not np.array_equal(to_numpy(w), value) for w, value in zip(model.trainable_weights, start)
    ]
    assert all(changed), [w.path for w, c in zip(model.trainable_weights, changed) if not c]


def test_other_resolutions():
    """Section 3.2: other sizes interpolate the position table (class token kept)."""
    model = vit(**{**TINY, "num_classes": None})
    randomize(model)
    embedding = model.get_layer("patch_embedding")
    table = to_numpy(embedding.position_embedding)
    # At the resolution it was built for, interpolation gives the table back.
    np.testing.assert_allclose(
        to_numpy(embedding.interpolated_position_embedding((8, 8))), table, atol=1e-6, rtol=0
    )
    for height, width in [(48, 40), (16, 24)]:
        sequence = to_numpy(model({"images": images_for(height=height, width=width)}))
        assert sequence.shape == (2, (height // 4) * (width // 4) + 1, 64)
        assert np.all(np.isfinite(sequence))
    interpolated = to_numpy(embedding.interpolated_position_embedding((12, 12)))
    np.testing.assert_array_equal(interpolated[0], table[0])
    assert interpolated.shape == (145, 64)


def test_bad_inputs():
    model = from_preset("vit_tiny")
    images = images_for()
    with pytest.raises(ValueError, match="images.*None, 3\\).*shape=\\(2, 32, 32, 1\\)"):
        model({"images": images_for(channels=1)})
    with pytest.raises(ValueError, match="images.*multiples of `patch_size`.*\\(2, 30, 32, 3\\)"):
        model({"images": images_for(height=30)})
    cases = [  # The model checks its inputs itself (keras_transformers.models.model.Model).
        ({"images": images[0]}, "images.*shape.*shape=\\(32, 32, 3\\)"),
        ({"images": images_for(channels=4)}, "images.*shape=\\(2, 32, 32, 4\\)"),
        ({"images": images_for(width=30)}, "images.*multiples.*shape=\\(2, 32, 30, 3\\)"),
        ({"images": images.astype("uint8")}, "images.*float.*dtype=uint8"),
        ({"images": images, "labels": images}, "Unexpected input `labels`"),
        ({"imgs": images}, "Unexpected input `imgs`"),
        ({}, "Missing input `images`"),
        (images, "inputs.*dict"),
        ({"images": [1.0]}, "images.*array or tensor"),
    ]
    for inputs, match in cases:
        with pytest.raises(ValueError, match=match):
            model(inputs)


def test_bad_builder_arguments():
    cases = [
        ({"num_heads": 3}, "num_heads.*divide.*hidden_dim.*num_heads=3"),
        ({"patch_size": 5}, "patch_size.*image_size.*patch_size=\\(5, 5\\)"),
        ({"num_classes": 0}, "num_classes.*Received: num_classes=0"),
        ({"num_channels": 0}, "num_channels.*Received: num_channels=0"),
        ({"num_layers": 1.5}, "num_layers.*Received: num_layers=1.5"),
        ({"pooling": "max"}, "pooling.*Received: pooling='max'"),
        ({"dropout": 1.0}, "dropout.*Received: dropout=1.0"),
        ({"layer_norm_epsilon": 0}, "layer_norm_epsilon.*Received: layer_norm_epsilon=0"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            vit(**{**TINY, **kwargs})


def test_presets():
    assert set(CONFIGS) == {"vit_tiny", "vit_base_16", "vit_large_16", "vit_huge_14"}
    keys = ("patch_size", "num_layers", "num_heads", "hidden_dim", "intermediate_dim")
    sizes = {name: tuple(config[key] for key in keys) for name, config in CONFIGS.items()}
    assert sizes == {
        "vit_tiny": (4, 2, 2, 64, 128),
        "vit_base_16": (16, 12, 12, 768, 3072),
        "vit_large_16": (16, 24, 16, 1024, 4096),
        "vit_huge_14": (14, 32, 16, 1280, 5120),
    }
    assert {name: c["num_classes"] for name, c in CONFIGS.items()} == {
        "vit_tiny": 10,
        "vit_base_16": 1000,
        "vit_large_16": 1000,
        "vit_huge_14": 1000,
    }
