"""`generate` on GPT-2 and the encoder-decoder Transformer, against the models' own full
forward passes (no cache, one pass per new token)."""

import importlib
import os

import keras
import numpy as np
import pytest
from keras import ops

from keras_transformers.generation import generate
from keras_transformers.models.gpt2 import gpt2
from keras_transformers.models.transformer import transformer
from tests.testing import BACKEND, to_numpy

generate_module = importlib.import_module("keras_transformers.generation.generate")

VOCABULARY, MAX_LENGTH, NEW_TOKENS = 50, 32, 6
# Ragged, right-padded prompts (0 = padding), all generated with one buffer shape.
PROMPTS = [[5, 6, 7, 8, 9], [11, 12], [20, 21, 22]]
SOURCES = [[3, 4, 5, 0], [6, 7, 8, 9], [10, 0, 0, 0]]


def spread_weights(model, seed):
    """Weights of std 0.3 (the builders' 0.02 leaves logits nearly tied): a greedy
    choice then never hinges on float32 rounding."""
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 0.3, w.shape).astype(w.dtype) for w in model.get_weights()])
    return model


# Session-scoped: test_backend.py uses the same models (building one costs seconds).
@pytest.fixture(scope="session")
def gpt2_model():
    model = gpt2(
        vocabulary_size=VOCABULARY, num_layers=2, num_heads=2, hidden_dim=16,
        intermediate_dim=32, max_sequence_length=MAX_LENGTH,
    )
    return spread_weights(model, 0)


@pytest.fixture(scope="session")
def transformer_model():
    model = transformer(
        encoder_vocabulary_size=30, decoder_vocabulary_size=VOCABULARY, num_layers=2,
        num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=MAX_LENGTH,
    )
    return spread_weights(model, 1)


def prompt_inputs(prompts=PROMPTS, length=5):
    token_ids = np.zeros((len(prompts), length), "int32")
    for row, prompt in enumerate(prompts):
        token_ids[row, : len(prompt)] = prompt
    return {"token_ids": token_ids, "padding_mask": (token_ids > 0).astype("int32")}


def source_inputs(sources=SOURCES):
    token_ids = np.array(sources, "int32")
    return {"encoder_token_ids": token_ids, "encoder_padding_mask": (token_ids > 0).astype("int32")}


def forward(model, inputs):
    """The model's full forward pass, with no cache. On JAX compiled (`predict_on_batch`:
    eager JAX compiles every op), elsewhere eager (TensorFlow would compile with XLA)."""
    if BACKEND == "jax":
        return to_numpy(model.predict_on_batch(inputs))
    return to_numpy(model(inputs))


def uncached_gpt2_greedy(model, prompts, length):
    """Each row grown one token at a time, each from a full forward pass of the model.

    The passes see the rows right-padded to `length` (one shape, one compilation):
    with causal attention, padding after a position does not change its logits."""
    rows = [list(prompt) for prompt in prompts]
    while min(len(row) for row in rows) < length:
        token_ids = np.zeros((len(rows), length), "int32")
        for i, row in enumerate(rows):
            token_ids[i, : len(row)] = row
        padding_mask = (np.arange(length) < np.array([len(row) for row in rows])[:, None])
        inputs = {"token_ids": token_ids, "padding_mask": padding_mask.astype("int32")}
        logits = forward(model, inputs)
        for i, row in enumerate(rows):
            if len(row) < length:
                row.append(int(logits[i, len(row) - 1].argmax()))
    return np.array(rows, "int32")


def uncached_transformer_greedy(model, inputs, start_token_id, new_tokens):
    batch_size = len(inputs["encoder_token_ids"])
    decoded = np.zeros((batch_size, 1 + new_tokens), "int32")
    decoded[:, 0] = start_token_id
    for step in range(new_tokens):
        mask = (np.arange(1 + new_tokens) <= step)[None].repeat(batch_size, 0).astype("int32")
        logits = forward(model, dict(inputs, decoder_token_ids=decoded, decoder_padding_mask=mask))
        decoded[:, step + 1] = logits[:, step].argmax(-1)
    return decoded


