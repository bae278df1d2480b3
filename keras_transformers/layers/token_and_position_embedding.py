"""Token embeddings plus position (and optional segment) embeddings: a model's input layer.

Vaswani et al., "Attention Is All You Need" (2017), sections 3.4 and 3.5; segment
embeddings from Devlin et al., "BERT" (2019), section 3.
"""

import math

import keras
from keras import ops

from keras_transformers.layers.arguments import (
    check_choice,
    check_id_range,
    check_positive_int,
    check_rate,
    clone_initializer,
)
from keras_transformers.layers.dropout import Dropout
from keras_transformers.layers.position_embedding import PositionEmbedding
from keras_transformers.layers.sine_positional_encoding import SinePositionalEncoding
from keras_transformers.layers.sublayers import call_sublayer

POSITION_KINDS = ("learned", "sinusoidal")


def _check_integer_ids(ids, name):
    dtype = keras.backend.standardize_dtype(ids.dtype)
    if "int" not in dtype:
        raise ValueError(
            f"`{name}` must have an integer dtype. Received: {name} with dtype={dtype}"
        )
    if len(ids.shape) != 2:
        raise ValueError(
            f"`{name}` must have rank 2 (batch, sequence). "
            f"Received: {name} with shape={tuple(ids.shape)}"
        )


