"""Token selection (greedy, temperature, top-k, top-p) and the shared cached decoding loop.

The interface every decoding loop here (and `beam_search`) is written against:

`next_fn(token_ids, cache, index) -> (logits, cache)`
    token_ids: int32 (B, 1), the tokens at position `index`; cache: any nest
    (list/tuple) of tensors whose axis 0 is the batch; index: int32 scalar tensor;
    logits: float32 (B, V), the model's next-token logits at position `index`
    (predicting position index + 1); the returned cache has the same structure.
    On PyTorch the model adapters write the cache in place and return it (a
    functional update would copy it every step): do not reuse a cache after
    passing it to `next_fn`; reordering it (`ops.take` along the batch) is fine.

A loop receives `(next_fn, token_ids, padding_mask, cache, start_index,
stop_token_ids, ...)`: `token_ids` (B, L) int32 is the prompt right-padded into a
buffer of the final length L (longest prompt + max_new_tokens); `padding_mask`
(B, L) bool is True on prompt tokens; the cache already holds the prompt's keys
and values for positions < `start_index` (the shortest prompt's length, >= 1).
Each step fills one position p = start_index .. L - 1: it calls
`next_fn(token_ids[:, p - 1:p], cache, p - 1)` (which rewrites position p - 1 of
the cache with the same values: no prefix is recomputed), then rows whose
position p is still inside their own prompt keep their prompt token and the
other rows take the selected token (the keras-hub scheme: ragged prompts in one
batch continue as they would one by one). The loop returns `(token_ids,
padding_mask)`, the mask True on the prompt and on generated positions up to and
including a row's first generated stop token; after it, positions are padding
(token 0, False). The loop ends early once every row has stopped. It is a
`keras.ops.while_loop` over fixed-size buffers, so it compiles under `jax.jit` and
XLA. On PyTorch, `generate` runs the same loop written in torch ops
(`torch_primitives.token_loop`): a keras.ops loop costs about 20 ops of Keras
dispatch per token there.

Randomness is stateless: a counter-based integer hash (Wellons' "lowbias32") of the
seed, the position and the (row, token) index gives Gumbel noise, and sampling is
`argmax(logits / temperature + noise)` (the Gumbel-max trick, an exact draw from
softmax(logits / temperature)). A compiled loop stays a pure function of its seed,
and one seed gives the same tokens on every backend.
"""

from keras import ops

SAMPLERS = ("greedy", "random", "top_k", "top_p")

# lowbias32 multipliers (C. Wellons, "Prospecting for hash functions", 2018), as int32
# bit patterns: int32 products wrap around like uint32 ones on every backend.
_MULTIPLIER_1 = 0x7FEB352D
_MULTIPLIER_2 = 0x846CA68B - (1 << 32)


def _int32(value):
    return ops.convert_to_tensor(value, "int32")


def _shift_right(x, bits):
    """Logical right shift of int32 bit patterns (`right_shift` is arithmetic)."""
    return ops.bitwise_and(ops.right_shift(x, _int32(bits)), _int32((1 << (32 - bits)) - 1))


def hash_int32(x):
    """Wellons' lowbias32 integer hash, elementwise on int32 bit patterns.

    Args:
        x: int32 tensor.

    Returns:
        int32 tensor of the same shape: the uint32 hash, reinterpreted as int32.

    Example:

    >>> import numpy as np
    >>> np.asarray(hash_int32(np.array([0, 1], "int32"))).tolist()
    [0, 1753845952]
    """
    x = ops.convert_to_tensor(x, "int32")
    x = ops.bitwise_xor(x, _shift_right(x, 16))
    x = ops.multiply(x, _int32(_MULTIPLIER_1))
    x = ops.bitwise_xor(x, _shift_right(x, 15))
    x = ops.multiply(x, _int32(_MULTIPLIER_2))
    return ops.bitwise_xor(x, _shift_right(x, 16))


