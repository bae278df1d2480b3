"""`generate`: KV-cached decoding for the GPT-2 and encoder-decoder Transformer builders.

One token per step attends over a preallocated key/value cache (no prefix is
recomputed), computed with the model's own weights; the whole decoding loop is
compiled once per model, shapes and sampler settings (see `backend.py`). The model
adapters (`_GPT2`, `_Transformer`) provide the prefill and the step of the
`next_fn` interface documented in `samplers.py`, written once against a namespace
of small functions (`_primitives()`): `keras.ops` on JAX and TensorFlow
(`primitives.py`), plain PyTorch ops and a Python token loop on torch
(`torch_primitives.py`), where Keras' per-op overhead would dominate a step.
"""

import importlib

import keras
import numpy as np
from keras import ops

from keras_transformers.generation import backend as backend_lib
from keras_transformers.generation import primitives as primitives_lib
from keras_transformers.generation import samplers as samplers_lib
from keras_transformers.models import transformer as transformer_lib
from keras_transformers.models.model import layer_names, numbered_blocks

SAMPLERS = samplers_lib.SAMPLERS + ("beam",)

# The compiled functions live on the model (a plain attribute, untracked by Keras),
# keyed by shapes and settings, so they go when the model goes.
_COMPILED_ATTRIBUTE = "_keras_transformers_generate_functions"


# The decoding step runs on the layers' weights rather than through each layer's
# __call__: on PyTorch, which runs eagerly, Keras' per-call overhead is most of a
# step's time (about 20x the arithmetic of a small model), and so is keras.ops' per-op
# overhead (about 20 us an op, 300 ops a token): there the step's arithmetic is plain
# PyTorch (torch_primitives.py). The weights are gathered once per `generate` call
# (inside the compiled function on JAX and TensorFlow), the tied output embedding
# transposed once. Tests check the step against the model's full forward pass.


def _weights(dense, dtype, inputs=1):
    """(kernel, bias or None) of a Dense/EinsumDense layer, cast to `dtype`, as a matrix:
    the first `inputs` kernel axes are contracted (one matmul, no per-step layout
    copies of an einsum operand on PyTorch)."""
    kernel = ops.cast(dense.kernel, dtype)
    shape = tuple(kernel.shape)
    kernel = ops.reshape(kernel, (int(np.prod(shape[:inputs])), int(np.prod(shape[inputs:]))))
    bias = None if dense.bias is None else ops.reshape(ops.cast(dense.bias, dtype), (-1,))
    return kernel, bias


def _norm_weights(layer):
    return ops.cast(layer.gamma, layer.compute_dtype), ops.cast(layer.beta, layer.compute_dtype)


def _block_weights(block, math, rows=None):
    """The weights of a `TransformerDecoderBlock`, laid out for `_block_step` by
    `math.dense` (`rows`: see `torch_primitives.dense`)."""
    dtype = block.compute_dtype
    attention = block.self_attention

    def dense(*layers, inputs=1):
        return math.dense(*(_weights(layer, dtype, inputs) for layer in layers), rows=rows)

    weights = {
        # One input, three projections: `math.dense` may fuse them (torch and JAX do).
        "self_qkv": dense(attention.query_dense, attention.key_dense, attention.value_dense),
        "self_output": dense(attention.output_dense, inputs=2),  # (N * H, D)
        "self_norm": _norm_weights(block.self_attention_layer_norm),
        "feedforward_in": dense(block.feedforward.intermediate_dense),
        "feedforward_out": dense(block.feedforward.output_dense),
        "feedforward_norm": _norm_weights(block.feedforward_layer_norm),
    }
    if block.use_cross_attention:
        weights["cross_query"] = dense(block.cross_attention.query_dense)
        weights["cross_output"] = dense(block.cross_attention.output_dense, inputs=2)
        weights["cross_norm"] = _norm_weights(block.cross_attention_layer_norm)
    return weights


def _primitives():
    """The namespace of a step's arithmetic: plain PyTorch on the torch backend (see
    `torch_primitives.py`), `keras.ops` elsewhere (`primitives.py`)."""
    if keras.backend.backend() == "torch":
        return importlib.import_module("keras_transformers.generation.torch_primitives")
    return primitives_lib


