"""The encoder-decoder Transformer: parameter counts against Hugging Face Marian and the
paper, outputs against Marian with copied weights, and behaviour on a tiny config.

Forward passes go through `predict_on_batch` (one compiled function per input shape),
and nearly every test uses the same input shapes, so JAX compiles the graph few times.
"""

import math

import keras
import numpy as np
import pytest
from keras import ops

from keras_transformers.models import from_preset
from keras_transformers.models.model import validate_inputs
from keras_transformers.models.transformer import (
    CONFIGS,
    decode,
    encode,
    init_decoder_cache,
    transformer,
)
from tests.testing import to_numpy

TINY = CONFIGS["transformer_tiny"]
VOCABULARY_SIZE = TINY["encoder_vocabulary_size"]
BATCH, SOURCE_LENGTH, TARGET_LENGTH = 2, 7, 5
SOURCE_LENGTHS, TARGET_LENGTHS = (7, 4), (5, 3)


def _lengths_mask(lengths, total):
    return (np.arange(total)[None, :] < np.asarray(lengths)[:, None]).astype("int32")


def make_inputs(
    source_length=SOURCE_LENGTH,
    target_length=TARGET_LENGTH,
    source_lengths=SOURCE_LENGTHS,
    target_lengths=TARGET_LENGTHS,
    vocabulary_size=VOCABULARY_SIZE,
    seed=0,
):
    """Right-padded token ids (pad id 0) and their int32 padding masks."""
    rng = np.random.default_rng(seed)
    encoder_mask = _lengths_mask(source_lengths, source_length)  # (B, S)
    decoder_mask = _lengths_mask(target_lengths, target_length)  # (B, T)
    encoder_ids = rng.integers(1, vocabulary_size, encoder_mask.shape).astype("int32")
    decoder_ids = rng.integers(1, vocabulary_size, decoder_mask.shape).astype("int32")
    return {
        "encoder_token_ids": encoder_ids * encoder_mask,
        "encoder_padding_mask": encoder_mask,
        "decoder_token_ids": decoder_ids * decoder_mask,
        "decoder_padding_mask": decoder_mask,
    }


def forward(model, inputs):
    return np.asarray(model.predict_on_batch(inputs))


@pytest.fixture(scope="module")
def tiny_model():
    return transformer(**TINY)


def expected_parameter_count(
    encoder_vocabulary_size,
    decoder_vocabulary_size,
    num_layers,
    hidden_dim,
    intermediate_dim,
    share_embeddings=False,
    tie_output_projection=True,
    num_encoder_layers=None,
    num_decoder_layers=None,
    **unused,
):
    """The parameter count of `transformer(**config)`, written out from the paper."""
    d, f = hidden_dim, intermediate_dim
    attention = 4 * (d * d + d)  # W^Q, W^K, W^V (h heads of d/h) and W^O, with biases
    feedforward = (d * f + f) + (f * d + d)
    layer_norm = 2 * d
    encoder_block = attention + feedforward + 2 * layer_norm
    decoder_block = 2 * attention + feedforward + 3 * layer_norm
    embeddings = encoder_vocabulary_size * d
    if not share_embeddings:
        embeddings += decoder_vocabulary_size * d
    head = 0 if tie_output_projection else d * decoder_vocabulary_size + decoder_vocabulary_size
    return (
        embeddings
        + encoder_block * (num_encoder_layers or num_layers)
        + decoder_block * (num_decoder_layers or num_layers)
        + head
    )


# Parameter counts -----------------------------------------------------------------


FORMULA_LAYOUTS = (
    {},
    {"share_embeddings": True},
    {"tie_output_projection": False, "decoder_vocabulary_size": 700},
    {
        "share_embeddings": True,
        "tie_output_projection": False,
        "num_encoder_layers": 1,
        "num_decoder_layers": 3,
        "num_heads": 2,
    },
)


