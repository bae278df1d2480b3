"""Hugging Face BERT checkpoints (`BertModel`, `BertForMaskedLM`, `BertForPreTraining`,
`BertForSequenceClassification`) -> `keras_transformers.models.bert`.
"""

import json
import os

import numpy as np

from keras_transformers.convert.huggingface import WeightMap
from keras_transformers.models import bert as bert_models

HEADS = ("backbone", "masked_lm", "pretraining", "classifier")

# BertConfig's defaults, for keys a config.json leaves out.
_DEFAULTS = {
    "vocab_size": 30522,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1,
    "max_position_embeddings": 512,
    "type_vocab_size": 2,
    "layer_norm_eps": 1e-12,
    "position_embedding_type": "absolute",
}


# Hugging Face's `hidden_act` names -> our feed-forward activations ("gelu_new" and
# "gelu_pytorch_tanh" are the tanh approximation, the original BERT code's GELU).
_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_approximate",
    "gelu_pytorch_tanh": "gelu_approximate",
    "relu": "relu",
}


def builder_arguments(config, source=None):
    """Maps a Hugging Face `BertConfig` dict onto the arguments of `models.bert.bert`.

    Args:
        config: the parsed config.json.
        source: where it came from, for error messages.

    Returns:
        A dict of `bert(...)` arguments.

    Raises:
        ValueError: for settings our BERT does not implement (an activation other
            than GELU or ReLU, relative positions, a decoder).

    Example:

    >>> builder_arguments({"hidden_size": 64, "num_attention_heads": 4})["hidden_dim"]
    64
    """
    where = f" (config of {source})" if source else ""
    get = lambda key: config.get(key, _DEFAULTS.get(key))  # noqa: E731
    if get("hidden_act") not in _ACTIVATIONS:
        raise ValueError(
            f"`hidden_act` must be one of {sorted(_ACTIVATIONS)}{where}. "
            f"Received: hidden_act={get('hidden_act')!r}"
        )
    if get("position_embedding_type") != "absolute":
        raise ValueError(
            f"`position_embedding_type` must be 'absolute'{where}. "
            f"Received: position_embedding_type={get('position_embedding_type')!r}"
        )
    for key in ("is_decoder", "add_cross_attention"):
        if config.get(key):
            raise ValueError(
                f"`{key}` must be false: only the BERT encoder is supported{where}. "
                f"Received: {key}={config[key]!r}"
            )
    return {
        "vocabulary_size": get("vocab_size"),
        "num_layers": get("num_hidden_layers"),
        "num_heads": get("num_attention_heads"),
        "hidden_dim": get("hidden_size"),
        "intermediate_dim": get("intermediate_size"),
        "max_sequence_length": get("max_position_embeddings"),
        "num_segments": get("type_vocab_size"),
        "dropout": get("hidden_dropout_prob"),
        "layer_norm_epsilon": get("layer_norm_eps"),
        "activation": _ACTIVATIONS[get("hidden_act")],
    }


def _infer_head(weights):
    if "cls.predictions.transform.dense.weight" in weights:
        return "pretraining" if "cls.seq_relationship.weight" in weights else "masked_lm"
    if "classifier.weight" in weights:
        return "classifier"
    return "backbone"