def _block_step(math, block, weights, x, cache, index, positions, mask, cross=None):
    """One `TransformerDecoderBlock` on x (B, T, D) at `positions` index .. index + T - 1.

    `math` is `_primitives()`; `mask` (T, L) bool the causal mask over the cache.
    `cache`, (keys, values) each (B, N, L, H), receives the new keys and values;
    `cross` is None or ((keys, values) each (B, N, S, H), encoder_padding_mask (B, S)
    bool). Returns (x, cache).
    """
    epsilon, key_dim = block.layer_norm_epsilon, block.self_attention.key_dim
    heads = block.self_attention.num_heads

    def residual(x, norm, branch):
        # The block's one switch between pre-norm (GPT-2) and post-norm (the paper).
        if block.normalize_first:
            return x + branch(math.layer_norm(x, weights[norm], epsilon))
        return math.layer_norm(x + branch(x), weights[norm], epsilon)

    def self_attention(h):
        nonlocal cache
        query, keys, values = math.project_heads(h, weights["self_qkv"], heads)  # (B, T, N, H)
        cache = tuple(
            math.write_heads(layer_cache, new, index, positions)
            for layer_cache, new in zip(cache, (keys, values))
        )  # (B, N, L, H) each
        return math.attend(query, cache[0], cache[1], mask, key_dim, weights["self_output"])

    def cross_attention(h):
        (keys, values), encoder_mask = cross
        query = math.project(h, weights["cross_query"], heads)
        output_weights = weights["cross_output"]
        return math.cross_attend(query, keys, values, encoder_mask, key_dim, output_weights)

    def feedforward(h):
        h = math.activation(math.project(h, weights["feedforward_in"]), block.activation)
        return math.project(h, weights["feedforward_out"])

    x = residual(x, "self_norm", self_attention)
    if cross is not None:
        x = residual(x, "cross_norm", cross_attention)
    x = residual(x, "feedforward_norm", feedforward)
    return x, cache


def _empty_cache(block, batch_size, length):
    """(keys, values), zeros (B, num_heads, length, key_dim) each: separate tensors,
    heads before positions, so that each head's keys are contiguous for the attention
    matmuls (a slice of one stacked cache is copied by PyTorch at every step). Sizes
    may be tensors."""
    attention = block.self_attention
    shape = (batch_size, attention.num_heads, length, attention.key_dim)
    return (ops.zeros(shape, attention.compute_dtype), ops.zeros(shape, attention.compute_dtype))


def _output_weights(embedding, math, rows=None):
    """The (D, V) output kernel of a tied ReversibleEmbedding, transposed once, as
    `math.dense` lays it out (on PyTorch a row-major copy, not a view), float32."""
    dtype = embedding.reverse_dtype or embedding.compute_dtype
    if embedding.tie_weights:
        kernel = ops.cast(ops.transpose(embedding.embeddings), dtype)
    else:
        kernel = ops.cast(embedding.reverse_embeddings, dtype)
    return math.dense((kernel, None), rows=rows)


