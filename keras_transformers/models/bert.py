"""BERT: a post-norm Transformer encoder with masked-LM, next-sentence and classifier heads.

Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding" (2019).
"""

import keras
from keras import ops

from keras_transformers.layers.arguments import (
    check_choice,
    check_positive_float,
    check_positive_int,
    check_rate,
)
from keras_transformers.layers.dropout import Dropout
from keras_transformers.layers.feed_forward import ACTIVATIONS
from keras_transformers.layers.position_embedding import PositionEmbedding
from keras_transformers.layers.transformer_encoder_block import TransformerEncoderBlock
from keras_transformers.models.model import Model

BACKBONE_INPUTS = ("token_ids", "segment_ids", "padding_mask")


def _initializer():
    # BERT's initializer_range (Devlin et al. 2019, released code): N(0, 0.02), truncated.
    return keras.initializers.TruncatedNormal(stddev=0.02)


def bert(
    vocabulary_size,
    num_layers,
    num_heads,
    hidden_dim,
    intermediate_dim,
    max_sequence_length=512,
    num_segments=2,
    dropout=0.1,
    layer_norm_epsilon=1e-12,
    activation="gelu",
    dtype=None,
    name="bert",
):
    """Builds the BERT encoder (backbone) as a functional model.

    token + position + segment embeddings -> LayerNorm -> dropout -> `num_layers`
    post-norm encoder blocks (exact GELU by default) -> outputs; the pooler is a tanh Dense
    on the first ([CLS]) position.

    Masking: `padding_mask` (int32, 1 = real token) hides padded keys from every
    attention; padded positions still get (meaningless) outputs, as in the
    reference implementation. Real positions do not depend on padded tokens.

    Args:
        vocabulary_size: number of token ids.
        num_layers: number of encoder blocks.
        num_heads: attention heads per block; must divide `hidden_dim`.
        hidden_dim: size of every hidden state.
        intermediate_dim: hidden size of the feed-forward networks.
        max_sequence_length: number of learned positions; longer inputs raise.
        num_segments: number of segment (token type) ids.
        dropout: dropout rate of the embeddings, attention probabilities and
            sub-layer outputs.
        layer_norm_epsilon: epsilon of every layer normalization.
        activation: the feed-forward activation: "gelu" (exact, erf; Hugging Face's
            `hidden_act="gelu"`), "gelu_approximate" (tanh, as in the original BERT
            code and keras-hub's `BertBackbone`) or "relu".
        dtype: dtype policy of every layer (default: the global policy).
        name: model name.

    Model inputs (a dict):
        token_ids: int32 (B, T).
        segment_ids: int32 (B, T), values in [0, num_segments).
        padding_mask: int32 (B, T), 1 for real tokens and 0 for padding.

    Returns:
        A `keras.Model` with outputs `{"sequence_output": (B, T, hidden_dim),
        "pooled_output": (B, hidden_dim)}`, in the compute dtype.

    Example:

    >>> import numpy as np
    >>> model = bert(vocabulary_size=100, num_layers=1, num_heads=4, hidden_dim=48,
    ...              intermediate_dim=80, max_sequence_length=24)
    >>> inputs = {"token_ids": np.array([[2, 7, 9, 0]], "int32"),
    ...           "segment_ids": np.zeros((1, 4), "int32"),
    ...           "padding_mask": np.array([[1, 1, 1, 0]], "int32")}
    >>> outputs = model(inputs)
    >>> tuple(outputs["sequence_output"].shape), tuple(outputs["pooled_output"].shape)
    ((1, 4, 48), (1, 48))
    """
    for value, arg in (
        (vocabulary_size, "vocabulary_size"),
        (num_layers, "num_layers"),
        (num_heads, "num_heads"),
        (hidden_dim, "hidden_dim"),
        (intermediate_dim, "intermediate_dim"),
        (max_sequence_length, "max_sequence_length"),
        (num_segments, "num_segments"),
    ):
        check_positive_int(value, arg)
    if hidden_dim % num_heads:
        raise ValueError(
            f"`num_heads` must divide `hidden_dim`. Received: num_heads={num_heads} "
            f"and hidden_dim={hidden_dim}"
        )
    check_rate(dropout, "dropout")
    check_positive_float(layer_norm_epsilon, "layer_norm_epsilon")
    check_choice(activation, "activation", ACTIVATIONS)

    inputs = {
        key: keras.Input(shape=(None,), dtype="int32", name=key) for key in BACKBONE_INPUTS
    }
    padding_mask = ops.cast(inputs["padding_mask"], "bool")  # (B, T)

    # Devlin et al. (2019), section 3: input = token + segment + position embeddings.
    token_embedding = keras.layers.ReversibleEmbedding(
        vocabulary_size,
        hidden_dim,
        embeddings_initializer=_initializer(),
        # The tied masked-LM projection (reverse=True) runs in float32 under mixed
        # precision: float32 logits, as keras-hub's heads give them.
        reverse_dtype="float32",
        dtype=dtype,
        name="token_embedding",
    )
    tokens = token_embedding(inputs["token_ids"])  # (B, T, D)
    positions = PositionEmbedding(
        max_sequence_length, initializer=_initializer(), dtype=dtype, name="position_embedding"
    )(tokens)
    segments = keras.layers.Embedding(
        num_segments,
        hidden_dim,
        embeddings_initializer=_initializer(),
        dtype=dtype,
        name="segment_embedding",
    )(inputs["segment_ids"])
    x = keras.layers.Add(dtype=dtype, name="embeddings_add")([tokens, positions, segments])
    x = keras.layers.LayerNormalization(
        epsilon=layer_norm_epsilon, dtype=dtype, name="embeddings_layer_norm"
    )(x)
    x = Dropout(dropout, dtype=dtype, name="embeddings_dropout")(x)

    # Post-norm blocks as in the original Transformer, but with GELU in place of ReLU
    # (Devlin et al. 2019, appendix A.2); exact (erf) by default, as Hugging Face's.
    for i in range(num_layers):
        x = TransformerEncoderBlock(
            num_heads,
            intermediate_dim,
            dropout=dropout,
            activation=activation,
            layer_norm_epsilon=layer_norm_epsilon,
            normalize_first=False,
            kernel_initializer=_initializer(),
            dtype=dtype,
            name=f"encoder_block_{i}",
        )(x, padding_mask=padding_mask)

    pooled = keras.layers.Dense(
        hidden_dim,
        activation="tanh",
        kernel_initializer=_initializer(),
        dtype=dtype,
        name="pooled_dense",
    )(x[:, 0, :])  # (B, D): the [CLS] position
    return Model(
        inputs, {"sequence_output": x, "pooled_output": pooled}, name=name
    )


