"""BERT builders: parameter counts against Hugging Face, masking, saving, precision, training."""

import os

import keras
import numpy as np
import pytest

from keras_transformers.models import from_preset
from keras_transformers.models.bert import (
    CONFIGS,
    bert,
    bert_classifier,
    bert_masked_lm,
    bert_pretraining,
)
from tests.testing import assert_same_sgd_step, to_numpy

# One small configuration for every forward test, with the shapes of the checkpoints
# of tests/convert/test_bert.py and of the docstring examples: on JAX each new weight
# shape costs a compilation, so the tests share shapes.
TINY = {
    "vocabulary_size": 100,
    "num_layers": 2,
    "num_heads": 4,
    "hidden_dim": 48,
    "intermediate_dim": 80,
    "max_sequence_length": 24,
    "num_segments": 2,
}
LENGTHS = (8, 5)


def _inputs(lengths=LENGTHS, total=8, seed=0):
    rng = np.random.default_rng(seed)
    padding_mask = (np.arange(total)[None, :] < np.asarray(lengths)[:, None]).astype("int32")
    token_ids = rng.integers(1, TINY["vocabulary_size"], size=(len(lengths), total))
    segment_ids = (np.arange(total)[None, :] >= np.asarray(lengths)[:, None] // 2).astype("int32")
    return {
        "token_ids": (token_ids * padding_mask).astype("int32"),
        "segment_ids": segment_ids * padding_mask,
        "padding_mask": padding_mask,
    }


def _with_positions(inputs):
    return {**inputs, "mask_positions": np.array([[1, 3, 7], [0, 2, 4]], "int32")}


def _numpy_tree(outputs):
    if isinstance(outputs, dict):
        return {key: to_numpy(value) for key, value in outputs.items()}
    return to_numpy(outputs)


# Parameter counts: transformers' BertModel (with pooler) built from the same config.


def _hf_config(config):
    import transformers

    return transformers.BertConfig(
        vocab_size=config["vocabulary_size"],
        num_hidden_layers=config["num_layers"],
        num_attention_heads=config["num_heads"],
        hidden_size=config["hidden_dim"],
        intermediate_size=config["intermediate_dim"],
        max_position_embeddings=config.get("max_sequence_length", 512),
        type_vocab_size=config.get("num_segments", 2),
    )


def _hf_parameter_count(config, cls_name="BertModel", **kwargs):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    # The meta device allocates nothing: bert_large counts in milliseconds.
    with torch.device("meta"):
        model = getattr(transformers, cls_name)(_hf_config(config), **kwargs)
    return sum(p.numel() for p in model.parameters())


def _formula(config):
    """Devlin et al. (2019): embeddings, num_layers post-norm blocks, pooler."""
    v, d, i = config["vocabulary_size"], config["hidden_dim"], config["intermediate_dim"]
    p, s = config.get("max_sequence_length", 512), config.get("num_segments", 2)
    embeddings = (v + p + s) * d + 2 * d  # three tables + LayerNorm
    attention = 4 * (d * d + d)  # query, key, value, output
    feedforward = d * i + i + i * d + d
    block = attention + feedforward + 2 * 2 * d  # two LayerNorms
    pooler = d * d + d
    return embeddings + config["num_layers"] * block + pooler


@pytest.mark.parametrize(
    "preset, published",
    [("bert_tiny", 4_385_920), ("bert_base", 109_482_240), ("bert_large", 335_141_888)],
)
def test_parameter_count_formula_matches_transformers(preset, published):
    # Building the presets in Keras takes 2-60 s (random initialization, compiled per
    # shape on JAX), so they are counted by formula here and built by the slow test;
    # built models are checked against transformers below (TINY) and in
    # tests/convert/test_bert.py (all-MiniLM-L6-v2, 22.7M parameters).
    config = CONFIGS[preset]
    assert _formula(config) == _hf_parameter_count(config) == published


def test_built_parameter_counts_match_transformers():
    backbone = bert(**TINY)
    assert backbone.count_params() == _formula(TINY) == _hf_parameter_count(TINY)
    # The MLM decoder is tied (counted once, as torch's parameters() does), and the
    # masked-LM model, like BertForMaskedLM, has no pooler.
    assert bert_masked_lm(backbone).count_params() == _hf_parameter_count(
        TINY, "BertForMaskedLM"
    )
    assert bert_pretraining(backbone).count_params() == _hf_parameter_count(
        TINY, "BertForPreTraining"
    )
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    config = _hf_config(TINY)
    config.num_labels = 5
    with torch.device("meta"):
        classifier = transformers.BertForSequenceClassification(config)
    assert bert_classifier(backbone, 5).count_params() == sum(
        p.numel() for p in classifier.parameters()
    )


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["bert_tiny", "bert_base", "bert_large"])
def test_presets_build_with_the_transformers_count(preset):
    model = from_preset(preset)
    assert model.name == "bert"
    assert model.count_params() == _formula(CONFIGS[preset]) == _hf_parameter_count(CONFIGS[preset])