def test_parameter_count_formula_matches_built_models(tiny_model):
    # The paper configurations take 8-25 s to build (slow test below), so the base/big
    # tests use the formula; this checks the formula itself on built models of every
    # layout (hidden size kept at 64: JAX compiles the initializers once per shape).
    assert tiny_model.count_params() == expected_parameter_count(**TINY)
    for overrides in FORMULA_LAYOUTS[1:]:
        config = {**TINY, **overrides}
        built = transformer(**config).count_params()
        assert built == expected_parameter_count(**config), overrides


def _marian(config, device="meta"):
    import torch
    import transformers

    marian_config = transformers.MarianConfig(
        vocab_size=config["encoder_vocabulary_size"],
        d_model=config["hidden_dim"],
        encoder_layers=config["num_layers"],
        decoder_layers=config["num_layers"],
        encoder_attention_heads=config["num_heads"],
        decoder_attention_heads=config["num_heads"],
        encoder_ffn_dim=config["intermediate_dim"],
        decoder_ffn_dim=config["intermediate_dim"],
        activation_function="relu",
        scale_embedding=True,
        share_encoder_decoder_embeddings=True,
        tie_word_embeddings=True,
        max_position_embeddings=config["max_sequence_length"],
        pad_token_id=0,
        decoder_start_token_id=0,
        dropout=0.0,
        attention_dropout=0.0,
        activation_dropout=0.0,
    )
    with torch.device(device):
        return transformers.MarianMTModel(marian_config).eval()


@pytest.mark.parametrize(
    "preset,paper_count", [("transformer_base", 65e6), ("transformer_big", 213e6)]
)
def test_parameter_count_matches_marian_and_the_paper(preset, paper_count):
    # Marian built on the meta device: shapes only, no memory, milliseconds.
    config = CONFIGS[preset]
    marian = _marian(config)
    # Marian is the same post-norm architecture with a shared, tied embedding. Its
    # sinusoidal position tables are frozen Parameters (ours are computed, no weights),
    # and `final_logits_bias` is a zero buffer, not a Parameter: counting trainable
    # parameters leaves exactly the same set of tensors.
    trainable = sum(p.numel() for p in marian.parameters() if p.requires_grad)
    frozen = {name for name, p in marian.named_parameters() if not p.requires_grad}
    assert frozen == {
        "model.encoder.embed_positions.weight",
        "model.decoder.embed_positions.weight",
    }
    assert "final_logits_bias" in dict(marian.named_buffers())
    assert marian.lm_head.weight is marian.model.shared.weight
    ours = expected_parameter_count(**config)
    assert ours == trainable
    # Table 3 says 65M (base) and 213M (big); we get 63.1M and 214.2M. No one vocabulary
    # size reconciles both (base would need ~40.7k tokens, big ~35.8k), so the gap is the
    # paper's rounding and its "about 37000 tokens" vocabulary, not a missing tensor.
    assert abs(ours - paper_count) / paper_count < 0.04, ours


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["transformer_base", "transformer_big"])
def test_parameter_count_of_built_paper_models(preset):
    keras.config.set_dtype_policy("bfloat16")  # halves the memory; counts do not change
    assert from_preset(preset).count_params() == expected_parameter_count(**CONFIGS[preset])


def test_share_embeddings_makes_one_matrix(tiny_model):
    separate = tiny_model
    shared = transformer(**TINY, share_embeddings=True)
    d = TINY["hidden_dim"]
    assert separate.count_params() - shared.count_params() == VOCABULARY_SIZE * d
    names = {layer.name for layer in shared.layers}
    assert "token_embedding" in names
    assert not names & {"encoder_token_embedding", "decoder_token_embedding"}
    embedding_weights = [w for w in shared.weights if w.path.startswith("token_embedding/")]
    assert [tuple(w.shape) for w in embedding_weights] == [(VOCABULARY_SIZE, d)]


# Reference outputs -----------------------------------------------------------------


