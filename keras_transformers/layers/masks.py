"""Attention-mask logic as pure functions: causal masks, padding masks and merging.

Every mask here is boolean and True means "may attend". Masks combine with logical AND.
"""

from keras import ops


def _dtype_name(x):
    return str(getattr(x.dtype, "name", x.dtype)).replace("torch.", "")


def validate_mask(mask, name, rank):
    """Checks that `mask` is a boolean tensor of rank `rank`.

    Args:
        mask: the mask, or None.
        name: the argument name used in the error message.
        rank: the expected rank.

    Returns:
        The mask, unchanged.

    Raises:
        ValueError: if the mask is not boolean or has the wrong rank.
    """
    if mask is None:
        return None
    if not hasattr(mask, "shape") or not hasattr(mask, "dtype"):
        raise ValueError(
            f"`{name}` must be a boolean tensor of rank {rank}. "
            f"Received: {name}={mask!r}"
        )
    if "bool" not in _dtype_name(mask):
        raise ValueError(
            f"`{name}` must be boolean (True = may attend). "
            f"Received: {name} with dtype={_dtype_name(mask)}"
        )
    if len(mask.shape) != rank:
        raise ValueError(
            f"`{name}` must have rank {rank}. "
            f"Received: {name} with shape={tuple(mask.shape)}"
        )
    return mask


def causal_mask(query_length, key_length=None, offset=0):
    """Lower-triangular mask: query `i` may attend to keys `j <= i + offset`.

    Args:
        query_length: T, the number of query positions.
        key_length: S, the number of key positions (defaults to T).
        offset: absolute position of the first query (a cached decoder's
            update index); an int or a scalar tensor.

    Returns:
        A boolean tensor of shape (T, S).

    Example:

    >>> import numpy as np
    >>> np.asarray(causal_mask(2, 3, offset=1)).astype(int).tolist()
    [[1, 1, 0], [1, 1, 1]]
    """
    key_length = query_length if key_length is None else key_length
    query_positions = ops.arange(query_length, dtype="int32") + ops.cast(offset, "int32")
    key_positions = ops.arange(key_length, dtype="int32")
    return ops.greater_equal(
        ops.expand_dims(query_positions, 1), ops.expand_dims(key_positions, 0)
    )  # (T, S)


def merge_masks(*masks):
    """Logical AND of the given masks, broadcasting; None entries are skipped.

    Returns:
        The merged boolean mask, or None when every entry is None.
    """
    merged = None
    for mask in masks:
        if mask is None:
            continue
        merged = mask if merged is None else ops.logical_and(merged, mask)
    return merged


def compute_attention_mask(
    query_length,
    key_length,
    query_mask=None,
    key_mask=None,
    attention_mask=None,
    use_causal_mask=False,
    causal_offset=0,
):
    """Combines every kind of mask into one (B or 1, T, S) boolean mask.

    Args:
        query_length: T.
        key_length: S.
        query_mask: (B, T) boolean, False for padded queries.
        key_mask: (B, S) boolean, False for padded keys.
        attention_mask: (B, T, S) boolean.
        use_causal_mask: whether to add the causal mask.
        causal_offset: absolute position of the first query (for caches).

    Returns:
        A boolean tensor broadcastable to (B, T, S), or None when no mask applies.

    Example:

    >>> import numpy as np
    >>> keys = np.array([[True, True, False]])
    >>> mask = compute_attention_mask(3, 3, key_mask=keys, use_causal_mask=True)
    >>> np.asarray(mask).astype(int).tolist()
    [[[1, 0, 0], [1, 1, 0], [1, 1, 0]]]
    """
    return merge_masks(
        None if query_mask is None else ops.expand_dims(query_mask, -1),  # (B, T, 1)
        None if key_mask is None else ops.expand_dims(key_mask, 1),  # (B, 1, S)
        attention_mask,
        (
            ops.expand_dims(causal_mask(query_length, key_length, causal_offset), 0)
            if use_causal_mask
            else None
        ),  # (1, T, S)
    )


def rows_with_any_key(mask):
    """True for query rows that may attend to at least one key.

    Args:
        mask: boolean (..., T, S).

    Returns:
        Boolean (..., T, 1).
    """
    return ops.any(mask, axis=-1, keepdims=True)