@keras.saving.register_keras_serializable(package="keras_transformers")
class TokenAndPositionEmbedding(keras.layers.Layer):
    """Sums token, position and (optionally) segment embeddings, then dropout.

    output = dropout(token_embedding(token_ids) * scale + position(start_index..)
    + segment_embedding(segment_ids)), where scale is sqrt(hidden_dim) when
    `scale_embeddings` (section 3.4 of the paper) and 1 otherwise. Positions are a
    learned table (`position_kind="learned"`, at most `max_sequence_length` of them)
    or the paper's sinusoids (`"sinusoidal"`, any length: `max_sequence_length` is
    not a limit there). With `num_segments`, a missing `segment_ids` means segment 0
    everywhere, as in BERT.

    The token table is `self.token_embedding` (a `keras.layers.Embedding`), so a
    model can tie its output projection to it.

    Masking: with `mask_zero`, token id 0 is padding and the output carries the
    Keras mask `token_ids != 0` of shape (B, T), which downstream layers such as
    `MultiHeadAttention` pick up.

    Args:
        vocabulary_size: number of token ids.
        max_sequence_length: number of learned positions.
        hidden_dim: size of the embeddings.
        num_segments: number of segment (token type) ids; None for no segment
            embedding.
        position_kind: "learned" or "sinusoidal".
        scale_embeddings: whether to multiply the token embeddings by
            sqrt(hidden_dim).
        mask_zero: whether token id 0 is padding, masked out downstream.
        embeddings_initializer: initializer of every embedding table.
        dropout: dropout rate on the summed embeddings.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        token_ids: integer (B, T). NumPy ids are checked to be in
            [0, vocabulary_size) (tensors are not read back).
        segment_ids: integer (B, T), only with `num_segments`; NumPy ids in
            [0, num_segments).
        start_index: int or scalar tensor, the position of the first token (for
            cached decoding).
        training: whether dropout is active.

    Returns:
        The (B, T, hidden_dim) embeddings, in the compute dtype.

    Example:

    >>> import numpy as np
    >>> layer = TokenAndPositionEmbedding(
    ...     vocabulary_size=10, max_sequence_length=8, hidden_dim=4, mask_zero=True
    ... )
    >>> token_ids = np.array([[5, 2, 0]])
    >>> tuple(layer(token_ids).shape)
    (1, 3, 4)
    >>> np.asarray(layer.compute_mask(token_ids)).tolist()
    [[True, True, False]]
    """

    def __init__(
        self,
        vocabulary_size,
        max_sequence_length,
        hidden_dim,
        num_segments=None,
        position_kind="learned",
        scale_embeddings=False,
        mask_zero=False,
        embeddings_initializer="glorot_uniform",
        dropout=0.0,
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int(vocabulary_size, "vocabulary_size")
        check_positive_int(max_sequence_length, "max_sequence_length")
        check_positive_int(hidden_dim, "hidden_dim")
        if num_segments is not None:
            check_positive_int(num_segments, "num_segments")
        check_choice(position_kind, "position_kind", POSITION_KINDS)
        check_rate(dropout, "dropout")
        self.vocabulary_size = vocabulary_size
        self.max_sequence_length = max_sequence_length
        self.hidden_dim = hidden_dim
        self.num_segments = num_segments
        self.position_kind = position_kind
        self.scale_embeddings = scale_embeddings
        self.mask_zero = mask_zero
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.dropout = dropout
        self.supports_masking = True

        # Sublayers (no weights yet) exist from here on, so that a model can tie its
        # output projection to `token_embedding` before the first call.
        self.token_embedding = self._embedding(vocabulary_size, "token_embedding")
        if position_kind == "learned":
            self.position_embedding = PositionEmbedding(
                max_sequence_length,
                initializer=clone_initializer(self.embeddings_initializer),
                name="position_embedding",
                dtype=self.dtype_policy,
            )
        else:
            self.position_embedding = SinePositionalEncoding(
                name="position_embedding", dtype=self.dtype_policy
            )
        self.segment_embedding = None
        if num_segments is not None:
            self.segment_embedding = self._embedding(num_segments, "segment_embedding")
        self.dropout_layer = Dropout(
            dropout, name="embeddings_dropout", dtype=self.dtype_policy
        )

    def _embedding(self, input_dim, name):
        return keras.layers.Embedding(
            input_dim,
            self.hidden_dim,
            embeddings_initializer=clone_initializer(self.embeddings_initializer),
            name=name,
            dtype=self.dtype_policy,
        )

    def build(self, token_ids_shape, segment_ids_shape=None, start_index_shape=None):
        self.token_embedding.build(token_ids_shape)
        self.position_embedding.build((*token_ids_shape, self.hidden_dim))
        if self.segment_embedding is not None:
            self.segment_embedding.build(token_ids_shape)
        self.built = True

    def _validate_inputs(self, token_ids, segment_ids):
        _check_integer_ids(token_ids, "token_ids")
        if segment_ids is None:
            return
        if self.num_segments is None:
            raise ValueError(
                "`segment_ids` needs a segment embedding: pass `num_segments` to the "
                "constructor. Received: segment_ids with num_segments=None"
            )
        _check_integer_ids(segment_ids, "segment_ids")
        if None not in (*token_ids.shape, *segment_ids.shape) and tuple(
            segment_ids.shape
        ) != tuple(token_ids.shape):
            raise ValueError(
                f"`segment_ids` must have the shape of `token_ids`, {tuple(token_ids.shape)}. "
                f"Received: segment_ids with shape={tuple(segment_ids.shape)}"
            )

    def __call__(self, token_ids, segment_ids=None, *args, **kwargs):
        # Before Keras converts NumPy ids to tensors, whose values are not read back.
        check_id_range(token_ids, "token_ids", self.vocabulary_size)
        if self.num_segments is not None:
            check_id_range(segment_ids, "segment_ids", self.num_segments)
        return super().__call__(token_ids, segment_ids, *args, **kwargs)

    def call(self, token_ids, segment_ids=None, start_index=0, training=None):
        self._validate_inputs(token_ids, segment_ids)
        tokens = call_sublayer(self.token_embedding, token_ids)  # (B, T, D)
        if self.scale_embeddings:
            tokens = tokens * ops.cast(math.sqrt(self.hidden_dim), tokens.dtype)
        positions = call_sublayer(self.position_embedding, tokens, start_index=start_index)
        embeddings = tokens + positions  # (B, T, D)
        if self.segment_embedding is not None:
            if segment_ids is None:
                segment_ids = ops.zeros_like(token_ids)
            embeddings = embeddings + call_sublayer(self.segment_embedding, segment_ids)
        return call_sublayer(self.dropout_layer, embeddings, training=training)

    def compute_mask(self, token_ids, mask=None):
        if not self.mask_zero:
            return None
        return ops.not_equal(token_ids, 0)  # (B, T)

    def compute_output_shape(
        self, token_ids_shape, segment_ids_shape=None, start_index_shape=None
    ):
        return (*token_ids_shape, self.hidden_dim)

    def compute_output_spec(self, token_ids, segment_ids=None, start_index=0, training=None):
        # Checks dtypes when the layer is called on symbolic inputs, before any data.
        self._validate_inputs(token_ids, segment_ids)
        return keras.KerasTensor(
            self.compute_output_shape(token_ids.shape), dtype=self.compute_dtype
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "vocabulary_size": self.vocabulary_size,
                "max_sequence_length": self.max_sequence_length,
                "hidden_dim": self.hidden_dim,
                "num_segments": self.num_segments,
                "position_kind": self.position_kind,
                "scale_embeddings": self.scale_embeddings,
                "mask_zero": self.mask_zero,
                "embeddings_initializer": keras.initializers.serialize(
                    self.embeddings_initializer
                ),
                "dropout": self.dropout,
            }
        )
        return config