def _hidden_permutation(d):
    """Our hidden channel i is Marian's channel perm[i]: we interleave sin/cos (paper
    section 3.5), Marian puts the sines in the first half and the cosines in the second.
    LayerNorm, attention and the feed-forward network commute with a permutation of the
    hidden channels, so permuting every weight on its hidden axis gives the same logits."""
    perm = np.empty(d, dtype=int)
    perm[0::2] = np.arange(d // 2)
    perm[1::2] = d // 2 + np.arange(d // 2)
    return perm


def _copy_marian_weights(marian, model, num_heads):
    state = {name: p.detach().numpy() for name, p in marian.state_dict().items()}
    d = model.get_layer("token_embedding").output_dim
    perm, head_dim = _hidden_permutation(d), d // num_heads

    def attention(layer, prefix):
        for ours, theirs in (
            ("query_dense", "q_proj"),
            ("key_dense", "k_proj"),
            ("value_dense", "v_proj"),
        ):
            dense = getattr(layer, ours)
            kernel = state[f"{prefix}.{theirs}.weight"].T[perm]  # (D, N * H)
            dense.kernel.assign(kernel.reshape(d, num_heads, head_dim))
            dense.bias.assign(state[f"{prefix}.{theirs}.bias"].reshape(num_heads, head_dim))
        kernel = state[f"{prefix}.out_proj.weight"].T[:, perm]  # (N * H, D)
        layer.output_dense.kernel.assign(kernel.reshape(num_heads, head_dim, d))
        layer.output_dense.bias.assign(state[f"{prefix}.out_proj.bias"][perm])

    def layer_norm(layer, prefix):
        layer.gamma.assign(state[f"{prefix}.weight"][perm])
        layer.beta.assign(state[f"{prefix}.bias"][perm])

    def feedforward(layer, prefix):
        layer.intermediate_dense.kernel.assign(state[f"{prefix}.fc1.weight"].T[perm])
        layer.intermediate_dense.bias.assign(state[f"{prefix}.fc1.bias"])
        layer.output_dense.kernel.assign(state[f"{prefix}.fc2.weight"].T[:, perm])
        layer.output_dense.bias.assign(state[f"{prefix}.fc2.bias"][perm])

    model.get_layer("token_embedding").embeddings.assign(state["model.shared.weight"][:, perm])
    for i in range(marian.config.encoder_layers):
        block, prefix = model.get_layer(f"encoder_block_{i}"), f"model.encoder.layers.{i}"
        attention(block.self_attention, f"{prefix}.self_attn")
        layer_norm(block.self_attention_layer_norm, f"{prefix}.self_attn_layer_norm")
        feedforward(block.feedforward, prefix)
        layer_norm(block.feedforward_layer_norm, f"{prefix}.final_layer_norm")
    for i in range(marian.config.decoder_layers):
        block, prefix = model.get_layer(f"decoder_block_{i}"), f"model.decoder.layers.{i}"
        attention(block.self_attention, f"{prefix}.self_attn")
        layer_norm(block.self_attention_layer_norm, f"{prefix}.self_attn_layer_norm")
        attention(block.cross_attention, f"{prefix}.encoder_attn")
        layer_norm(block.cross_attention_layer_norm, f"{prefix}.encoder_attn_layer_norm")
        feedforward(block.feedforward, prefix)
        layer_norm(block.feedforward_layer_norm, f"{prefix}.final_layer_norm")


def test_outputs_match_marian_with_copied_weights():
    import torch

    config = {**TINY, "share_embeddings": True, "dropout": 0.0}
    torch.manual_seed(0)
    marian = _marian(config, device="cpu")
    with torch.no_grad():
        for p in marian.parameters():
            if p.requires_grad:  # random everything but the sinusoid tables
                p.normal_(0.0, 0.2)
    model = transformer(**config)
    _copy_marian_weights(marian, model, config["num_heads"])
    inputs = make_inputs()
    with torch.no_grad():
        expected = marian(
            input_ids=torch.tensor(inputs["encoder_token_ids"], dtype=torch.long),
            attention_mask=torch.tensor(inputs["encoder_padding_mask"]),
            decoder_input_ids=torch.tensor(inputs["decoder_token_ids"], dtype=torch.long),
            decoder_attention_mask=torch.tensor(inputs["decoder_padding_mask"]),
        ).logits.numpy()
    got = forward(model, inputs)
    assert got.shape == expected.shape == (BATCH, TARGET_LENGTH, VOCABULARY_SIZE)
    assert np.abs(expected).max() > 1.0  # the comparison is not between near-zero logits
    # Every position, padded ones included: both mask the same keys.
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)


