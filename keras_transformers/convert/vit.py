"""Hugging Face ViT checkpoints (`ViTForImageClassification`, `ViTModel`) -> `models.vit`.

Dosovitskiy et al. (2021); Hugging Face's port of the released JAX checkpoints.
"""

from keras_transformers.convert.huggingface import WeightMap
from keras_transformers.models.vit import vit

# Tensors of other heads that share model_type "vit", which our model has no use for:
# ViTModel's pooler (tanh(Dense(class token)): the hidden layer of the pre-training head,
# which fine-tuning replaces by a single linear layer, section 3.1) and
# ViTForMaskedImageModeling's mask token and pixel decoder.
_IGNORED_PREFIXES = ("pooler.", "decoder.", "embeddings.mask_token")


def builder_arguments(config, with_head):
    """Maps a Hugging Face `ViTConfig` dict to the arguments of `models.vit.vit`.

    Args:
        config: the parsed `config.json`.
        with_head: whether the checkpoint has the classifier (`num_classes` is
            then the number of labels, else None).

    Raises:
        ValueError: for a configuration our ViT cannot reproduce (an activation
            other than exact GELU, or no query/key/value biases).

    Example:

    >>> arguments = builder_arguments({"hidden_size": 64, "num_hidden_layers": 2,
    ...     "num_attention_heads": 4, "intermediate_size": 128, "image_size": 32,
    ...     "patch_size": 8, "id2label": {"0": "cat", "1": "dog"}}, with_head=True)
    >>> arguments["num_classes"], arguments["layer_norm_epsilon"]
    (2, 1e-12)
    """
    activation = config.get("hidden_act", "gelu")
    if activation != "gelu":
        raise ValueError(
            "`hidden_act` must be 'gelu' (exact GELU, as every released ViT uses). "
            f"Received: hidden_act={activation!r}"
        )
    if not config.get("qkv_bias", True):
        raise ValueError(
            "`qkv_bias` must be True: our attention has query, key and value biases. "
            f"Received: qkv_bias={config['qkv_bias']!r}"
        )
    num_classes = None
    if with_head:
        id2label = config.get("id2label")
        num_classes = len(id2label) if id2label else config.get("num_labels", 2)

    def size(key):
        value = config.get(key, 224 if key == "image_size" else 16)
        return tuple(value) if isinstance(value, (list, tuple)) else value

    return dict(
        image_size=size("image_size"),
        patch_size=size("patch_size"),
        num_layers=config.get("num_hidden_layers", 12),
        num_heads=config.get("num_attention_heads", 12),
        hidden_dim=config.get("hidden_size", 768),
        intermediate_dim=config.get("intermediate_size", 3072),
        num_classes=num_classes,
        num_channels=config.get("num_channels", 3),
        dropout=config.get("hidden_dropout_prob", 0.0),
        # Hugging Face's ViTConfig default; the released checkpoints state 1e-12 too.
        layer_norm_epsilon=config.get("layer_norm_eps", 1e-12),
    )


