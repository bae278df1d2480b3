"""GPT-2 builder: parameter counts against Hugging Face `transformers`, causality, padding,
saving, mixed precision, training and input checks."""

import os

import keras
import numpy as np
import pytest

from keras_transformers.models import from_preset
from keras_transformers.models.gpt2 import CONFIGS, gpt2
from tests.testing import to_numpy

# A size between the tiny preset and gpt2_small: n_inner != 4 * n_embd on purpose.
MID_SIZE = dict(
    vocabulary_size=3001,
    num_layers=3,
    num_heads=4,
    hidden_dim=128,
    intermediate_dim=384,
    max_sequence_length=256,
)
# The behaviour tests share one configuration and one input shape (2, 8): JAX compiles
# each eager op once per shape, which is most of their time.
SMALL = dict(CONFIGS["gpt2_tiny"], dropout=0.0)
# Hugging Face's model cards: gpt2, gpt2-medium, gpt2-large, gpt2-xl (tied weights once).
PUBLISHED_COUNTS = {
    "gpt2_small": 124_439_808,
    "gpt2_medium": 354_823_168,
    "gpt2_large": 774_030_080,
    "gpt2_xl": 1_557_611_200,
}


def hf_config(config):
    import transformers

    return transformers.GPT2Config(
        vocab_size=config["vocabulary_size"],
        n_layer=config["num_layers"],
        n_head=config["num_heads"],
        n_embd=config["hidden_dim"],
        n_inner=config["intermediate_dim"],
        n_positions=config["max_sequence_length"],
        activation_function="gelu_new",
        bos_token_id=0,
        eos_token_id=0,
    )


def hf_parameter_count(config, meta=False):
    import torch
    import transformers

    if meta:
        with torch.device("meta"):
            model = transformers.GPT2LMHeadModel(hf_config(config))
    else:
        model = transformers.GPT2LMHeadModel(hf_config(config))
    # parameters() yields the tied wte / lm_head matrix once.
    return sum(p.numel() for p in model.parameters())


def formula_parameter_count(config):
    """Counted from the architecture: embeddings, blocks, final layer norm."""
    v, p = config["vocabulary_size"], config["max_sequence_length"]
    d, f, n = config["hidden_dim"], config["intermediate_dim"], config["num_layers"]
    attention = 4 * (d * d + d)  # query, key, value, output: kernels and biases
    feedforward = d * f + f + f * d + d
    layer_norms = 2 * 2 * d
    return v * d + p * d + n * (attention + feedforward + layer_norms) + 2 * d


def inputs_for(config, batch_size=2, length=8, seed=0):
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(0, config["vocabulary_size"], (batch_size, length)).astype("int32")
    return {"token_ids": token_ids, "padding_mask": np.ones_like(token_ids)}


def test_structure_and_output():
    model = from_preset("gpt2_tiny")
    assert model.name == "gpt2"
    assert sorted(i.name for i in model.inputs) == ["padding_mask", "token_ids"]
    assert {keras.backend.standardize_dtype(i.dtype) for i in model.inputs} == {"int32"}
    names = {layer.name for layer in model.layers}
    assert {"token_embedding", "position_embedding", "final_layer_norm"} <= names
    assert {"decoder_block_0", "decoder_block_1"} <= names and "decoder_block_2" not in names
    block = model.get_layer("decoder_block_0")
    assert block.normalize_first and not block.use_cross_attention
    assert block.activation == "gelu_approximate"
    # The tie: one (V, D) matrix and no separate output projection.
    embedding_weights = model.get_layer("token_embedding").weights
    assert [tuple(w.shape) for w in embedding_weights] == [(1024, 64)]
    logits = model(inputs_for(CONFIGS["gpt2_tiny"]))
    assert tuple(logits.shape) == (2, 8, 1024)
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert model.count_params() == hf_parameter_count(CONFIGS["gpt2_tiny"])
    assert model.count_params() == formula_parameter_count(CONFIGS["gpt2_tiny"])


def test_parameter_count_matches_transformers_built():
    count = gpt2(**MID_SIZE).count_params()
    assert count == hf_parameter_count(MID_SIZE)
    assert count == formula_parameter_count(MID_SIZE)


def test_parameter_count_of_paper_sizes():
    # Building these in Keras takes 10-20 s each (gpt2_small): the formula, checked
    # against built models above, stands in; Hugging Face's side is built on "meta".
    for preset, published in PUBLISHED_COUNTS.items():
        config = CONFIGS[preset]
        assert formula_parameter_count(config) == hf_parameter_count(config, meta=True), preset
        assert formula_parameter_count(config) == published, preset


@pytest.mark.slow
def test_parameter_count_of_built_gpt2_small():
    assert from_preset("gpt2_small").count_params() == PUBLISHED_COUNTS["gpt2_small"]


def test_causality():
    model = gpt2(**SMALL)
    inputs = inputs_for(SMALL)
    before = to_numpy(model(inputs))
    t = 5
    changed = {k: v.copy() for k, v in inputs.items()}
    changed["token_ids"][:, t] = (changed["token_ids"][:, t] + 1) % SMALL["vocabulary_size"]
    after = to_numpy(model(changed))
    np.testing.assert_allclose(after[:, :t], before[:, :t], atol=1e-6, rtol=0)
    assert np.abs(after[:, t:] - before[:, t:]).max(axis=-1).min() > 1e-6