# Behaviour on the tiny configuration ----------------------------------------------


def test_tiny_preset_and_output(tiny_model):
    assert tiny_model.name == "transformer"
    assert from_preset("transformer_tiny", num_layers=1).count_params() == (
        expected_parameter_count(**{**TINY, "num_layers": 1})
    )
    assert set(tiny_model.input) == {
        "encoder_token_ids",
        "encoder_padding_mask",
        "decoder_token_ids",
        "decoder_padding_mask",
    }
    assert all(tiny_model.input[name].name == name for name in tiny_model.input)
    assert all(i.dtype == "int32" for i in tiny_model.inputs)
    names = {layer.name for layer in tiny_model.layers}
    assert {"encoder_block_0", "encoder_block_1", "decoder_block_0", "decoder_block_1"} <= names
    assert {
        "encoder_token_embedding",
        "decoder_token_embedding",
        "encoder_position_encoding",
        "decoder_position_encoding",
        "encoder_embedding_dropout",
        "decoder_embedding_dropout",
    } <= names
    assert "output_projection" not in names
    logits = forward(tiny_model, make_inputs())
    assert logits.shape == (BATCH, TARGET_LENGTH, VOCABULARY_SIZE)
    assert logits.dtype == np.float32
    assert np.all(np.isfinite(logits))


def test_source_shorter_than_target_and_longer_than_max_sequence_length(tiny_model):
    # The sinusoids have no table: the graph runs past max_sequence_length (section 3.5)
    # and only `validate_inputs` with an explicit limit refuses such inputs.
    inputs = make_inputs(
        source_length=3, target_length=65, source_lengths=(3, 2), target_lengths=(65, 9)
    )
    logits = forward(tiny_model, inputs)
    assert logits.shape == (BATCH, 65, VOCABULARY_SIZE)
    assert np.all(np.isfinite(logits))
    with pytest.raises(ValueError, match="`decoder_token_ids` may have at most max_sequence_length"):
        validate_inputs(tiny_model, inputs, max_sequence_length=TINY["max_sequence_length"])


def test_decoder_is_causal(tiny_model):
    inputs = make_inputs()
    before = forward(tiny_model, inputs)
    t = 2
    changed = {**inputs, "decoder_token_ids": inputs["decoder_token_ids"].copy()}
    changed["decoder_token_ids"][:, t] = changed["decoder_token_ids"][:, t] % 997 + 1
    after = forward(tiny_model, changed)
    np.testing.assert_array_equal(after[:, :t], before[:, :t])  # bit for bit
    assert not np.allclose(after[:, t:], before[:, t:], atol=1e-3)


def test_padded_tokens_change_nothing(tiny_model):
    inputs = make_inputs()
    before = forward(tiny_model, inputs)
    changed = {name: value.copy() for name, value in inputs.items()}
    # Source row 1 is padded after 4 tokens; target row 1 after 3.
    changed["encoder_token_ids"][1, 4:] = [11, 12, 13]
    changed["decoder_token_ids"][1, 3:] = [14, 15]
    after = forward(tiny_model, changed)
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_allclose(after[1, :3], before[1, :3], atol=1e-6, rtol=0)
    # ... whereas a real source token moves every target position.
    changed["encoder_token_ids"][1, 0] = changed["encoder_token_ids"][1, 0] % 997 + 1
    moved = forward(tiny_model, changed)
    assert not np.allclose(moved[1, :3], before[1, :3], atol=1e-3)


def test_left_padded_target(tiny_model):
    inputs = make_inputs()
    inputs["decoder_padding_mask"] = np.array([[1] * 5, [0, 0, 1, 1, 1]], "int32")
    before = forward(tiny_model, inputs)
    changed = {**inputs, "decoder_token_ids": inputs["decoder_token_ids"].copy()}
    changed["decoder_token_ids"][1, :2] = [21, 22]
    after = forward(tiny_model, changed)
    assert np.all(np.isfinite(after))
    np.testing.assert_allclose(after[:, 2:], before[:, 2:], atol=1e-6, rtol=0)


