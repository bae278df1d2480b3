"""GPT-2: a decoder-only, pre-norm Transformer language model with tied embeddings.

Radford et al., "Language Models are Unsupervised Multitask Learners" (2019).
"""

import keras
from keras import ops

from keras_transformers.layers.arguments import check_positive_int, check_rate
from keras_transformers.layers.dropout import Dropout
from keras_transformers.layers.position_embedding import PositionEmbedding
from keras_transformers.layers.transformer_decoder_block import TransformerDecoderBlock
from keras_transformers.models.model import Model

INPUT_NAMES = ("token_ids", "padding_mask")


def gpt2(
    vocabulary_size,
    num_layers,
    num_heads,
    hidden_dim,
    intermediate_dim,
    max_sequence_length=1024,
    dropout=0.1,
    layer_norm_epsilon=1e-5,
    dtype=None,
    name="gpt2",
):
    """Builds a GPT-2 language model: token ids -> next-token logits.

    Token embeddings plus learned position embeddings, `num_layers` pre-norm
    decoder blocks of causal self-attention and a tanh-GELU feed-forward network,
    a final layer normalization, and logits from the transposed token embedding
    (the input and output embeddings are one matrix).

    Masking: attention is causal; `padding_mask` (1 = real token, 0 = padding)
    hides padded keys. Logits at padded positions are computed but meaningless.

    Checks: the model (a `keras_transformers.models.model.Model`) checks its
    inputs on every call: a missing or unknown input, float token ids (which Keras
    would silently truncate) or a sequence longer than `max_sequence_length` raise
    a ValueError naming the input.

    Args:
        vocabulary_size: number of tokens.
        num_layers: number of decoder blocks.
        num_heads: attention heads per block; must divide `hidden_dim`.
        hidden_dim: size of the embeddings and of every block's output.
        intermediate_dim: hidden size of the feed-forward networks.
        max_sequence_length: number of learned positions; longer inputs raise.
        dropout: dropout rate on the embeddings, on the attention probabilities
            and on each sub-layer's output.
        layer_norm_epsilon: epsilon of every layer normalization.
        dtype: dtype policy of every layer (default: the global policy).
        name: name of the model.

    Inputs (a dict):
        token_ids: int32 (B, T), T <= `max_sequence_length`.
        padding_mask: int32 (B, T), 1 for real tokens and 0 for padding.

    Returns:
        A functional `keras.Model` whose output is the float32 logits
        (B, T, vocabulary_size), also under mixed precision.

    Example:

    >>> import numpy as np
    >>> model = gpt2(vocabulary_size=10, num_layers=1, num_heads=2, hidden_dim=4,
    ...              intermediate_dim=16, max_sequence_length=8)
    >>> inputs = {"token_ids": np.array([[3, 1, 4, 1]], "int32"),
    ...           "padding_mask": np.array([[1, 1, 1, 0]], "int32")}
    >>> tuple(model(inputs).shape)
    (1, 4, 10)
    """
    for arg_name, value in (
        ("vocabulary_size", vocabulary_size),
        ("num_layers", num_layers),
        ("num_heads", num_heads),
        ("hidden_dim", hidden_dim),
        ("intermediate_dim", intermediate_dim),
        ("max_sequence_length", max_sequence_length),
    ):
        check_positive_int(value, arg_name)
    if hidden_dim % num_heads != 0:
        raise ValueError(
            "`hidden_dim` must be divisible by `num_heads`. "
            f"Received: hidden_dim={hidden_dim} and num_heads={num_heads}"
        )
    check_rate(dropout, "dropout")

    # Weights start from N(0, 0.02), as in GPT-1 (Radford et al. 2018, section 4.1).
    def initializer():
        return keras.initializers.RandomNormal(stddev=0.02)

    token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")

    # The output projection is the transposed token embedding (GPT-1, equation 2).
    # One top-level layer called twice keeps the tie through .keras save/load.
    token_embedding = keras.layers.ReversibleEmbedding(
        vocabulary_size,
        hidden_dim,
        tie_weights=True,
        embeddings_initializer=initializer(),
        # The logits matmul accumulates in float32 under mixed precision.
        reverse_dtype="float32",
        dtype=dtype,
        name="token_embedding",
    )
    x = token_embedding(token_ids)  # (B, T, D)
    x = x + PositionEmbedding(
        max_sequence_length, initializer=initializer(), dtype=dtype, name="position_embedding"
    )(x)
    x = Dropout(dropout, dtype=dtype, name="embeddings_dropout")(x)

    attention_padding_mask = ops.cast(padding_mask, "bool")  # (B, T)
    for i in range(num_layers):
        # Section 2.3: layer normalization moved to the input of each sub-block
        # (pre-norm), unlike the original Transformer's post-norm.
        x = TransformerDecoderBlock(
            num_heads=num_heads,
            intermediate_dim=intermediate_dim,
            dropout=dropout,
            activation="gelu_approximate",
            layer_norm_epsilon=layer_norm_epsilon,
            normalize_first=True,
            use_cross_attention=False,
            kernel_initializer=initializer(),
            dtype=dtype,
            name=f"decoder_block_{i}",
        )(x, decoder_padding_mask=attention_padding_mask)
    # Section 2.3: an extra layer normalization after the last block.
    x = keras.layers.LayerNormalization(
        epsilon=layer_norm_epsilon, dtype=dtype, name="final_layer_norm"
    )(x)
    logits = ops.cast(token_embedding(x, reverse=True), "float32")  # (B, T, V)
    return Model(
        {"token_ids": token_ids, "padding_mask": padding_mask}, logits, name=name
    )




CONFIGS = {
    "gpt2_tiny": dict(
        vocabulary_size=1024,
        num_layers=2,
        num_heads=2,
        hidden_dim=64,
        intermediate_dim=256,
        max_sequence_length=128,
    ),
    # Table 2 of the paper; the 50,257-token byte-level BPE vocabulary of section 2.2.
    "gpt2_small": dict(
        vocabulary_size=50257,
        num_layers=12,
        num_heads=12,
        hidden_dim=768,
        intermediate_dim=3072,
        max_sequence_length=1024,
    ),
    "gpt2_medium": dict(
        vocabulary_size=50257,
        num_layers=24,
        num_heads=16,
        hidden_dim=1024,
        intermediate_dim=4096,
        max_sequence_length=1024,
    ),
    "gpt2_large": dict(
        vocabulary_size=50257,
        num_layers=36,
        num_heads=20,
        hidden_dim=1280,
        intermediate_dim=5120,
        max_sequence_length=1024,
    ),
    "gpt2_xl": dict(
        vocabulary_size=50257,
        num_layers=48,
        num_heads=25,
        hidden_dim=1600,
        intermediate_dim=6400,
        max_sequence_length=1024,
    ),
}
