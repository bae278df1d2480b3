"""The backend seam: compiled functions read the model's current weights, caches are
written where they should be, and (TensorFlow) the traceable core exports."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_transformers.generation import backend as backend_lib
from keras_transformers.generation import generate, generate_tensors
from tests.generation.test_generate import (  # noqa: F401 (fixtures)
    NEW_TOKENS,
    PROMPTS,
    gpt2_model,
    prompt_inputs,
    source_inputs,
    transformer_model,
    uncached_gpt2_greedy,
)
from tests.testing import BACKEND, to_numpy


def test_compiled_function_reads_current_weights():
    layer = keras.layers.Dense(3, kernel_initializer="ones")
    model = keras.Sequential([keras.Input((2,)), layer])
    compiled = backend_lib.compile_function(lambda x: layer(x) * 2.0, model)
    x = ops.ones((1, 2))
    np.testing.assert_allclose(to_numpy(compiled(x)), [[4.0, 4.0, 4.0]])
    # Weights are state passed in (JAX) or variables read (TensorFlow), not constants
    # baked into the compiled function.
    layer.kernel.assign(np.full((2, 3), 3.0, "float32"))
    np.testing.assert_allclose(to_numpy(compiled(x)), [[12.0, 12.0, 12.0]])


def test_generate_follows_weight_changes_without_recompiling(gpt2_model):
    from keras_transformers.generation.generate import _COMPILED_ATTRIBUTE

    before = generate(gpt2_model, prompt_inputs(), NEW_TOKENS)["token_ids"]
    count = len(getattr(gpt2_model, _COMPILED_ATTRIBUTE))
    weights = gpt2_model.get_weights()
    try:
        rng = np.random.default_rng(7)
        gpt2_model.set_weights([rng.normal(0, 0.3, w.shape).astype(w.dtype) for w in weights])
        after = generate(gpt2_model, prompt_inputs(), NEW_TOKENS)["token_ids"]
        expected = uncached_gpt2_greedy(gpt2_model, PROMPTS, 5 + NEW_TOKENS)
        np.testing.assert_array_equal(after, expected)
        assert not np.array_equal(after, before)
        assert len(getattr(gpt2_model, _COMPILED_ATTRIBUTE)) == count
    finally:
        gpt2_model.set_weights(weights)


def test_write_positions():
    cache = ops.zeros((2, 5, 3))
    updated = backend_lib.write_positions(cache, np.int32(1), ops.ones((2, 2, 3)), axis=1)
    expected = np.zeros((2, 5, 3), "float32")
    expected[:, 1:3] = 1
    np.testing.assert_array_equal(to_numpy(updated), expected)
    # PyTorch writes in place (an eager functional update copies the whole cache);
    # elsewhere the input is untouched.
    assert (to_numpy(cache).sum() > 0) == (BACKEND == "torch")


@pytest.mark.skipif(BACKEND != "torch", reason="autograd bookkeeping is a PyTorch matter")
def test_torch_generation_records_no_gradients(gpt2_model):
    token_ids, _ = generate_tensors(
        gpt2_model, prompt_inputs()["token_ids"], prompt_inputs()["padding_mask"], 2
    )
    assert not token_ids.requires_grad


@pytest.mark.skipif(BACKEND != "torch", reason="only the eager PyTorch step is traced")
def test_hot_step_is_eager_until_hot_then_traced_per_shape(monkeypatch):
    import torch

    monkeypatch.setattr(backend_lib, "TRACE_AFTER_STEPS", 3)
    python_runs = []

    def step(weights, token_ids, cache, index):
        python_runs.append(index)  # only an eager run (or the tracing run) gets here
        cache.index_copy_(1, index.reshape(1).long(), token_ids.float())  # in place
        return cache.sum(dim=1) * weights, cache

    def loop(batch, steps, traces):
        next_fn = backend_lib.hot_step(step, torch.tensor(2.0), traces)
        cache = torch.zeros((batch, steps))
        for i in range(steps):
            token_ids = torch.full((batch, 1), i + 1)
            logits, cache = next_fn(token_ids, cache, torch.tensor(i, dtype=torch.int32))
            # 2 * (1 + 2 + ... + (i + 1)): the cache holds every token so far.
            np.testing.assert_allclose(logits.numpy(), np.full((batch,), (i + 1) * (i + 2)))

    traces = {}
    loop(2, 6, traces)
    # Three eager steps, then one tracing run; the traced steps run no Python.
    assert len(python_runs) == 4 and len(traces) == 1
    assert isinstance(next(iter(traces.values())), torch.jit.ScriptFunction)
    loop(2, 6, traces)  # the same shapes: traced from the first step
    assert len(python_runs) == 4
    loop(3, 6, traces)  # new shapes: counted and traced on their own
    assert len(python_runs) == 8 and len(traces) == 2
    monkeypatch.setattr(backend_lib, "MAX_TRACED_SHAPES", 2)
    first = next(iter(traces))
    loop(4, 6, traces)  # a third shape: the oldest goes
    assert len(traces) == 2 and first not in traces


@pytest.mark.skipif(BACKEND != "tensorflow", reason="tf.function export is TensorFlow only")
def test_generate_tensors_traces_in_a_plain_tf_function(gpt2_model, transformer_model):
    import tensorflow as tf

    specs = (
        tf.TensorSpec([None, None], tf.int32),
        tf.TensorSpec([None, None], tf.int32),
        tf.TensorSpec([], tf.int32),
    )

    @tf.function(input_signature=specs)
    def sample(token_ids, padding_mask, max_new_tokens):
        return generate_tensors(gpt2_model, token_ids, padding_mask, max_new_tokens)

    @tf.function(input_signature=specs)
    def translate(token_ids, padding_mask, max_new_tokens):
        return generate_tensors(
            transformer_model, token_ids, padding_mask, max_new_tokens, start_token_id=2
        )

    inputs = prompt_inputs()
    expected = generate(gpt2_model, inputs, NEW_TOKENS)
    token_ids, padding_mask = sample(inputs["token_ids"], inputs["padding_mask"], NEW_TOKENS)
    np.testing.assert_array_equal(token_ids.numpy(), expected["token_ids"])
    np.testing.assert_array_equal(padding_mask.numpy(), expected["padding_mask"])
    # Another batch size, prompt length and max_new_tokens: the same trace.
    token_ids, _ = sample(np.array([[7, 8, 9]], "int32"), np.ones((1, 3), "int32"), 4)
    expected = uncached_gpt2_greedy(gpt2_model, [[7, 8, 9]], 7)
    np.testing.assert_array_equal(token_ids.numpy(), expected)
    assert sample.experimental_get_tracing_count() == 1

    inputs = source_inputs()
    expected = generate(transformer_model, inputs, NEW_TOKENS, start_token_id=2)
    source, source_mask = inputs["encoder_token_ids"], inputs["encoder_padding_mask"]
    token_ids, _ = translate(source, source_mask, NEW_TOKENS)
    np.testing.assert_array_equal(token_ids.numpy(), expected["token_ids"])