def test_save_and_load_reproduces_outputs(tiny_model, tmp_path):
    inputs = make_inputs()
    path = str(tmp_path / "transformer.keras")
    tiny_model.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(
        forward(reloaded, inputs), forward(tiny_model, inputs), atol=1e-6, rtol=0
    )
    # The tie survives: the decoder embedding is still one matrix, for input and output.
    assert reloaded.count_params() == tiny_model.count_params() == expected_parameter_count(**TINY)
    embedding = reloaded.get_layer("decoder_token_embedding")
    assert len(embedding._inbound_nodes) == 2


def _check_mixed_policies(model):
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if layer.name == "output_projection":  # float32 logits, as keras-hub
            assert layer.dtype_policy.name == "float32"
        elif not isinstance(layer, keras.layers.InputLayer):
            assert layer.dtype_policy.name == "mixed_bfloat16", layer.name
    assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in model.weights)
    assert model.output.dtype == "float32"


def test_mixed_bfloat16():
    config = {**TINY, "num_layers": 1}
    model = transformer(**config, dtype="mixed_bfloat16")
    _check_mixed_policies(model)
    logits = forward(model, make_inputs())
    assert logits.dtype == np.float32
    assert np.all(np.isfinite(logits))
    assert np.abs(logits).max() > 1e-3
    # The global policy reaches every layer too; the untied head stays float32.
    keras.config.set_dtype_policy("mixed_bfloat16")
    _check_mixed_policies(transformer(**config, tie_output_projection=False))


