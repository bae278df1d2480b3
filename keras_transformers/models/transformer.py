"""The encoder-decoder Transformer for sequence-to-sequence tasks such as translation.

Vaswani et al., "Attention Is All You Need" (2017).
"""

import math

import keras
from keras import ops

from keras_transformers.layers.arguments import check_positive_int, check_rate
from keras_transformers.layers.dropout import Dropout
from keras_transformers.layers.sine_positional_encoding import SinePositionalEncoding
from keras_transformers.layers.transformer_decoder_block import TransformerDecoderBlock
from keras_transformers.layers.transformer_encoder_block import TransformerEncoderBlock
from keras_transformers.models.model import Model, numbered_blocks

INPUT_NAMES = (
    "encoder_token_ids",
    "encoder_padding_mask",
    "decoder_token_ids",
    "decoder_padding_mask",
)


def transformer(
    encoder_vocabulary_size,
    decoder_vocabulary_size,
    num_layers,
    num_heads,
    hidden_dim,
    intermediate_dim,
    max_sequence_length=256,
    dropout=0.1,
    layer_norm_epsilon=1e-5,
    share_embeddings=False,
    tie_output_projection=True,
    num_encoder_layers=None,
    num_decoder_layers=None,
    dtype=None,
    name="transformer",
):
    """Builds the encoder-decoder Transformer of the paper as a functional model.

    Source and target tokens are embedded, scaled by sqrt(hidden_dim) (section 3.4)
    and summed with the sinusoidal positional encoding (section 3.5), then dropped
    out. The encoder is a stack of post-norm `TransformerEncoderBlock`s (ReLU
    feed-forward); the decoder a stack of post-norm `TransformerDecoderBlock`s,
    each with causal self-attention and cross-attention over the encoder output.
    The logits are the decoder output times the transposed decoder token
    embedding (`tie_output_projection`, section 3.4) or a separate Dense layer.
    Dropout is on each sub-layer's output and the embedding sums only, none on the
    attention probabilities (section 5.4).

    Masking: `encoder_padding_mask` hides padded source tokens from the encoder's
    self-attention and from every cross-attention; `decoder_padding_mask` hides
    padded target tokens from the decoder's self-attention, which is also causal.
    Logits at padded target positions are computed but meaningless: leave them out
    of the loss. Both masks are int32 in the signature (1 = real token) and cast to
    booleans inside the graph.

    Sequence length: the sinusoidal encoding has no table, so the graph accepts
    sequences of any length (the paper chose sinusoids hoping they extrapolate,
    section 3.5). `max_sequence_length` is the length the model is meant for: it is
    not enforced by the graph;
    `keras_transformers.models.model.validate_inputs(model, inputs, max_sequence_length)`
    checks it, and cached decoding sizes its caches with it. The model checks the
    rest of its inputs itself on every call (names, integer dtypes, shapes).

    Reusing the parts (for cached generation): the layers are named
    "encoder_token_embedding" and "decoder_token_embedding" (one
    "token_embedding" when shared), "encoder_position_encoding",
    "decoder_position_encoding", "encoder_embedding_dropout",
    "decoder_embedding_dropout", "encoder_block_{i}", "decoder_block_{i}" and,
    without tying, "output_projection". `encode`, `init_decoder_cache` and
    `decode` in this module run the model's own layers step by step.

    Args:
        encoder_vocabulary_size: number of source tokens.
        decoder_vocabulary_size: number of target tokens (the logits' size).
        num_layers: number of encoder blocks and of decoder blocks (N).
        num_heads: number of attention heads (h); must divide `hidden_dim`.
        hidden_dim: size of every token representation (d_model).
        intermediate_dim: hidden size of the feed-forward networks (d_ff).
        max_sequence_length: the longest source or target sequence intended (not
            enforced by the graph: see above).
        dropout: dropout rate on the embedding sums and each sub-layer's output.
        layer_norm_epsilon: epsilon of the layer normalizations.
        share_embeddings: one token embedding for source and target (a shared
            vocabulary, as the paper's English-German model); the two vocabulary
            sizes must then be equal.
        tie_output_projection: compute the logits with the transposed decoder
            token embedding instead of a separate Dense layer.
        num_encoder_layers: number of encoder blocks; defaults to `num_layers`.
        num_decoder_layers: number of decoder blocks; defaults to `num_layers`.
        dtype: dtype policy of every layer (for example "mixed_bfloat16"); the
            logits are float32 whatever the policy.
        name: name of the model.

    Model inputs (a dict):
        encoder_token_ids: int32 (B, S).
        encoder_padding_mask: int32 (B, S), 1 for real tokens, 0 for padding.
        decoder_token_ids: int32 (B, T), the target shifted right (teacher forcing).
        decoder_padding_mask: int32 (B, T).

    Returns:
        A functional `keras.Model` whose output is the float32 logits
        (B, T, decoder_vocabulary_size).

    Example:

    >>> model = transformer(
    ...     encoder_vocabulary_size=11, decoder_vocabulary_size=13, num_layers=1,
    ...     num_heads=2, hidden_dim=8, intermediate_dim=16,
    ... )
    >>> sorted(model.input)
    ['decoder_padding_mask', 'decoder_token_ids', 'encoder_padding_mask', 'encoder_token_ids']
    >>> model.output.shape, model.output.dtype
    ((None, None, 13), 'float32')
    """
    num_encoder_layers = num_layers if num_encoder_layers is None else num_encoder_layers
    num_decoder_layers = num_layers if num_decoder_layers is None else num_decoder_layers
    for arg, value in (
        ("encoder_vocabulary_size", encoder_vocabulary_size),
        ("decoder_vocabulary_size", decoder_vocabulary_size),
        ("num_layers", num_layers),
        ("num_heads", num_heads),
        ("hidden_dim", hidden_dim),
        ("intermediate_dim", intermediate_dim),
        ("max_sequence_length", max_sequence_length),
        ("num_encoder_layers", num_encoder_layers),
        ("num_decoder_layers", num_decoder_layers),
    ):
        check_positive_int(value, arg)
    check_rate(dropout, "dropout")
    if hidden_dim % num_heads != 0:
        raise ValueError(
            "`hidden_dim` must be divisible by `num_heads`. "
            f"Received: hidden_dim={hidden_dim}, num_heads={num_heads}"
        )
    for arg, value in (
        ("share_embeddings", share_embeddings),
        ("tie_output_projection", tie_output_projection),
    ):
        if not isinstance(value, bool):
            raise ValueError(f"`{arg}` must be a bool. Received: {arg}={value!r}")
    if share_embeddings and encoder_vocabulary_size != decoder_vocabulary_size:
        raise ValueError(
            "`encoder_vocabulary_size` and `decoder_vocabulary_size` must be equal when "
            f"share_embeddings=True. Received: encoder_vocabulary_size="
            f"{encoder_vocabulary_size}, decoder_vocabulary_size={decoder_vocabulary_size}"
        )

    inputs = {
        input_name: keras.Input(shape=(None,), dtype="int32", name=input_name)
        for input_name in INPUT_NAMES
    }
    encoder_padding_mask = ops.cast(inputs["encoder_padding_mask"], "bool")  # (B, S)
    decoder_padding_mask = ops.cast(inputs["decoder_padding_mask"], "bool")  # (B, T)

    if share_embeddings:
        encoder_embedding = decoder_embedding = _token_embedding(
            encoder_vocabulary_size, hidden_dim, "token_embedding", dtype
        )
    else:
        encoder_embedding = _token_embedding(
            encoder_vocabulary_size, hidden_dim, "encoder_token_embedding", dtype
        )
        decoder_embedding = _token_embedding(
            decoder_vocabulary_size, hidden_dim, "decoder_token_embedding", dtype
        )

    def embed(token_ids, token_embedding, side):
        x = token_embedding(token_ids) * math.sqrt(hidden_dim)  # section 3.4
        x = x + SinePositionalEncoding(name=f"{side}_position_encoding", dtype=dtype)(x)
        return Dropout(dropout, name=f"{side}_embedding_dropout", dtype=dtype)(x)

    block_kwargs = dict(
        num_heads=num_heads,
        intermediate_dim=intermediate_dim,
        dropout=dropout,
        attention_dropout=0.0,
        activation="relu",
        layer_norm_epsilon=layer_norm_epsilon,
        normalize_first=False,
        dtype=dtype,
    )
    x = embed(inputs["encoder_token_ids"], encoder_embedding, "encoder")  # (B, S, D)
    for i in range(num_encoder_layers):
        x = TransformerEncoderBlock(**block_kwargs, name=f"encoder_block_{i}")(
            x, padding_mask=encoder_padding_mask
        )
    encoder_output = x

    y = embed(inputs["decoder_token_ids"], decoder_embedding, "decoder")  # (B, T, D)
    for i in range(num_decoder_layers):
        y = TransformerDecoderBlock(**block_kwargs, name=f"decoder_block_{i}")(
            y,
            encoder_output,
            decoder_padding_mask=decoder_padding_mask,
            encoder_padding_mask=encoder_padding_mask,
        )
    if tie_output_projection:
        logits = decoder_embedding(y, reverse=True)  # (B, T, V)
    else:
        # float32 like keras-hub's heads: logits and the softmax after them need range.
        logits = keras.layers.Dense(
            decoder_vocabulary_size, name="output_projection", dtype="float32"
        )(y)  # (B, T, V)
    logits = ops.cast(logits, "float32")
    return Model(inputs, logits, name=name)