class _GPT2:
    """Runs a `models.gpt2` model with a cache: prefill, then one token at a time."""

    kind = "gpt2"
    input_names = ("token_ids", "padding_mask")

    def __init__(self, model):
        self.token_embedding = model.get_layer("token_embedding")
        self.position_embedding = model.get_layer("position_embedding")
        self.final_layer_norm = model.get_layer("final_layer_norm")
        self.blocks = numbered_blocks(model, "decoder")
        self.vocabulary_size = self.token_embedding.input_dim
        self.max_sequence_length = self.position_embedding.max_sequence_length
        self.math = _primitives()
        self.variables = model.variables

    def weights(self, rows=None):
        """The weights a step reads; `rows` (batch x beams, or None): see `math.dense`."""
        dtype = self.token_embedding.compute_dtype
        return {
            "token_embedding": ops.cast(self.token_embedding.embeddings, dtype),
            "position_embedding": ops.cast(self.position_embedding.embeddings, dtype),
            "blocks": [_block_weights(block, self.math, rows) for block in self.blocks],
            "final_norm": _norm_weights(self.final_layer_norm),
            "output": _output_weights(self.token_embedding, self.math, rows),
        }

    def _run(self, weights, token_ids, cache, index, logits=True):
        """Logits (B, V) of the first of tokens (B, T) at positions index.., and the new cache."""
        math = self.math
        positions = math.positions(token_ids, index)  # (T,)
        mask = math.causal_mask(positions, ops.shape(cache[0][0])[2])  # (T, L)
        x = math.take(weights["token_embedding"], token_ids)  # (B, T, D)
        x = x + math.take(weights["position_embedding"], positions)
        cache = list(cache)
        for i, block in enumerate(self.blocks):
            x, cache[i] = _block_step(
                math, block, weights["blocks"][i], x, cache[i], index, positions, mask
            )
        if not logits:
            return None, cache
        x = math.layer_norm(x, weights["final_norm"], self.final_layer_norm.epsilon)
        return math.next_logits(x, weights["output"]), cache

    def start(self, weights, token_ids, padding_mask, max_new_tokens, start_token_id=None):
        """Buffers of the final length and the cache filled with the prompts (prefill)."""
        batch_size, prompt_length = ops.shape(token_ids)[0], ops.shape(token_ids)[1]
        padding_mask = ops.cast(padding_mask, "bool")
        token_ids = ops.where(padding_mask, ops.cast(token_ids, "int32"), 0)
        length = prompt_length + max_new_tokens
        cache = [_empty_cache(block, batch_size, length) for block in self.blocks]
        # Causal attention: a prompt's keys and values do not depend on what follows
        # it, so the padded buffer runs in one pass; positions past a row's prompt
        # hold junk until the loop overwrites them, before any query can see them.
        _, cache = self._run(weights, token_ids, cache, 0, logits=False)
        new_positions = ops.zeros((batch_size, max_new_tokens), "int32")
        token_ids = ops.concatenate([token_ids, new_positions], axis=1)  # (B, L)
        padding_mask = ops.concatenate([padding_mask, ops.cast(new_positions, "bool")], axis=1)
        start_index = ops.min(ops.sum(ops.cast(padding_mask, "int32"), axis=1))
        return token_ids, padding_mask, cache, start_index

    def step(self, weights, token_ids, cache, index):
        """`next_fn` with the weights as an argument: logits (B, V) at `index`."""
        return self._run(weights, token_ids, cache, index)


class _Transformer:
    """Runs a `models.transformer` model: encoder once, then the cached decoder."""

    kind = "transformer"
    input_names = ("encoder_token_ids", "encoder_padding_mask")

    def __init__(self, model):
        self.model = model
        names = layer_names(model)
        shared = "token_embedding" in names
        self.token_embedding = model.get_layer(
            "token_embedding" if shared else "decoder_token_embedding"
        )
        encoder_embedding = model.get_layer(
            "token_embedding" if shared else "encoder_token_embedding"
        )
        self.position_encoding = model.get_layer("decoder_position_encoding")
        self.output_projection = (
            model.get_layer("output_projection") if "output_projection" in names else None
        )
        self.blocks = numbered_blocks(model, "decoder")
        self.vocabulary_size = self.token_embedding.input_dim
        self.encoder_vocabulary_size = encoder_embedding.input_dim
        # The sinusoidal encoding has no table: only an explicit limit applies.
        self.max_sequence_length = None
        self.math = _primitives()
        self.variables = model.variables

    def weights(self, rows=None):
        """The weights a step reads; `rows` (batch x beams, or None): see `math.dense`."""
        dtype = self.token_embedding.compute_dtype
        if self.output_projection is None:
            output = _output_weights(self.token_embedding, self.math, rows)
        else:
            projection = self.output_projection
            output = self.math.dense(_weights(projection, projection.compute_dtype), rows=rows)
        return {
            "token_embedding": ops.cast(self.token_embedding.embeddings, dtype),
            "blocks": [_block_weights(block, self.math, rows) for block in self.blocks],
            "output": output,
        }

    def start(self, weights, token_ids, padding_mask, max_new_tokens, start_token_id=None):
        """The encoder output once, the cross-attention keys/values once, empty caches.

        The cache nest is (per block (keys, values) of the self-attention, per
        block (keys, values) of the cross-attention, sinusoidal encodings (B, L, D)
        of the decoder positions, encoder padding mask): all batch-major, so a beam
        search can repeat it per beam.
        """
        padding_mask = ops.cast(padding_mask, "bool")
        encoder_output = transformer_lib.encode(self.model, token_ids, padding_mask)
        batch_size = ops.shape(token_ids)[0]
        length = 1 + max_new_tokens
        self_caches = [_empty_cache(block, batch_size, length) for block in self.blocks]
        cross_caches = []
        for block in self.blocks:
            # (B, 2, S, N, H) -> keys and values (B, N, S, H), the layout of `_block_step`.
            keys_values = ops.transpose(
                block.compute_cross_attention_cache(encoder_output), (1, 0, 3, 2, 4)
            )
            keys, values = keys_values[0], keys_values[1]
            cross_caches.append((backend_lib.contiguous(keys), backend_lib.contiguous(values)))
        hidden_dim = self.token_embedding.output_dim
        dtype = self.token_embedding.compute_dtype
        encodings = self.position_encoding(ops.zeros((batch_size, length, hidden_dim), dtype))
        starts = ops.full((batch_size, 1), start_token_id, "int32")
        new_positions = ops.zeros((batch_size, max_new_tokens), "int32")
        decoder_ids = ops.concatenate([starts, new_positions], axis=1)  # (B, L)
        decoder_mask = ops.not_equal(
            ops.concatenate([ops.ones_like(starts), new_positions], axis=1), 0
        )
        cache = (self_caches, cross_caches, encodings, padding_mask)
        return decoder_ids, decoder_mask, cache, ops.convert_to_tensor(1, "int32")

    def step(self, weights, token_ids, cache, index):
        """`next_fn` with the weights as an argument: logits (B, V) at `index`."""
        self_caches, cross_caches, encodings, encoder_mask = cache
        math = self.math
        scale = float(np.sqrt(self.token_embedding.output_dim))  # section 3.4
        positions = math.positions(token_ids, index)  # (T,)
        mask = math.causal_mask(positions, ops.shape(encodings)[1])  # (T, L)
        x = math.take(weights["token_embedding"], token_ids) * scale  # (B, T, D)
        x = x + math.take(encodings, positions, axis=1)
        self_caches = list(self_caches)
        for i, block in enumerate(self.blocks):
            x, self_caches[i] = _block_step(
                math, block, weights["blocks"][i], x, self_caches[i], index, positions, mask,
                cross=(cross_caches[i], encoder_mask),
            )
        cache = (self_caches, cross_caches, encodings, encoder_mask)
        return math.next_logits(x, weights["output"]), cache