@keras.saving.register_keras_serializable(package="keras_transformers")
class OutputBias(keras.layers.Layer):
    """Adds a learned bias over the last axis: the masked-LM head's per-token bias.

    BERT's output projection is the (tied) token embedding matrix plus a separate
    bias; this layer holds that bias.

    Args:
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: (..., V).

    Returns:
        inputs + bias, (..., V), in the compute dtype.

    Example:

    >>> import numpy as np
    >>> layer = OutputBias()
    >>> tuple(layer(np.zeros((2, 3, 5), "float32")).shape), tuple(layer.bias.shape)
    ((2, 3, 5), (5,))
    """

    def build(self, inputs_shape):
        if inputs_shape[-1] is None:
            raise ValueError(
                "`inputs` must have a known last dimension. "
                f"Received: inputs with shape={tuple(inputs_shape)}"
            )
        self.bias = self.add_weight(shape=(inputs_shape[-1],), initializer="zeros", name="bias")
        self.built = True

    def call(self, inputs):
        return inputs + ops.cast(self.bias, self.compute_dtype)

    def compute_output_shape(self, inputs_shape):
        return tuple(inputs_shape)


def _check_backbone(backbone):
    layer_names, inputs = set(), None
    if isinstance(backbone, keras.Model):
        layer_names = {layer.name for layer in backbone.layers}
        try:
            inputs = backbone.input
        except AttributeError:  # a model never called has no inputs
            pass
    if (
        not isinstance(inputs, dict)
        or set(inputs) != set(BACKBONE_INPUTS)
        or not {"token_embedding", "pooled_dense"} <= layer_names
        or not isinstance(backbone.output, dict)
    ):
        raise ValueError(
            "`backbone` must be a BERT backbone built by `bert(...)`. "
            f"Received: backbone={backbone!r}"
        )
    return dict(inputs), backbone.output


