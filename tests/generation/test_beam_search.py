"""Beam search against references: numpy brute force and greedy written here, keras-hub's
BeamSampler, and (when `generation.generate` exists) a full uncached forward pass of GPT-2.

The `next_fn` under test is a lookup table of logits keyed on the previous token and on
a hash of the whole history that it reads from its cache (a (B, L) buffer of the tokens
it was fed, written at `index` as a KV cache is, plus a float copy): the hash changes
with any one token of the history, so if the search reordered the cache wrongly, the
logits would stop matching the token history that the numpy references use.
"""

import functools
import importlib
import itertools

import numpy as np
import pytest
from keras import ops

from keras_transformers.generation.beam_search import beam_search
from tests.testing import BACKEND

# The history hash: sum over positions p of token * 3 ** p, modulo a prime, so that
# changing any one token changes it (3 and 2 * 3 are invertible modulo 7).
NUM_KEYS = 7
PAD = 0


# --- the model: a table of logits, in keras.ops (under test) and numpy (reference) ---


def make_table(seed, vocabulary_size=3):
    """(V, NUM_KEYS, V) logits: table[previous token, history key] -> next-token logits."""
    rng = np.random.default_rng(seed)
    return (2.0 * rng.normal(size=(vocabulary_size, NUM_KEYS, vocabulary_size))).astype("float32")


def make_next_fn(table):
    vocabulary_size = table.shape[0]
    flat_table = ops.convert_to_tensor(table.reshape(-1, vocabulary_size))  # (V * K, V)

    def next_fn(token_ids, cache, index):
        history, history_float = cache  # (N, L) int32, (N, L) float32
        length = history.shape[1]
        positions = ops.arange(length, dtype="int32")  # (L,)
        weights = ops.convert_to_tensor(hash_weights(length))  # (L,)
        column = (positions == index)[None]  # (1, L)
        history = ops.where(column, token_ids, history)
        history_float = ops.where(column, ops.cast(token_ids, "float32"), history_float)
        seen = (positions <= index)[None]  # (1, L)
        key = ops.sum(ops.where(seen, history * weights, 0), axis=1)  # (N,)
        float_terms = history_float * (2.0 * ops.cast(weights, "float32"))  # (N, L)
        key = key + ops.cast(ops.sum(ops.where(seen, float_terms, 0.0), axis=1), "int32")
        row = token_ids[:, 0] * NUM_KEYS + key % NUM_KEYS  # (N,)
        # A list where a tuple came in: the search must keep its own structure.
        return ops.take(flat_table, row, axis=0), [history, history_float]

    return next_fn


def hash_weights(length):
    return np.array([3**p % NUM_KEYS for p in range(length)], "int32")


def prompt_cache(token_ids, start_index):
    """The cache a prompt pass over positions < start_index leaves."""
    history = np.where(np.arange(token_ids.shape[1]) < start_index, token_ids, 0).astype("int32")
    return (history, history.astype("float32"))


def np_log_probs(table, tokens):
    """log_softmax of the logits after `tokens` (positions 0..i), as next_fn computes them."""
    key = int(np.dot(tokens, 3 * hash_weights(len(tokens)))) % NUM_KEYS
    logits = table[tokens[-1], key].astype("float64")
    return logits - np.log(np.sum(np.exp(logits - logits.max()))) - logits.max()


def np_score(table, prompt, continuation):
    """Sum of the log-probabilities of `continuation` after `prompt`."""
    tokens = list(prompt)
    total = 0.0
    for token in continuation:
        total += np_log_probs(table, tokens)[token]
        tokens.append(token)
    return total


def pack(prompt, continuation, length):
    """(tokens, mask) of a prompt and its continuation right-padded to `length`."""
    used = len(prompt) + len(continuation)
    tokens = list(prompt) + list(continuation) + [PAD] * (length - used)
    return np.array(tokens, "int32"), np.arange(length) < used


def np_brute_force(table, prompt, length, stop_token_ids=(), length_penalty=1.0):
    """The best continuation of all V ** n, each cut after its first stop token."""
    vocabulary_size = table.shape[0]
    candidates = set()
    for continuation in itertools.product(range(vocabulary_size), repeat=length - len(prompt)):
        for i, token in enumerate(continuation):
            if token in stop_token_ids:
                continuation = continuation[: i + 1]
                break
        candidates.add(continuation)
    best = max(
        candidates,
        key=lambda c: np_score(table, prompt, c) / max(len(c), 1) ** length_penalty,
    )
    return pack(prompt, best, length)


