"""Hugging Face GPT-2 checkpoints and tokenizer files -> our GPT-2, against `transformers`."""

import json
import os
import shutil

import numpy as np
import pytest

from keras_transformers.convert import from_huggingface, tokenizer_from_huggingface
from keras_transformers.convert.gpt2 import bpe_tokenizer, load
from tests.testing import BACKEND, SHARED_DATA, to_numpy

TINY_GPT2 = os.path.join(SHARED_DATA, "tiny-gpt2")
GPT2_BPE = os.path.join(SHARED_DATA, "gpt2-bpe")
SHAKESPEARE = os.path.join(SHARED_DATA, "tinyshakespeare", "input.txt")
# Non-trivial sizes: several heads of size 16, n_inner left to its 4 * n_embd default.
HF_SIZES = dict(vocab_size=1000, n_positions=64, n_embd=64, n_head=4, n_layer=3)
TOLERANCE = 1e-4


def needs(path):
    if not os.path.exists(path):
        pytest.skip(f"shared data not found: {path}")


def random_hf_model(model_class="GPT2LMHeadModel", seed=0, **overrides):
    """A randomly initialised `transformers` GPT-2 in eval mode, with non-trivial
    layer-norm parameters (they start at 1 and 0)."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        **dict(HF_SIZES, **overrides), initializer_range=0.05, bos_token_id=0, eos_token_id=0
    )
    model = getattr(transformers, model_class)(config).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if ".ln_" in name or name.startswith(("ln_", "transformer.ln_")):
                parameter.add_(0.2 * torch.randn_like(parameter))
    return model


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A saved random GPT2LMHeadModel: (folder, the torch model)."""
    folder = str(tmp_path_factory.mktemp("gpt2_checkpoint"))
    model = random_hf_model()
    model.save_pretrained(folder)
    return folder, model


def right_padded_inputs(vocabulary_size, seed=0):
    rng = np.random.default_rng(seed)
    token_ids = rng.integers(0, vocabulary_size, (3, 8)).astype("int32")
    padding_mask = np.ones_like(token_ids)
    padding_mask[1, 5:] = 0
    padding_mask[2, 2:] = 0
    token_ids[padding_mask == 0] = 0
    return {"token_ids": token_ids, "padding_mask": padding_mask}


def hf_logits(model, inputs):
    import torch

    with torch.no_grad():
        outputs = model(
            input_ids=torch.tensor(inputs["token_ids"], dtype=torch.long),
            attention_mask=torch.tensor(inputs["padding_mask"], dtype=torch.long),
        )
    if hasattr(outputs, "logits"):
        return outputs.logits.numpy()
    # GPT2Model: the tied head is the transposed token embedding.
    return outputs.last_hidden_state.numpy() @ model.wte.weight.detach().numpy().T


def max_error_on_real_positions(model, hf_model, inputs):
    ours = to_numpy(model.predict_on_batch(inputs))
    reference = hf_logits(hf_model, inputs)
    assert ours.shape == reference.shape
    real = inputs["padding_mask"].astype(bool)
    return float(np.abs(ours - reference)[real].max()), float(np.abs(reference[real]).max())


def test_tiny_gpt2_logits_match_transformers():
    needs(TINY_GPT2)
    import transformers

    model = from_huggingface(TINY_GPT2)
    hf_model = transformers.GPT2LMHeadModel.from_pretrained(TINY_GPT2).eval()
    assert model.count_params() == sum(p.numel() for p in hf_model.parameters()) == 102_714
    error, _ = max_error_on_real_positions(model, hf_model, right_padded_inputs(50257))
    assert error < TOLERANCE


def test_random_checkpoint_logits_match_transformers(checkpoint):
    folder, hf_model = checkpoint
    model = from_huggingface(folder)
    assert model.count_params() == sum(p.numel() for p in hf_model.parameters())
    error, scale = max_error_on_real_positions(model, hf_model, right_padded_inputs(1000))
    assert scale > 0.5  # logits large enough for the comparison to mean something
    assert error < TOLERANCE


def test_base_model_checkpoint_without_prefix(tmp_path):
    hf_model = random_hf_model("GPT2Model", seed=1)
    hf_model.save_pretrained(str(tmp_path))
    from safetensors.numpy import load_file

    assert "h.0.attn.c_attn.weight" in load_file(os.path.join(str(tmp_path), "model.safetensors"))
    model = from_huggingface(str(tmp_path))
    error, _ = max_error_on_real_positions(model, hf_model, right_padded_inputs(1000))
    assert error < TOLERANCE


def test_load_with_dtype(checkpoint):
    folder, _ = checkpoint
    model = from_huggingface(folder, dtype="mixed_bfloat16")
    assert model.get_layer("decoder_block_2").dtype_policy.name == "mixed_bfloat16"
    logits = to_numpy(model.predict_on_batch(right_padded_inputs(1000)))
    assert logits.dtype == np.float32 and np.all(np.isfinite(logits))


def shakespeare_lines(count=300):
    with open(SHAKESPEARE, encoding="utf-8") as f:
        lines = [line for line in f.read().split("\n") if line.strip()]
    return lines[:count]