def _dtype(backbone):
    return backbone.get_layer("token_embedding").dtype_policy


def _last_block(backbone, inputs, **rows):
    """The backbone's last block called again on its input, computing only the rows
    `rows` names (`output_length=` or `output_positions=`): the heads read nothing else
    of it."""
    num_layers = sum(layer.name.startswith("encoder_block_") for layer in backbone.layers)
    # The last block's input, as `bert(...)` wires it.
    before = f"encoder_block_{num_layers - 2}" if num_layers > 1 else "embeddings_dropout"
    return backbone.get_layer(f"encoder_block_{num_layers - 1}")(
        backbone.get_layer(before).output,
        padding_mask=ops.cast(inputs["padding_mask"], "bool"),
        **rows,
    )


def _masked_lm_logits(backbone, x):
    """The MLM head on the (B, P, D) masked positions (Devlin et al. 2019, section 3.1;
    the Dense + GELU + LayerNorm transform is the released code's), then the tied token
    embedding matrix and a bias; float32 logits (B, P, V)."""
    dtype = _dtype(backbone)
    token_embedding = backbone.get_layer("token_embedding")
    epsilon = backbone.get_layer("embeddings_layer_norm").epsilon
    x = keras.layers.Dense(
        token_embedding.output_dim,
        activation="gelu",
        kernel_initializer=_initializer(),
        dtype=dtype,
        name="mlm_dense",
    )(x)
    x = keras.layers.LayerNormalization(epsilon=epsilon, dtype=dtype, name="mlm_layer_norm")(x)
    logits = token_embedding(x, reverse=True)  # (B, P, V) float32, tied to the input embeddings
    # In float32 too, so softmax and the loss stay accurate under mixed precision.
    return OutputBias(dtype="float32", name="mlm_output_bias")(logits)


def bert_masked_lm(backbone, name="bert_masked_lm"):
    """Adds the masked-language-model head to a BERT backbone.

    The head reads the sequence output at `mask_positions`, applies Dense + GELU +
    LayerNorm, and projects onto the vocabulary with the backbone's token
    embedding matrix (tied weights) plus a bias. The returned model is flat: it
    reuses the backbone's layers, so the tie survives `.keras` save and load. The
    head reads nothing else of the last block, so that block computes the masked
    positions alone (`output_positions`; every position still a key and value): the
    same logits for less work.

    Args:
        backbone: a model built by `bert(...)`.
        name: model name.

    Model inputs: the backbone's, plus `mask_positions`: int32 (B, P), indices
        into the sequence.

    Returns:
        A `keras.Model` whose output is the float32 (B, P, vocabulary_size) logits.

    Example:

    >>> import numpy as np
    >>> backbone = bert(vocabulary_size=100, num_layers=1, num_heads=4, hidden_dim=48,
    ...                 intermediate_dim=80, max_sequence_length=24)
    >>> model = bert_masked_lm(backbone)
    >>> inputs = {"token_ids": np.array([[2, 4, 9, 0]], "int32"),
    ...           "segment_ids": np.zeros((1, 4), "int32"),
    ...           "padding_mask": np.array([[1, 1, 1, 0]], "int32"),
    ...           "mask_positions": np.array([[1, 2]], "int32")}
    >>> tuple(model(inputs).shape)
    (1, 2, 100)
    """
    inputs, _ = _check_backbone(backbone)
    inputs["mask_positions"] = keras.Input(shape=(None,), dtype="int32", name="mask_positions")
    masked = _last_block(backbone, inputs, output_positions=inputs["mask_positions"])
    return Model(inputs, _masked_lm_logits(backbone, masked), name=name)