def np_greedy(table, prompt, length, stop_token_ids=()):
    continuation = []
    while len(prompt) + len(continuation) < length:
        token = int(np.argmax(np_log_probs(table, list(prompt) + continuation)))
        continuation.append(token)
        if token in stop_token_ids:
            break
    return pack(prompt, continuation, length)


def make_batch(prompts, length):
    """Right-padded (B, L) prompt buffer, its mask, and the shortest prompt's length."""
    token_ids = np.full((len(prompts), length), PAD, "int32")
    for row, prompt in enumerate(prompts):
        token_ids[row, : len(prompt)] = prompt
    padding_mask = np.arange(length)[None] < np.array([len(p) for p in prompts])[:, None]
    return token_ids, padding_mask, min(len(p) for p in prompts)


@functools.lru_cache(maxsize=None)
def jitted_search(num_beams, settings):
    """One `jax.jit` per beam width and settings; tables, prompts and start index are
    arguments, so tests that share shapes share one compilation."""
    import jax

    def search(table, token_ids, padding_mask, cache, start_index):
        return beam_search(make_next_fn(table), token_ids, padding_mask, cache, start_index,
                           num_beams, **dict(settings))

    return jax.jit(search)


def run(table, prompts, length, num_beams, **kwargs):
    token_ids, padding_mask, start_index = make_batch(prompts, length)
    cache = prompt_cache(token_ids, start_index)
    if BACKEND == "jax":
        # Compiled: several times faster than eager JAX here, which compiles op by op.
        # (Eager JAX is checked against jit in test_compiled_equals_eager.)
        search = jitted_search(num_beams, tuple(sorted(kwargs.items())))
        start_index = np.array(start_index, "int32")
        tokens, mask = search(table, token_ids, padding_mask, cache, start_index)
    else:
        tokens, mask = beam_search(make_next_fn(table), token_ids, padding_mask, cache,
                                   start_index, num_beams, **kwargs)
    return ops.convert_to_numpy(tokens), ops.convert_to_numpy(mask)


def assert_rows(actual, expected):
    tokens, mask = actual
    np.testing.assert_array_equal(tokens, np.stack([t for t, _ in expected]))
    np.testing.assert_array_equal(mask, np.stack([m for _, m in expected]))


# --- tests ---

# Two ragged rows; 4 tokens to generate at most, so 3 ** 4 beams never prune anything.
PROMPTS = [[1, 2], [2, 0, 1]]
LENGTH = 6


@pytest.mark.parametrize(
    "stop_token_ids,length_penalty",
    [(None, 1.0), ((2,), 1.0), ((2,), 0.0), ((0, 2), 2.0)],
)
def test_exhaustive_beams_match_brute_force(stop_token_ids, length_penalty):
    table = make_table(seed=1)
    actual = run(table, PROMPTS, LENGTH, num_beams=81, stop_token_ids=stop_token_ids,
                 length_penalty=length_penalty)
    expected = [
        np_brute_force(table, prompt, LENGTH, stop_token_ids or (), length_penalty)
        for prompt in PROMPTS
    ]
    assert_rows(actual, expected)


@pytest.mark.parametrize("seed", [2, 3])
def test_width_one_is_greedy(seed):
    table = make_table(seed, vocabulary_size=4)
    prompts, length = [[1], [3, 2, 1], [0, 2]], 7
    expected = [np_greedy(table, prompt, length, stop_token_ids=(3,)) for prompt in prompts]
    assert_rows(run(table, prompts, length, num_beams=1, stop_token_ids=(3,)), expected)


def test_beams_find_what_greedy_misses():
    # P(next | previous) with no history dependence: greedy takes 1 (0.5) first and ends
    # with 0.5 * 0.4 * 0.5 = 0.1; the best path starts with the second choice, 2, and
    # gets 0.4 * 0.9 * 0.4 = 0.144.
    probabilities = np.array([[0.1, 0.5, 0.4], [0.4, 0.3, 0.3], [0.05, 0.9, 0.05]])
    table = np.repeat(np.log(probabilities)[:, None], NUM_KEYS, axis=1).astype("float32")
    greedy, greedy_mask = run(table, [[0]], 4, num_beams=1)
    best, best_mask = run(table, [[0]], 4, num_beams=2)
    np.testing.assert_array_equal(greedy, [[0, 1, 0, 1]])
    np.testing.assert_array_equal(best, [[0, 2, 1, 0]])
    assert greedy_mask.all() and best_mask.all()
    assert np_score(table, [0], best[0, 1:]) > np_score(table, [0], greedy[0, 1:])
    np.testing.assert_array_equal(best, np_brute_force(table, [0], 4)[0][None])


