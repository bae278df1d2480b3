"""Hugging Face GPT-2 checkpoints (`GPT2Model`, `GPT2LMHeadModel`) -> `models.gpt2`.

Also the byte-level BPE tokenizer of GPT-2 (Radford et al. 2019, section 2.2), from
Hugging Face's vocab.json + merges.txt or OpenAI's original encoder.json + vocab.bpe.
"""

import json
import os

import numpy as np

from keras_transformers.convert.huggingface import WeightMap
from keras_transformers.models.gpt2 import gpt2

# Both are the tanh approximation of GELU that GPT-2 was trained with.
_ACTIVATIONS = ("gelu_new", "gelu_pytorch_tanh")
_END_OF_TEXT = "<|endoftext|>"


def builder_arguments(config):
    """Maps a Hugging Face `GPT2Config` dict to the arguments of `models.gpt2.gpt2`.

    Raises:
        ValueError: for a configuration our GPT-2 cannot reproduce (another
            activation, untied output embeddings, cross-attention, or Hugging
            Face's optional attention-scaling variants).

    Example:

    >>> arguments = builder_arguments({"vocab_size": 10, "n_layer": 1, "n_head": 2,
    ...                                "n_embd": 4, "n_positions": 8})
    >>> arguments["intermediate_dim"], arguments["max_sequence_length"]
    (16, 8)
    """
    activation = config.get("activation_function", "gelu_new")
    if activation not in _ACTIVATIONS:
        raise ValueError(
            f"`activation_function` must be one of {list(_ACTIVATIONS)} (GPT-2's tanh GELU). "
            f"Received: activation_function={activation!r}"
        )
    for key, supported in (
        ("tie_word_embeddings", True),
        ("add_cross_attention", False),
        ("scale_attn_weights", True),
        ("scale_attn_by_inverse_layer_idx", False),
    ):
        if config.get(key, supported) != supported:
            raise ValueError(
                f"`{key}` must be {supported} for GPT-2 checkpoints we can load. "
                f"Received: {key}={config[key]!r}"
            )
    hidden_dim = config["n_embd"]
    return dict(
        vocabulary_size=config["vocab_size"],
        num_layers=config["n_layer"],
        num_heads=config["n_head"],
        hidden_dim=hidden_dim,
        intermediate_dim=config.get("n_inner") or 4 * hidden_dim,
        max_sequence_length=config["n_positions"],
        dropout=config.get("resid_pdrop", 0.1),
        layer_norm_epsilon=config.get("layer_norm_epsilon", 1e-5),
    )