def _adapter(model):
    names = layer_names(model)
    if {"token_embedding", "position_embedding", "final_layer_norm", "decoder_block_0"} <= names:
        return _GPT2(model)
    if {"encoder_block_0", "decoder_block_0", "encoder_position_encoding"} <= names:
        return _Transformer(model)
    raise ValueError(
        "`model` must be a GPT-2 or encoder-decoder Transformer built by "
        "keras_transformers.models (gpt2.gpt2 or transformer.transformer). "
        f"Received: model={getattr(model, 'name', model)!r}"
    )


def _is_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_number(value):
    return _is_int(value) or isinstance(value, (float, np.floating))


def _require(ok, name, value, requirement):
    if not ok:
        raise ValueError(f"`{name}` must be {requirement}. Received: {name}={value!r}")


def _check_arguments(
    adapter, sampler, temperature, top_k, top_p, num_beams, length_penalty, stop_token_ids,
    start_token_id,
):
    """The checks `generate` and `generate_tensors` share; returns the stop ids as a tuple."""
    _require(sampler in SAMPLERS, "sampler", sampler, f"one of {list(SAMPLERS)}")
    _require(_is_number(temperature) and temperature > 0, "temperature", temperature, "> 0")
    if top_k is not None:
        _require(_is_int(top_k) and top_k >= 1, "top_k", top_k, "an int >= 1")
    if top_p is not None:
        _require(_is_number(top_p) and 0 < top_p <= 1, "top_p", top_p, "a number in (0, 1]")
    if num_beams is not None:
        _require(_is_int(num_beams) and num_beams >= 1, "num_beams", num_beams, "an int >= 1")
    for name, value, owner in (
        ("top_k", top_k, "top_k"), ("top_p", top_p, "top_p"), ("num_beams", num_beams, "beam")
    ):
        _require(sampler != owner or value is not None, name, value, f"set for sampler={owner!r}")
        _require(sampler == owner or value is None, name, value, f"None unless sampler={owner!r}")
    _require(_is_number(length_penalty), "length_penalty", length_penalty, "a number")
    vocabulary_size = adapter.vocabulary_size
    if stop_token_ids is not None:
        _require(
            isinstance(stop_token_ids, (list, tuple))
            and all(_is_int(token) and 0 <= token < vocabulary_size for token in stop_token_ids),
            "stop_token_ids",
            stop_token_ids,
            f"a list of token ids in [0, {vocabulary_size})",
        )
        stop_token_ids = tuple(int(token) for token in stop_token_ids)
    if adapter.kind == "gpt2":
        _require(start_token_id is None, "start_token_id", start_token_id, "None for GPT-2")
    else:
        _require(
            _is_int(start_token_id) and 0 <= start_token_id < vocabulary_size,
            "start_token_id",
            start_token_id,
            f"a token id in [0, {vocabulary_size}) for a Transformer",
        )
    return stop_token_ids