# Structure and forward behaviour.


def test_outputs_inputs_and_layer_names():
    model = bert(**TINY)
    assert set(model.input) == {"token_ids", "segment_ids", "padding_mask"}
    for name, tensor in model.input.items():
        assert tensor.dtype == "int32", name
        assert tensor.name == name
    outputs = _numpy_tree(model(_inputs()))
    assert outputs["sequence_output"].shape == (2, 8, 48)
    assert outputs["pooled_output"].shape == (2, 48)
    assert np.all(np.abs(outputs["pooled_output"]) <= 1.0)  # tanh
    names = [layer.name for layer in model.layers]
    for name in ("token_embedding", "position_embedding", "segment_embedding",
                 "embeddings_layer_norm", "encoder_block_0", "encoder_block_1", "pooled_dense"):
        assert name in names
    assert isinstance(model.get_layer("token_embedding"), keras.layers.ReversibleEmbedding)
    block = model.get_layer("encoder_block_1")
    assert block.normalize_first is False and block.activation == "gelu"
    assert block.layer_norm_epsilon == 1e-12


def test_pooled_output_reads_the_first_position():
    model = bert(**TINY)
    inputs = _inputs()
    pooled = to_numpy(model(inputs)["pooled_output"])
    sequence = to_numpy(model(inputs)["sequence_output"])
    dense = model.get_layer("pooled_dense")
    expected = np.tanh(sequence[:, 0] @ to_numpy(dense.kernel) + to_numpy(dense.bias))
    np.testing.assert_allclose(pooled, expected, atol=1e-5)


def test_padding_invariance():
    model = bert_pretraining(bert(**TINY))
    inputs = _with_positions(_inputs())
    changed = dict(inputs)
    padded = inputs["padding_mask"] == 0
    rng = np.random.default_rng(1)
    changed["token_ids"] = np.where(
        padded, rng.integers(1, TINY["vocabulary_size"], size=padded.shape), inputs["token_ids"]
    ).astype("int32")
    changed["segment_ids"] = np.where(padded, 1, inputs["segment_ids"]).astype("int32")
    assert not np.array_equal(changed["token_ids"], inputs["token_ids"])
    before, after = _numpy_tree(model(inputs)), _numpy_tree(model(changed))
    # Mask positions all point at real tokens; the pooled [CLS] output drives NSP.
    np.testing.assert_allclose(after["mlm_logits"], before["mlm_logits"], atol=1e-5)
    np.testing.assert_allclose(after["nsp_logits"], before["nsp_logits"], atol=1e-5)
    backbone_model = keras.Model(model.input, model.get_layer("encoder_block_1").output)
    real = inputs["padding_mask"] == 1
    np.testing.assert_allclose(
        to_numpy(backbone_model(changed))[real], to_numpy(backbone_model(inputs))[real], atol=1e-5
    )


def test_masked_lm_logits_use_the_tied_embedding_and_gather_positions():
    backbone = bert(**TINY)
    model = bert_masked_lm(backbone)
    inputs = _with_positions(_inputs())
    logits = to_numpy(model(inputs))
    assert logits.shape == (2, 3, TINY["vocabulary_size"]) and logits.dtype == np.float32
    # The same numbers from numpy: gather, Dense + exact GELU, LayerNorm, E^T + bias.
    from math import erf, sqrt

    sequence = to_numpy(backbone(_inputs())["sequence_output"])
    x = np.take_along_axis(sequence, inputs["mask_positions"][..., None], axis=1)
    dense = model.get_layer("mlm_dense")
    x = x @ to_numpy(dense.kernel) + to_numpy(dense.bias)
    x = x * 0.5 * (1 + np.vectorize(erf)(x / sqrt(2)))
    norm = model.get_layer("mlm_layer_norm")
    x = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + norm.epsilon)
    x = x * to_numpy(norm.gamma) + to_numpy(norm.beta)
    embeddings = to_numpy(model.get_layer("token_embedding").embeddings)
    expected = x @ embeddings.T + to_numpy(model.get_layer("mlm_output_bias").bias)
    np.testing.assert_allclose(logits, expected, atol=1e-4)


# Saving.