def cached_logits(
    model, adapter, inputs, target, first, start_token_id=None, rows=None, traces=None
):
    """The logits of `target` (B, L) fed one token at a time from position `first`,
    after `adapter.start` on `inputs` (the prompt / source): (B, L - first, V).
    `rows` goes to `adapter.weights` (a layout hint: see `torch_primitives.dense`);
    with a `traces` dict the steps run through `backend.hot_step` (traced once hot).

    The start and the step are compiled as `generate` compiles them on JAX (eager
    JAX compiles every op), eager elsewhere (XLA compilation on TensorFlow costs
    more than it saves here)."""
    length = target.shape[1]
    new_tokens = length - (1 if start_token_id is not None else inputs[0].shape[1])

    def start(token_ids, padding_mask):
        with generate_module.backend_lib.no_grad():
            weights = adapter.weights(rows)
            return adapter.start(weights, token_ids, padding_mask, new_tokens, start_token_id)[2]

    hot_step = None
    if traces is not None:
        with generate_module.backend_lib.no_grad():
            weights = adapter.weights(rows)
        hot_step = generate_module.backend_lib.hot_step(adapter.step, weights, traces)

    def step(token_ids, cache, index):
        with generate_module.backend_lib.no_grad():
            if hot_step is not None:
                return hot_step(token_ids, cache, index)
            return adapter.step(adapter.weights(rows), token_ids, cache, index)

    if BACKEND == "jax":
        start = generate_module.backend_lib.compile_function(start, model)
        step = generate_module.backend_lib.compile_function(step, model)
    cache, logits = start(*inputs), []
    for index in range(first, length):
        # Tensors, as the token loops pass them.
        token_ids = ops.convert_to_tensor(target[:, index : index + 1], "int32")
        step_logits, cache = step(token_ids, cache, ops.convert_to_tensor(index, "int32"))
        logits.append(to_numpy(step_logits))
    return np.stack(logits, axis=1)


def test_gpt2_cached_step_logits_equal_the_full_pass(gpt2_model):
    length = 5 + NEW_TOKENS
    sequence = np.random.default_rng(2).integers(1, VOCABULARY, (3, length)).astype("int32")
    full = forward(gpt2_model, {"token_ids": sequence, "padding_mask": np.ones_like(sequence)})
    # Prefilled with 4 positions, then one token at a time; the first step redoes
    # position 3, as the loop does.
    prompt = sequence[:, :4]
    logits = cached_logits(
        gpt2_model, generate_module._GPT2(gpt2_model), (prompt, np.ones_like(prompt)), sequence, 3
    )
    np.testing.assert_allclose(logits, full[:, 3:], atol=1e-5, rtol=0)


def test_transformer_cached_step_logits_equal_the_full_pass(transformer_model):
    inputs = source_inputs()
    target = np.random.default_rng(3).integers(1, VOCABULARY, (3, 1 + NEW_TOKENS)).astype("int32")
    full = forward(
        transformer_model,
        dict(inputs, decoder_token_ids=target, decoder_padding_mask=np.ones_like(target)),
    )
    # From an empty cache, position 0 onwards.
    logits = cached_logits(
        transformer_model,
        generate_module._Transformer(transformer_model),
        (inputs["encoder_token_ids"], inputs["encoder_padding_mask"]),
        target,
        0,
        start_token_id=2,
    )
    np.testing.assert_allclose(logits, full, atol=1e-5, rtol=0)


