"""Token selection and the shared decoding loop, against numpy formulas and fake models."""

import numpy as np
import pytest
from keras import ops

from keras_transformers.generation import samplers
from tests.testing import BACKEND, to_numpy


def numpy_hash(x):
    """Wellons' lowbias32 on uint32, as published."""
    shape = np.shape(x)
    x = np.atleast_1d(np.asarray(x).astype(np.uint32))  # arrays wrap silently, scalars warn
    x ^= x >> np.uint32(16)
    x = (x * np.uint32(0x7FEB352D)).astype(np.uint32)
    x ^= x >> np.uint32(15)
    x = (x * np.uint32(0x846CA68B)).astype(np.uint32)
    x ^= x >> np.uint32(16)
    return x.reshape(shape)


def numpy_uniform(seed, index, shape):
    key = numpy_hash(numpy_hash(np.uint32(seed)) ^ np.uint32(index))
    counter = np.arange(shape[0] * shape[1], dtype=np.uint32).reshape(shape)
    bits = numpy_hash(numpy_hash(counter ^ key) + np.full_like(counter, key))
    return ((bits >> np.uint32(8)).astype(np.float64) + 0.5) / 2**24


def numpy_sample(logits, seed, index, temperature=1.0):
    noise = numpy_uniform(seed, index, logits.shape)
    return np.argmax(logits / temperature - np.log(-np.log(noise)), axis=-1)


def test_hash_matches_the_published_uint32_function():
    values = np.random.default_rng(0).integers(-(2**31), 2**31, 1000).astype("int32")
    values[:3] = [0, 1, -1]
    expected = numpy_hash(values.view(np.uint32)).view(np.int32)
    np.testing.assert_array_equal(to_numpy(samplers.hash_int32(values)), expected)


def test_uniform_noise_matches_numpy_and_is_uniform():
    noise = to_numpy(samplers.uniform_noise(7, 3, (64, 500)))
    np.testing.assert_allclose(noise, numpy_uniform(7, 3, (64, 500)), rtol=1e-6)
    assert 0 < noise.min() and noise.max() < 1
    counts = np.histogram(noise, bins=10, range=(0, 1))[0]
    expected = noise.size / 10
    # Chi-square with 9 degrees of freedom: 99.9th percentile 27.9.
    assert ((counts - expected) ** 2 / expected).sum() < 27.9
    assert not np.array_equal(noise, to_numpy(samplers.uniform_noise(7, 4, (64, 500))))
    assert not np.array_equal(noise, to_numpy(samplers.uniform_noise(8, 3, (64, 500))))


def test_sample_matches_the_numpy_gumbel_max_formula():
    # Same seed, same tokens on every backend: the draw is this formula.
    logits = np.random.default_rng(1).normal(size=(6, 30)).astype("float32")
    next_token = samplers.get_next_token_fn("random", temperature=0.5, seed=123)
    np.testing.assert_array_equal(
        to_numpy(next_token(logits, 9)), numpy_sample(logits.astype("float64"), 123, 9, 0.5)
    )


@pytest.mark.skipif(BACKEND != "tensorflow", reason="unknown sizes exist in TensorFlow graphs only")
def test_sample_traces_with_an_unknown_batch_size():
    # An exported `generate` signature has a batch size known only at run time.
    import tensorflow as tf

    next_token = samplers.get_next_token_fn("random", temperature=0.5, seed=123)
    traced = tf.function(
        lambda logits: next_token(logits, 9), input_signature=[tf.TensorSpec([None, 30], tf.float32)]
    )
    for batch_size in (6, 1):
        logits = np.random.default_rng(batch_size).normal(size=(batch_size, 30)).astype("float32")
        np.testing.assert_array_equal(
            traced(logits).numpy(), numpy_sample(logits.astype("float64"), 123, 9, 0.5)
        )
    assert traced.experimental_get_tracing_count() == 1


