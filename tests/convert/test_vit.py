"""Hugging Face ViT checkpoints -> models.vit: outputs equal `transformers`' on the same
weights and inputs (also at another resolution), and bad checkpoints fail before loading."""

import json
import os
import re

import numpy as np
import pytest

from keras_transformers.convert import from_huggingface, tokenizer_from_huggingface
from keras_transformers.convert.vit import builder_arguments
from tests.testing import to_numpy

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# tests/models/test_vit.py's MID_SIZE (vit_tiny with 4 heads of 16): 8x8 patches of 4x4.
HF_CONFIG = dict(
    image_size=32,
    patch_size=4,
    hidden_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    num_labels=10,
)
PARITY_ATOL = 1e-4


def _randomized(model, seed):
    """Every parameter moved off its initial value (zero biases, unit layer norms), so
    that a weight converted to the wrong place shows in the outputs."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.1)
    return model.eval()


def _save(model, folder):
    model.save_pretrained(str(folder))
    return str(folder)


@pytest.fixture(scope="module")
def classifier_checkpoint(tmp_path_factory):
    """A random-init ViTForImageClassification saved as config.json + model.safetensors."""
    config = transformers.ViTConfig(**HF_CONFIG)
    model = _randomized(transformers.ViTForImageClassification(config), seed=0)
    return _save(model, tmp_path_factory.mktemp("vit_classifier")), model


def _images(batch_size=2, height=32, width=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch_size, height, width, 3)).astype("float32")


def _pixel_values(images):
    return torch.from_numpy(images).permute(0, 3, 1, 2)  # (B, C, H, W), as HF takes them


def test_logits_match_transformers(classifier_checkpoint):
    path, reference = classifier_checkpoint
    model = from_huggingface(path)
    assert tuple(model.output.shape) == (None, 10)
    images = _images()
    with torch.no_grad():
        expected = reference(pixel_values=_pixel_values(images)).logits.numpy()
    got = to_numpy(model({"images": images}))
    np.testing.assert_allclose(got, expected, atol=PARITY_ATOL, rtol=0)
    assert np.abs(expected).max() > 0.1  # not trivially close


def test_other_resolution_matches_interpolate_pos_encoding(classifier_checkpoint):
    """Section 3.2 as Hugging Face implements it: bicubic resizing of the position grid."""
    path, reference = classifier_checkpoint
    model = from_huggingface(path)
    for height, width in [(48, 40), (16, 24)]:
        images = _images(height=height, width=width, seed=1)
        with torch.no_grad():
            expected = reference(
                pixel_values=_pixel_values(images), interpolate_pos_encoding=True
            ).logits.numpy()
        got = to_numpy(model({"images": images}))
        np.testing.assert_allclose(got, expected, atol=PARITY_ATOL, rtol=0)


def test_vit_model_with_pooler(tmp_path):
    """ViTModel: no prefix, pooler ignored, the model returns the normalized sequence."""
    config = transformers.ViTConfig(**{**HF_CONFIG, "num_hidden_layers": 1})
    reference = _randomized(transformers.ViTModel(config, add_pooling_layer=True), 1)
    path = _save(reference, tmp_path)
    model = from_huggingface(path)
    assert "classifier" not in [layer.name for layer in model.layers]
    images = _images()
    with torch.no_grad():
        expected = reference(pixel_values=_pixel_values(images)).last_hidden_state.numpy()
    got = to_numpy(model({"images": images}))
    assert got.shape == (2, 65, 64)
    np.testing.assert_allclose(got, expected, atol=PARITY_ATOL, rtol=0)


def test_mixed_precision_load(classifier_checkpoint):
    path, reference = classifier_checkpoint
    model = from_huggingface(path, dtype="mixed_bfloat16")
    assert model.get_layer("encoder_block_0").dtype_policy.name == "mixed_bfloat16"
    images = _images()
    got = to_numpy(model({"images": images}))
    assert got.dtype == np.float32
    with torch.no_grad():
        expected = reference(pixel_values=_pixel_values(images)).logits.numpy()
    np.testing.assert_allclose(got, expected, atol=0.05 * np.abs(expected).max())


def _copy_with(source, folder, edit_weights=None, edit_config=None):
    """A copy of checkpoint folder `source` with its tensors or config changed."""
    from safetensors.numpy import load_file, save_file

    os.makedirs(folder, exist_ok=True)
    weights = load_file(os.path.join(source, "model.safetensors"))
    if edit_weights:
        edit_weights(weights)
    save_file(weights, os.path.join(folder, "model.safetensors"))
    with open(os.path.join(source, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    if edit_config:
        edit_config(config)
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump(config, f)
    return str(folder)


def test_missing_tensor(classifier_checkpoint, tmp_path):
    path, _ = classifier_checkpoint
    name = "vit.encoder.layer.1.output.dense.bias"
    broken = _copy_with(path, tmp_path / "missing", lambda w: w.pop(name))
    source = re.escape(os.path.join(broken, "model.safetensors"))
    with pytest.raises(ValueError, match=f"`{name}`.*missing.*{source}"):
        from_huggingface(broken)
    head = _copy_with(path, tmp_path / "no_head", lambda w: w.pop("classifier.weight"))
    with pytest.raises(ValueError, match="`classifier.weight`.*missing"):
        from_huggingface(head)  # config.json declares ViTForImageClassification


def test_ill_shaped_tensors(classifier_checkpoint, tmp_path):
    path, _ = classifier_checkpoint
    for i, (name, shape) in enumerate(
        [
            ("vit.encoder.layer.0.attention.attention.query.weight", (64, 32)),
            ("vit.encoder.layer.1.intermediate.dense.weight", (64, 128)),  # transposed
            ("vit.embeddings.position_embeddings", (1, 50, 64)),
            ("vit.embeddings.patch_embeddings.projection.weight", (64, 3, 8, 8)),
            ("vit.layernorm.bias", (32,)),
            ("classifier.weight", (6, 64)),
        ]
    ):

        def reshape(weights):
            weights[name] = np.zeros(shape, weights[name].dtype)

        broken = _copy_with(path, tmp_path / str(i), reshape)
        source = os.path.join(broken, "model.safetensors")
        with pytest.raises(ValueError, match=re.escape(f"`{name}` in {source} has shape {shape}")):
            from_huggingface(broken)


def test_unexpected_tensors(classifier_checkpoint, tmp_path):
    path, _ = classifier_checkpoint

    def fewer_layers(config):
        config["num_hidden_layers"] = 1

    broken = _copy_with(path, tmp_path, edit_config=fewer_layers)
    with pytest.raises(ValueError, match="vit.encoder.layer.1.*no place.*1 layers"):
        from_huggingface(broken)


def test_unsupported_config():
    for change, match in [
        ({"hidden_act": "relu"}, "hidden_act.*Received: hidden_act='relu'"),
        ({"qkv_bias": False}, "qkv_bias.*Received: qkv_bias=False"),
    ]:
        with pytest.raises(ValueError, match=match):
            builder_arguments({**transformers.ViTConfig().to_dict(), **change}, with_head=True)


def test_builder_arguments():
    config = json.loads(transformers.ViTConfig(**HF_CONFIG).to_json_string())
    assert builder_arguments(config, with_head=True) == dict(
        image_size=32,
        patch_size=4,
        num_layers=2,
        num_heads=4,
        hidden_dim=64,
        intermediate_dim=128,
        num_classes=10,
        num_channels=3,
        dropout=0.0,
        layer_norm_epsilon=1e-12,
    )
    assert builder_arguments(config, with_head=False)["num_classes"] is None


def test_no_tokenizer(classifier_checkpoint):
    path, _ = classifier_checkpoint
    with pytest.raises(ValueError, match="ViT checkpoints have no tokenizer.*Received: path="):
        tokenizer_from_huggingface(path)