def load(config, weights, source, dtype=None):
    """Builds `models.gpt2.gpt2` from a Hugging Face GPT-2 config and its tensors.

    Accepts `GPT2Model` tensor names (`h.0.attn.c_attn.weight`) and
    `GPT2LMHeadModel` ones (`transformer.h.0...`, and `lm_head.weight` when it
    was saved: it must equal `wte.weight`, the tie our model keeps). Hugging Face's
    `Conv1D` stores kernels as (in, out), so they are reshaped, not transposed.

    Args:
        config: the parsed `config.json`.
        weights: tensor name -> numpy array, from `model.safetensors`.
        source: the file the tensors came from, named in errors.
        dtype: dtype policy of the built model (default: the global policy).

    Returns:
        The functional `keras.Model` with the checkpoint's weights.

    Raises:
        ValueError: an unsupported configuration, or a missing or ill-shaped
            tensor (named in the message, with `source`); nothing is loaded then.

    Example:

    >>> import numpy as np
    >>> config = {"vocab_size": 10, "n_layer": 1, "n_head": 2, "n_embd": 4,
    ...           "n_positions": 8}
    >>> load(config, {}, source="empty.safetensors")
    Traceback (most recent call last):
    ...
    ValueError: Tensor `wte.weight` is missing from empty.safetensors. ...
    """
    arguments = builder_arguments(config)
    hidden_dim = arguments["hidden_dim"]
    num_heads = arguments["num_heads"]
    key_dim = hidden_dim // num_heads
    prefix = "transformer." if any(k.startswith("transformer.") for k in weights) else ""
    model = gpt2(**arguments, dtype=dtype)
    weight_map = WeightMap(weights, source)

    def tensor(name):
        return weight_map.tensor(prefix + name)

    def add(variable, name, transform=None):
        array = tensor(name)
        weight_map.add(variable, array if transform is None else transform(array), prefix + name)

    def add_layer_norm(layer, name):
        add(layer.gamma, f"{name}.weight")
        add(layer.beta, f"{name}.bias")

    def check_shape(name, array, shape):
        # Checked before reshaping, so that the error names the checkpoint tensor.
        if array.shape != shape:
            raise ValueError(
                f"Tensor `{prefix + name}` in {source} has shape {array.shape}, but "
                f"the configuration needs {shape}."
            )

    add(model.get_layer("token_embedding").embeddings, "wte.weight")
    add(model.get_layer("position_embedding").embeddings, "wpe.weight")
    for i in range(arguments["num_layers"]):
        block = model.get_layer(f"decoder_block_{i}")
        attention = block.self_attention
        h = f"h.{i}"
        add_layer_norm(block.self_attention_layer_norm, f"{h}.ln_1")

        # c_attn: x @ W + b with W (D, 3D) = [W_q | W_k | W_v] along the output axis.
        kernel = tensor(f"{h}.attn.c_attn.weight")
        bias = tensor(f"{h}.attn.c_attn.bias")
        check_shape(f"{h}.attn.c_attn.weight", kernel, (hidden_dim, 3 * hidden_dim))
        check_shape(f"{h}.attn.c_attn.bias", bias, (3 * hidden_dim,))
        kernels = np.split(kernel, 3, axis=1)  # 3 x (D, D)
        biases = np.split(bias, 3)  # 3 x (D,)
        for dense, part_kernel, part_bias in zip(
            (attention.query_dense, attention.key_dense, attention.value_dense), kernels, biases
        ):
            weight_map.add(
                dense.kernel,
                part_kernel.reshape(hidden_dim, num_heads, key_dim),  # (D, N, H)
                f"{prefix}{h}.attn.c_attn.weight",
            )
            weight_map.add(
                dense.bias,
                part_bias.reshape(num_heads, key_dim),  # (N, H)
                f"{prefix}{h}.attn.c_attn.bias",
            )
        kernel = tensor(f"{h}.attn.c_proj.weight")
        check_shape(f"{h}.attn.c_proj.weight", kernel, (hidden_dim, hidden_dim))
        weight_map.add(
            attention.output_dense.kernel,
            kernel.reshape(num_heads, key_dim, hidden_dim),  # (N, H, D)
            f"{prefix}{h}.attn.c_proj.weight",
        )
        add(attention.output_dense.bias, f"{h}.attn.c_proj.bias")

        add_layer_norm(block.feedforward_layer_norm, f"{h}.ln_2")
        add(block.feedforward.intermediate_dense.kernel, f"{h}.mlp.c_fc.weight")
        add(block.feedforward.intermediate_dense.bias, f"{h}.mlp.c_fc.bias")
        add(block.feedforward.output_dense.kernel, f"{h}.mlp.c_proj.weight")
        add(block.feedforward.output_dense.bias, f"{h}.mlp.c_proj.bias")
    add_layer_norm(model.get_layer("final_layer_norm"), "ln_f")

    # GPT2LMHeadModel's head is tied to wte; safetensors usually drops the copy.
    if "lm_head.weight" in weights:
        head, embeddings = weights["lm_head.weight"], tensor("wte.weight")
        if head.shape != embeddings.shape or not np.array_equal(head, embeddings):
            raise ValueError(
                f"Tensor `lm_head.weight` in {source} differs from `{prefix}wte.weight`: "
                "our GPT-2 ties the output projection to the token embedding."
            )
    weight_map.assign_all()
    return model