def load(config, weights, source, dtype=None):
    """Builds `models.vit.vit` from a Hugging Face ViT config and its tensors.

    Accepts `ViTForImageClassification` tensor names (`vit.embeddings...`,
    `classifier.weight`) -> a model with the classifier, and `ViTModel` ones (no
    prefix) -> `num_classes=None`, the model returning the normalized sequence.
    A `ViTModel` pooler (`pooler.dense.*`: tanh(Dense) of the class token) is
    ignored: apply it to `outputs[:, 0]` if needed. Torch `Linear` weights are
    (out, in) and transposed; the patch projection (D, C, p, p) becomes our
    (p, p, C, D) `Conv2D` kernel. Any other tensor the model does not use raises.

    Args:
        config: the parsed `config.json`.
        weights: tensor name -> numpy array, from `model.safetensors`.
        source: the file the tensors came from, named in errors.
        dtype: dtype policy of the built model (default: the global policy).

    Returns:
        The functional `keras.Model` with the checkpoint's weights.

    Raises:
        ValueError: an unsupported configuration, or a missing, ill-shaped or
            unexpected tensor (named in the message, with `source`); nothing is
            loaded then.

    Example:

    >>> config = {"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2,
    ...           "intermediate_size": 16, "image_size": 16, "patch_size": 8}
    >>> load(config, {}, source="empty.safetensors")
    Traceback (most recent call last):
    ...
    ValueError: Tensor `embeddings.cls_token` is missing from empty.safetensors. ...
    """
    prefix = "vit." if any(name.startswith("vit.") for name in weights) else ""
    architectures = config.get("architectures") or ()
    with_head = "ViTForImageClassification" in architectures or "classifier.weight" in weights
    arguments = builder_arguments(config, with_head)
    hidden_dim = arguments["hidden_dim"]
    num_heads = arguments["num_heads"]
    key_dim = hidden_dim // num_heads
    model = vit(**arguments, dtype=dtype)
    weight_map = WeightMap(weights, source)

    def add(variable, name, shape=None, transform=None):
        """Schedules tensor `name` for `variable`; `shape`, its shape in the checkpoint,
        is checked before `transform`, so that an error names the tensor as stored."""
        array = weight_map.tensor(name)
        if shape is not None and tuple(array.shape) != tuple(shape):
            raise ValueError(
                f"Tensor `{name}` in {source} has shape {tuple(array.shape)}, but the "
                f"configuration needs {tuple(shape)}."
            )
        weight_map.add(variable, array if transform is None else transform(array), name)

    def add_linear(dense, name, in_dim, out_dim, reshape=None):
        """A torch Linear: weight (out, in) -> our kernel (in, out), reshaped to `reshape`."""
        add(
            dense.kernel,
            f"{name}.weight",
            (out_dim, in_dim),
            lambda weight: weight.T if reshape is None else weight.T.reshape(reshape),
        )
        add(dense.bias, f"{name}.bias", (out_dim,), lambda bias: bias.reshape(dense.bias.shape))

    def add_layer_norm(layer, name):
        add(layer.gamma, f"{name}.weight")
        add(layer.beta, f"{name}.bias")

    embeddings = model.get_layer("patch_embedding")
    add(embeddings.class_token, f"{prefix}embeddings.cls_token")
    table = embeddings.position_embedding  # (N + 1, D)
    add(
        table,
        f"{prefix}embeddings.position_embeddings",
        (1,) + tuple(table.shape),
        lambda array: array[0],
    )
    kernel = embeddings.patch_projection.kernel  # (p_h, p_w, C, D)
    add(
        kernel,
        f"{prefix}embeddings.patch_embeddings.projection.weight",
        (hidden_dim, kernel.shape[2], kernel.shape[0], kernel.shape[1]),  # (D, C, p_h, p_w)
        lambda array: array.transpose(2, 3, 1, 0),
    )
    add(embeddings.patch_projection.bias, f"{prefix}embeddings.patch_embeddings.projection.bias")

    intermediate_dim = arguments["intermediate_dim"]
    for i in range(arguments["num_layers"]):
        block = model.get_layer(f"encoder_block_{i}")
        attention = block.self_attention
        layer = f"{prefix}encoder.layer.{i}"
        add_layer_norm(block.self_attention_layer_norm, f"{layer}.layernorm_before")
        for dense, part in (
            (attention.query_dense, "query"),
            (attention.key_dense, "key"),
            (attention.value_dense, "value"),
        ):
            add_linear(
                dense,
                f"{layer}.attention.attention.{part}",
                hidden_dim,
                hidden_dim,
                reshape=(hidden_dim, num_heads, key_dim),  # (D, N, H)
            )
        add_linear(
            attention.output_dense,
            f"{layer}.attention.output.dense",
            hidden_dim,
            hidden_dim,
            reshape=(num_heads, key_dim, hidden_dim),  # (N, H, D)
        )
        add_layer_norm(block.feedforward_layer_norm, f"{layer}.layernorm_after")
        feedforward = block.feedforward
        add_linear(
            feedforward.intermediate_dense,
            f"{layer}.intermediate.dense",
            hidden_dim,
            intermediate_dim,
        )
        add_linear(feedforward.output_dense, f"{layer}.output.dense", intermediate_dim, hidden_dim)
    add_layer_norm(model.get_layer("final_layer_norm"), f"{prefix}layernorm")
    if with_head:
        classifier = model.get_layer("classifier")
        add_linear(classifier, "classifier", hidden_dim, arguments["num_classes"])

    unexpected = sorted(
        name
        for name in weights
        if name not in weight_map.used
        and not name.removeprefix(prefix).startswith(_IGNORED_PREFIXES)
    )
    if unexpected:
        raise ValueError(
            f"Tensors {unexpected[:5]} in {source} have no place in the ViT that its "
            f"config.json describes ({arguments['num_layers']} layers): is config.json "
            "from the same checkpoint?"
        )
    weight_map.assign_all()
    return model


def tokenizer(path):
    """ViT has no tokenizer: always raises.

    Images go in as float (B, H, W, C) arrays; Hugging Face's ViT checkpoints
    expect pixels scaled to [-1, 1], (pixel / 255 - 0.5) / 0.5, at `image_size`.

    Raises:
        ValueError: always, naming `path`.

    Example:

    >>> tokenizer("vit-checkpoint")
    Traceback (most recent call last):
    ...
    ValueError: ViT checkpoints have no tokenizer: ...
    """
    raise ValueError(
        "ViT checkpoints have no tokenizer: the model takes float images (B, H, W, C) "
        "scaled as (pixel / 255 - 0.5) / 0.5, not token ids. "
        f"Received: path={path!r}"
    )