@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_sampling_frequencies_match_the_softmax(temperature):
    logits = np.array([2.0, 1.0, 0.5, 0.0, -1.0], "float32")
    rows = 20000
    batch = np.tile(logits, (rows, 1))
    next_token = samplers.get_next_token_fn("random", temperature=temperature, seed=5)
    tokens = to_numpy(next_token(batch, 0))
    frequencies = np.bincount(tokens, minlength=5) / rows
    probabilities = np.exp(logits / temperature) / np.exp(logits / temperature).sum()
    tolerance = 4 * np.sqrt(probabilities * (1 - probabilities) / rows) + 1e-3
    np.testing.assert_array_less(np.abs(frequencies - probabilities), tolerance)


def test_top_k_samples_only_among_the_k_best():
    logits = np.random.default_rng(2).normal(size=(1, 40)).astype("float32")
    batch = np.tile(logits, (3000, 1))
    tokens = to_numpy(samplers.get_next_token_fn("top_k", top_k=3, seed=0)(batch, 0))
    best = set(np.argsort(-logits[0])[:3].tolist())
    assert set(tokens.tolist()) == best


def test_top_k_filter_and_top_p_filter_match_numpy():
    logits = np.random.default_rng(3).normal(size=(4, 20)).astype("float32")
    kept = np.isfinite(to_numpy(samplers.top_k_filter(logits, 5)))
    expected = logits >= np.sort(logits, axis=-1)[:, -5:-4]
    np.testing.assert_array_equal(kept, expected)

    for p in (0.3, 0.9, 1.0):
        kept = np.isfinite(to_numpy(samplers.top_p_filter(logits, p)))
        for row, row_kept in zip(logits, kept):
            order = np.argsort(-row)
            probabilities = np.exp(row[order]) / np.exp(row).sum()
            # The smallest prefix whose mass reaches p.
            size = int(np.searchsorted(np.cumsum(probabilities), p - 1e-6) + 1)
            assert set(np.flatnonzero(row_kept)) == set(order[:size].tolist())


@pytest.mark.parametrize(
    "sampler,options", [("top_k", {"top_k": 1}), ("top_p", {"top_p": 1e-6})]
)
def test_narrowest_sampling_is_greedy(sampler, options):
    logits = np.random.default_rng(4).normal(size=(16, 50)).astype("float32")
    next_token = samplers.get_next_token_fn(sampler, temperature=2.0, seed=9, **options)
    np.testing.assert_array_equal(to_numpy(next_token(logits, 3)), logits.argmax(-1))


def test_seeds():
    logits = np.zeros((8, 100), "float32")

    def draw(seed, index=0):
        return to_numpy(samplers.get_next_token_fn("random", seed=seed)(logits, index))

    np.testing.assert_array_equal(draw(1), draw(1))
    assert not np.array_equal(draw(1), draw(2))
    assert not np.array_equal(draw(1, 0), draw(1, 1))


def counting_next_fn(vocabulary_size, calls=None):
    """A fake model whose next token is (token + index) % V, with a dummy cache; each
    call is appended to `calls` (once per step where the loop runs eagerly)."""

    def next_fn(token_ids, cache, index):
        assert tuple(token_ids.shape)[1] == 1
        if calls is not None:
            calls.append(index)
        target = (token_ids[:, 0] + index) % vocabulary_size
        return ops.one_hot(target, vocabulary_size), [cache[0] + 1]

    return next_fn


def expected_continuation(prompts, length, vocabulary_size, stop=()):
    token_ids = np.zeros((len(prompts), length), "int32")
    mask = np.zeros((len(prompts), length), bool)
    for row, prompt in enumerate(prompts):
        sequence = list(prompt)
        while len(sequence) < length:
            sequence.append((sequence[-1] + len(sequence) - 1) % vocabulary_size)
            if sequence[-1] in stop:
                break
        token_ids[row, : len(sequence)] = sequence
        mask[row, : len(sequence)] = True
    return token_ids, mask


# The keras.ops loop, and on torch also the PyTorch loop that `generate` runs there.
LOOPS = {"keras_ops": samplers.token_loop}
if BACKEND == "torch":
    import importlib

    LOOPS["torch"] = importlib.import_module(
        "keras_transformers.generation.torch_primitives"
    ).token_loop


