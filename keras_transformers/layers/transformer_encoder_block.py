"""Transformer encoder block: self-attention and a feed-forward network, each residual.

Vaswani et al., "Attention Is All You Need" (2017), section 3.1.
"""

import keras
from keras import ops

from keras_transformers.layers import masks as masks_lib
from keras_transformers.layers.arguments import (
    check_last_dim,
    check_positive_int,
    check_rank,
    check_sequence_shape,
    residual,
)
from keras_transformers.layers.sublayers import call_sublayer
from keras_transformers.layers.transformer_block import TransformerBlock


@keras.saving.register_keras_serializable(package="keras_transformers")
class TransformerEncoderBlock(TransformerBlock):
    """One encoder block: multi-head self-attention, then a feed-forward network.

    Post-norm (`normalize_first=False`; the paper, BERT):
        x = LayerNorm(x + Dropout(SelfAttention(x)))
        x = LayerNorm(x + Dropout(FeedForward(x)))
    Pre-norm (`normalize_first=True`; GPT-2, ViT):
        x = x + Dropout(SelfAttention(LayerNorm(x)))
        x = x + Dropout(FeedForward(LayerNorm(x)))

    The attention has `num_heads` heads of size `hidden_dim // num_heads`, where
    `hidden_dim` is the input's last dimension.

    Masking: `padding_mask` (B, T) hides padded keys; `attention_mask` (B, T, T)
    and `use_causal_mask` add to it (boolean, True = may attend, combined with
    logical AND). A Keras mask on `inputs` (for example from
    `Embedding(mask_zero=True)`) is used the same way as a padding mask over the
    keys; the attention output of a masked query position is zero (its residual
    and feed-forward output remain). The output carries the input's Keras mask.

    Fewer output rows: `output_length=n` computes the output at the first `n`
    positions only, `output_positions` (B, P) at the given positions only; every
    position still serves as a key and value. The result equals `block(inputs)[:, :n]`
    (or those rows gathered), gradients included, for a fraction of the work: a head
    that reads only some positions after the last block (BERT's classifier reads
    [CLS], its masked-LM head the masked positions) needs nothing more from it.

    Args:
        num_heads: number of attention heads; must divide the hidden size.
        intermediate_dim: hidden size of the feed-forward network.
        dropout: dropout rate on each sub-layer's output, before the residual sum.
        attention_dropout: dropout rate on the attention probabilities; defaults to
            `dropout`.
        activation: feed-forward activation: "relu", "gelu" or "gelu_approximate".
        layer_norm_epsilon: epsilon of the layer normalizations.
        normalize_first: pre-norm when True, post-norm when False.
        kernel_initializer: initializer of every dense kernel.
        bias_initializer: initializer of every dense bias.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: (B, T, hidden_dim).
        padding_mask: boolean (B, T), False at padded positions.
        attention_mask: boolean (B, T, T).
        use_causal_mask: whether position `i` may only attend to positions `<= i`.
        return_attention_scores: also return the (B, num_heads, T, T) attention
            probabilities (T rows become n or P with the arguments below).
        output_length: None (every position), or a positive int `n`: the output
            at the first `n` positions only.
        output_positions: None, or an integer (B, P) tensor of positions in
            [0, T): the output at those positions only (not with `output_length`).
        training: whether dropout is active.
        inputs_mask: Keras mask of `inputs`, filled in by Keras.
        mask: Keras mask of `inputs`, as Keras fills it in when `inputs` is the only
            tensor argument.

    Returns:
        The (B, T, hidden_dim) output ((B, n, hidden_dim) or (B, P, hidden_dim) with
        `output_length` or `output_positions`), or `(output, scores)` when
        `return_attention_scores`.

    Example:

    >>> import numpy as np
    >>> block = TransformerEncoderBlock(num_heads=2, intermediate_dim=32)
    >>> x = np.random.rand(2, 5, 8).astype("float32")
    >>> padding_mask = np.array([[True] * 5, [True] * 3 + [False] * 2])
    >>> out, scores = block(x, padding_mask=padding_mask, return_attention_scores=True)
    >>> tuple(out.shape), tuple(scores.shape)
    ((2, 5, 8), (2, 2, 5, 5))
    """

    def build(self, inputs_shape):
        check_sequence_shape(inputs_shape, "inputs", self.num_heads)
        hidden_dim = inputs_shape[-1]
        self.self_attention = self._attention("self_attention", hidden_dim)
        self.self_attention.build(inputs_shape)
        self.self_attention_layer_norm = self._layer_norm("self_attention_layer_norm")
        self.self_attention_layer_norm.build(inputs_shape)
        self.self_attention_dropout = self._dropout("self_attention_dropout")
        self.feedforward = self._feedforward()
        self.feedforward.build(inputs_shape)
        self.feedforward_layer_norm = self._layer_norm("feedforward_layer_norm")
        self.feedforward_layer_norm.build(inputs_shape)
        self.feedforward_dropout = self._dropout("feedforward_dropout")
        self._hidden_dim = hidden_dim
        self.built = True

    def call(
        self,
        inputs,
        padding_mask=None,
        attention_mask=None,
        use_causal_mask=False,
        return_attention_scores=False,
        output_length=None,
        output_positions=None,
        training=None,
        inputs_mask=None,
        mask=None,
    ):
        check_rank(inputs, 3, "inputs")
        check_last_dim(inputs, self._hidden_dim, "inputs")
        masks_lib.validate_mask(padding_mask, "padding_mask", 2)
        masks_lib.validate_mask(attention_mask, "attention_mask", 3)
        # Keras fills `mask` instead of `inputs_mask` when `inputs` is the only tensor.
        inputs_mask = mask if inputs_mask is None else inputs_mask
        _check_output_rows(output_length, output_positions, inputs_mask)

        x, keys = inputs, None
        if output_length is not None or output_positions is not None:
            # Only the chosen rows go on; every row is still a key and value (normalized
            # first in pre-norm, as the queries are).
            keys = (
                call_sublayer(self.self_attention_layer_norm, inputs)
                if self.normalize_first
                else inputs
            )  # (B, T, D)
        if output_length is not None:
            x = inputs[:, :output_length]  # (B, n, D)
            if attention_mask is not None:
                attention_mask = attention_mask[:, :output_length]  # (B, n, T)
        elif output_positions is not None:
            rows = ops.expand_dims(ops.cast(output_positions, "int32"), -1)  # (B, P, 1)
            x = ops.take_along_axis(inputs, rows, axis=1)  # (B, P, D)
            if attention_mask is not None:
                attention_mask = ops.take_along_axis(attention_mask, rows, axis=1)  # (B, P, T)
            if use_causal_mask:
                # Row p is position output_positions[:, p]: keys up to it.
                key_positions = ops.arange(ops.shape(inputs)[1], dtype="int32")
                causal = ops.greater_equal(rows, key_positions[None, None, :])  # (B, P, T)
                attention_mask = masks_lib.merge_masks(attention_mask, causal)
                use_causal_mask = False

        def attention_branch(query):
            return call_sublayer(
                self.self_attention,
                query,
                value=keys,
                padding_mask=padding_mask,
                attention_mask=attention_mask,
                use_causal_mask=use_causal_mask,
                return_attention_scores=return_attention_scores,
                training=training,
                query_mask=inputs_mask,
            )

        def feedforward_branch(x):
            return call_sublayer(self.feedforward, x, training=training)

        # `scores` is (attention scores,) when requested, else ().
        x, scores = residual(
            x,
            attention_branch,
            self.self_attention_layer_norm,
            self.self_attention_dropout,
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
        return (x,) + scores if return_attention_scores else x


def _check_output_rows(output_length, output_positions, inputs_mask):
    """Checks `output_length` / `output_positions` before any work."""
    if output_length is None and output_positions is None:
        return
    if output_length is not None and output_positions is not None:
        raise ValueError(
            "Pass at most one of `output_length` and `output_positions`. Received: "
            f"output_length={output_length!r} and output_positions={output_positions!r}"
        )
    if output_length is not None:
        check_positive_int(output_length, "output_length")
    elif (
        not hasattr(output_positions, "shape")
        or not hasattr(output_positions, "dtype")
        or "int" not in keras.backend.standardize_dtype(output_positions.dtype)
        or len(output_positions.shape) != 2
    ):
        raise ValueError(
            "`output_positions` must be an integer tensor of shape (batch, positions). "
            f"Received: output_positions={output_positions!r}"
        )
    if inputs_mask is not None:
        # Keras would attach the (B, T) mask to the (B, n, D) output.
        name = "output_length" if output_positions is None else "output_positions"
        raise ValueError(
            f"`{name}` cannot be used on inputs carrying a Keras mask; pass the mask as "
            f"`padding_mask` instead. Received: {name} and inputs with a Keras mask"
        )