@pytest.mark.skipif(BACKEND != "torch", reason="the PyTorch step runs on torch only")
@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
def test_torch_step_equals_the_keras_ops_step(gpt2_model, transformer_model, dtype, monkeypatch):
    """torch_primitives (what torch runs) against primitives (keras.ops) on the same
    weights: GPT-2 (pre-norm, tanh GELU) and the Transformer (post-norm, ReLU, cross
    attention); under mixed_bfloat16, both upcast attention and layer norm to float32.
    Also the step traced by `backend.hot_step` (here after one eager step)."""
    torch = pytest.importorskip("torch")
    monkeypatch.setattr(generate_module.backend_lib, "TRACE_AFTER_STEPS", 1)
    torch_primitives = importlib.import_module("keras_transformers.generation.torch_primitives")
    models = {"gpt2": gpt2_model, "transformer": transformer_model}
    if dtype != "float32":
        models = {
            "gpt2": gpt2(
                vocabulary_size=VOCABULARY, num_layers=2, num_heads=2, hidden_dim=16,
                intermediate_dim=32, max_sequence_length=MAX_LENGTH, dtype=dtype,
            ),
            "transformer": transformer(
                encoder_vocabulary_size=30, decoder_vocabulary_size=VOCABULARY, num_layers=2,
                num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=MAX_LENGTH,
                dtype=dtype,
            ),
        }
        models["gpt2"].set_weights(gpt2_model.get_weights())
        models["transformer"].set_weights(transformer_model.get_weights())
    target = np.random.default_rng(4).integers(1, VOCABULARY, (3, 1 + NEW_TOKENS)).astype("int32")
    sources = source_inputs()
    cases = {
        "gpt2": (generate_module._GPT2, (target[:, :3], np.ones_like(target[:, :3])), 2, None),
        "transformer": (
            generate_module._Transformer,
            (sources["encoder_token_ids"], sources["encoder_padding_mask"]),
            0,
            2,
        ),
    }
    for name, (adapter_class, inputs, first, start_token_id) in cases.items():
        logits = []
        # torch with plain weights, and with weights laid out for 3 rows (the batch:
        # fused query/key/value and, in float32 on a CPU, oneDNN's blocked kernels) or
        # for 1 row (kernels split by columns across the threads; any rows still work).
        # Each torch variant also traced (`traces`); oneDNN's packed weights stay eager.
        variants = [(generate_module.primitives_lib, None, None)] + [
            (torch_primitives, rows, traces)
            for rows in (None, len(target), 1)
            for traces in (None, {})
        ]
        for math, rows, traces in variants:
            adapter = adapter_class(models[name])
            adapter.math = math
            logits.append(cached_logits(
                models[name], adapter, inputs, target, first, start_token_id, rows, traces
            ))
            if traces is not None:
                (traced,) = traces.values()  # one shape: one entry
                # (The float32 output kernel is packed under mixed_bfloat16 too.)
                packed = rows == len(target) and torch_primitives._onednn()
                assert traced is False if packed else isinstance(traced, torch.jit.ScriptFunction)
        assert adapter_class(models[name]).math is torch_primitives
        with generate_module.backend_lib.no_grad():
            qkv = adapter_class(models[name]).weights(len(target))["blocks"][0]["self_qkv"]
        assert qkv.sizes == (16, 16, 16)  # query, key and value in one matmul
        if dtype == "float32" and torch_primitives._onednn():
            assert qkv.packed is not None  # the oneDNN path above did run
        if dtype == "float32" and torch.get_num_threads() > 1:
            with generate_module.backend_lib.no_grad():
                one_row = adapter_class(models[name]).weights(1)["blocks"][0]["self_qkv"]
            threads = torch.get_num_threads()
            assert tuple(one_row.split[0].shape) == (threads, 16, 48 // threads)
        # bfloat16: a few units in the last place (0.008 near 1; logits here are < 2).
        atol = 1e-5 if dtype == "float32" else 0.03
        for torch_logits in logits[1:]:
            np.testing.assert_allclose(torch_logits, logits[0], atol=atol, rtol=0)


@pytest.mark.skipif(BACKEND != "torch", reason="only PyTorch keeps the step's weights")
@pytest.mark.parametrize("traced", [False, True])
def test_kept_weights_follow_assignments_and_training(traced, monkeypatch):
    """On torch `generate` keeps the weights' layouts between calls, and a traced step
    holds them as constants: a call after `set_weights`, or after `fit` (the optimizer
    writes in place), must generate what a fresh model with those weights generates."""
    monkeypatch.setattr(generate_module.backend_lib, "TRACE_AFTER_STEPS", 1 if traced else 10**9)

    def tiny(seed):
        model = gpt2(
            vocabulary_size=VOCABULARY, num_layers=1, num_heads=2, hidden_dim=16,
            intermediate_dim=32, max_sequence_length=MAX_LENGTH,
        )
        return spread_weights(model, seed)

    model, other = tiny(5), tiny(6)
    adapter = generate_module._adapter(model)
    with generate_module.backend_lib.no_grad():
        first = generate_module._step_weights(adapter, 1)[0]
        assert generate_module._step_weights(adapter, 1)[0] is first  # kept, not rebuilt
    for rows in (1, 3):  # the two layouts: split by columns and oneDNN's
        prompts = PROMPTS[:rows]
        generate(model, prompt_inputs(prompts), NEW_TOKENS)  # keeps this model's weights
        if traced and rows == 1:  # the step that made these tokens was traced
            kept = getattr(model, generate_module._COMPILED_ATTRIBUTE)["adapter"].kept_weights
            assert any(callable(step) for step in kept[3].values())
        model.set_weights(other.get_weights())
        np.testing.assert_array_equal(
            generate(model, prompt_inputs(prompts), NEW_TOKENS)["token_ids"],
            generate(other, prompt_inputs(prompts), NEW_TOKENS)["token_ids"],
        )
        model.compile(optimizer=keras.optimizers.SGD(1.0), loss="sparse_categorical_crossentropy")
        token_ids = prompt_inputs()["token_ids"]
        model.fit(prompt_inputs(), np.roll(token_ids, -1, axis=1), epochs=1, verbose=0)
        trained = tiny(7)
        trained.set_weights(model.get_weights())
        np.testing.assert_array_equal(
            generate(model, prompt_inputs(prompts), NEW_TOKENS)["token_ids"],
            generate(trained, prompt_inputs(prompts), NEW_TOKENS)["token_ids"],
        )
        model.set_weights(tiny(5).get_weights())


@pytest.mark.skipif(BACKEND != "torch", reason="only the eager PyTorch step is traced")
@pytest.mark.parametrize(
    "settings",
    [dict(sampler="top_p", top_p=0.9, seed=1), dict(sampler="top_k", top_k=5, seed=2)],
    ids=["top_p", "top_k"],
)
def test_traced_torch_generate_equals_eager(gpt2_model, transformer_model, settings, monkeypatch):
    """`generate` with the step traced after its first step (`backend.hot_step`) gives
    the eager step's tokens, for one row (traced) and three (oneDNN's packed weights on
    a CPU: stays eager), on both models; never traced with jit_compile=False.
    Sampled, not greedy: these small models' greedy continuations repeat one token,
    which a wrong step could still produce (the logits themselves:
    test_torch_step_equals_the_keras_ops_step)."""
    cases = [(gpt2_model, prompt_inputs()), (transformer_model, source_inputs())]

    def traces(model):
        compiled = getattr(model, generate_module._COMPILED_ATTRIBUTE, {})
        kept = getattr(compiled.get("adapter"), "kept_weights", None)
        return {} if kept is None else kept[3]

    def run(model, inputs, trace_after):
        monkeypatch.setattr(generate_module.backend_lib, "TRACE_AFTER_STEPS", trace_after)
        traces(model).clear()  # no step traced, or counted, by an earlier call
        extra = {"start_token_id": 1} if "encoder_token_ids" in inputs else {}
        return generate(model, inputs, NEW_TOKENS, **settings, **extra)["token_ids"]

    for model, inputs in cases:
        for rows in (1, 3):
            some = {name: value[:rows] for name, value in inputs.items()}
            eager = run(model, some, 10**9)
            assert not any(callable(step) for step in traces(model).values())
            traced = run(model, some, 1)
            np.testing.assert_array_equal(traced, eager)
            if rows == 1:
                assert any(callable(step) for step in traces(model).values())
    # jit_compile=False: eager, never traced.
    traces(gpt2_model).clear()
    generate(gpt2_model, prompt_inputs(PROMPTS[:1]), NEW_TOKENS, jit_compile=False, **settings)
    assert not any(callable(step) for step in traces(gpt2_model).values())


def test_top_k_one_equals_greedy(gpt2_model):
    # (top_p tiny == greedy is checked on the sampler, in test_samplers.py.)
    greedy = generate(gpt2_model, prompt_inputs(), NEW_TOKENS)
    sampled = generate(gpt2_model, prompt_inputs(), NEW_TOKENS, sampler="top_k", top_k=1, seed=3)
    np.testing.assert_array_equal(sampled["token_ids"], greedy["token_ids"])


def test_seed_makes_sampling_reproducible(gpt2_model):
    def sample(seed):
        outputs = generate(gpt2_model, prompt_inputs(), NEW_TOKENS, sampler="random", seed=seed)
        return outputs["token_ids"]

    first = sample(1)
    np.testing.assert_array_equal(first, sample(1))
    assert not np.array_equal(first, sample(2))
    np.testing.assert_array_equal(first[:, :2], prompt_inputs()["token_ids"][:, :2])


def test_stop_tokens_end_rows_and_pad_after(gpt2_model):
    free = generate(gpt2_model, prompt_inputs(), NEW_TOKENS)["token_ids"]
    lengths = [len(prompt) for prompt in PROMPTS]
    stop = int(free[0, lengths[0] + 1])  # row 0's second new token
    outputs = generate(gpt2_model, prompt_inputs(), NEW_TOKENS, stop_token_ids=[stop])
    for row, length in enumerate(lengths):
        generated = list(free[row, length:])
        end = length + generated.index(stop) + 1 if stop in generated else free.shape[1]
        np.testing.assert_array_equal(outputs["token_ids"][row, :end], free[row, :end])
        np.testing.assert_array_equal(outputs["token_ids"][row, end:], 0)
        np.testing.assert_array_equal(outputs["padding_mask"][row], np.arange(free.shape[1]) < end)
    assert not outputs["padding_mask"][0].all()
    if BACKEND != "jax":  # eager JAX compiles every op: slow, and nothing new to test
        eager = generate(
            gpt2_model, prompt_inputs(), NEW_TOKENS, stop_token_ids=[stop], jit_compile=False
        )
        for name in ("token_ids", "padding_mask"):
            np.testing.assert_array_equal(eager[name], outputs[name])


@pytest.mark.slow
@pytest.mark.skipif(BACKEND != "torch", reason="torch.compile is a PyTorch matter")
def test_torch_compiled_step_equals_eager(gpt2_model):
    eager = generate(gpt2_model, prompt_inputs(), NEW_TOKENS)
    compiled = generate(gpt2_model, prompt_inputs(), NEW_TOKENS, jit_compile=True)
    np.testing.assert_array_equal(compiled["token_ids"], eager["token_ids"])


def test_compiled_functions_are_reused(gpt2_model, monkeypatch):
    first = generate(gpt2_model, prompt_inputs(), NEW_TOKENS)

    def no_compilation(*args, **kwargs):
        raise AssertionError("compiled again for the same shapes and settings")

    monkeypatch.setattr(generate_module.backend_lib, "compile_function", no_compilation)
    # Same shapes and settings, other prompts: the compiled function is reused.
    other = prompt_inputs([[1, 2, 3], [4], [5, 6, 7, 8, 9]])
    np.testing.assert_array_equal(
        generate(gpt2_model, other, NEW_TOKENS)["token_ids"],
        uncached_gpt2_greedy(gpt2_model, [[1, 2, 3], [4], [5, 6, 7, 8, 9]], 5 + NEW_TOKENS),
    )
    again = generate(gpt2_model, prompt_inputs(), NEW_TOKENS)
    np.testing.assert_array_equal(again["token_ids"], first["token_ids"])


def test_beam_width_one_equals_greedy(gpt2_model):
    path = os.path.join(os.path.dirname(generate_module.__file__), "beam_search.py")
    if not os.path.exists(path):
        pytest.skip("keras_transformers/generation/beam_search.py is not written yet")
    greedy = generate(gpt2_model, prompt_inputs(), NEW_TOKENS)
    beam = generate(gpt2_model, prompt_inputs(), NEW_TOKENS, sampler="beam", num_beams=1)
    np.testing.assert_array_equal(beam["token_ids"], greedy["token_ids"])


ONES = np.ones((1, 3), "int32")
BAD_ARGUMENTS = [
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(max_new_tokens=2.0), "max_new_tokens"),
    (dict(max_new_tokens=MAX_LENGTH - 4), "max_sequence_length=32"),
    (dict(sampler="nucleus"), "sampler"),
    (dict(sampler="top_p", top_p=0.0), "top_p"),
    (dict(sampler="top_p", top_p=1.5), "top_p"),
    (dict(sampler="top_p"), "top_p"),
    (dict(sampler="top_k", top_k=0), "top_k"),
    (dict(sampler="top_k"), "top_k"),
    (dict(top_k=5), "top_k"),
    (dict(sampler="random", temperature=0.0), "temperature"),
    (dict(sampler="random", temperature=-1.0), "temperature"),
    (dict(sampler="beam"), "num_beams"),
    (dict(sampler="beam", num_beams=0), "num_beams"),
    (dict(stop_token_ids=[VOCABULARY]), "stop_token_ids"),
    (dict(stop_token_ids=3), "stop_token_ids"),
    (dict(seed=1.5), "seed"),
    (dict(jit_compile="xla"), "jit_compile"),
    (dict(start_token_id=1), "start_token_id"),
    (dict(inputs={"token_ids": np.zeros((1, 3), "int32")}), "inputs"),
    (dict(inputs=dict(token_ids=np.ones((1, 3), "float32"), padding_mask=ONES)), "token_ids"),
    (dict(inputs=dict(token_ids=ONES, padding_mask=np.array([[0, 1, 1]]))), "padding_mask"),
    (dict(inputs=dict(token_ids=ONES, padding_mask=np.ones((1, 4), "int32"))), "padding_mask"),
    (dict(inputs=dict(token_ids=ONES * VOCABULARY, padding_mask=ONES)), "token_ids"),
    (dict(inputs=[np.ones((1, 3), "int32")]), "inputs"),
]