def _host_inputs(adapter, inputs):
    """The prompt ids and mask as numpy int32 / bool arrays, after checking them."""
    expected = list(adapter.input_names)
    if not isinstance(inputs, dict) or sorted(inputs) != sorted(expected):
        received = sorted(inputs) if isinstance(inputs, dict) else type(inputs).__name__
        raise ValueError(
            f"`inputs` must be a dict with keys {expected} for a {adapter.kind} model. "
            f"Received: inputs={received}"
        )
    ids_name, mask_name = expected
    arrays = {}
    for name in expected:
        value = inputs[name]
        if not hasattr(value, "shape") or not hasattr(value, "dtype"):
            raise ValueError(
                f"`{name}` must be an array or tensor. Received: {name} of type "
                f"{type(value).__name__}"
            )
        array = np.asarray(ops.convert_to_numpy(value))
        allowed = "iu" if name == ids_name else "iub"
        if array.dtype.kind not in allowed:
            raise ValueError(
                f"`{name}` must be an integer{'' if name == ids_name else ' or boolean'} tensor. "
                f"Received: {name} with dtype={array.dtype}"
            )
        if array.ndim != 2 or 0 in array.shape:
            raise ValueError(
                f"`{name}` must have shape (batch, sequence), both > 0. "
                f"Received: {name} with shape={array.shape}"
            )
        arrays[name] = array
    token_ids, mask = arrays[ids_name], arrays[mask_name].astype(bool)
    if token_ids.shape != mask.shape:
        raise ValueError(
            f"`{mask_name}` must have the shape of `{ids_name}`, {token_ids.shape}. "
            f"Received: {mask_name} with shape={mask.shape}"
        )
    vocabulary_size = getattr(adapter, "encoder_vocabulary_size", adapter.vocabulary_size)
    used = token_ids[mask]
    if used.size and (used.min() < 0 or used.max() >= vocabulary_size):
        raise ValueError(
            f"`{ids_name}` must be in [0, {vocabulary_size}). "
            f"Received: {ids_name} with values in [{used.min()}, {used.max()}]"
        )
    if adapter.kind == "gpt2":
        lengths = mask.sum(axis=1)
        right_padded = np.arange(mask.shape[1])[None, :] < lengths[:, None]
        if lengths.min() < 1 or not np.array_equal(mask, right_padded):
            raise ValueError(
                f"`{mask_name}` must mark a prompt of at least one token at the start of every "
                f"row (right padding). Received: {mask_name}={mask.astype(int).tolist()}"
            )
    return token_ids.astype("int32"), mask


def _step_weights(adapter, rows):
    """`adapter.weights(rows)` and a dict for their traced steps (`backend.hot_step`),
    kept on the adapter (one per model) from one `generate` call to the next with the
    same `rows` while no variable of the model changes (PyTorch, uncompiled step):
    there `torch_primitives.dense` copies every weight into its layouts, about 20 ms
    for the benchmark's GPT-2, a sixth of generating 64 tokens, and a traced step
    holds the weights as constants. One set is kept (the copies cost about the
    weights' size in memory). Elsewhere the weights are read inside the compiled
    function and the dict is None."""
    version = None if rows is None else backend_lib.variables_version(adapter.variables)
    if version is None:
        return adapter.weights(rows), None
    kept = getattr(adapter, "kept_weights", None)  # (rows, version, weights, traces, values)
    if kept is not None and kept[:2] == (rows, version):
        return kept[2], kept[3]
    adapter.kept_weights = None  # free the old copies before making new ones
    weights, traces = adapter.weights(rows), {}
    # The version holds value ids: keep those values alive with it, so no id is reused.
    adapter.kept_weights = (rows, version, weights, traces, [v.value for v in adapter.variables])
    return weights, traces