@pytest.mark.parametrize("head", ["backbone", "pretraining", "classifier"])
def test_keras_save_and_load(tmp_path, head):
    backbone = bert(**TINY)
    inputs = _inputs()
    if head == "pretraining":
        model, inputs = bert_pretraining(backbone), _with_positions(inputs)
    elif head == "classifier":
        model = bert_classifier(backbone, num_classes=3)
    else:
        model = backbone
    path = os.path.join(str(tmp_path), f"{head}.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert reloaded.name == model.name
    assert len(reloaded.weights) == len(model.weights)
    before, after = _numpy_tree(model(inputs)), _numpy_tree(reloaded(inputs))
    for key in before if isinstance(before, dict) else [None]:
        b, a = (before, after) if key is None else (before[key], after[key])
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    if head == "pretraining":
        # The tie survives: with zero token embeddings the MLM logits are the bias alone.
        table = reloaded.get_layer("token_embedding").embeddings
        table.assign(np.zeros(table.shape, "float32"))
        logits = to_numpy(reloaded(inputs)["mlm_logits"])
        bias = to_numpy(reloaded.get_layer("mlm_output_bias").bias)
        np.testing.assert_allclose(logits, np.broadcast_to(bias, logits.shape), atol=1e-6)


# Precision and training.


def test_mixed_bfloat16():
    # Through the dtype argument, not the global policy: every layer must receive it.
    backbone = bert(**TINY, dtype="mixed_bfloat16")
    model = bert_pretraining(backbone)
    outputs = model(_with_positions(_inputs()))
    float32_layers = {"mlm_output_bias", "nsp_dense"}  # float32 logits by design
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.InputLayer):
            continue
        expected = "float32" if layer.name in float32_layers else "mixed_bfloat16"
        assert layer.dtype_policy.name == expected, layer.name
    for weight in model.weights:
        assert keras.backend.standardize_dtype(weight.dtype) == "float32", weight.path
    for key in ("mlm_logits", "nsp_logits"):
        assert keras.backend.standardize_dtype(outputs[key].dtype) == "float32"
        assert np.all(np.isfinite(to_numpy(outputs[key])))
    sequence = backbone(_inputs())["sequence_output"]
    assert keras.backend.standardize_dtype(sequence.dtype) == "bfloat16"
    assert np.all(np.isfinite(to_numpy(keras.ops.cast(sequence, "float32"))))