def _token_embedding(vocabulary_size, hidden_dim, name, dtype):
    # N(0, hidden_dim^-0.5) as tensor2tensor, the paper's code: once scaled by
    # sqrt(hidden_dim) the embeddings have unit variance, like the positional encoding.
    # The reverse (tied output) projection runs in float32 under mixed precision.
    return keras.layers.ReversibleEmbedding(
        vocabulary_size,
        hidden_dim,
        embeddings_initializer=keras.initializers.RandomNormal(stddev=hidden_dim**-0.5),
        reverse_dtype="float32",
        name=name,
        dtype=dtype,
    )


def _layer(model, *names):
    """The first of `names` that `model` has."""
    layer_names = {layer.name for layer in model.layers}
    for layer_name in names:
        if layer_name in layer_names:
            return model.get_layer(layer_name)
    raise ValueError(
        f"`model` must be built by `transformer`: it has no layer named {' or '.join(names)}. "
        f"Received: model={model.name!r}"
    )


def _embed(model, token_ids, side, start_index=0):
    token_embedding = _layer(model, f"{side}_token_embedding", "token_embedding")
    x = token_embedding(token_ids) * math.sqrt(token_embedding.output_dim)
    return x + _layer(model, f"{side}_position_encoding")(x, start_index=start_index)


