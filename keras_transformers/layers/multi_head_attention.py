"""Scaled dot-product multi-head attention with boolean masks and a key/value cache.

Vaswani et al., "Attention Is All You Need" (2017), sections 3.2.1 and 3.2.2.
"""

import math

import keras
from keras import ops

from keras_transformers.layers import masks as masks_lib
from keras_transformers.layers.arguments import (
    check_index,
    check_last_dim,
    check_positive_int,
    check_rank,
    check_rate,
    clone_initializer,
)
from keras_transformers.layers.dropout import Dropout
from keras_transformers.layers.sublayers import call_sublayer


@keras.saving.register_keras_serializable(package="keras_transformers")
class MultiHeadAttention(keras.layers.Layer):
    """Multi-head attention: softmax(Q K^T / sqrt(d_k)) V over `num_heads` heads.

    Q, K and V are linear projections of `query`, `key` and `value` into
    `num_heads` heads of `key_dim` (`value_dim` for V); the heads are concatenated
    and projected back by W^O. Self-attention when `value` is None.

    Masking: every mask is boolean, True = may attend, and all that are present
    combine with logical AND: `use_causal_mask`, `padding_mask` (B, S) over the
    keys, `attention_mask` (B, T, S), and the Keras masks carried by `query` and
    `value`/`key` (for example from an `Embedding(mask_zero=True)`). A query row
    left with nothing to attend to outputs zeros, never NaN. The output carries
    the query's Keras mask.

    Speed: when no scores are requested and no attention dropout is active
    (`dropout == 0` or `training` is falsy), attention runs through
    `keras.ops.dot_product_attention` (the backend's fused or flash kernel); with
    causality as the only mask, no mask tensor is materialised. Q, K and V stay
    three matmuls even in self-attention: one on the joined kernels was 0.76-0.99x
    their speed on a 2-core CPU on every backend (benchmarks/qkv_projection.py).

    Cache: `cache` is a preallocated (B, 2, S_max, num_heads, key_dim) tensor of
    keys and values (see `init_cache`). With `cache_update_index`, the keys and
    values of the new tokens are written at that position and the queries attend
    over the whole cache (with `use_causal_mask`, only up to their own absolute
    position); without it, the cache is used as is (cross-attention over a
    precomputed encoder). Keras masks on `key`/`value` are not used with a cache:
    pass `padding_mask` over the cache positions instead.

    Args:
        num_heads: number of attention heads.
        key_dim: size of each head for query and key.
        value_dim: size of each head for value; defaults to `key_dim`.
        dropout: dropout rate on the attention probabilities.
        use_bias: whether the projections have biases.
        output_dim: size of the output; defaults to the query's last dimension.
        kernel_initializer: initializer of the projection kernels.
        bias_initializer: initializer of the projection biases.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        query: (B, T, D_q).
        value: (B, S, D_v); defaults to `query`.
        key: (B, S, D_k); defaults to `value`.
        attention_mask: boolean (B, T, S).
        padding_mask: boolean (B, S), False at padded key positions.
        use_causal_mask: whether query `i` may only attend to keys `<= i`.
        return_attention_scores: also return the (B, num_heads, T, S)
            attention probabilities.
        cache: (B, 2, S_max, num_heads, key_dim) keys and values.
        cache_update_index: int or scalar tensor, where the new keys and values
            go in `cache`.
        training: whether attention dropout is active.
        query_mask, value_mask, key_mask: Keras masks, filled in by Keras.
        mask: the query's Keras mask, as Keras fills it in when `query` is the
            only tensor argument.

    Returns:
        The (B, T, output_dim) output; followed by the scores when
        `return_attention_scores`, and by the updated cache when `cache` is given:
        `output`, `(output, scores)`, `(output, cache)` or `(output, scores, cache)`.

    Example:

    >>> import numpy as np
    >>> layer = MultiHeadAttention(num_heads=2, key_dim=4)
    >>> x = np.random.rand(1, 5, 8).astype("float32")
    >>> out, scores = layer(x, use_causal_mask=True, return_attention_scores=True)
    >>> tuple(out.shape), tuple(scores.shape)
    ((1, 5, 8), (1, 2, 5, 5))
    """

    def __init__(
        self,
        num_heads,
        key_dim,
        value_dim=None,
        dropout=0.0,
        use_bias=True,
        output_dim=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        check_positive_int(num_heads, "num_heads")
        check_positive_int(key_dim, "key_dim")
        if value_dim is not None:
            check_positive_int(value_dim, "value_dim")
        if output_dim is not None:
            check_positive_int(output_dim, "output_dim")
        check_rate(dropout, "dropout")
        self.num_heads = num_heads
        self.key_dim = key_dim
        self.value_dim = value_dim
        self.dropout = dropout
        self.use_bias = use_bias
        self.output_dim = output_dim
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.supports_masking = True

    def build(self, query_shape, value_shape=None, key_shape=None):
        value_shape = query_shape if value_shape is None else value_shape
        key_shape = value_shape if key_shape is None else key_shape
        # Before any weight: `call` checks again, but Keras builds first.
        for name, shape in (("query", query_shape), ("value", value_shape), ("key", key_shape)):
            check_rank(shape, 3, name)
        value_dim = self.value_dim or self.key_dim
        output_dim = self.output_dim or query_shape[-1]
        heads = self.num_heads
        self.query_dense = self._dense("query", (None, heads, self.key_dim), "de")
        self.query_dense.build(query_shape)
        self.key_dense = self._dense("key", (None, heads, self.key_dim), "de")
        self.key_dense.build(key_shape)
        self.value_dense = self._dense("value", (None, heads, value_dim), "de")
        self.value_dense.build(value_shape)
        self.output_dense = self._dense(
            "attention_output", (None, output_dim), "e", equation="abcd,cde->abe"
        )
        self.output_dense.build((query_shape[0], query_shape[1], heads, value_dim))
        self.dropout_layer = Dropout(
            self.dropout, name="attention_dropout", dtype=self.dtype_policy
        )
        self._query_dim = query_shape[-1]
        self._value_dim_in = value_shape[-1]
        self._key_dim_in = key_shape[-1]
        self.built = True

    def _dense(self, name, output_shape, bias_axes, equation="abc,cde->abde"):
        dense = keras.layers.EinsumDense(
            equation,
            output_shape=output_shape,
            bias_axes=bias_axes if self.use_bias else None,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            bias_initializer=clone_initializer(self.bias_initializer),
            name=name,
            dtype=self.dtype_policy,
        )
        # The projections act position by position, so a Keras mask on their input
        # still holds for their output (without this, Keras warns it is destroyed).
        dense.supports_masking = True
        return dense

    def init_cache(self, batch_size, max_length, dtype=None):
        """Returns a zero (batch_size, 2, max_length, num_heads, key_dim) cache."""
        check_positive_int(batch_size, "batch_size")
        check_positive_int(max_length, "max_length")
        return ops.zeros(
            (batch_size, 2, max_length, self.num_heads, self.key_dim),
            dtype=dtype or self.compute_dtype,
        )

    def _validate_inputs(
        self, query, value, key, attention_mask, padding_mask, cache, cache_update_index
    ):
        check_rank(query, 3, "query")
        check_rank(value, 3, "value")
        check_rank(key, 3, "key")
        check_last_dim(query, self._query_dim, "query")
        check_last_dim(value, self._value_dim_in, "value")
        check_last_dim(key, self._key_dim_in, "key")
        masks_lib.validate_mask(attention_mask, "attention_mask", 3)
        masks_lib.validate_mask(padding_mask, "padding_mask", 2)
        if cache is not None:
            check_rank(cache, 5, "cache")
            expected = (2, self.num_heads, self.key_dim)
            got = (cache.shape[1], cache.shape[3], cache.shape[4])
            if got != expected:
                raise ValueError(
                    "`cache` must have shape (batch, 2, max_length, num_heads, key_dim) = "
                    f"(batch, 2, max_length, {self.num_heads}, {self.key_dim}). "
                    f"Received: cache with shape={tuple(cache.shape)}"
                )
        if cache_update_index is not None:
            self._check_cache_update_index(cache_update_index, cache, query.shape[1])
        batch_sizes = [
            (name, tensor.shape[0])
            for name, tensor in (("query", query), ("value", value), ("key", key), ("cache", cache))
            if tensor is not None and tensor.shape[0] is not None
        ]
        if len({size for _, size in batch_sizes}) > 1:
            received = ", ".join(f"{name} with batch size {size}" for name, size in batch_sizes)
            raise ValueError(
                "`query`, `value`, `key` and `cache` must have one batch size. "
                f"Received: {received}"
            )
        key_length = (cache if cache is not None else key).shape[-3 if cache is not None else 1]
        for name, mask, axis, length in (
            ("padding_mask", padding_mask, 1, key_length),
            ("attention_mask", attention_mask, 2, key_length),
            ("attention_mask", attention_mask, 1, query.shape[1]),
        ):
            if mask is not None and None not in (mask.shape[axis], length) and mask.shape[axis] != length:
                raise ValueError(
                    f"`{name}` must have {length} positions on axis {axis} to match the "
                    f"inputs. Received: {name} with shape={tuple(mask.shape)}"
                )

    @staticmethod
    def _check_cache_update_index(index, cache, query_length):
        if cache is None:
            raise ValueError(
                "`cache_update_index` needs a `cache` to write into. Received: "
                f"cache_update_index={index!r} and cache=None"
            )
        check_index(index, "cache_update_index")
        max_length = cache.shape[2]
        # A tensor index is not read back from the device; the kernels would clamp it.
        if isinstance(index, int) and None not in (max_length, query_length):
            if index + query_length > max_length:
                raise ValueError(
                    f"`cache_update_index` + the {query_length} new positions must fit in "
                    f"the cache's {max_length}. Received: cache_update_index={index}"
                )

    def call(
        self,
        query,
        value=None,
        key=None,
        attention_mask=None,
        padding_mask=None,
        use_causal_mask=False,
        return_attention_scores=False,
        cache=None,
        cache_update_index=None,
        training=None,
        query_mask=None,
        value_mask=None,
        key_mask=None,
        mask=None,
    ):
        # Keras fills `mask` instead of `query_mask` when `query` is the only tensor.
        query_mask = mask if query_mask is None else query_mask
        if value is None:
            value, value_mask = query, query_mask if value_mask is None else value_mask
        if key is None:
            key, key_mask = value, value_mask if key_mask is None else key_mask
        self._validate_inputs(
            query, value, key, attention_mask, padding_mask, cache, cache_update_index
        )

        query_heads = call_sublayer(self.query_dense, query)  # (B, T, N, H)
        if cache is not None and cache_update_index is None:
            key_heads, value_heads = cache[:, 0], cache[:, 1]  # (B, S, N, H)
        else:
            key_heads = call_sublayer(self.key_dense, key)  # (B, S, N, H)
            value_heads = call_sublayer(self.value_dense, value)  # (B, S, N, H)
        if cache is not None and cache_update_index is not None:
            start = [0, cache_update_index, 0, 0]
            key_heads = ops.slice_update(cache[:, 0], start, ops.cast(key_heads, cache.dtype))
            value_heads = ops.slice_update(
                cache[:, 1], start, ops.cast(value_heads, cache.dtype)
            )
            cache = ops.stack([key_heads, value_heads], axis=1)  # (B, 2, S_max, N, H)
        if cache is not None:
            key_mask = None  # Keras masks describe the new tokens, not the cache.

        query_length, key_length = ops.shape(query_heads)[1], ops.shape(key_heads)[1]
        causal_offset = 0 if cache_update_index is None else cache_update_index
        # Causality alone on a square problem needs no mask tensor: the kernel knows it.
        causal_only = (
            use_causal_mask
            and cache is None
            and attention_mask is None
            and padding_mask is None
            and query_mask is None
            and key_mask is None
            and query.shape[1] is not None
            and query.shape[1] == key.shape[1]
        )
        mask = None
        if not causal_only:
            mask = masks_lib.compute_attention_mask(
                query_length,
                key_length,
                query_mask=query_mask,
                key_mask=masks_lib.merge_masks(key_mask, padding_mask),
                attention_mask=attention_mask,
                use_causal_mask=use_causal_mask,
                causal_offset=causal_offset,
            )  # (B or 1, T, S)
        row_valid = None
        if mask is not None:
            row_valid = masks_lib.rows_with_any_key(mask)  # (B or 1, T, 1)
            # A row with no key would divide by zero (NaN) in some kernels: let it
            # attend everywhere, then zero its output below.
            mask = ops.logical_or(mask, ops.logical_not(row_valid))
            mask = ops.expand_dims(mask, 1)  # (B or 1, 1, T, S)

        use_dropout = bool(training) and self.dropout > 0
        scale = 1.0 / math.sqrt(self.key_dim)
        scores = None
        if return_attention_scores or use_dropout:
            context, scores = self._attention_with_scores(
                query_heads, key_heads, value_heads, mask, scale, causal_only, training
            )
        else:
            if mask is not None:
                # cuDNN's fused attention (JAX, half precision) takes a mask only with
                # the query axis spelled out: a padding mask (B, 1, 1, S) would fall
                # back to the unfused kernel, so broadcast it to (B, 1, T, S).
                mask = ops.broadcast_to(
                    mask, (ops.shape(mask)[0], 1, query_length, key_length)
                )
            context = ops.dot_product_attention(
                query_heads,
                ops.cast(key_heads, query_heads.dtype),
                ops.cast(value_heads, query_heads.dtype),
                mask=mask,
                scale=scale,
                is_causal=causal_only,
            )  # (B, T, N, H)
        output = call_sublayer(self.output_dense, context)  # (B, T, D)
        if row_valid is not None:
            output = ops.where(row_valid, output, ops.zeros_like(output))
            if scores is not None:
                scores = ops.where(
                    ops.expand_dims(row_valid, 1), scores, ops.zeros_like(scores)
                )

        results = (output,)
        if return_attention_scores:
            results += (scores,)
        if cache is not None:
            results += (cache,)
        return results[0] if len(results) == 1 else results

    def _attention_with_scores(
        self, query_heads, key_heads, value_heads, mask, scale, causal_only, training
    ):
        # Softmax in float32: float16 logits overflow and bfloat16 sums lose mass.
        logits = ops.einsum(
            "btnh,bsnh->bnts",
            ops.cast(query_heads, "float32"),
            ops.cast(key_heads, "float32"),
        ) * scale  # (B, N, T, S)
        if causal_only:
            t = ops.shape(logits)[2]
            mask = ops.expand_dims(masks_lib.causal_mask(t, t), (0, 1))  # (1, 1, T, S)
        if mask is not None:
            logits = ops.where(mask, logits, ops.full_like(logits, -1e9))
        probabilities = ops.softmax(logits, axis=-1)
        probabilities = ops.cast(probabilities, self.compute_dtype)
        dropped = call_sublayer(self.dropout_layer, probabilities, training=training)
        context = ops.einsum(
            "bnts,bsnh->btnh", dropped, ops.cast(value_heads, self.compute_dtype)
        )  # (B, T, N, H)
        return context, probabilities

    def compute_mask(self, query, previous_mask=None, **kwargs):
        return previous_mask

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "key_dim": self.key_dim,
                "value_dim": self.value_dim,
                "dropout": self.dropout,
                "use_bias": self.use_bias,
                "output_dim": self.output_dim,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            }
        )
        return config