def test_padded_tokens_do_not_reach_real_positions():
    # Left padding: real tokens come after the padding, so only the padding mask
    # keeps the padded tokens out of their attention.
    model = gpt2(**SMALL)
    inputs = inputs_for(SMALL, length=8)
    inputs["padding_mask"][0, :3] = 0
    before = to_numpy(model(inputs))
    changed = {k: v.copy() for k, v in inputs.items()}
    changed["token_ids"][0, :3] = (changed["token_ids"][0, :3] + 7) % SMALL["vocabulary_size"]
    after = to_numpy(model(changed))
    np.testing.assert_allclose(after[0, 3:], before[0, 3:], atol=1e-6, rtol=0)
    np.testing.assert_allclose(after[1], before[1], atol=1e-6, rtol=0)
    # Without the mask the padded tokens would be seen.
    unmasked = {k: v.copy() for k, v in changed.items()}
    unmasked["padding_mask"][:] = 1
    assert np.abs(to_numpy(model(unmasked))[0, 3:] - before[0, 3:]).max() > 1e-5


def test_save_and_load(tmp_path):
    model = gpt2(**SMALL)
    inputs = inputs_for(SMALL)
    expected = to_numpy(model(inputs))
    path = os.path.join(str(tmp_path), "gpt2.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(to_numpy(reloaded(inputs)), expected, atol=1e-6, rtol=0)
    assert reloaded.count_params() == model.count_params()
    # The tie survives: the reloaded head still reads the token embedding.
    embedding = reloaded.get_layer("token_embedding").embeddings
    embedding.assign(np.zeros(embedding.shape, "float32"))
    np.testing.assert_allclose(to_numpy(reloaded(inputs)), 0.0, atol=1e-6)


def test_mixed_bfloat16():
    model = gpt2(**SMALL, dtype="mixed_bfloat16")
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if not isinstance(layer, keras.layers.InputLayer):
            assert layer.dtype_policy.name == "mixed_bfloat16", layer.name
    for weight in model.weights:
        assert keras.backend.standardize_dtype(weight.dtype) == "float32", weight.path
    # One compiled call (on JAX, eager bfloat16 ops would each compile).
    logits = model.predict_on_batch(inputs_for(SMALL))
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    assert np.all(np.isfinite(to_numpy(logits)))
    # The global policy reaches every layer too.
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = gpt2(**SMALL)
    assert model.get_layer("decoder_block_1").dtype_policy.name == "mixed_bfloat16"
    assert model.get_layer("token_embedding").dtype_policy.name == "mixed_bfloat16"


def test_one_fit_step():
    # One block: compiling the train step is most of the time.
    model = gpt2(**dict(SMALL, num_layers=1, dropout=0.1))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    inputs = inputs_for(SMALL, length=9)
    x = {k: v[:, :-1] for k, v in inputs.items()}
    y = inputs["token_ids"][:, 1:]
    start = [to_numpy(w) for w in model.trainable_weights]
    history = model.fit(x, y, sample_weight=x["padding_mask"], batch_size=2, epochs=1, verbose=0)
    loss = history.history["loss"][0]
    # Logits start near zero: the loss starts near log(vocabulary_size).
    assert np.isfinite(loss) and abs(loss - np.log(SMALL["vocabulary_size"])) < 0.5
    changed = [not np.array_equal(to_numpy(w), s) for w, s in zip(model.trainable_weights, start)]
    assert all(changed)


def test_bad_arguments():
    for overrides, message in (
        (dict(num_heads=3), "`hidden_dim` must be divisible by `num_heads`"),
        (dict(num_layers=0), "`num_layers` must be a positive int"),
        (dict(vocabulary_size=2.5), "`vocabulary_size` must be a positive int"),
        (dict(dropout=1.0), "`dropout` must be a float in"),
    ):
        with pytest.raises(ValueError, match=message):
            gpt2(**dict(SMALL, **overrides))


def test_bad_inputs():
    # The model checks its inputs itself (keras_transformers.models.model.Model).
    model = gpt2(**SMALL)
    inputs = inputs_for(SMALL, length=SMALL["max_sequence_length"] + 1)
    with pytest.raises(ValueError, match="`token_ids` may have at most max_sequence_length=128"):
        model(inputs)

    inputs = inputs_for(SMALL)
    for bad, match in (
        (
            {"input_ids": inputs["token_ids"], "padding_mask": inputs["padding_mask"]},
            "Unexpected input `input_ids`",
        ),
        ({"token_ids": inputs["token_ids"]}, "Missing input `padding_mask`"),
        (
            dict(inputs, token_ids=inputs["token_ids"].astype("float32")),
            "`token_ids` must be an integer tensor. Received: token_ids with dtype=float32",
        ),
        (
            dict(inputs, padding_mask=inputs["padding_mask"] * 1.0),
            "`padding_mask` must be an integer or boolean tensor",
        ),
        (
            dict(inputs, padding_mask=inputs["padding_mask"][:, :3]),
            "`padding_mask` must have the shape of `token_ids`",
        ),
        (dict(inputs, token_ids=inputs["token_ids"][0]), "`token_ids` must have shape"),
    ):
        with pytest.raises(ValueError, match=match):
            model(bad)
    tensors = {k: keras.ops.convert_to_tensor(v) for k, v in inputs.items()}
    np.testing.assert_allclose(to_numpy(model(tensors)), to_numpy(model(inputs)), atol=1e-6)