def test_classifier_fit_step():
    model = bert_classifier(bert(**TINY), num_classes=3)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),  # Adam's update graph takes 5x longer to trace on TF
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    inputs = _inputs()
    start = [to_numpy(w) for w in model.trainable_weights]
    history = model.fit(inputs, np.array([0, 2]), batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    changed = [
        not np.array_equal(to_numpy(w), s) for w, s in zip(model.trainable_weights, start)
    ]
    # Everything trains except the key biases (softmax ignores a constant per row).
    frozen = [w.path for w, c in zip(model.trainable_weights, changed) if not c]
    assert all("key/bias" in path for path in frozen), frozen


def _assert_same_outputs_and_step(model, reference, inputs, labels, loss, moved):
    """Equal outputs, then every weight equal after one SGD step from the same start."""
    outputs, expected = model(inputs), reference(inputs)
    assert keras.tree.flatten(keras.tree.map_structure(lambda x: None, outputs)) == (
        keras.tree.flatten(keras.tree.map_structure(lambda x: None, expected))
    )
    for output, value in zip(keras.tree.flatten(outputs), keras.tree.flatten(expected)):
        np.testing.assert_allclose(to_numpy(output), to_numpy(value), atol=1e-5)
    assert_same_sgd_step(model, reference, inputs, labels, loss, moved, batch_size=2)


# The heads read only some positions of the last block, which computes those alone.
# Reference: the same head layers on the backbone's own outputs, which run every block
# at every position; same weights, same outputs, same SGD step. No dropout, so that
# the steps are the same.


def test_classifier_runs_the_last_block_at_cls_only():
    backbone = bert(**TINY, dropout=0.0)
    model = bert_classifier(backbone, num_classes=3, dropout=0.0)
    head = keras.layers.Dense(3, name="classifier_dense")
    reference = keras.Model(backbone.input, head(backbone.output["pooled_output"]))
    head.set_weights(model.get_layer("classifier_dense").get_weights())
    _assert_same_outputs_and_step(
        model,
        reference,
        _inputs(),
        np.array([0, 2]),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        moved="encoder_block_1/feedforward/output_dense/kernel",
    )


def _full_masked_lm_logits(model, backbone, mask_positions):
    """`model`'s masked-LM head layers on the backbone's whole sequence output."""
    x = keras.ops.take_along_axis(
        backbone.output["sequence_output"], keras.ops.expand_dims(mask_positions, -1), axis=1
    )
    x = model.get_layer("mlm_layer_norm")(model.get_layer("mlm_dense")(x))
    logits = backbone.get_layer("token_embedding")(x, reverse=True)
    return model.get_layer("mlm_output_bias")(logits)


@pytest.mark.parametrize("head", ["masked_lm", "pretraining"])
def test_masked_heads_run_the_last_block_at_their_positions_only(head):
    backbone = bert(**TINY, dropout=0.0)
    inputs = _with_positions(_inputs())
    labels = np.array([[5, 9, 11], [7, 3, 2]])
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if head == "masked_lm":
        model = bert_masked_lm(backbone)
        reference = keras.Model(
            model.input, _full_masked_lm_logits(model, backbone, model.input["mask_positions"])
        )
    else:
        model = bert_pretraining(backbone)
        reference = keras.Model(
            model.input,
            {
                "mlm_logits": _full_masked_lm_logits(
                    model, backbone, model.input["mask_positions"]
                ),
                "nsp_logits": model.get_layer("nsp_dense")(backbone.output["pooled_output"]),
            },
        )
        labels = {"mlm_logits": labels, "nsp_logits": np.array([0, 1])}
        loss = {"mlm_logits": loss, "nsp_logits": loss}
    _assert_same_outputs_and_step(
        model, reference, inputs, labels, loss, moved="encoder_block_1/feedforward/output_dense/kernel"
    )


@pytest.mark.slow
def test_pretraining_fit_step():
    model = bert_pretraining(bert(**TINY))
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss={
            "mlm_logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "nsp_logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        },
    )
    labels = {"mlm_logits": np.array([[5, 6, 7], [8, 9, 10]]), "nsp_logits": np.array([0, 1])}
    history = model.fit(_with_positions(_inputs()), labels, batch_size=2, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


# Bad arguments and inputs.


@pytest.mark.parametrize(
    "override, match",
    [
        ({"num_heads": 5}, "num_heads"),
        ({"vocabulary_size": 0}, "vocabulary_size"),
        ({"num_layers": 1.5}, "num_layers"),
        ({"dropout": 1.0}, "dropout"),
        ({"layer_norm_epsilon": -1.0}, "layer_norm_epsilon"),
        ({"max_sequence_length": None}, "max_sequence_length"),
        ({"activation": "swish"}, "activation"),
    ],
)
def test_bad_builder_arguments(override, match):
    with pytest.raises(ValueError, match=f"`{match}`.*Received: {match}="):
        bert(**{**TINY, **override})


def test_bad_head_arguments():
    backbone = bert(**TINY)
    with pytest.raises(ValueError, match="`num_classes`"):
        bert_classifier(backbone, num_classes=0)
    with pytest.raises(ValueError, match="`dropout`"):
        bert_classifier(backbone, num_classes=2, dropout=2.0)
    not_bert = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    for head in (bert_masked_lm, bert_pretraining):
        with pytest.raises(ValueError, match="`backbone` must be a BERT backbone"):
            head(not_bert)


def test_sequence_longer_than_the_position_table():
    model = bert(**TINY)
    too_long = _inputs(lengths=(25, 25), total=25)
    with pytest.raises(ValueError, match="`token_ids` may have at most max_sequence_length=24"):
        model(too_long)


def test_wrong_input_names_and_dtypes():
    # The models check their inputs themselves (keras_transformers.models.model.Model).
    model = bert(**TINY)
    inputs = _inputs()
    boolean_mask = model({**inputs, "padding_mask": inputs["padding_mask"].astype(bool)})
    np.testing.assert_allclose(
        to_numpy(boolean_mask["pooled_output"]), to_numpy(model(inputs)["pooled_output"]), atol=1e-6
    )
    for changes, match in (
        ({"segment_ids": None}, "Missing input `segment_ids`"),
        ({"token_type_ids": inputs["segment_ids"]}, "Unexpected input `token_type_ids`"),
        ({"token_ids": inputs["token_ids"].astype("float32")}, "`token_ids` must be an integer"),
        ({"padding_mask": inputs["padding_mask"] * 1.0}, "`padding_mask` must be an integer or"),
        ({"segment_ids": inputs["segment_ids"][0]}, "`segment_ids` must have shape"),
        ({"padding_mask": inputs["padding_mask"][:, :4]}, "`padding_mask` must have the shape"),
        ({"segment_ids": inputs["segment_ids"] + 2}, r"`segment_ids` must be in \[0, 2\)"),
    ):
        bad = {k: v for k, v in {**inputs, **changes}.items() if v is not None}
        with pytest.raises(ValueError, match=match):
            model(bad)
    masked_lm = bert_masked_lm(model)
    with pytest.raises(ValueError, match="`mask_positions` must index the sequence"):
        masked_lm({**inputs, "mask_positions": np.array([[8], [0]], "int32")})