def bpe_tokenizer(vocabulary_file, merges_file):
    """GPT-2's byte-level BPE tokenizer (keras-hub) from a vocabulary and merge rules.

    Reads Hugging Face's `vocab.json` + `merges.txt` or OpenAI's original
    `encoder.json` + `vocab.bpe` (the same formats: a JSON token -> id map, and one
    "a b" merge per line after an optional "#version" line). `<|endoftext|>`,
    when in the vocabulary, is never split. No prefix space is added, as in
    Hugging Face's `GPT2Tokenizer`, whose ids this tokenizer reproduces, eagerly
    and inside tf.data.

    Args:
        vocabulary_file: path of the JSON vocabulary.
        merges_file: path of the merge rules, in priority order.

    Returns:
        A `keras_hub.tokenizers.BytePairTokenizer` (string -> int32 ids).

    Raises:
        ValueError: a missing file, or a merge line that is not two tokens.

    Example:

    >>> import json, os, tempfile
    >>> folder = tempfile.mkdtemp()
    >>> with open(os.path.join(folder, "encoder.json"), "w") as f:
    ...     json.dump({"a": 0, "b": 1, "ab": 2, "Ġ": 3, "Ġab": 4}, f)
    >>> with open(os.path.join(folder, "vocab.bpe"), "w", encoding="utf-8") as f:
    ...     _ = f.write("#version: 0.2\\na b\\nĠ ab\\n")
    >>> tokenizer = bpe_tokenizer(
    ...     os.path.join(folder, "encoder.json"), os.path.join(folder, "vocab.bpe"))
    >>> [int(i) for i in tokenizer("ab ab")]
    [2, 4]
    """
    for arg_name, path in (("vocabulary_file", vocabulary_file), ("merges_file", merges_file)):
        if not isinstance(path, (str, os.PathLike)) or not os.path.isfile(path):
            raise ValueError(
                f"`{arg_name}` must be an existing file. Received: {arg_name}={path!r}"
            )
    with open(vocabulary_file, encoding="utf-8") as f:
        vocabulary = json.load(f)
    merges = []
    with open(merges_file, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            line = line.rstrip("\r\n")
            if not line or (number == 1 and line.startswith("#version")):
                continue
            if len(line.split(" ")) != 2:
                raise ValueError(
                    f"Line {number} of {merges_file} must be a merge of two tokens, 'a b'. "
                    f"Received: {line!r}"
                )
            merges.append(line)

    import keras_hub  # Here, not at the top: keras-hub imports TensorFlow.

    tokenizer = keras_hub.tokenizers.BytePairTokenizer(
        vocabulary=vocabulary,
        merges=merges,
        unsplittable_tokens=[_END_OF_TEXT] if _END_OF_TEXT in vocabulary else None,
    )
    _use_gpt2_split(tokenizer)
    return tokenizer


def _use_gpt2_split(tokenizer):
    """Gives keras-hub's eager (Python) path GPT-2's pre-tokenization split.

    keras-hub (0.32) splits eager inputs with Llama 3's regex, which cuts " 't" and
    digit runs differently from GPT-2's regex (section 2.2; what OpenAI and Hugging
    Face use, and what keras-hub's own tf.data path already follows). The
    `tokenizers` ByteLevel pre-tokenizer with `use_regex=True` is GPT-2's split. A
    copy deserialized from a Keras config gets keras-hub's split back.
    """
    backend = getattr(tokenizer, "_tokenizer", None)
    if backend is None:  # no Python path (the `tokenizers` package is absent)
        return
    from tokenizers import pre_tokenizers

    backend.pre_tokenizer = pre_tokenizers.ByteLevel(
        add_prefix_space=tokenizer.add_prefix_space, use_regex=True
    )


def tokenizer(path):
    """The tokenizer of the Hugging Face GPT-2 checkpoint folder `path`.

    Args:
        path: folder holding `vocab.json` and `merges.txt`.

    Returns:
        A `keras_hub.tokenizers.BytePairTokenizer`; see `bpe_tokenizer`.
    """
    return bpe_tokenizer(os.path.join(path, "vocab.json"), os.path.join(path, "merges.txt"))