def uniform_noise(seed, index, shape):
    """Uniform floats in (0, 1), a pure function of `seed`, `index` and the position.

    Args:
        seed: int or int32 scalar tensor.
        index: int or int32 scalar tensor (the decoding position), folded into
            the seed so that every step draws fresh numbers.
        shape: (B, V): ints, or int32 scalar tensors where a size is only
            known at run time (`ops.shape` of a tensor in a TensorFlow graph
            with an unknown batch size).

    Returns:
        float32 tensor of `shape`, 24 random bits per value: the value at (b, v)
        depends only on `seed`, `index` and the counter b * V + v, so a row's
        numbers do not depend on the batch size.

    Example:

    >>> u = uniform_noise(seed=0, index=3, shape=(2, 4))
    >>> tuple(u.shape), bool(ops.all(u > 0)), bool(ops.all(u < 1))
    ((2, 4), True, True)
    """
    key = hash_int32(ops.bitwise_xor(hash_int32(seed), _int32(index)))
    rows, columns = shape
    # The row-major counter b * V + v, built from two ranges so that each size may be a
    # tensor (a reshape to a tuple holding tensors fails on some backends).
    row_starts = ops.arange(rows, dtype="int32")[:, None] * _int32(columns)  # (B, 1)
    counter = row_starts + ops.arange(columns, dtype="int32")[None, :]  # (B, V)
    bits = hash_int32(ops.add(hash_int32(ops.bitwise_xor(counter, key)), key))
    top_bits = ops.cast(_shift_right(bits, 8), "float32")  # 24 bits: exact in float32
    return (top_bits + 0.5) / float(1 << 24)


def greedy(logits):
    """The most likely token of each row: argmax over (B, V) logits -> (B,) int32."""
    return ops.cast(ops.argmax(logits, axis=-1), "int32")


def top_k_filter(logits, k):
    """Sets all but the `k` largest logits of each row to -inf (ties at the k-th kept)."""
    logits = ops.convert_to_tensor(logits)
    k = min(k, logits.shape[-1])
    kth_largest = ops.top_k(logits, k)[0][:, -1:]  # (B, 1)
    return ops.where(ops.greater_equal(logits, kth_largest), logits, float("-inf"))


def top_p_filter(logits, p):
    """Keeps the smallest set of most likely tokens whose probability reaches `p`.

    Nucleus filtering (Holtzman et al., "The Curious Case of Neural Text
    Degeneration", 2020): tokens are sorted by probability and kept while the
    probability mass before them is below `p`, so the most likely token always
    stays. The others' logits become -inf.
    """
    logits = ops.convert_to_tensor(logits)
    sorted_logits = ops.top_k(logits, logits.shape[-1])[0]  # (B, V), descending
    probabilities = ops.softmax(sorted_logits, axis=-1)
    mass_before = ops.cumsum(probabilities, axis=-1) - probabilities
    kept = ops.where(ops.less(mass_before, p), sorted_logits, float("inf"))
    cutoff = ops.min(kept, axis=-1, keepdims=True)  # (B, 1), the smallest kept logit
    return ops.where(ops.greater_equal(logits, cutoff), logits, float("-inf"))


def sample(logits, seed, index):
    """Draws one token per row from softmax(logits), statelessly (Gumbel-max).

    Args:
        logits: float32 (B, V); -inf marks excluded tokens.
        seed: int or int32 scalar tensor.
        index: int or int32 scalar tensor, folded into the seed.

    Returns:
        (B,) int32 token ids.
    """
    # ops.shape, not logits.shape: inside a traced TensorFlow signature the batch size
    # is only known at run time (a None static size).
    noise = uniform_noise(seed, index, ops.shape(logits))
    gumbel = -ops.log(-ops.log(noise))
    return greedy(logits + gumbel)


def get_next_token_fn(sampler="greedy", temperature=1.0, top_k=None, top_p=None, seed=None):
    """Returns `next_token(logits, index) -> (B,) int32` for a sampler name.

    Args:
        sampler: "greedy" (argmax), "random" (softmax(logits / temperature)),
            "top_k" (the `top_k` most likely tokens only) or "top_p" (the nucleus
            of mass `top_p`).
        temperature: divides the logits before sampling (not used by "greedy").
        top_k: int >= 1, for "top_k".
        top_p: float in (0, 1], for "top_p".
        seed: int or int32 scalar tensor; required by the sampling ones.

    Returns:
        A function of float32 (B, V) logits and the int32 position being filled.

    Example:

    >>> import numpy as np
    >>> logits = np.array([[0.0, 3.0, 1.0]], "float32")
    >>> next_token = get_next_token_fn("top_k", top_k=1, seed=0)
    >>> np.asarray(next_token(logits, 5)).tolist()
    [1]
    """
    if sampler == "greedy":
        return lambda logits, index: greedy(logits)
    if sampler not in SAMPLERS:
        raise ValueError(
            f"`sampler` must be one of {list(SAMPLERS)}. Received: sampler={sampler!r}"
        )
    if seed is None:
        raise ValueError(f"`seed` is required by sampler={sampler!r}. Received: seed=None")

    def next_token(logits, index):
        logits = ops.cast(logits, "float32") / temperature
        if sampler == "top_k":
            logits = top_k_filter(logits, top_k)
        elif sampler == "top_p":
            logits = top_p_filter(logits, top_p)
        return sample(logits, seed, index)

    return next_token