def load(config, weights, source, dtype=None, head=None, allow_missing_pooler=False):
    """Builds a BERT model from a Hugging Face config and state dict, with its weights.

    Accepts the tensors of `BertModel` (keys `embeddings.*`, `encoder.*`,
    `pooler.*`) or of a `BertFor*` model (the same under `bert.`, plus `cls.*` or
    `classifier.*`). Hugging Face's post-norm `attention.output.LayerNorm` maps to
    our block's `self_attention_layer_norm`, `output.LayerNorm` to
    `feedforward_layer_norm`; its (out, in) Linear weights are transposed.

    Pooler: `BertForMaskedLM` checkpoints have no `pooler.*`. Models that do not
    use the pooler (`head="masked_lm"`) do not need it; for the others a missing
    pooler raises unless `allow_missing_pooler=True`, which leaves `pooled_dense`
    randomly initialized.

    Args:
        config: the parsed config.json.
        weights: dict from tensor name to numpy array (model.safetensors).
        source: the file the weights came from, named in errors.
        dtype: dtype policy of the built model.
        head: "backbone" (`models.bert.bert`), "masked_lm", "pretraining" or
            "classifier" (the `bert_*` head builders); None picks it from the
            tensors present (`cls.predictions.*`, `cls.seq_relationship.*`,
            `classifier.*`).
        allow_missing_pooler: leave the pooler random when the checkpoint has none.

    Returns:
        The functional `keras.Model`, with every weight loaded (or nothing loaded
        and a ValueError raised).

    Raises:
        ValueError: an unsupported config, a missing or ill-shaped tensor (named
            with `source`), or untied MLM output weights.
    """
    if head is not None and head not in HEADS:
        raise ValueError(f"`head` must be one of {list(HEADS)} or None. Received: head={head!r}")
    head = _infer_head(weights) if head is None else head
    kwargs = builder_arguments(config, source)
    backbone = bert_models.bert(**kwargs, dtype=dtype)
    if head == "masked_lm":
        model = bert_models.bert_masked_lm(backbone)
    elif head == "pretraining":
        model = bert_models.bert_pretraining(backbone)
    elif head == "classifier":
        if "classifier.weight" not in weights:
            raise ValueError(f"Tensor `classifier.weight` is missing from {source}.")
        num_classes = int(weights["classifier.weight"].shape[0])
        model = bert_models.bert_classifier(backbone, num_classes, dropout=kwargs["dropout"])
    else:
        model = backbone

    prefix = "bert." if "bert.embeddings.word_embeddings.weight" in weights else ""
    weight_map = WeightMap(weights, source)
    _map_backbone(weight_map, model, kwargs, prefix, head, allow_missing_pooler, source)
    if head in ("masked_lm", "pretraining"):
        _map_masked_lm(weight_map, model, prefix, source)
    if head == "pretraining":
        _dense(weight_map, model.get_layer("nsp_dense"), "cls.seq_relationship")
    if head == "classifier":
        _dense(weight_map, model.get_layer("classifier_dense"), "classifier")
    unused = sorted(
        name
        for name in weights
        if name.startswith(prefix + "encoder.") and name not in weight_map.used
    )
    if unused:
        raise ValueError(
            f"Tensors of {source} fit no layer of the configured model "
            f"(num_hidden_layers={kwargs['num_layers']}?): {unused[:5]}"
        )
    weight_map.assign_all()
    return model


def _tensor(weight_map, name):
    """The tensor `name`, accepting the old TF-era LayerNorm names gamma/beta."""
    legacy = {".weight": ".gamma", ".bias": ".beta"}
    if name not in weight_map.weights and "LayerNorm" in name:
        for new, old in legacy.items():
            if name.endswith(new) and name[: -len(new)] + old in weight_map.weights:
                return weight_map.tensor(name[: -len(new)] + old)
    return weight_map.tensor(name)


def _dense(weight_map, layer, name):
    """A torch Linear (out, in) onto a Keras Dense (in, out)."""
    weight_map.add(layer.kernel, _tensor(weight_map, f"{name}.weight").T, f"{name}.weight")
    weight_map.add(layer.bias, _tensor(weight_map, f"{name}.bias"), f"{name}.bias")


def _layer_norm(weight_map, layer, name):
    weight_map.add(layer.gamma, _tensor(weight_map, f"{name}.weight"), f"{name}.weight")
    weight_map.add(layer.beta, _tensor(weight_map, f"{name}.bias"), f"{name}.bias")


def _heads_dense(weight_map, dense, name, num_heads, input_side):
    """A torch Linear onto one of our EinsumDense attention projections.

    input_side=True: query/key/value, kernel (D, heads, key_dim); else the output
    projection, kernel (heads, key_dim, D).
    """
    weight = _tensor(weight_map, f"{name}.weight").T  # (in, out)
    bias = _tensor(weight_map, f"{name}.bias")
    if input_side:
        kernel = weight.reshape(weight.shape[0], num_heads, -1)  # (D, heads, key_dim)
        bias = bias.reshape(num_heads, -1)  # (heads, key_dim)
    else:
        kernel = weight.reshape(num_heads, -1, weight.shape[1])  # (heads, key_dim, D)
    weight_map.add(dense.kernel, kernel, f"{name}.weight")
    weight_map.add(dense.bias, bias, f"{name}.bias")