def _decode(
    adapter, token_ids, padding_mask, max_new_tokens, seed, sampler, temperature, top_k, top_p,
    num_beams, length_penalty, stop_token_ids, start_token_id, step=None, trace=True,
):
    """The un-jitted core: prefill then the token loop, in `adapter.math` (keras.ops, or
    PyTorch on torch; see `_primitives`).

    `step` is None (`adapter.step`) or a compiled version of it (torch.compile);
    `trace`: whether an eager PyTorch step may be traced once hot (`backend.hot_step`)."""
    # The rows of a step, a hint for `math.dense`; None for a compiled step, which
    # reads plain weights (see `torch_primitives.dense`), or an unknown batch size.
    rows, batch_size = None, ops.shape(token_ids)[0]
    if step is None and isinstance(batch_size, int):
        rows = batch_size * (num_beams if sampler == "beam" else 1)
    step = step or adapter.step
    weights, traces = _step_weights(adapter, rows)
    token_ids, padding_mask, cache, start_index = adapter.start(
        weights, token_ids, padding_mask, max_new_tokens, start_token_id
    )

    def next_fn(token_ids, cache, index):
        return step(weights, token_ids, cache, index)

    if trace and traces is not None:  # an eager PyTorch step, traced once hot
        next_fn = backend_lib.hot_step(step, weights, traces)

    if sampler == "beam":
        from keras_transformers.generation.beam_search import beam_search

        return beam_search(
            next_fn,
            token_ids,
            padding_mask,
            cache,
            start_index,
            stop_token_ids=stop_token_ids,
            num_beams=num_beams,
            length_penalty=length_penalty,
        )
    next_token = None  # greedy: each loop's own argmax
    if sampler != "greedy":
        next_token = samplers_lib.get_next_token_fn(
            sampler, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed
        )
    return adapter.math.token_loop(
        next_fn, token_ids, padding_mask, cache, start_index, stop_token_ids, next_token
    )