@pytest.mark.parametrize(
    "arguments,name", BAD_ARGUMENTS, ids=[str(i) for i in range(len(BAD_ARGUMENTS))]
)
def test_bad_arguments_raise_before_any_work(gpt2_model, arguments, name, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("compiled before checking the arguments")

    monkeypatch.setattr(generate_module.backend_lib, "compile_function", no_work)
    monkeypatch.setattr(generate_module.backend_lib, "compile_step", no_work)
    arguments = dict(dict(inputs=prompt_inputs(), max_new_tokens=NEW_TOKENS), **arguments)
    with pytest.raises(ValueError, match=f"{name}"):
        generate(gpt2_model, **arguments)


def test_transformer_bad_arguments(transformer_model):
    with pytest.raises(ValueError, match="start_token_id"):
        generate(transformer_model, source_inputs(), NEW_TOKENS)
    with pytest.raises(ValueError, match="start_token_id"):
        generate(transformer_model, source_inputs(), NEW_TOKENS, start_token_id=VOCABULARY)
    with pytest.raises(ValueError, match="max_sequence_length=4"):
        generate(transformer_model, source_inputs(), 4, start_token_id=2, max_sequence_length=4)
    with pytest.raises(ValueError, match="inputs"):
        generate(transformer_model, prompt_inputs(), NEW_TOKENS, start_token_id=2)


def test_other_models_are_refused():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="`model` must be a GPT-2 or encoder-decoder Transformer"):
        generate(model, prompt_inputs(), NEW_TOKENS)


@pytest.mark.slow
def test_gpt2_greedy_matches_transformers_generate(tmp_path):
    """Against Hugging Face's own cached greedy search, on a converted random GPT-2."""
    import torch
    import transformers

    from keras_transformers.convert import from_huggingface

    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=VOCABULARY, n_positions=MAX_LENGTH, n_embd=32, n_head=4, n_layer=2,
        initializer_range=0.3, bos_token_id=None, eos_token_id=None,  # no stop token
    )
    hf_model = transformers.GPT2LMHeadModel(config).eval()
    hf_model.save_pretrained(str(tmp_path))
    model = from_huggingface(str(tmp_path))
    token_ids = np.random.default_rng(4).integers(1, VOCABULARY, (3, 5)).astype("int32")
    with torch.no_grad():
        expected = hf_model.generate(
            torch.tensor(token_ids, dtype=torch.long),
            attention_mask=torch.ones(token_ids.shape, dtype=torch.long),
            max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=0,
        ).numpy()
    inputs = {"token_ids": token_ids, "padding_mask": np.ones_like(token_ids)}
    outputs = generate(model, inputs, NEW_TOKENS)
    np.testing.assert_array_equal(outputs["token_ids"], expected)
