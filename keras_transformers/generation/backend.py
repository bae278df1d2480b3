"""Generation's compilation seam: compiling a decoding function on each backend.

Everything else in `keras_transformers.generation` is `keras.ops`, except the
decoding step's arithmetic and token loop on PyTorch (`torch_primitives.py`, the
same functions as `primitives.py` in plain torch ops). Here a pure
function of tensors that reads a model's variables becomes: on JAX, a `jax.jit` of a
stateless function that takes the model's variables as arguments (weights are
state passed in, not constants baked into the trace); on TensorFlow, a
`tf.function(jit_compile=True)` (XLA); on PyTorch, the same function run eagerly
under `torch.inference_mode()` (no autograd bookkeeping), with the decoding step
traced once hot (`hot_step`), or compiled by `torch.compile` on request
(`compile_step`). The backend modules are imported inside the functions (with
importlib), and only on their own backend.
"""

import contextlib
import importlib
import warnings

import keras


def compile_function(fn, model, jit_compile="auto"):
    """Compiles `fn(*tensors)`, a keras.ops function that reads `model`'s variables.

    Args:
        fn: the function; its arguments and results are (nests of) tensors.
        model: the `keras.Model` whose variables `fn` reads.
        jit_compile: "auto" or True: compiled on JAX and TensorFlow; False: eager.
            PyTorch runs `fn` eagerly either way (see `compile_step`).

    Returns:
        A callable with `fn`'s signature, for backend tensors.

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> layer = keras.layers.Dense(2, kernel_initializer="ones")
    >>> model = keras.Sequential([keras.Input((3,)), layer])
    >>> double = compile_function(lambda x: 2 * layer(x), model)
    >>> np.asarray(ops.convert_to_numpy(double(ops.ones((1, 3))))).tolist()
    [[6.0, 6.0]]
    """
    backend = keras.backend.backend()
    if backend == "torch":
        return _run_torch(fn)
    if jit_compile is False:
        return fn
    if backend == "jax":
        return _compile_jax(fn, model)
    if backend == "tensorflow":
        tf = importlib.import_module("tensorflow")
        return tf.function(fn, jit_compile=True)
    return fn


def compile_step(step):
    """On PyTorch, `torch.compile(step)`; elsewhere `step` (it runs inside `compile_function`).

    `step(weights, token_ids, cache, index)` takes the weights as an argument, so
    one compilation serves every call (new weight tensors are new inputs, not
    guards). Compilation is lazy: it happens on the first call. On a 2-core CPU the
    compiled step ran slower than the eager one (benchmarks/GENERATION_RESULTS.md:
    336 vs 517 tokens a second at batch 1); on an H100 it ran faster (1193 vs 1096).

    Example:

    >>> double = compile_step(lambda weights, x: weights * x)
    >>> callable(double)
    True
    """
    if keras.backend.backend() != "torch":
        return step
    return importlib.import_module("torch").compile(step)


def _compile_jax(fn, model):
    jax = importlib.import_module("jax")
    variables = list(model.variables)

    def stateless_fn(values, *args):
        # Inside the trace, every variable read returns the value passed in.
        with keras.StatelessScope(state_mapping=list(zip(variables, values))):
            return fn(*args)

    jitted = jax.jit(stateless_fn)

    def run(*args):
        return jitted([variable.value for variable in variables], *args)

    return run


def _run_torch(fn):
    torch = importlib.import_module("torch")

    def run(*args):
        with torch.inference_mode():
            return fn(*args)

    return run


def write_positions(cache, index, values, axis):
    """`cache` with `values` written at positions index.. along `axis`.

    On JAX and TensorFlow this is `ops.slice_update` (XLA updates the buffer in
    place inside a loop). On PyTorch, which runs eagerly, a functional update
    would copy the whole cache at every step: the cache is written in place and
    returned, so a caller must not keep using the cache it passed in.

    Args:
        cache: the cache tensor.
        index: int or int32 scalar tensor, the first position written.
        values: a tensor with `cache`'s shape except along `axis`.
        axis: the positions axis.

    Returns:
        The updated cache.

    Example:

    >>> import numpy as np
    >>> from keras import ops
    >>> cache = write_positions(ops.zeros((1, 4)), 2, ops.ones((1, 1)), axis=1)
    >>> np.asarray(ops.convert_to_numpy(cache)).tolist()
    [[0.0, 0.0, 1.0, 0.0]]
    """
    from keras import ops

    if keras.backend.backend() == "torch":
        positions = ops.arange(values.shape[axis], dtype="int64") + ops.cast(index, "int64")
        # A tensor of positions, not int(index): no host sync, and traceable by torch.compile.
        return cache.index_copy_(axis, positions, ops.cast(values, cache.dtype))
    start = [0] * len(cache.shape)
    start[axis] = index
    return ops.slice_update(cache, start, ops.cast(values, cache.dtype))


def contiguous(x):
    """`x` with a row-major layout: on PyTorch a transposed view becomes a copy once,
    rather than being copied by every matmul that reads it; elsewhere `x` as is (XLA
    chooses layouts itself).

    Example:

    >>> from keras import ops
    >>> tuple(contiguous(ops.transpose(ops.ones((2, 3)))).shape)
    (3, 2)
    """
    if keras.backend.backend() == "torch":
        return x.contiguous()
    return x


def variables_version(variables):
    """A key that changes whenever one of `variables` is assigned, on PyTorch: each
    value's identity and in-place version counter (`assign`, `set_weights` and the
    optimizers write in place). None elsewhere, where the weights are read inside
    a compiled function and nothing is kept between calls.

    Example:

    >>> import keras
    >>> variable = keras.Variable(1.0)
    >>> before = variables_version([variable])
    >>> _ = variable.assign(2.0)
    >>> before is None or before != variables_version([variable])
    True
    """
    if keras.backend.backend() != "torch":
        return None
    values = [variable.value for variable in variables]  # a property: read each once
    return tuple((id(value), value._version) for value in values)