def generate(
    model,
    inputs,
    max_new_tokens,
    sampler="greedy",
    temperature=1.0,
    top_k=None,
    top_p=None,
    num_beams=None,
    length_penalty=1.0,
    stop_token_ids=None,
    seed=None,
    start_token_id=None,
    max_sequence_length=None,
    jit_compile="auto",
):
    """Continues prompts with a GPT-2 model, or translates with a Transformer, KV-cached.

    GPT-2 (`models.gpt2.gpt2`): `inputs` holds right-padded prompts; the prompts
    run through the model once (prefill) and then one token per step attends over
    the cache, so a step costs the same whatever came before it, up to the
    attention span. Prompts of different lengths share one batch: each row keeps
    its own prompt tokens until its prompt ends, so it continues exactly as it
    would alone (greedy).

    Transformer (`models.transformer.transformer`): `inputs` holds the source; the
    encoder and the cross-attention keys/values run once, then the decoder starts
    from `start_token_id` and emits one token per step.

    Samplers: "greedy" (argmax), "random" (softmax(logits / temperature)),
    "top_k" (sample among the `top_k` most likely), "top_p" (sample in the
    smallest set of probability >= `top_p`), "beam" (`num_beams` beams scored by
    log-probability / length ** `length_penalty`). Sampling is reproducible: the
    same `seed` draws the same random numbers, on every backend.

    Compilation (`jit_compile`): by default ("auto", as Keras) the whole loop is
    compiled on JAX (`jax.jit`) and TensorFlow (XLA), and PyTorch runs it eagerly
    (a Python loop of plain PyTorch ops on the layers' weights; the sampling
    samplers stay keras.ops). On PyTorch, `jit_compile=True` also compiles the
    decoding step with `torch.compile`, after a compilation of tens of seconds (see
    benchmarks/GENERATION_RESULTS.md for what it gains on CPU and GPU: on a CPU the
    eager step, which reads its weights in layouts made for it, is the faster).
    With "auto", the PyTorch step is traced (`torch.jit.trace`, about 40 ms) once
    its shapes have run 64 steps, in one call or several: it then runs without
    Python's per-op cost (see `backend.hot_step`). `jit_compile=False` runs
    eagerly everywhere, untraced. The first call for a model, batch size, prompt
    length, `max_new_tokens` and settings compiles; later calls with the same ones
    reuse it. Every call uses the model's current weights (the eager PyTorch step
    keeps its weight layouts from one call to the next and remakes them when a
    weight has changed).

    Args:
        model: a model built by `models.gpt2.gpt2` or `models.transformer.transformer`.
        inputs: GPT-2: {"token_ids": int (B, P), "padding_mask": int or bool (B, P)},
            each row a prompt of >= 1 token followed by padding. Transformer:
            {"encoder_token_ids": int (B, S), "encoder_padding_mask": (B, S)}.
        max_new_tokens: int >= 1, the number of positions generated after the
            longest prompt (a shorter prompt's row generates from where it ends,
            so it gets more); after the start token for a Transformer.
        sampler: "greedy", "random", "top_k", "top_p" or "beam".
        temperature: float > 0 dividing the logits (sampling samplers).
        top_k: int >= 1, with sampler="top_k" only.
        top_p: float in (0, 1], with sampler="top_p" only.
        num_beams: int >= 1, with sampler="beam" only.
        length_penalty: exponent of the length normalization of beam scores.
        stop_token_ids: token ids that end a row (kept, then padding), or None.
        seed: int making sampling reproducible; None draws one from Keras' global
            random state (`keras.utils.set_random_seed` fixes it).
        start_token_id: Transformer only: the decoder's first token.
        max_sequence_length: the longest output allowed; defaults to GPT-2's
            position table. A Transformer's sinusoidal encoding has no table: pass
            the length it was built for to enforce it.
        jit_compile: "auto", True or False (see Compilation above).

    Returns:
        A dict of numpy arrays: "token_ids" int32 (B, L) and "padding_mask" bool
        (B, L), L = P + max_new_tokens (GPT-2; the prompts, then the new tokens)
        or 1 + max_new_tokens (Transformer; the start token, then the
        translation). The mask is True on prompts and generated tokens, up to and
        including each row's first stop token; after it, token 0 and False.

    Raises:
        ValueError: naming the argument, before any work: an unknown model or
            sampler, bad inputs, max_new_tokens < 1, an output longer than the
            model's maximum, top_k < 1, top_p outside (0, 1], temperature <= 0.

    Example:

    >>> import numpy as np
    >>> from keras_transformers.models.gpt2 import gpt2
    >>> model = gpt2(vocabulary_size=20, num_layers=1, num_heads=2, hidden_dim=8,
    ...              intermediate_dim=16, max_sequence_length=12)
    >>> prompts = {"token_ids": np.array([[5, 6, 7], [8, 9, 0]], "int32"),
    ...            "padding_mask": np.array([[1, 1, 1], [1, 1, 0]], "int32")}
    >>> outputs = generate(model, prompts, max_new_tokens=4)
    >>> outputs["token_ids"].shape, bool(outputs["padding_mask"].all())
    ((2, 7), True)
    >>> outputs["token_ids"][1, :2].tolist()  # each row keeps its prompt
    [8, 9]
    """
    compiled = getattr(model, _COMPILED_ATTRIBUTE, None)
    # One adapter per model, made on the first call (it reads the model's layers).
    adapter = _adapter(model) if compiled is None else compiled["adapter"]
    valid = _is_int(max_new_tokens) and max_new_tokens >= 1
    _require(valid, "max_new_tokens", max_new_tokens, "an int >= 1")
    stop_token_ids = _check_arguments(
        adapter, sampler, temperature, top_k, top_p, num_beams, length_penalty, stop_token_ids,
        start_token_id,
    )
    _require(seed is None or _is_int(seed), "seed", seed, "an int or None")
    _require(
        jit_compile in ("auto", True, False), "jit_compile", jit_compile, '"auto", True or False'
    )
    if max_sequence_length is not None:
        _require(
            _is_int(max_sequence_length) and max_sequence_length >= 1,
            "max_sequence_length",
            max_sequence_length,
            "a positive int",
        )
    token_ids, padding_mask = _host_inputs(adapter, inputs)
    limit = max_sequence_length or adapter.max_sequence_length
    prompt_length = token_ids.shape[1] if adapter.kind == "gpt2" else 1
    if limit is not None and prompt_length + max_new_tokens > limit:
        raise ValueError(
            f"The prompt ({prompt_length} positions) plus `max_new_tokens` must fit in the "
            f"model's max_sequence_length={limit}. Received: max_new_tokens={max_new_tokens}"
        )
    if limit is not None and adapter.kind == "transformer" and token_ids.shape[1] > limit:
        raise ValueError(
            f"`encoder_token_ids` may have at most max_sequence_length={limit} positions. "
            f"Received: encoder_token_ids with shape={token_ids.shape}"
        )
    if seed is None:
        seed = 0
        if sampler in samplers_lib.SAMPLERS and sampler != "greedy":
            seed = int(ops.convert_to_numpy(keras.random.randint((), 0, 2**31 - 1)))

    settings = dict(
        sampler=sampler, temperature=float(temperature), top_k=top_k, top_p=top_p,
        num_beams=num_beams, length_penalty=float(length_penalty),
        stop_token_ids=stop_token_ids, start_token_id=start_token_id,
    )
    key = (token_ids.shape, max_new_tokens, jit_compile, tuple(sorted(settings.items())))
    if compiled is None:
        # The adapter and a compiled step (torch.compile) are reused across calls.
        compiled = {"adapter": adapter, "step": backend_lib.compile_step(adapter.step)}
        object.__setattr__(model, _COMPILED_ATTRIBUTE, compiled)
    if key not in compiled:
        step = compiled["step"] if jit_compile is True else None

        def run(token_ids, padding_mask, seed):
            return _decode(
                adapter, token_ids, padding_mask, max_new_tokens, seed, **settings, step=step,
                trace=jit_compile is not False,
            )

        compiled[key] = backend_lib.compile_function(run, model, jit_compile)
    outputs = compiled[key](
        ops.convert_to_tensor(token_ids, "int32"),
        ops.convert_to_tensor(padding_mask, "bool"),
        ops.convert_to_tensor(seed, "int32"),
    )
    token_ids, padding_mask = (np.asarray(ops.convert_to_numpy(x)) for x in outputs)
    return {"token_ids": token_ids.astype("int32"), "padding_mask": padding_mask.astype(bool)}