def _map_backbone(weight_map, model, kwargs, prefix, head, allow_missing_pooler, source):
    p = prefix
    weight_map.add(
        model.get_layer("token_embedding").embeddings,
        _tensor(weight_map, f"{p}embeddings.word_embeddings.weight"),
        f"{p}embeddings.word_embeddings.weight",
    )
    weight_map.add(
        model.get_layer("position_embedding").embeddings,
        _tensor(weight_map, f"{p}embeddings.position_embeddings.weight"),
        f"{p}embeddings.position_embeddings.weight",
    )
    weight_map.add(
        model.get_layer("segment_embedding").embeddings,
        _tensor(weight_map, f"{p}embeddings.token_type_embeddings.weight"),
        f"{p}embeddings.token_type_embeddings.weight",
    )
    _layer_norm(weight_map, model.get_layer("embeddings_layer_norm"), f"{p}embeddings.LayerNorm")
    num_heads = kwargs["num_heads"]
    for i in range(kwargs["num_layers"]):
        block = model.get_layer(f"encoder_block_{i}")
        hf = f"{p}encoder.layer.{i}"
        attention = block.self_attention
        for projection in ("query", "key", "value"):
            _heads_dense(
                weight_map,
                getattr(attention, f"{projection}_dense"),
                f"{hf}.attention.self.{projection}",
                num_heads,
                True,
            )
        _heads_dense(
            weight_map, attention.output_dense, f"{hf}.attention.output.dense", num_heads, False
        )
        # Post-norm: HF's attention.output.LayerNorm follows the attention residual,
        # output.LayerNorm the feed-forward residual.
        _layer_norm(
            weight_map, block.self_attention_layer_norm, f"{hf}.attention.output.LayerNorm"
        )
        _dense(weight_map, block.feedforward.intermediate_dense, f"{hf}.intermediate.dense")
        _dense(weight_map, block.feedforward.output_dense, f"{hf}.output.dense")
        _layer_norm(weight_map, block.feedforward_layer_norm, f"{hf}.output.LayerNorm")
    if head == "masked_lm":
        return  # the masked-LM model has no pooler
    if f"{p}pooler.dense.weight" in weight_map.weights or not allow_missing_pooler:
        if f"{p}pooler.dense.weight" not in weight_map.weights:
            raise ValueError(
                f"Tensor `{p}pooler.dense.weight` is missing from {source}: the checkpoint "
                "has no pooler (BertForMaskedLM and add_pooling_layer=False models have "
                "none). Load it with head='masked_lm', or pass allow_missing_pooler=True "
                "to leave `pooled_dense` random."
            )
        _dense(weight_map, model.get_layer("pooled_dense"), f"{p}pooler.dense")


def _map_masked_lm(weight_map, model, prefix, source):
    _dense(weight_map, model.get_layer("mlm_dense"), "cls.predictions.transform.dense")
    _layer_norm(
        weight_map, model.get_layer("mlm_layer_norm"), "cls.predictions.transform.LayerNorm"
    )
    # HF ties cls.predictions.decoder.bias to cls.predictions.bias; either may be saved.
    bias_name = "cls.predictions.bias"
    if bias_name not in weight_map.weights and "cls.predictions.decoder.bias" in weight_map.weights:
        bias_name = "cls.predictions.decoder.bias"
    weight_map.add(
        model.get_layer("mlm_output_bias").bias, _tensor(weight_map, bias_name), bias_name
    )
    # Our decoder is the token embedding matrix itself (tied, as in BERT).
    decoder = weight_map.weights.get("cls.predictions.decoder.weight")
    embeddings = weight_map.weights[f"{prefix}embeddings.word_embeddings.weight"]
    if decoder is not None:
        weight_map.used.add("cls.predictions.decoder.weight")
        if decoder.shape != embeddings.shape or not np.array_equal(decoder, embeddings):
            raise ValueError(
                f"Tensor `cls.predictions.decoder.weight` in {source} differs from "
                f"`{prefix}embeddings.word_embeddings.weight`: our masked-LM head ties "
                "them (tie_word_embeddings=False checkpoints are not supported)."
            )


def tokenizer(path):
    """Returns a `keras_hub.tokenizers.WordPieceTokenizer` for the checkpoint in `path`.

    Reads `vocab.txt`, and `do_lower_case` / `strip_accents` /
    `tokenize_chinese_chars` from `tokenizer_config.json` when present (Hugging
    Face's defaults otherwise: lowercase, accents stripped when lowercasing). It
    adds no special tokens: prepend `[CLS]` and append `[SEP]` yourself, as
    `BertTokenizer` does. keras-hub (and with it TensorFlow) is imported here only.

    Args:
        path: the checkpoint folder.

    Returns:
        The tokenizer; `tokenizer(["a sentence"])` gives ragged int32 token ids.

    Raises:
        ValueError: if `vocab.txt` is missing.
    """
    vocab_file = os.path.join(path, "vocab.txt")
    if not os.path.isfile(vocab_file):
        raise ValueError(f"No vocab.txt in the checkpoint folder. Received: path={path!r}")
    settings = {}
    config_file = os.path.join(path, "tokenizer_config.json")
    if os.path.isfile(config_file):
        with open(config_file, encoding="utf-8") as f:
            settings = json.load(f)
    lowercase = settings.get("do_lower_case", True)
    strip_accents = settings.get("strip_accents")
    # BertTokenizer: strip_accents=None means "as lowercase".
    strip_accents = lowercase if strip_accents is None else strip_accents
    with open(vocab_file, encoding="utf-8") as f:
        vocabulary = [line.rstrip("\n") for line in f]

    import keras_hub  # imports TensorFlow: only when a tokenizer is asked for

    return keras_hub.tokenizers.WordPieceTokenizer(
        vocabulary=vocabulary,
        lowercase=bool(lowercase),
        strip_accents=bool(strip_accents),
        split_on_cjk=bool(settings.get("tokenize_chinese_chars", True)),
        oov_token=settings.get("unk_token", "[UNK]"),
    )