def _as_mask(mask):
    return None if mask is None else ops.cast(mask, "bool")


def encode(model, encoder_token_ids, encoder_padding_mask=None):
    """Runs the encoder half of a `transformer` model (inference: no dropout).

    Args:
        model: a model built by `transformer`.
        encoder_token_ids: int (B, S).
        encoder_padding_mask: int or bool (B, S), 1/True for real tokens.

    Returns:
        The (B, S, hidden_dim) encoder output, in the compute dtype.

    Example:

    >>> model = transformer(11, 11, num_layers=1, num_heads=2, hidden_dim=8,
    ...                     intermediate_dim=16)
    >>> token_ids = keras.Input((None,), dtype="int32")
    >>> encode(model, token_ids).shape
    (None, None, 8)
    """
    x = _embed(model, encoder_token_ids, "encoder")
    for block in numbered_blocks(model, "encoder"):
        x = block(x, padding_mask=_as_mask(encoder_padding_mask), training=False)
    return x


def init_decoder_cache(model, encoder_output, max_length):
    """Empty self-attention caches and precomputed cross-attention caches for `decode`.

    Args:
        model: a model built by `transformer`.
        encoder_output: (B, S, hidden_dim), from `encode`.
        max_length: the number of target positions the caches hold.

    Returns:
        A list with, per decoder block, a tuple (self_attention_cache
        (B, 2, max_length, num_heads, key_dim) of zeros, cross_attention_cache
        (B, 2, S, num_heads, key_dim)).

    Example:

    >>> model = transformer(11, 11, num_layers=1, num_heads=2, hidden_dim=8,
    ...                     intermediate_dim=16)
    >>> encoder_output = encode(model, keras.Input((3,), batch_size=1, dtype="int32"))
    >>> cache = init_decoder_cache(model, encoder_output, max_length=4)
    >>> len(cache), tuple(cache[0][0].shape)
    (1, (1, 2, 4, 2, 4))
    """
    batch_size = int(ops.shape(encoder_output)[0])
    return [
        (
            block.self_attention.init_cache(batch_size, max_length),
            block.compute_cross_attention_cache(encoder_output),
        )
        for block in numbered_blocks(model, "decoder")
    ]


