"""Beam search over a KV-cached next-token function, as one compiled `while_loop`.

Beam search as in Sutskever et al., "Sequence to Sequence Learning with Neural Networks"
(2014), section 3.2; length normalisation as in Wu et al., "Google's Neural Machine
Translation System" (2016), section 7, in Hugging Face's form (see `beam_search`).
"""

import numbers

import keras
from keras import ops

NEG_INF = float("-inf")


def beam_search(
    next_fn,
    token_ids,
    padding_mask,
    cache,
    start_index,
    num_beams,
    length_penalty=1.0,
    stop_token_ids=None,
    return_all_beams=False,
):
    """Keeps the `num_beams` most likely continuations of each prompt; returns the best.

    Each row's prompt is expanded to `num_beams` beams (batch axis B * num_beams, beams
    of one row adjacent; every cache tensor is repeated the same way). A beam's score is
    the sum of the log-probabilities (`log_softmax` in float32) of the tokens it
    generated. Each step, every beam proposes all V next tokens and the best
    `num_beams` of the `num_beams * V` candidates of each row survive; the cache
    follows its parent beams. At a row's first generated step only beam 0 is live
    (the others score -inf), so the beams never duplicate one another.

    Ragged prompts: the loop steps one position at a time from `start_index` to L - 1
    for the whole batch; a row whose position is still inside its own prompt
    (`padding_mask` True there) keeps its prompt token and its score. A beam that
    emits a stop token is finished: it keeps its score, competes with the running
    beams on it, and is extended only with the buffer's padding (its mask stays
    False). The loop stops early once every beam of every row has finished.

    The final choice among a row's beams is by
    `score / generated_length ** length_penalty`, where `generated_length` counts the
    generated tokens including the stop token (Hugging Face's convention): with
    `length_penalty > 0` longer sequences are favoured over the raw sum, with
    `length_penalty < 0` shorter ones; 0 ranks by the raw sum. During the search,
    beams are ranked by the raw sum.

    Each step feeds the token at `index - 1` and writes position `index`: the first
    step feeds the token at `start_index - 1` again (rewriting that position's keys and
    values with the same ones), so the caller needs only the cache of its prompt pass,
    not the prompt's last logits.

    `keras.ops` only, over fixed-size state in `keras.ops.while_loop`, with the index
    as a tensor: compiles under `jax.jit` and `tf.function(jit_compile=True)`.

    Args:
        next_fn: `next_fn(token_ids, cache, index) -> (logits, cache)`: `token_ids` int32
            (N, 1) are the tokens at position `index` (an int32 scalar tensor),
            `logits` (N, V) the next-token logits at that position (predicting
            `index + 1`), `cache` the updated cache. Here N = B * num_beams.
        token_ids: int32 (B, L): the prompts right-padded into a buffer of the final
            length L (longest prompt + new tokens).
        padding_mask: bool (B, L), True on prompt tokens.
        cache: a nest (list/tuple/dict) of tensors whose axis 0 is the batch, holding
            the prompts' keys and values for positions < `start_index`; or None.
        start_index: int (or int32 scalar tensor) >= 1: the first position to
            generate, the shortest prompt's length.
        num_beams: positive int, the beam width; 1 is greedy decoding.
        length_penalty: float exponent of the length normalisation (see above).
        stop_token_ids: None or a sequence of token ids that finish a beam.
        return_all_beams: whether to return every beam instead of the best.

    Returns:
        `(token_ids, padding_mask)`: int32 (B, L) tokens and bool (B, L) mask of each
        row's best beam, the mask True on the prompt and on the generated tokens up to
        and including a stop token. With `return_all_beams`, (B, num_beams, L) each,
        the beams of a row sorted from best to worst normalised score.

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> # Next-token log-probabilities given the previous token (no real model, no cache).
    >>> table = np.log(np.array([[0.1, 0.5, 0.4], [0.4, 0.3, 0.3], [0.05, 0.9, 0.05]], "float32"))
    >>> def next_fn(token_ids, cache, index):
    ...     return ops.take(table, token_ids[:, 0], axis=0), cache
    >>> prompt = np.array([[0, 0, 0, 0]], "int32")  # one prompt token, 3 new tokens
    >>> mask = np.array([[True, False, False, False]])
    >>> greedy, _ = beam_search(next_fn, prompt, mask, None, start_index=1, num_beams=1)
    >>> best, best_mask = beam_search(next_fn, prompt, mask, None, start_index=1, num_beams=2)
    >>> ops.convert_to_numpy(greedy)  # probability 0.5 * 0.4 * 0.5 = 0.1
    array([[0, 1, 0, 1]], dtype=int32)
    >>> ops.convert_to_numpy(best)  # 0.4 * 0.9 * 0.4 = 0.144: its first step was not the best
    array([[0, 2, 1, 0]], dtype=int32)
    """
    if not callable(next_fn):
        raise ValueError(f"`next_fn` must be callable. Received: next_fn={next_fn!r}")
    if isinstance(num_beams, bool) or not isinstance(num_beams, numbers.Integral) or num_beams < 1:
        raise ValueError(f"`num_beams` must be a positive int. Received: num_beams={num_beams!r}")
    if isinstance(length_penalty, bool) or not isinstance(length_penalty, numbers.Real):
        raise ValueError(
            f"`length_penalty` must be a float. Received: length_penalty={length_penalty!r}"
        )
    if not isinstance(return_all_beams, bool):
        raise ValueError(
            f"`return_all_beams` must be a bool. Received: return_all_beams={return_all_beams!r}"
        )
    stop_token_ids = _check_stop_token_ids(stop_token_ids)
    if len(token_ids.shape) != 2:
        raise ValueError(
            "`token_ids` must have rank 2 (batch, length). "
            f"Received: token_ids with shape={tuple(token_ids.shape)}"
        )
    if tuple(padding_mask.shape) != tuple(token_ids.shape):
        raise ValueError(
            "`padding_mask` must have the shape of `token_ids` "
            f"{tuple(token_ids.shape)}. Received: padding_mask with shape={tuple(padding_mask.shape)}"
        )
    batch_size, max_length = token_ids.shape
    if batch_size is None or max_length is None:
        raise ValueError(
            "`token_ids` must have a static shape (beam search keeps fixed-size state). "
            f"Received: token_ids with shape={tuple(token_ids.shape)}"
        )
    _check_start_index(start_index, max_length)
    num_beams = int(num_beams)
    length_penalty = float(length_penalty)

    def repeat_beams(x):
        return ops.repeat(x, num_beams, axis=0)  # (B * K, ...), beams of a row adjacent

    has_cache = cache is not None
    token_ids = repeat_beams(ops.cast(token_ids, "int32"))  # (B * K, L)
    padding_mask = repeat_beams(ops.cast(padding_mask, "bool"))  # (B * K, L)
    cache = keras.tree.map_structure(repeat_beams, cache) if has_cache else ()
    index = ops.cast(start_index, "int32")
    # Only beam 0 is live at first: the K copies of a prompt would otherwise propose the
    # same candidates K times.
    first_beam = ops.arange(num_beams, dtype="int32") == 0  # (K,)
    scores = ops.where(first_beam, 0.0, NEG_INF)  # (K,)
    scores = ops.reshape(ops.tile(ops.cast(scores, "float32")[None], (batch_size, 1)), (-1,))
    finished = ops.zeros((batch_size * num_beams,), dtype="bool")
    lengths = ops.zeros((batch_size * num_beams,), dtype="int32")
    positions = ops.arange(max_length, dtype="int32")  # (L,)
    # Flat index of the first beam of each row: parent beam k of row b is b * K + k.
    row_offsets = ops.arange(batch_size, dtype="int32")[:, None] * num_beams  # (B, 1)
    stop_tokens = None if stop_token_ids is None else ops.array(stop_token_ids, dtype="int32")

    def cond(index, token_ids, padding_mask, cache, scores, finished, lengths):
        running = ops.logical_and(ops.logical_not(finished), scores > NEG_INF)
        return ops.logical_and(index < max_length, ops.any(running))

    def body(index, token_ids, padding_mask, cache, scores, finished, lengths):
        previous = ops.take(token_ids, ops.reshape(index - 1, (1,)), axis=1)  # (N, 1)
        logits, new_cache = next_fn(previous, cache if has_cache else None, index - 1)
        log_probs = ops.log_softmax(ops.cast(logits, "float32"), axis=-1)  # (N, V)
        vocab_size = log_probs.shape[-1]

        column = positions == index  # (L,)
        current = ops.sum(ops.where(column[None], token_ids, 0), axis=1)  # (N,)
        in_prompt = ops.any(ops.logical_and(padding_mask, column[None]), axis=1)  # (N,)
        # Prompt positions and finished beams take the buffer's token at no cost: one
        # candidate each (slot 0; the token written is the buffer's, whatever its value).
        keep = ops.logical_or(in_prompt, finished)
        first_slot = ops.arange(vocab_size, dtype="int32") == 0  # (V,)
        kept_log_probs = ops.where(first_slot, 0.0, NEG_INF)[None]  # (1, V)
        log_probs = ops.where(keep[:, None], kept_log_probs, log_probs)  # (N, V)

        candidates = ops.reshape(scores[:, None] + log_probs, (batch_size, num_beams * vocab_size))
        scores, chosen = ops.top_k(candidates, num_beams)  # (B, K)
        chosen = ops.cast(chosen, "int32")
        parents = ops.reshape(row_offsets + chosen // vocab_size, (-1,))  # (N,)
        new_tokens = ops.reshape(chosen % vocab_size, (-1,))  # (N,)
        scores = ops.reshape(scores, (-1,))

        def reorder(x):
            return ops.take(x, parents, axis=0)

        token_ids, padding_mask, finished, lengths, current, in_prompt = (
            reorder(x) for x in (token_ids, padding_mask, finished, lengths, current, in_prompt)
        )
        if has_cache:
            # Back into the carried structure: `while_loop` needs it unchanged (a `next_fn`
            # may return a list for a tuple).
            new_cache = [reorder(x) for x in keras.tree.flatten(new_cache)]
            cache = keras.tree.pack_sequence_as(cache, new_cache)

        generated = ops.logical_and(ops.logical_not(in_prompt), ops.logical_not(finished))  # (N,)
        new_tokens = ops.where(generated, new_tokens, current)
        token_ids = ops.where(column[None], new_tokens[:, None], token_ids)
        padding_mask = ops.logical_or(
            padding_mask, ops.logical_and(column[None], generated[:, None])
        )
        lengths = lengths + ops.cast(generated, "int32")
        if stop_tokens is not None:
            is_stop = ops.any(new_tokens[:, None] == stop_tokens[None], axis=1)
            finished = ops.logical_or(finished, ops.logical_and(generated, is_stop))
        return index + 1, token_ids, padding_mask, cache, scores, finished, lengths

    _, token_ids, padding_mask, _, scores, _, lengths = ops.while_loop(
        cond, body, (index, token_ids, padding_mask, cache, scores, finished, lengths)
    )

    # Hugging Face's length normalisation; a row with nothing generated divides by 1.
    lengths = ops.cast(ops.maximum(lengths, 1), "float32")
    normalized = scores / ops.power(lengths, length_penalty)
    normalized = ops.reshape(normalized, (batch_size, num_beams))  # (B, K)
    token_ids = ops.reshape(token_ids, (batch_size, num_beams, max_length))  # (B, K, L)
    padding_mask = ops.reshape(padding_mask, (batch_size, num_beams, max_length))  # (B, K, L)
    if return_all_beams:
        order = ops.argsort(-normalized, axis=1)[:, :, None]  # (B, K, 1)
        return (
            ops.take_along_axis(token_ids, order, axis=1),
            ops.take_along_axis(padding_mask, order, axis=1),
        )
    best = ops.argmax(normalized, axis=1)[:, None, None]  # (B, 1, 1)
    return (
        ops.take_along_axis(token_ids, best, axis=1)[:, 0],
        ops.take_along_axis(padding_mask, best, axis=1)[:, 0],
    )


def _check_stop_token_ids(stop_token_ids):
    if stop_token_ids is None:
        return None
    ids = tuple(stop_token_ids) if isinstance(stop_token_ids, (list, tuple)) else None
    if ids is None or any(
        isinstance(i, bool) or not isinstance(i, numbers.Integral) or i < 0 for i in ids
    ):
        raise ValueError(
            "`stop_token_ids` must be None or a list of non-negative ints. "
            f"Received: stop_token_ids={stop_token_ids!r}"
        )
    return tuple(int(i) for i in ids) or None


def _check_start_index(start_index, max_length):
    if isinstance(start_index, numbers.Integral) and not isinstance(start_index, bool):
        if 1 <= start_index <= max_length:
            return
    elif not isinstance(start_index, (bool, numbers.Number)) and tuple(
        getattr(start_index, "shape", (None,))
    ) == ():
        return  # A scalar tensor: checked by the caller.
    raise ValueError(
        f"`start_index` must be an int in [1, {max_length}] (the shortest prompt's length) "
        f"or a scalar tensor. Received: start_index={start_index!r}"
    )