# A decoding step's inputs must have run this many eager steps before it is traced
# (`hot_step`): on a 2-core CPU, tracing and the traced graph's first run cost about
# 40 ms, what about 100 steps of the benchmark's GPT-2 save. A single short call never
# pays for it; a long call, or the calls of a server, do.
TRACE_AFTER_STEPS = 64
# Shapes `hot_step` keeps per set of weights (a server's prompt lengths vary): the
# oldest goes first.
MAX_TRACED_SHAPES = 32


def hot_step(step, weights, traces):
    """On PyTorch, `step(weights, token_ids, cache, index) -> (logits, cache)` as a
    `next_fn(token_ids, cache, index)`, traced once it is hot.

    An eager step costs a few microseconds of Python per PyTorch op, and a small
    model's step is a few hundred small ops: on the benchmark's GPT-2 (batch 1, a 2-core
    CPU) about a third of its time. Once the inputs' shapes have run
    `TRACE_AFTER_STEPS` eager steps, counted in `traces`, the step becomes a
    `torch.jit.trace` of itself with `weights` as constants, run without graph
    optimization (whose first runs cost tens of milliseconds for no gain here): the
    same ops without Python. In-process A/Bs of `generate` on the benchmark's GPT-2:
    16-24% more tokens a second at batch 1 on a 2-core CPU (34% with the shapes
    folded, see `_trace`), 13% at batch 1 and 18% at batch 8 on an H100 (before
    the folding). `torch.jit.trace` is deprecated in favour of `torch.compile`, but
    `torch.compile`'s step ran slower than the eager one on a CPU (see
    `compile_step`), and its compilation takes tens of seconds, not tens of
    milliseconds. The trace is valid for these weights and these shapes only:
    `traces` must be kept with `weights` (`generate._step_weights`), and the shapes
    are those of the loop's first call (a decoding loop's buffers keep their shapes;
    `MAX_TRACED_SHAPES` are kept). The step must write the cache in place
    (`write_positions`) and return it. A step that cannot be traced (oneDNN's packed
    weights, or a PyTorch without `torch.jit.trace`) stays eager.

    Args:
        step: the step function.
        weights: its first argument, fixed.
        traces: a dict kept with `weights`: shapes -> eager steps run so far, the
            traced step, or False (not traceable).

    Returns:
        `next_fn(token_ids, cache, index) -> (logits, cache)`.

    Example:

    >>> from keras import ops
    >>> def step(weights, token_ids, cache, index):
    ...     return ops.cast(token_ids, "float32") * weights, cache
    >>> next_fn = hot_step(step, ops.ones((1,)), {})
    >>> index = ops.convert_to_tensor(0, "int32")
    >>> logits = [next_fn(ops.ones((1, 1)), (), index)[0] for _ in range(3)]
    >>> [float(ops.convert_to_numpy(x)[0, 0]) for x in logits]
    [1.0, 1.0, 1.0]
    """
    if keras.backend.backend() != "torch":
        return lambda token_ids, cache, index: step(weights, token_ids, cache, index)
    torch = importlib.import_module("torch")
    key = None

    def next_fn(token_ids, cache, index):
        nonlocal key
        if key is None:  # the loop's shapes: fixed from its first call
            key = tuple(
                (tuple(x.shape), x.dtype, x.device)
                for x in (token_ids, index, *keras.tree.flatten(cache))
            )
            if key not in traces and len(traces) >= MAX_TRACED_SHAPES:
                del traces[next(iter(traces))]
        traced = traces.get(key, 0)
        if traced is not False and not callable(traced):
            if traced < TRACE_AFTER_STEPS:
                traces[key] = traced + 1
                return step(weights, token_ids, cache, index)
            traced = traces[key] = _trace(torch, step, weights, (token_ids, cache, index))
        if traced is False:
            return step(weights, token_ids, cache, index)
        with torch.jit.optimized_execution(False):
            return traced(token_ids, cache, index), cache

    return next_fn


def _trace(torch, step, weights, example):
    """A `torch.jit.trace` of `step` with `weights` as constants, returning the logits
    only (the cache is written in place), or False if it cannot be traced."""
    if not hasattr(torch.jit, "trace"):
        return False
    weights = keras.tree.map_structure(
        lambda x: x.detach() if isinstance(x, torch.Tensor) else x, weights
    )

    def logits(token_ids, cache, index):
        return step(weights, token_ids, cache, index)[0]

    # Tracing runs the step once: it writes the cache where this step writes it, with
    # the same values, so a partial trace leaves nothing wrong behind.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "`torch.jit", DeprecationWarning)
        try:
            traced = torch.jit.trace(logits, example, check_trace=False)
        except RuntimeError:  # oneDNN's packed tensors are not traceable constants
            return False
    # Half the trace's nodes recompute shapes (size, int, list), which are fixed for
    # this trace: folded into constants before its first run, the benchmark's batch-1
    # step ran 6% faster. These passes are internal to PyTorch; without them the
    # trace runs as recorded.
    passes = ("_jit_pass_peephole", "_jit_pass_constant_propagation", "_jit_pass_dce")
    if all(hasattr(torch._C, name) for name in passes):
        for name in passes:
            getattr(torch._C, name)(traced.graph)
    return traced


def no_grad():
    """A context that turns off gradient tracking where the backend records it eagerly.

    Example:

    >>> with no_grad():
    ...     pass
    """
    if keras.backend.backend() == "torch":
        return importlib.import_module("torch").inference_mode()
    return contextlib.nullcontext()