# keras-hub imports TensorFlow: about 5 s on the JAX and torch backends.
@(pytest.mark.slow if BACKEND != "tensorflow" else lambda test: test)
def test_pruned_beams_match_keras_hub():
    """Without stop tokens and with equal prompts, the search is keras-hub's BeamSampler."""
    keras_hub = pytest.importorskip("keras_hub")
    table = make_table(seed=4, vocabulary_size=6)
    prompts, length, num_beams = [[1, 2], [3, 0], [5, 5]], 7, 3
    token_ids, padding_mask, start_index = make_batch(prompts, length)
    next_fn = make_next_fn(table)

    def hub_next(prompt, cache, index):  # keras-hub's: the logits predicting `index`
        previous = ops.take(prompt, ops.reshape(index - 1, (1,)), axis=1)  # (N, 1)
        logits, cache = next_fn(previous, cache, index - 1)
        return logits, None, tuple(cache)

    theirs = keras_hub.samplers.BeamSampler(num_beams=num_beams)(
        hub_next, token_ids, cache=prompt_cache(token_ids, start_index), index=start_index,
        mask=padding_mask,
    )
    ours, mask = run(table, prompts, length, num_beams=num_beams)
    np.testing.assert_array_equal(ours, ops.convert_to_numpy(theirs))
    assert mask.all()