def test_one_fit_step_with_teacher_forcing():
    # No dropout and SGD: on 2 cores JAX's random bits and TF's Adam update add 4-10 s of
    # compilation; training=True through the blocks' dropout is tested with the blocks.
    model = transformer(**{**TINY, "num_layers": 1, "dropout": 0.0})
    rng = np.random.default_rng(1)
    # Targets start with a BOS id (1); the decoder reads the target shifted right and
    # predicts the next token. Padded positions (id 0) get zero loss weight.
    targets = rng.integers(2, VOCABULARY_SIZE, (BATCH, TARGET_LENGTH + 1)).astype("int32")
    targets[:, 0] = 1
    targets[1, 4:] = 0
    inputs = make_inputs()
    inputs["decoder_token_ids"] = targets[:, :-1]
    inputs["decoder_padding_mask"] = (targets[:, :-1] != 0).astype("int32")
    labels, weights = targets[:, 1:], (targets[:, 1:] != 0).astype("float32")
    model.compile(
        optimizer=keras.optimizers.SGD(0.1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    start = [to_numpy(w) for w in model.trainable_weights]
    history = model.fit(
        inputs, labels, sample_weight=weights, batch_size=BATCH, epochs=1, verbose=0
    )
    loss = history.history["loss"][0]
    # N(0, d^-0.5) embeddings give logits of about unit scale: the first loss is near
    # log(vocabulary), not far above it.
    assert np.isfinite(loss) and loss < math.log(VOCABULARY_SIZE) + 2, loss
    changed = [not np.array_equal(to_numpy(w), s) for w, s in zip(model.trainable_weights, start)]
    assert sum(changed) > 0.9 * len(changed)


# Parts for cached generation -------------------------------------------------------


def _symbolic(shape, name, dtype="int32"):
    return keras.Input(batch_shape=(BATCH,) + tuple(shape), dtype=dtype, name=name)


def test_encode_decode_and_cached_decode_match_the_model(tiny_model):
    # `encode` and a whole-target `decode` on symbolic inputs (one compilation, far
    # cheaper than eager JAX) must rebuild the model's logits.
    inputs = make_inputs()
    expected = forward(tiny_model, inputs)
    lengths = {"encoder": SOURCE_LENGTH, "decoder": TARGET_LENGTH}
    symbolic = {name: _symbolic((lengths[name.split("_")[0]],), name) for name in inputs}
    encoder_mask, decoder_mask = symbolic["encoder_padding_mask"], symbolic["decoder_padding_mask"]
    encoder_output = encode(tiny_model, symbolic["encoder_token_ids"], encoder_mask)
    logits = decode(
        tiny_model, symbolic["decoder_token_ids"], encoder_output, encoder_mask, decoder_mask
    )
    parts = keras.Model(symbolic, [logits, encoder_output])
    full_logits, encoder_values = parts.predict_on_batch(inputs)
    np.testing.assert_allclose(np.asarray(full_logits), expected, atol=1e-5, rtol=0)

    # Then the target one token at a time through the caches, eagerly: a functional graph
    # cannot hold it (Keras' Function check counts a layer's outputs from its first call,
    # and the model called each block with one output, not three).
    encoder_output = ops.convert_to_tensor(np.asarray(encoder_values))
    cache = init_decoder_cache(tiny_model, encoder_output, max_length=TARGET_LENGTH)
    steps = []
    for t in range(TARGET_LENGTH):
        step_logits, cache = decode(
            tiny_model,
            inputs["decoder_token_ids"][:, t : t + 1],
            encoder_output,
            inputs["encoder_padding_mask"],
            inputs["decoder_padding_mask"],
            cache=cache,
            cache_update_index=t,
        )
        steps.append(to_numpy(step_logits))
    step_logits = np.concatenate(steps, axis=1)
    real = inputs["decoder_padding_mask"].astype(bool)
    np.testing.assert_allclose(step_logits[real], expected[real], atol=1e-5, rtol=0)


# Bad inputs ------------------------------------------------------------------------


def test_bad_arguments():
    for overrides, match in (
        (
            {"share_embeddings": True, "decoder_vocabulary_size": 999},
            "encoder_vocabulary_size=1000, decoder_vocabulary_size=999",
        ),
        ({"num_heads": 3}, "hidden_dim=64, num_heads=3"),
        ({"num_layers": 0}, "num_layers=0"),
        ({"num_decoder_layers": -1}, "num_decoder_layers=-1"),
        ({"dropout": 1.0}, "dropout=1.0"),
        ({"max_sequence_length": None}, "max_sequence_length=None"),
        ({"share_embeddings": 1}, "share_embeddings=1"),
    ):
        with pytest.raises(ValueError, match=match):
            transformer(**{**TINY, **overrides})


def test_wrong_input_names(tiny_model):
    inputs = make_inputs()
    inputs["source_ids"] = inputs.pop("encoder_token_ids")
    with pytest.raises(ValueError, match="Unexpected input `source_ids`"):
        tiny_model(inputs)
    del inputs["source_ids"]
    with pytest.raises(ValueError, match="Missing input `encoder_token_ids`"):
        tiny_model(inputs)


def test_model_checks_its_inputs(tiny_model):
    inputs = make_inputs()
    boolean_mask = inputs["encoder_padding_mask"] > 0  # booleans are fine too
    np.testing.assert_allclose(
        forward(tiny_model, {**inputs, "encoder_padding_mask": boolean_mask}),
        forward(tiny_model, inputs),
        atol=1e-6,
    )
    for changes, match in (
        (
            {"decoder_token_ids": inputs["decoder_token_ids"].astype("float32")},
            "`decoder_token_ids` must be an integer tensor",
        ),
        (
            {"encoder_token_ids": inputs["encoder_token_ids"][0]},
            "`encoder_token_ids` must have shape",
        ),
        (
            {"encoder_padding_mask": inputs["encoder_padding_mask"][:, :3]},
            "`encoder_padding_mask` must have the shape of `encoder_token_ids`",
        ),
        (
            {"encoder_token_ids": inputs["encoder_token_ids"] + VOCABULARY_SIZE},
            r"`encoder_token_ids` must be in \[0, 1000\)",
        ),
        (
            {
                "decoder_token_ids": inputs["decoder_token_ids"][:1],
                "decoder_padding_mask": inputs["decoder_padding_mask"][:1],
            },
            "same batch size",
        ),
    ):
        with pytest.raises(ValueError, match=match):
            tiny_model({**inputs, **changes})