def bert_pretraining(backbone, name="bert_pretraining"):
    """Adds the masked-LM and next-sentence-prediction heads to a BERT backbone.

    Devlin et al. (2019), section 3.1: the next-sentence head is a 2-way Dense on
    the pooled output (label 0: the second segment follows the first). As in
    `bert_masked_lm`, the last block computes only the positions the heads read:
    [CLS] and the masked ones.

    Args:
        backbone: a model built by `bert(...)`.
        name: model name.

    Model inputs: the backbone's, plus `mask_positions`: int32 (B, P).

    Returns:
        A `keras.Model` with float32 outputs `{"mlm_logits": (B, P, vocabulary_size),
        "nsp_logits": (B, 2)}`.

    Example:

    >>> import numpy as np
    >>> backbone = bert(vocabulary_size=100, num_layers=1, num_heads=4, hidden_dim=48,
    ...                 intermediate_dim=80, max_sequence_length=24)
    >>> model = bert_pretraining(backbone)
    >>> outputs = model({"token_ids": np.array([[2, 4, 9, 0]], "int32"),
    ...                  "segment_ids": np.array([[0, 0, 1, 0]], "int32"),
    ...                  "padding_mask": np.array([[1, 1, 1, 0]], "int32"),
    ...                  "mask_positions": np.array([[1]], "int32")})
    >>> tuple(outputs["mlm_logits"].shape), tuple(outputs["nsp_logits"].shape)
    ((1, 1, 100), (1, 2))
    """
    inputs, _ = _check_backbone(backbone)
    mask_positions = keras.Input(shape=(None,), dtype="int32", name="mask_positions")
    inputs["mask_positions"] = mask_positions
    # The last block at [CLS] and the masked positions only.
    cls_position = ops.zeros_like(mask_positions[:, :1])  # (B, 1)
    x = _last_block(
        backbone, inputs, output_positions=ops.concatenate([cls_position, mask_positions], axis=1)
    )  # (B, 1 + P, D)
    mlm_logits = _masked_lm_logits(backbone, x[:, 1:])
    pooled = backbone.get_layer("pooled_dense")(x[:, 0])  # (B, D)
    nsp_logits = keras.layers.Dense(
        2, kernel_initializer=_initializer(), dtype="float32", name="nsp_dense"
    )(pooled)
    return Model(inputs, {"mlm_logits": mlm_logits, "nsp_logits": nsp_logits}, name=name)


def bert_classifier(backbone, num_classes, dropout=0.1, name="bert_classifier"):
    """Adds a sequence classifier (dropout + Dense on the pooled output) to a backbone.

    Devlin et al. (2019), section 4.1. The classifier reads only the [CLS] position of
    the last block, so that block computes that position alone (`output_length=1`,
    every position still a key and value): the same logits as the pooled output of
    the backbone, for about 1 / num_layers less work. The model is flat: it reuses the
    backbone's layers (and weights).

    Args:
        backbone: a model built by `bert(...)`.
        num_classes: number of classes.
        dropout: dropout rate on the pooled output.
        name: model name.

    Model inputs: the backbone's.

    Returns:
        A `keras.Model` whose output is the float32 (B, num_classes) logits.

    Example:

    >>> import numpy as np
    >>> backbone = bert(vocabulary_size=100, num_layers=1, num_heads=4, hidden_dim=48,
    ...                 intermediate_dim=80, max_sequence_length=24)
    >>> model = bert_classifier(backbone, num_classes=3)
    >>> tuple(model({"token_ids": np.array([[2, 4, 9, 0]], "int32"),
    ...              "segment_ids": np.zeros((1, 4), "int32"),
    ...              "padding_mask": np.array([[1, 1, 1, 0]], "int32")}).shape)
    (1, 3)
    """
    check_positive_int(num_classes, "num_classes")
    check_rate(dropout, "dropout")
    inputs, _ = _check_backbone(backbone)
    x = Dropout(dropout, dtype=_dtype(backbone), name="classifier_dropout")(
        backbone.get_layer("pooled_dense")(_last_block(backbone, inputs, output_length=1)[:, 0])
    )
    logits = keras.layers.Dense(
        num_classes, kernel_initializer=_initializer(), dtype="float32", name="classifier_dense"
    )(x)
    return Model(inputs, logits, name=name)




# Devlin et al. (2019), section 3 and the released BERT-Tiny (Turc et al. 2019).
CONFIGS = {
    "bert_tiny": {
        "vocabulary_size": 30522,
        "num_layers": 2,
        "num_heads": 2,
        "hidden_dim": 128,
        "intermediate_dim": 512,
    },
    "bert_base": {
        "vocabulary_size": 30522,
        "num_layers": 12,
        "num_heads": 12,
        "hidden_dim": 768,
        "intermediate_dim": 3072,
    },
    "bert_large": {
        "vocabulary_size": 30522,
        "num_layers": 24,
        "num_heads": 16,
        "hidden_dim": 1024,
        "intermediate_dim": 4096,
    },
}