def generate_tensors(
    model,
    token_ids,
    padding_mask,
    max_new_tokens,
    sampler="greedy",
    temperature=1.0,
    top_k=None,
    top_p=None,
    num_beams=None,
    length_penalty=1.0,
    stop_token_ids=None,
    seed=None,
    start_token_id=None,
):
    """The traceable core of `generate`: tensors in, tensors out, `keras.ops` only.

    Unlike `generate`, nothing is compiled, converted or checked against the
    values: this is for wrapping in your own compiled function. On TensorFlow, a
    plain `tf.function` over it accepts unknown batch sizes and prompt lengths
    (`tf.TensorSpec([None, None], tf.int32)`) and a scalar int32 tensor
    `max_new_tokens`: an exportable generator. Same samplers and outputs as
    `generate`; the arguments that `generate` checks are still checked here.

    Args:
        model: a model built by `models.gpt2.gpt2` or `models.transformer.transformer`.
        token_ids: int32 (B, P): GPT-2 prompts (right-padded) or Transformer source.
        padding_mask: int or bool (B, P), True/1 on real tokens.
        max_new_tokens: int or int32 scalar tensor.
        sampler, temperature, top_k, top_p, num_beams, length_penalty,
        stop_token_ids, start_token_id: as in `generate`.
        seed: int or int32 scalar tensor; required by the sampling samplers.

    Returns:
        `(token_ids, padding_mask)` tensors, as `generate`'s dict values.

    Example:

    >>> import numpy as np
    >>> from keras_transformers.models.gpt2 import gpt2
    >>> model = gpt2(vocabulary_size=20, num_layers=1, num_heads=2, hidden_dim=8,
    ...              intermediate_dim=16, max_sequence_length=12)
    >>> token_ids, mask = generate_tensors(
    ...     model, np.array([[5, 6]], "int32"), np.array([[1, 1]], "int32"), 3)
    >>> tuple(token_ids.shape), tuple(mask.shape)
    ((1, 5), (1, 5))
    """
    adapter = _adapter(model)
    if not ops.is_tensor(max_new_tokens):
        _require(
            _is_int(max_new_tokens) and max_new_tokens >= 1,
            "max_new_tokens",
            max_new_tokens,
            "an int >= 1 or a scalar tensor",
        )
    stop_token_ids = _check_arguments(
        adapter, sampler, temperature, top_k, top_p, num_beams, length_penalty, stop_token_ids,
        start_token_id,
    )
    sampling = sampler in samplers_lib.SAMPLERS and sampler != "greedy"
    _require(seed is not None or not sampling, "seed", seed, f"given with sampler={sampler!r}")
    with backend_lib.no_grad():
        return _decode(
            adapter,
            ops.convert_to_tensor(token_ids, "int32"),
            ops.convert_to_tensor(padding_mask),
            max_new_tokens,
            0 if seed is None else seed,
            sampler=sampler,
            temperature=float(temperature),
            top_k=top_k,
            top_p=top_p,
            num_beams=num_beams,
            length_penalty=float(length_penalty),
            stop_token_ids=stop_token_ids,
            start_token_id=start_token_id,
        )
