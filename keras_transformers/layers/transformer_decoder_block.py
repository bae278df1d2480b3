"""Transformer decoder block: causal self-attention, optional cross-attention, feed-forward.

Vaswani et al., "Attention Is All You Need" (2017), section 3.1.
"""

import keras
from keras import ops

from keras_transformers.layers import masks as masks_lib
from keras_transformers.layers.arguments import (
    check_bool,
    check_last_dim,
    check_rank,
    check_sequence_shape,
    residual,
)
from keras_transformers.layers.sublayers import call_sublayer
from keras_transformers.layers.transformer_block import TransformerBlock


@keras.saving.register_keras_serializable(package="keras_transformers")
class TransformerDecoderBlock(TransformerBlock):
    """One decoder block: causal self-attention, cross-attention, feed-forward network.

    Post-norm (`normalize_first=False`; the paper):
        x = LayerNorm(x + Dropout(CausalSelfAttention(x)))
        x = LayerNorm(x + Dropout(CrossAttention(x, encoder_sequence)))
        x = LayerNorm(x + Dropout(FeedForward(x)))
    Pre-norm (`normalize_first=True`; GPT-2) puts each LayerNorm on the branch
    input instead: x = x + Dropout(Branch(LayerNorm(x))). With
    `use_cross_attention=False` (GPT-2) the cross-attention sub-block is absent.

    Every attention has `num_heads` heads of size `hidden_dim // num_heads`, where
    `hidden_dim` is the decoder's hidden size. The cross-attention takes its keys
    and values from `encoder_sequence`, whose length and hidden size may differ
    from the decoder's.

    Masking: the self-attention is always causal. `decoder_padding_mask` hides
    padded decoder keys and `encoder_padding_mask` padded encoder keys (boolean,
    True = may attend). Keras masks on `decoder_sequence` and `encoder_sequence`
    (for example from `Embedding(mask_zero=True)`) act as padding masks too; the
    attention output of a masked decoder position is zero (its residual and
    feed-forward output remain). The output carries the decoder's Keras mask.

    Cached decoding: `self_attention_cache` (B, 2, S_max, num_heads, key_dim),
    from `block.self_attention.init_cache(batch_size, max_length)`, receives the
    keys and values of `decoder_sequence` at `self_attention_cache_update_index`,
    and each query attends to the cache up to its own absolute position; with a
    cache, `decoder_padding_mask` is over the S_max cache positions and the
    decoder's Keras mask applies to the queries only. `cross_attention_cache`
    (B, 2, S, num_heads, key_dim), from `compute_cross_attention_cache`, holds the
    encoder's keys and values, used as they are instead of projecting
    `encoder_sequence` again.

    Args:
        num_heads: number of attention heads; must divide the decoder hidden size.
        intermediate_dim: hidden size of the feed-forward network.
        dropout: dropout rate on each sub-layer's output, before the residual sum.
        attention_dropout: dropout rate on the attention probabilities; defaults to
            `dropout`.
        activation: feed-forward activation: "relu", "gelu" or "gelu_approximate".
        layer_norm_epsilon: epsilon of the layer normalizations.
        normalize_first: pre-norm when True, post-norm when False.
        use_cross_attention: whether the block attends to an encoder's output.
        kernel_initializer: initializer of every dense kernel.
        bias_initializer: initializer of every dense bias.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        decoder_sequence: (B, T, hidden_dim).
        encoder_sequence: (B, S, encoder_dim); required with cross-attention and
            refused without.
        decoder_padding_mask: boolean (B, T), or (B, S_max) with a cache.
        encoder_padding_mask: boolean (B, S).
        self_attention_cache: (B, 2, S_max, num_heads, key_dim).
        self_attention_cache_update_index: int or scalar tensor, the absolute
            position of `decoder_sequence`'s first token; required with
            `self_attention_cache`.
        cross_attention_cache: (B, 2, S, num_heads, key_dim).
        return_attention_scores: also return the attention probabilities.
        training: whether dropout is active.
        decoder_sequence_mask, encoder_sequence_mask: Keras masks, filled in by
            Keras.
        mask: Keras mask of `decoder_sequence`, as Keras fills it in when
            `decoder_sequence` is the only tensor argument.

    Returns:
        The (B, T, hidden_dim) output, followed by whichever of these apply, in
        this order: the self-attention scores (B, num_heads, T, T or S_max) and
        the cross-attention scores (B, num_heads, T, S) when
        `return_attention_scores`; the updated `self_attention_cache` when one is
        given; the `cross_attention_cache` (unchanged) when one is given. A lone
        output is returned bare, otherwise a tuple.

    Example:

    >>> import numpy as np
    >>> block = TransformerDecoderBlock(num_heads=2, intermediate_dim=32)
    >>> decoder_sequence = np.random.rand(2, 4, 8).astype("float32")
    >>> encoder_sequence = np.random.rand(2, 6, 12).astype("float32")
    >>> tuple(block(decoder_sequence, encoder_sequence).shape)
    (2, 4, 8)
    >>> cache = block.self_attention.init_cache(batch_size=2, max_length=4)
    >>> cross_cache = block.compute_cross_attention_cache(encoder_sequence)
    >>> out, cache, cross_cache = block(
    ...     decoder_sequence[:, :1],
    ...     encoder_sequence,
    ...     self_attention_cache=cache,
    ...     self_attention_cache_update_index=0,
    ...     cross_attention_cache=cross_cache,
    ... )
    >>> tuple(out.shape), tuple(cache.shape), tuple(cross_cache.shape)
    ((2, 1, 8), (2, 2, 4, 2, 4), (2, 2, 6, 2, 4))
    """

    def __init__(
        self,
        num_heads,
        intermediate_dim,
        dropout=0.0,
        attention_dropout=None,
        activation="relu",
        layer_norm_epsilon=1e-5,
        normalize_first=False,
        use_cross_attention=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(
            num_heads,
            intermediate_dim,
            dropout=dropout,
            attention_dropout=attention_dropout,
            activation=activation,
            layer_norm_epsilon=layer_norm_epsilon,
            normalize_first=normalize_first,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            **kwargs,
        )
        check_bool(use_cross_attention, "use_cross_attention")
        self.use_cross_attention = use_cross_attention

    def build(self, decoder_sequence_shape, encoder_sequence_shape=None):
        check_sequence_shape(decoder_sequence_shape, "decoder_sequence", self.num_heads)
        self._check_encoder_given(encoder_sequence_shape)
        if encoder_sequence_shape is not None and len(encoder_sequence_shape) != 3:
            raise ValueError(
                "`encoder_sequence` must have rank 3 (batch, sequence, hidden). "
                f"Received: encoder_sequence with shape={tuple(encoder_sequence_shape)}"
            )
        hidden_dim = decoder_sequence_shape[-1]
        self.self_attention = self._attention("self_attention", hidden_dim)
        self.self_attention.build(decoder_sequence_shape)
        self.self_attention_layer_norm = self._layer_norm("self_attention_layer_norm")
        self.self_attention_layer_norm.build(decoder_sequence_shape)
        self.self_attention_dropout = self._dropout("self_attention_dropout")
        self.cross_attention = None
        if self.use_cross_attention:
            self.cross_attention = self._attention("cross_attention", hidden_dim)
            self.cross_attention.build(decoder_sequence_shape, encoder_sequence_shape)
            self.cross_attention_layer_norm = self._layer_norm("cross_attention_layer_norm")
            self.cross_attention_layer_norm.build(decoder_sequence_shape)
            self.cross_attention_dropout = self._dropout("cross_attention_dropout")
        self.feedforward = self._feedforward()
        self.feedforward.build(decoder_sequence_shape)
        self.feedforward_layer_norm = self._layer_norm("feedforward_layer_norm")
        self.feedforward_layer_norm.build(decoder_sequence_shape)
        self.feedforward_dropout = self._dropout("feedforward_dropout")
        self._hidden_dim = hidden_dim
        self._encoder_dim = None if encoder_sequence_shape is None else encoder_sequence_shape[-1]
        self.built = True

    def _check_encoder_given(self, encoder_sequence_shape):
        if self.use_cross_attention and encoder_sequence_shape is None:
            raise ValueError(
                "`encoder_sequence` is required when use_cross_attention=True. "
                "Received: encoder_sequence=None"
            )
        if not self.use_cross_attention and encoder_sequence_shape is not None:
            raise ValueError(
                "`encoder_sequence` must be None when use_cross_attention=False. "
                f"Received: encoder_sequence with shape={tuple(encoder_sequence_shape)}"
            )

    def compute_cross_attention_cache(self, encoder_sequence):
        """Projects `encoder_sequence` to the cross-attention keys and values, once.

        Args:
            encoder_sequence: (B, S, encoder_dim).

        Returns:
            The (B, 2, S, num_heads, key_dim) `cross_attention_cache`.
        """
        if not self.use_cross_attention:
            raise ValueError(
                "`compute_cross_attention_cache` needs cross-attention. "
                "Received: use_cross_attention=False"
            )
        if not self.built:
            raise ValueError(
                "`compute_cross_attention_cache` needs a built block: call it once or "
                "`build(decoder_sequence_shape, encoder_sequence_shape)` first."
            )
        check_rank(encoder_sequence, 3, "encoder_sequence")
        check_last_dim(encoder_sequence, self._encoder_dim, "encoder_sequence")
        key = self.cross_attention.key_dense(encoder_sequence)  # (B, S, N, H)
        value = self.cross_attention.value_dense(encoder_sequence)  # (B, S, N, H)
        return ops.stack([key, value], axis=1)  # (B, 2, S, N, H)

    def call(
        self,
        decoder_sequence,
        encoder_sequence=None,
        decoder_padding_mask=None,
        encoder_padding_mask=None,
        self_attention_cache=None,
        self_attention_cache_update_index=None,
        cross_attention_cache=None,
        return_attention_scores=False,
        training=None,
        decoder_sequence_mask=None,
        encoder_sequence_mask=None,
        mask=None,
    ):
        self._validate_inputs(
            decoder_sequence,
            encoder_sequence,
            decoder_padding_mask,
            encoder_padding_mask,
            self_attention_cache,
            self_attention_cache_update_index,
            cross_attention_cache,
        )
        # Keras fills `mask` instead of `decoder_sequence_mask` when `decoder_sequence`
        # is the only tensor.
        decoder_sequence_mask = mask if decoder_sequence_mask is None else decoder_sequence_mask

        def self_attention_branch(x):
            return call_sublayer(
                self.self_attention,
                x,
                padding_mask=decoder_padding_mask,
                use_causal_mask=True,
                return_attention_scores=return_attention_scores,
                cache=self_attention_cache,
                cache_update_index=self_attention_cache_update_index,
                training=training,
                query_mask=decoder_sequence_mask,
            )

        def cross_attention_branch(x):
            return call_sublayer(
                self.cross_attention,
                x,
                encoder_sequence,
                # Merged here so that it also holds over a cache, where the attention
                # ignores Keras masks on its keys.
                padding_mask=masks_lib.merge_masks(encoder_padding_mask, encoder_sequence_mask),
                return_attention_scores=return_attention_scores,
                cache=cross_attention_cache,
                training=training,
                query_mask=decoder_sequence_mask,
            )

        def feedforward_branch(x):
            return call_sublayer(self.feedforward, x, training=training)

        # Each `*_extras` is what the attention returns beside its output:
        # ([scores], [cache]).
        x = decoder_sequence
        x, self_extras = residual(
            x,
            self_attention_branch,
            self.self_attention_layer_norm,
            self.self_attention_dropout,
            training,
            self.normalize_first,
        )
        cross_extras = ()
        if self.use_cross_attention:
            x, cross_extras = residual(
                x,
                cross_attention_branch,
                self.cross_attention_layer_norm,
                self.cross_attention_dropout,
                training,
                self.normalize_first,
            )
        x, _ = residual(
            x,
            feedforward_branch,
            self.feedforward_layer_norm,
            self.feedforward_dropout,
            training,
            self.normalize_first,
        )
        num_scores = 1 if return_attention_scores else 0
        results = (
            (x,)
            + self_extras[:num_scores]
            + cross_extras[:num_scores]
            + self_extras[num_scores:]
            + cross_extras[num_scores:]
        )
        return results[0] if len(results) == 1 else results

    def _validate_inputs(
        self,
        decoder_sequence,
        encoder_sequence,
        decoder_padding_mask,
        encoder_padding_mask,
        self_attention_cache,
        self_attention_cache_update_index,
        cross_attention_cache,
    ):
        check_rank(decoder_sequence, 3, "decoder_sequence")
        check_last_dim(decoder_sequence, self._hidden_dim, "decoder_sequence")
        self._check_encoder_given(None if encoder_sequence is None else encoder_sequence.shape)
        if encoder_sequence is not None:
            check_rank(encoder_sequence, 3, "encoder_sequence")
            check_last_dim(encoder_sequence, self._encoder_dim, "encoder_sequence")
        for name, value in (
            ("encoder_padding_mask", encoder_padding_mask),
            ("cross_attention_cache", cross_attention_cache),
        ):
            if value is not None and not self.use_cross_attention:
                raise ValueError(
                    f"`{name}` must be None when use_cross_attention=False. "
                    f"Received: {name} with shape={tuple(value.shape)}"
                )
        masks_lib.validate_mask(decoder_padding_mask, "decoder_padding_mask", 2)
        masks_lib.validate_mask(encoder_padding_mask, "encoder_padding_mask", 2)
        if (self_attention_cache is None) != (self_attention_cache_update_index is None):
            raise ValueError(
                "`self_attention_cache` and `self_attention_cache_update_index` must be "
                "given together. Received: self_attention_cache "
                f"{'=None' if self_attention_cache is None else 'given'} and "
                f"self_attention_cache_update_index={self_attention_cache_update_index!r}"
            )

    def get_config(self):
        config = super().get_config()
        config["use_cross_attention"] = self.use_cross_attention
        return config