def _any_equal(tokens, stop_token_ids):
    if not stop_token_ids:
        return ops.zeros_like(tokens, dtype="bool")
    stops = ops.convert_to_tensor(list(stop_token_ids), "int32")
    return ops.any(ops.equal(ops.expand_dims(tokens, -1), stops), axis=-1)


def token_loop(
    next_fn, token_ids, padding_mask, cache, start_index, stop_token_ids=None, next_token=None
):
    """Fills positions start_index .. L - 1 one token at a time (see the module docstring).

    Args:
        next_fn: `next_fn(token_ids (B, 1), cache, index) -> (logits (B, V), cache)`.
        token_ids: int32 (B, L), the prompts right-padded to the final length.
        padding_mask: bool (B, L), True on prompt tokens.
        cache: the model's cache, holding the prompts' keys and values for
            positions < `start_index`.
        start_index: int or int32 scalar tensor >= 1, the shortest prompt length.
        stop_token_ids: tuple of ints or None; a row stops after generating one.
        next_token: `next_token(logits (B, V), index) -> (B,)` token ids, from
            `get_next_token_fn`; default greedy.

    Returns:
        `(token_ids, padding_mask)`, (B, L) int32 and bool: prompts and
        continuations, True up to and including each row's stop token.

    Example (a "model" that always predicts the token after the current one):

    >>> import numpy as np
    >>> def next_fn(token_ids, cache, index):
    ...     return ops.one_hot(token_ids[:, 0] + 1, 10), cache
    >>> token_ids = np.array([[3, 0, 0, 0], [5, 6, 0, 0]], "int32")
    >>> mask = token_ids > 0
    >>> tokens, mask = token_loop(next_fn, token_ids, mask, (), 1, stop_token_ids=(5,))
    >>> np.asarray(tokens).tolist(), np.asarray(mask).astype(int).tolist()
    ([[3, 4, 5, 0], [5, 6, 7, 8]], [[1, 1, 1, 0], [1, 1, 1, 1]])
    """
    next_token = next_token or (lambda logits, index: greedy(logits))
    token_ids = ops.convert_to_tensor(token_ids, "int32")
    prompt_mask = ops.convert_to_tensor(padding_mask, "bool")
    token_ids = ops.where(prompt_mask, token_ids, 0)
    batch_size, length = ops.shape(token_ids)[0], ops.shape(token_ids)[1]

    def column(x, index):
        return ops.slice(x, [0, index], [batch_size, 1])  # (B, 1)

    def cond(token_ids, mask, cache, index, done):
        return ops.logical_and(index < length, ops.logical_not(ops.all(done)))

    def body(token_ids, mask, cache, index, done):
        logits, cache = next_fn(column(token_ids, index - 1), cache, index - 1)
        tokens = ops.cast(next_token(logits, index), "int32")  # (B,)
        in_prompt = column(prompt_mask, index)[:, 0]
        tokens = ops.where(in_prompt, column(token_ids, index)[:, 0], tokens)
        tokens = ops.where(done, 0, tokens)
        keep = ops.logical_or(in_prompt, ops.logical_not(done))
        token_ids = ops.slice_update(token_ids, [0, index], tokens[:, None])
        mask = ops.slice_update(mask, [0, index], keep[:, None])
        done = ops.logical_or(
            done,
            ops.logical_and(ops.logical_not(in_prompt), _any_equal(tokens, stop_token_ids)),
        )
        return token_ids, mask, cache, index + 1, done

    index = ops.convert_to_tensor(start_index, "int32")
    done = ops.zeros((batch_size,), "bool")
    token_ids, mask, _, _, _ = ops.while_loop(
        cond, body, (token_ids, prompt_mask, cache, index, done)
    )
    return token_ids, mask