def decode(
    model,
    decoder_token_ids,
    encoder_output,
    encoder_padding_mask=None,
    decoder_padding_mask=None,
    cache=None,
    cache_update_index=0,
):
    """Runs the decoder half of a `transformer` model and its output projection.

    Without `cache`, this is the model's decoder on the whole target (inference:
    no dropout). With `cache` (from `init_decoder_cache`), `decoder_token_ids` are
    the tokens at positions `cache_update_index` onwards: their keys and values are
    written into the caches, and each token attends to the cached positions up to
    its own, so feeding a target one token at a time gives the logits of the full
    pass.

    Args:
        model: a model built by `transformer`.
        decoder_token_ids: int (B, T).
        encoder_output: (B, S, hidden_dim), from `encode`.
        encoder_padding_mask: int or bool (B, S).
        decoder_padding_mask: int or bool (B, T), or (B, max_length) over the cache
            positions with a cache.
        cache: the list from `init_decoder_cache`, or None.
        cache_update_index: int or scalar tensor, the position of
            `decoder_token_ids`' first token; only used with a cache.

    Returns:
        The float32 logits (B, T, decoder_vocabulary_size), and the updated cache
        when `cache` is given.

    Example (on symbolic inputs here; eager tensors work the same):

    >>> model = transformer(11, 11, num_layers=1, num_heads=2, hidden_dim=8,
    ...                     intermediate_dim=16)
    >>> source = keras.Input((3,), batch_size=1, dtype="int32")
    >>> encoder_output = encode(model, source)
    >>> cache = init_decoder_cache(model, encoder_output, max_length=4)
    >>> token = keras.Input((1,), batch_size=1, dtype="int32")
    >>> logits, cache = decode(model, token, encoder_output, cache=cache, cache_update_index=0)
    >>> logits.shape
    (1, 1, 11)
    """
    start_index = 0 if cache is None else cache_update_index
    y = _embed(model, decoder_token_ids, "decoder", start_index=start_index)
    new_cache = []
    for i, block in enumerate(numbered_blocks(model, "decoder")):
        kwargs = dict(
            decoder_padding_mask=_as_mask(decoder_padding_mask),
            encoder_padding_mask=_as_mask(encoder_padding_mask),
            training=False,
        )
        if cache is None:
            y = block(y, encoder_output, **kwargs)
            continue
        y, self_cache, cross_cache = block(
            y,
            encoder_output,
            self_attention_cache=cache[i][0],
            self_attention_cache_update_index=cache_update_index,
            cross_attention_cache=cache[i][1],
            **kwargs,
        )
        new_cache.append((self_cache, cross_cache))
    if any(layer.name == "output_projection" for layer in model.layers):
        logits = model.get_layer("output_projection")(y)
    else:
        logits = _layer(model, "decoder_token_embedding", "token_embedding")(y, reverse=True)
    logits = ops.cast(logits, "float32")
    return logits if cache is None else (logits, new_cache)




# Table 3 of the paper. max_sequence_length is not in the paper (tensor2tensor's
# default, 256); the big model's dropout 0.3 is the English-German one (0.1 for
# English-French).
CONFIGS = {
    "transformer_tiny": dict(
        encoder_vocabulary_size=1000,
        decoder_vocabulary_size=1000,
        num_layers=2,
        num_heads=4,
        hidden_dim=64,
        intermediate_dim=128,
        max_sequence_length=64,
    ),
    "transformer_base": dict(
        encoder_vocabulary_size=37000,
        decoder_vocabulary_size=37000,
        num_layers=6,
        num_heads=8,
        hidden_dim=512,
        intermediate_dim=2048,
        max_sequence_length=256,
        dropout=0.1,
        share_embeddings=True,
        tie_output_projection=True,
    ),
    "transformer_big": dict(
        encoder_vocabulary_size=37000,
        decoder_vocabulary_size=37000,
        num_layers=6,
        num_heads=16,
        hidden_dim=1024,
        intermediate_dim=4096,
        max_sequence_length=256,
        dropout=0.3,
        share_embeddings=True,
        tie_output_projection=True,
    ),
}