def test_stop_tokens_end_beams_and_pad():
    # From 0: the stop token 2 is likely (0.6) and, once emitted, ends the beam. The
    # buffer's padding (here 7, a token never generated) follows it, masked out.
    probabilities = np.full((8, 8), 1e-6)
    probabilities[:3, :3] = [[0.1, 0.3, 0.6], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4]]
    table = np.repeat(np.log(probabilities)[:, None], NUM_KEYS, axis=1).astype("float32")
    token_ids = np.array([[0, 7, 7, 7, 7], [1, 1, 7, 7, 7]], "int32")
    padding_mask = np.array([[True, False, False, False, False], [True, True, False, False, False]])
    tokens, mask = beam_search(
        make_next_fn(table), token_ids, padding_mask, prompt_cache(token_ids, 1), 1, 2,
        stop_token_ids=[2],
    )
    # Row 0: stop at once (log 0.6 = -0.51 per token) beats 1 1 1 1 (log 0.103 / 4 = -0.57).
    # Row 1 (prompt [1, 1]): 1 1 1 (log 0.343 / 3 = -0.36) beats any stop.
    np.testing.assert_array_equal(ops.convert_to_numpy(tokens), [[0, 2, 7, 7, 7], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(
        ops.convert_to_numpy(mask), [[True, True, False, False, False], [True] * 5]
    )


def test_loop_stops_once_every_beam_finished():
    # Every token is the stop token's: all beams finish at the first step.
    table = np.zeros((3, NUM_KEYS, 3), "float32")
    calls = []
    next_fn = make_next_fn(table)

    def counting_next_fn(token_ids, cache, index):
        if BACKEND == "jax":  # the loop body is traced once: count at run time
            import jax

            jax.debug.callback(lambda: calls.append(1))
        else:  # eager TensorFlow and torch run the loop in Python
            calls.append(1)
        return next_fn(token_ids, cache, index)

    token_ids = np.zeros((2, 6), "int32")
    padding_mask = np.arange(6)[None] < np.array([[1], [2]])
    tokens, mask = beam_search(
        counting_next_fn, token_ids, padding_mask, prompt_cache(token_ids, 1), 1, 2,
        stop_token_ids=(0, 1, 2),
    )
    if BACKEND == "jax":
        import jax

        jax.effects_barrier()
    # Row 0 finishes at position 1, row 1 (a 2-token prompt) at position 2.
    assert len(calls) == 2
    np.testing.assert_array_equal(
        ops.convert_to_numpy(mask), np.arange(6)[None] < np.array([[2], [3]])
    )


def test_length_penalty_changes_the_choice():
    # From 0: stop (2) at once scores log 0.4 = -0.92 over 1 token; 1 1 1 scores
    # log(0.6 * 0.7 * 0.7) = -1.22 over 3 tokens. The raw sum (penalty 0) prefers the
    # short one, the per-token mean (penalty 1) the long one.
    probabilities = np.array([[0.0, 0.6, 0.4], [0.05, 0.7, 0.25], [1 / 3, 1 / 3, 1 / 3]]) + 1e-9
    table = np.repeat(np.log(probabilities)[:, None], NUM_KEYS, axis=1).astype("float32")
    short = run(table, [[0]], 4, num_beams=2, stop_token_ids=(2,), length_penalty=0.0)
    long = run(table, [[0]], 4, num_beams=2, stop_token_ids=(2,), length_penalty=1.0)
    assert_rows(short, [pack([0], [2], 4)])
    assert_rows(long, [pack([0], [1, 1, 1], 4)])
    for penalty, result in ((0.0, short), (1.0, long)):
        assert_rows(result, [np_brute_force(table, [0], 4, (2,), penalty)])


def test_ragged_batch_equals_rows_one_by_one():
    table = make_table(seed=5, vocabulary_size=5)
    prompts, length = [[4], [1, 2, 3], [3, 3]], 6
    batch = run(table, prompts, length, num_beams=3, stop_token_ids=(0,), length_penalty=0.5)
    for row, prompt in enumerate(prompts):
        alone = run(table, [prompt], length, num_beams=3, stop_token_ids=(0,), length_penalty=0.5)
        np.testing.assert_array_equal(batch[0][row], alone[0][0])
        np.testing.assert_array_equal(batch[1][row], alone[1][0])
        np.testing.assert_array_equal(batch[0][row, : len(prompt)], prompt)


def test_return_all_beams_sorted_by_normalised_score():
    table = make_table(seed=6, vocabulary_size=4)
    prompts, length, penalty = [[1], [2, 3]], 5, 0.7
    token_ids, padding_mask, start_index = make_batch(prompts, length)
    beams, masks = beam_search(
        make_next_fn(table), token_ids, padding_mask, prompt_cache(token_ids, start_index),
        start_index, 3, length_penalty=penalty, stop_token_ids=(0,), return_all_beams=True,
    )
    beams, masks = ops.convert_to_numpy(beams), ops.convert_to_numpy(masks)
    assert beams.shape == (2, 3, length) and masks.shape == (2, 3, length)
    best = run(table, prompts, length, 3, length_penalty=penalty, stop_token_ids=(0,))
    np.testing.assert_array_equal(beams[:, 0], best[0])
    for row, prompt in enumerate(prompts):
        continuations = [beams[row, k, len(prompt) : masks[row, k].sum()] for k in range(3)]
        assert len({tuple(c) for c in continuations}) == 3, continuations  # no duplicates
        normalised = [np_score(table, prompt, c) / len(c) ** penalty for c in continuations]
        assert normalised == sorted(normalised, reverse=True)


@pytest.mark.skipif(BACKEND == "torch", reason="compiled loops are tested on JAX and TensorFlow")
def test_compiled_equals_eager():
    table = make_table(seed=7, vocabulary_size=4)
    prompts, length = [[1, 2], [3]], 6
    token_ids, padding_mask, start_index = make_batch(prompts, length)
    cache = prompt_cache(token_ids, start_index)
    next_fn = make_next_fn(table)

    def search(token_ids, padding_mask, cache, start_index):
        return beam_search(next_fn, token_ids, padding_mask, cache, start_index, 3,
                           length_penalty=1.5, stop_token_ids=(0,))

    if BACKEND == "jax":
        import jax

        compiled = jax.jit(search)
    else:
        import tensorflow as tf

        compiled = tf.function(search, jit_compile=True)
    # The start index goes in as a tensor: one compiled loop serves every prompt length.
    start = np.array(start_index, "int32")
    eager = search(token_ids, padding_mask, cache, start_index)
    for actual, expected in zip(compiled(token_ids, padding_mask, cache, start), eager):
        np.testing.assert_array_equal(ops.convert_to_numpy(actual), ops.convert_to_numpy(expected))


@pytest.mark.parametrize(
    "kwargs,name",
    [
        ({"num_beams": 0}, "num_beams"),
        ({"num_beams": -2}, "num_beams"),
        ({"num_beams": 2.0}, "num_beams"),
        ({"num_beams": True}, "num_beams"),
        ({"num_beams": "2"}, "num_beams"),
        ({"length_penalty": "1"}, "length_penalty"),
        ({"stop_token_ids": 2}, "stop_token_ids"),
        ({"stop_token_ids": [-1]}, "stop_token_ids"),
        ({"start_index": 0}, "start_index"),
        ({"start_index": 5}, "start_index"),
        ({"start_index": 1.0}, "start_index"),
        ({"return_all_beams": 1}, "return_all_beams"),
        ({"next_fn": None}, "next_fn"),
        ({"token_ids": np.zeros((4,), "int32")}, "token_ids"),
        ({"padding_mask": np.ones((1, 3), bool)}, "padding_mask"),
    ],
)
def test_bad_arguments_raise(kwargs, name):
    arguments = dict(
        next_fn=make_next_fn(make_table(0)),
        token_ids=np.zeros((1, 4), "int32"),
        padding_mask=np.array([[True, False, False, False]]),
        cache=prompt_cache(np.zeros((1, 4), "int32"), 1),
        start_index=1,
        num_beams=2,
    )
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=f"`{name}`.*Received: {name}"):
        beam_search(**arguments)


def _generate():
    """`generation.generate` if it exists and takes sampler="beam"; else None."""
    try:
        # The module (the package's `generate` attribute is the function).
        generate_module = importlib.import_module("keras_transformers.generation.generate")
    except ImportError:
        return None
    if "beam" not in getattr(generate_module, "SAMPLERS", ()):
        return None
    return generate_module.generate


@pytest.fixture(scope="module")
def tiny_gpt2():
    from keras_transformers.models.gpt2 import gpt2

    return gpt2(vocabulary_size=20, num_layers=1, num_heads=2, hidden_dim=8,
                intermediate_dim=16, max_sequence_length=12)


GPT2_PROMPTS = {
    "token_ids": np.array([[5, 6, 7, 0], [8, 9, 0, 0]], "int32"),
    "padding_mask": np.array([[True, True, True, False], [True, True, False, False]]),
}


def test_generate_beam_width_one_is_greedy(tiny_gpt2):
    generate = _generate()
    if generate is None:
        pytest.skip("generation.generate with sampler='beam' is not available yet")
    greedy = generate(tiny_gpt2, GPT2_PROMPTS, max_new_tokens=4, sampler="greedy")
    beam = generate(tiny_gpt2, GPT2_PROMPTS, max_new_tokens=4, sampler="beam", num_beams=1)
    for key in ("token_ids", "padding_mask"):
        np.testing.assert_array_equal(beam[key], greedy[key])


def test_generate_beams_equal_uncached_search(tiny_gpt2):
    """generate's KV caches, reordered by the beams, give what full forward passes give."""
    generate = _generate()
    if generate is None:
        pytest.skip("generation.generate with sampler='beam' is not available yet")
    token_ids, padding_mask = GPT2_PROMPTS["token_ids"], GPT2_PROMPTS["padding_mask"]
    max_new_tokens, num_beams = 4, 3
    length = token_ids.shape[1] + max_new_tokens
    buffer = np.pad(token_ids, ((0, 0), (0, max_new_tokens)))  # (B, L)
    buffer_mask = np.pad(padding_mask, ((0, 0), (0, max_new_tokens)))
    positions = ops.arange(length, dtype="int32")

    def uncached_next_fn(token_ids, tokens_so_far, index):
        # The "cache" is the token buffer: the whole prefix runs through the model.
        tokens_so_far = ops.where((positions == index)[None], token_ids, tokens_so_far)  # (N, L)
        mask = ops.broadcast_to((positions <= index)[None], ops.shape(tokens_so_far))
        logits = tiny_gpt2({"token_ids": tokens_so_far, "padding_mask": mask})  # (N, L, V)
        return ops.take(logits, ops.reshape(index, (1,)), axis=1)[:, 0], tokens_so_far

    start_index = int(padding_mask.sum(axis=1).min())
    kwargs = dict(length_penalty=0.8, stop_token_ids=(3,))
    expected = beam_search(uncached_next_fn, buffer, buffer_mask,
                           np.where(np.arange(length) < start_index, buffer, 0).astype("int32"),
                           start_index, num_beams, **kwargs)
    actual = generate(tiny_gpt2, GPT2_PROMPTS, max_new_tokens=max_new_tokens, sampler="beam",
                      num_beams=num_beams, **kwargs)
    np.testing.assert_array_equal(actual["token_ids"], ops.convert_to_numpy(expected[0]))
    np.testing.assert_array_equal(actual["padding_mask"], ops.convert_to_numpy(expected[1]))