def run_loop(prompts, length, vocabulary_size, stop_token_ids=None, loop="keras_ops", calls=None):
    token_ids = np.zeros((len(prompts), length), "int32")
    mask = np.zeros((len(prompts), length), bool)
    for row, prompt in enumerate(prompts):
        token_ids[row, : len(prompt)] = prompt
        mask[row, : len(prompt)] = True
    start = min(len(prompt) for prompt in prompts)
    token_ids[~mask] = 77  # junk in the padding must not leak out
    outputs = LOOPS[loop](
        counting_next_fn(vocabulary_size, calls),
        token_ids,
        mask,
        [ops.zeros((len(prompts), 1))],
        start,
        stop_token_ids=stop_token_ids,
    )
    return to_numpy(outputs[0]), to_numpy(outputs[1])


@pytest.mark.parametrize("loop", list(LOOPS))
def test_loop_keeps_ragged_prompts_and_steps_positions(loop):
    prompts = [[3], [5, 6, 7], [9, 1]]
    token_ids, mask = run_loop(prompts, 8, 100, loop=loop)
    expected_ids, expected_mask = expected_continuation(prompts, 8, 100)
    np.testing.assert_array_equal(token_ids, expected_ids)
    np.testing.assert_array_equal(mask, expected_mask)


@pytest.mark.parametrize("loop", list(LOOPS))
def test_loop_stops_rows_and_pads_after_the_stop_token(loop):
    prompts = [[3], [5, 6, 7], [1, 1]]
    # Row 0: 3, 3, 4, 6 (stop); row 1: 5, 6, 7, 9 (stop; the 6 in its prompt does not
    # count); row 2: 1, 1, 2, 4, 7, 11, 16, 22 (never stops).
    token_ids, mask = run_loop(prompts, 8, 100, stop_token_ids=(9, 6), loop=loop)
    expected_ids, expected_mask = expected_continuation(prompts, 8, 100, stop=(9, 6))
    np.testing.assert_array_equal(token_ids, expected_ids)
    np.testing.assert_array_equal(mask, expected_mask)
    np.testing.assert_array_equal(mask.sum(axis=1), [4, 4, 8])


@pytest.mark.parametrize("loop", list(LOOPS))
def test_loop_ends_when_every_row_has_stopped(loop):
    calls = []
    token_ids, mask = run_loop([[3], [4]], 10, 100, stop_token_ids=(3, 5), loop=loop, calls=calls)
    # Row 0: 3, 3 (stop); row 1: 4, 4, 5 (stop). The rest is padding.
    np.testing.assert_array_equal(token_ids, [[3, 3] + [0] * 8, [4, 4, 5] + [0] * 7])
    np.testing.assert_array_equal(mask.sum(axis=1), [2, 3])
    if BACKEND == "torch":  # both loops run eagerly there: two steps, not nine
        assert len(calls) == 2


@pytest.mark.skipif(BACKEND != "torch", reason="the PyTorch loop runs on torch only")
@pytest.mark.parametrize("sampler,options", [("random", {}), ("top_k", {"top_k": 3})])
def test_torch_loop_samples_as_the_keras_ops_loop(sampler, options):
    """Same seed, same tokens: the PyTorch loop feeds the sampler the same positions."""
    table = np.random.default_rng(5).normal(size=(20, 20)).astype("float32")

    def next_fn(token_ids, cache, index):  # logits from the previous token and position
        return ops.take(table, (token_ids[:, 0] + index) % 20, axis=0), cache

    token_ids = np.array([[3, 0, 0, 0, 0, 0], [4, 5, 6, 0, 0, 0]], "int32")
    mask = ops.convert_to_tensor(token_ids > 0)
    token_ids = ops.convert_to_tensor(token_ids)
    outputs = {}
    for name, loop in LOOPS.items():
        next_token = samplers.get_next_token_fn(sampler, temperature=1.5, seed=11, **options)
        outputs[name] = loop(next_fn, token_ids, mask, (), 1, (7,), next_token)
    for keras_ops, torch_loop in zip(outputs["keras_ops"], outputs["torch"]):
        np.testing.assert_array_equal(to_numpy(torch_loop), to_numpy(keras_ops))


def test_unknown_sampler_and_missing_seed():
    with pytest.raises(ValueError, match="`sampler` must be one of"):
        samplers.get_next_token_fn("nucleus")
    with pytest.raises(ValueError, match="`seed` is required"):
        samplers.get_next_token_fn("random")