@pytest.mark.parametrize(
    "folder,vocabulary_name,merges_name",
    [("tiny-gpt2", "vocab.json", "merges.txt"), ("gpt2-bpe", "encoder.json", "vocab.bpe")],
)
def test_tokenizer_matches_transformers(folder, vocabulary_name, merges_name):
    folder = os.path.join(SHARED_DATA, folder)
    needs(folder)
    needs(SHAKESPEARE)
    import transformers

    vocabulary_file = os.path.join(folder, vocabulary_name)
    merges_file = os.path.join(folder, merges_name)
    if vocabulary_name == "vocab.json":
        tokenizer = tokenizer_from_huggingface(folder)
    else:
        tokenizer = bpe_tokenizer(vocabulary_file, merges_file)
    # OpenAI's files are in Hugging Face's formats already (merges open with "#version").
    reference = transformers.GPT2TokenizerFast(vocab=vocabulary_file, merges=merges_file)
    # Shakespeare's contractions (" 't") are where keras-hub's own eager split errs.
    lines = shakespeare_lines() + [
        "naïve café — 3.14 <|endoftext|> tabs\tand  spaces",
        "I'LL pay 12345 ducats,  don't  \n\n you",
    ]
    expected = [reference(line)["input_ids"] for line in lines]
    assert sum(len(ids) for ids in expected) > 2000
    got = [[int(i) for i in np.asarray(ids)] for ids in tokenizer(lines)]
    assert got == expected
    assert tokenizer.detokenize([expected[0]])[0] == lines[0]
    if folder.endswith("tiny-gpt2") and BACKEND == "tensorflow":
        # Inside tf.data keras-hub takes its TensorFlow path, the same on every backend
        # (slow: a few lines, one backend).
        import tensorflow as tf  # keras-hub has imported it already

        dataset = tf.data.Dataset.from_tensor_slices(lines[-20:]).batch(20).map(tokenizer)
        assert next(iter(dataset)).to_list() == expected[-20:]


# Bad inputs: each error names the file and the tensor or setting.


def copy_checkpoint(folder, destination):
    os.makedirs(destination, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(folder, name), os.path.join(destination, name))
    return destination


def edit_config(folder, **changes):
    path = os.path.join(folder, "config.json")
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    config.update(changes)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(config, f)


def edit_weights(folder, edit):
    from safetensors.numpy import load_file, save_file

    path = os.path.join(folder, "model.safetensors")
    weights = load_file(path)
    edit(weights)
    save_file(weights, path)
    return path


def test_missing_folder_and_files(tmp_path, checkpoint):
    with pytest.raises(ValueError, match="checkpoint folder"):
        from_huggingface(os.path.join(str(tmp_path), "missing"))
    empty = os.path.join(str(tmp_path), "empty")
    os.makedirs(empty)
    with pytest.raises(ValueError, match="No config.json"):
        from_huggingface(empty)
    folder = copy_checkpoint(checkpoint[0], os.path.join(str(tmp_path), "no_weights"))
    os.remove(os.path.join(folder, "model.safetensors"))
    with pytest.raises(ValueError, match="No model.safetensors"):
        from_huggingface(folder)
    with pytest.raises(ValueError, match="`vocabulary_file` must be an existing file"):
        tokenizer_from_huggingface(folder)
    (tmp_path / "vocab.json").write_text("{}")
    with pytest.raises(ValueError, match="merges_file=.*merges.txt"):
        bpe_tokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))


def test_unsupported_model_type_and_configuration(tmp_path, checkpoint):
    folder = copy_checkpoint(checkpoint[0], str(tmp_path))
    edit_config(folder, model_type="llama")
    with pytest.raises(ValueError, match=r"config\.json.*model_type='llama'"):
        from_huggingface(folder)
    edit_config(folder, model_type="gpt2", activation_function="relu")
    with pytest.raises(ValueError, match="activation_function='relu'"):
        from_huggingface(folder)
    edit_config(
        folder, activation_function="gelu_pytorch_tanh", scale_attn_by_inverse_layer_idx=True
    )
    with pytest.raises(ValueError, match="scale_attn_by_inverse_layer_idx=True"):
        from_huggingface(folder)


def test_tensor_with_wrong_shape(tmp_path, checkpoint):
    for tensor, shape in (
        ("transformer.h.1.mlp.c_fc.weight", (64, 100)),
        ("transformer.h.2.attn.c_attn.weight", (64, 64)),  # checked before the split
    ):
        folder = copy_checkpoint(checkpoint[0], os.path.join(str(tmp_path), tensor))

        def edit(weights):
            weights[tensor] = np.zeros(shape, "float32")

        path = edit_weights(folder, edit)
        with pytest.raises(ValueError) as error:
            from_huggingface(folder)
        assert f"`{tensor}`" in str(error.value) and path in str(error.value)
        assert str(shape) in str(error.value)


def test_missing_tensor_and_untied_head(tmp_path, checkpoint):
    folder = copy_checkpoint(checkpoint[0], str(tmp_path))
    path = edit_weights(folder, lambda weights: weights.pop("transformer.ln_f.bias"))
    missing = r"`transformer\.ln_f\.bias` is missing from .*model\.safetensors"
    with pytest.raises(ValueError, match=missing):
        from_huggingface(folder)
    # An lm_head saved beside wte must be the same matrix.
    from safetensors.numpy import load_file

    weights = dict(load_file(os.path.join(checkpoint[0], "model.safetensors")))
    config = {**HF_SIZES, "model_type": "gpt2"}
    weights["lm_head.weight"] = weights["transformer.wte.weight"].copy()
    assert load(config, weights, source=path).count_params() > 0
    weights["lm_head.weight"][0, 0] += 1.0
    with pytest.raises(ValueError, match="`lm_head.weight` in .* differs"):
        load(config, weights, source=path)
