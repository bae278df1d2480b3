"""The functional model every builder returns: a `keras.Model` that checks its inputs first.

Keras converts a functional model's inputs to the declared dtypes silently (float token
ids are truncated to ints, uint8 pixels go through unscaled) and only warns about
unknown keys; on JAX an out-of-range token id is clipped. `Model` raises instead.
"""

import keras
import numpy as np

from keras_transformers.layers.arguments import check_id_range

# Inputs whose names end alike share one (batch, sequence) shape within a prefix:
# "token_ids", "segment_ids" and "padding_mask"; "encoder_token_ids" and
# "encoder_padding_mask".
_SEQUENCE_SUFFIXES = ("token_ids", "segment_ids", "padding_mask")


@keras.saving.register_keras_serializable(package="keras_transformers")
class Model(keras.Model):
    """A functional `keras.Model` that validates its input dict on every call.

    Built like any functional model, `Model(inputs, outputs, name=...)`, and used the
    same way (`fit`, `predict`, `.keras` saving); before the graph runs, every call
    (direct, or from `fit`/`predict`'s compiled steps) passes the inputs to
    `validate_inputs`. The checks read only shapes and dtypes (and, for
    numpy inputs, the token id values), so they also hold inside compiled `fit` and
    `predict` steps.

    Example:

    >>> import numpy as np
    >>> token_ids = keras.Input((None,), dtype="int32", name="token_ids")
    >>> model = Model({"token_ids": token_ids}, keras.layers.Embedding(5, 2)(token_ids))
    >>> model({"token_ids": np.array([[1, 2]], "float32")})
    Traceback (most recent call last):
    ...
    ValueError: `token_ids` must be an integer tensor. Received: token_ids with dtype=float32
    """

    def __call__(self, inputs, *args, **kwargs):
        # Before Keras' own input-spec checks, whose messages may not name the input.
        validate_inputs(self, inputs, check_dtypes=not _in_distributed_build())
        return super().__call__(inputs, *args, **kwargs)

    def call(self, inputs, training=None, mask=None, **kwargs):
        # Again here: JAX's training step reaches `call` through `stateless_call`.
        validate_inputs(self, inputs, check_dtypes=not _in_distributed_build())
        return super().call(inputs, training=training, mask=mask, **kwargs)

    def _resolve_auto_jit_compile(self):
        """What `jit_compile="auto"` means: on TensorFlow, XLA on a CPU too.

        Keras resolves "auto" (in `compile`, or `predict` before it) to XLA on JAX and on
        TensorFlow with a GPU, but leaves XLA off on a TensorFlow machine with only CPUs.
        Our models' steps are faster there with XLA: 1.1-1.3x in training and 1.25-1.45x in
        inference (`benchmarks/profile_step.py`), so "auto" picks it. What else rules XLA
        out in Keras still does: `run_eagerly`, a `tf.distribute` strategy, TensorFlow's op
        determinism, a layer with `supports_jit=False`. An explicit True or False is kept.
        This overrides Keras' own hook for "auto" rather than `compile`: a model with its
        own `compile` is not compiled again when loaded, and would lose its optimizer state.
        """
        resolved = super()._resolve_auto_jit_compile()
        if resolved or not _xla_left_off_on_cpu(self):
            return resolved
        return all(layer.supports_jit for layer in self._flatten_layers()) and not (
            _op_determinism_enabled()
        )

    # `fit`, `evaluate` and `predict` check the data before they start: an error raised
    # inside their first step on JAX leaves the model's variables purged (Keras 3.15
    # frees them during the loop and restores them only on success), so the next call
    # would fail with an unrelated TypeError.
    def fit(self, x=None, *args, **kwargs):
        _check_data(self, x)
        return super().fit(x, *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        _check_data(self, x)
        return super().evaluate(x, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        _check_data(self, x)
        return super().predict(x, *args, **kwargs)


def _xla_left_off_on_cpu(model):
    """True where Keras' "auto" leaves XLA off only because TensorFlow has no GPU."""
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf  # Only on the TensorFlow backend, where it is loaded already.

    return (
        all(device.device_type == "CPU" for device in tf.config.list_physical_devices())
        and getattr(model, "_distribute_strategy", None) is None
        and not tf.distribute.has_strategy()
    )


def _op_determinism_enabled():
    """`tf.config.experimental.enable_op_determinism()`'s state, as Keras reads it.

    TensorFlow has no public getter for it; Keras' own `jit_compile` check reads this one.
    """
    from tensorflow.python.framework import config  # TensorFlow backend only.

    return config.is_op_determinism_enabled()


def _in_distributed_build():
    """True while Keras builds the model under a tf.distribute strategy's scope.

    Keras 3.15 builds a model that `fit`s under a strategy from the mean of the
    replicas' first batches, so integer token ids arrive as float64 there; `fit` has
    checked the real data already (`_check_data`), and the replicas' steps, which run
    in replica context, are checked as usual.
    """
    if keras.backend.backend() != "tensorflow":
        return False
    import tensorflow as tf  # Only on the TensorFlow backend, where it is loaded already.

    return tf.distribute.has_strategy() and tf.distribute.in_cross_replica_context()


def _check_data(model, x):
    """Checks a dict of arrays, or a dataset's element spec, before a training loop."""
    element_spec = getattr(x, "element_spec", None)  # a tf.data.Dataset
    if element_spec is not None:
        x = element_spec[0] if isinstance(element_spec, tuple) else element_spec
    if isinstance(x, dict):
        validate_inputs(model, x)


def _maybe_layer(model, *names):
    for name in names:
        for layer in model.layers:
            if layer.name == name:
                return layer
    return None


def _prefix(name):
    for suffix in _SEQUENCE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _check_values(model, name, value):
    """Range checks on host (numpy) data; tensors are left alone (no device sync)."""
    if not isinstance(value, np.ndarray) or not value.size:
        return
    prefix = _prefix(name)
    if name.endswith("token_ids"):
        layer = _maybe_layer(model, f"{prefix}token_embedding", "token_embedding")
    elif name.endswith("segment_ids"):
        layer = _maybe_layer(model, f"{prefix}segment_embedding", "segment_embedding")
    else:
        return
    size = getattr(layer, "input_dim", None)
    if size is not None:
        check_id_range(value, name, size)


def layer_names(model):
    """The names of `model`'s layers, as a set (empty for an object without layers)."""
    return {layer.name for layer in getattr(model, "layers", ())}


def numbered_blocks(model, side):
    """`model`'s blocks named `{side}_block_0`, `{side}_block_1`, ... in order, as the
    builders name them (`side`: "encoder" or "decoder")."""
    names, blocks = layer_names(model), []
    while f"{side}_block_{len(blocks)}" in names:
        blocks.append(model.get_layer(f"{side}_block_{len(blocks)}"))
    return blocks


def validate_inputs(model, inputs, max_sequence_length=None, check_dtypes=True):
    """Checks an input dict against a model built by this library, before any work.

    `Model.call` runs this on every call; it is public for checking data up front.
    The rules come from the model's own `keras.Input`s and layers: the keys are
    exactly the input names; integer inputs get integers (a `padding_mask` may also
    be boolean) and float inputs floats; ranks and fixed sizes (image channels) as
    declared; the token ids, segment ids and padding mask of one sequence share a
    shape; one batch size; no sequence longer than the `position_embedding` table
    (or `max_sequence_length` if given); image sides multiples of the patch size;
    numpy token and segment ids inside their embedding's vocabulary.

    Args:
        model: a model built by `keras_transformers.models`.
        inputs: the dict of arrays or tensors to be passed to `model`.
        max_sequence_length: optional longest sequence, for models without a
            position table (the encoder-decoder `transformer`).
        check_dtypes: whether to check the dtypes (everything else is always
            checked).

    Returns:
        `inputs`, unchanged.

    Raises:
        ValueError: naming the input and the value received.

    Example:

    >>> import numpy as np
    >>> from keras_transformers.models.gpt2 import gpt2
    >>> model = gpt2(vocabulary_size=10, num_layers=1, num_heads=2, hidden_dim=4,
    ...              intermediate_dim=8, max_sequence_length=4)
    >>> ids = np.zeros((1, 5), "int32")
    >>> validate_inputs(model, {"token_ids": ids, "padding_mask": ids})
    Traceback (most recent call last):
    ...
    ValueError: `token_ids` may have at most max_sequence_length=4 positions. Received: ...
    """
    specs = model.input if isinstance(model.input, dict) else None
    if specs is None:
        raise ValueError(
            "`model` must take a dict of named inputs, as the builders' models do. "
            f"Received: model={model.name!r} with inputs {model.input}"
        )
    expected = list(specs)
    if not isinstance(inputs, dict):
        raise ValueError(
            f"`inputs` must be a dict with keys {expected}. "
            f"Received: inputs of type {type(inputs).__name__}"
        )
    for key in inputs:
        if key not in specs:
            raise ValueError(
                f"Unexpected input `{key}`: the model takes {expected}. "
                f"Received: inputs with keys {sorted(inputs)}"
            )
    for key in expected:
        if key not in inputs:
            raise ValueError(
                f"Missing input `{key}`: the model takes {expected}. "
                f"Received: inputs with keys {sorted(inputs)}"
            )

    for key, spec in specs.items():
        value = inputs[key]
        if not hasattr(value, "shape") or not hasattr(value, "dtype"):
            raise ValueError(
                f"`{key}` must be an array or tensor. Received: {key} of type "
                f"{type(value).__name__}"
            )
        dtype = keras.backend.standardize_dtype(value.dtype)
        if not check_dtypes:
            pass
        elif "float" in spec.dtype:
            if "float" not in dtype:
                raise ValueError(
                    f"`{key}` must be a float tensor. Received: {key} with dtype={dtype}"
                )
        elif key.endswith("padding_mask"):
            if not (dtype.startswith(("int", "uint")) or dtype == "bool"):
                raise ValueError(
                    f"`{key}` must be an integer or boolean tensor. "
                    f"Received: {key} with dtype={dtype}"
                )
        elif not dtype.startswith(("int", "uint")):
            raise ValueError(
                f"`{key}` must be an integer tensor. Received: {key} with dtype={dtype}"
            )
        shape = tuple(value.shape)
        if len(shape) != len(spec.shape) or any(
            want is not None and got is not None and got != want
            for want, got in zip(spec.shape[1:], shape[1:])
        ):
            raise ValueError(
                f"`{key}` must have shape {tuple(spec.shape)} (None: any size). "
                f"Received: {key} with shape={shape}"
            )
        _check_values(model, key, value)

    batch_sizes = {key: tuple(inputs[key].shape)[0] for key in expected}
    if len({size for size in batch_sizes.values() if size is not None}) > 1:
        raise ValueError(
            f"Every input must have the same batch size. Received: batch sizes {batch_sizes}"
        )
    _check_sequences(model, inputs, expected, max_sequence_length)
    _check_images(model, inputs)
    return inputs


def _check_sequences(model, inputs, names, max_sequence_length):
    groups = {}
    for name in names:
        if _prefix(name) is not None:
            groups.setdefault(_prefix(name), []).append(name)
    table = _maybe_layer(model, "position_embedding")
    if max_sequence_length is None and table is not None:
        max_sequence_length = table.max_sequence_length
    for group in groups.values():
        first = group[0]
        shape = tuple(inputs[first].shape)
        for name in group[1:]:
            if tuple(inputs[name].shape) != shape:
                raise ValueError(
                    f"`{name}` must have the shape of `{first}`, {shape}. "
                    f"Received: {name} with shape={tuple(inputs[name].shape)}"
                )
        length = shape[1]
        if max_sequence_length is not None and length is not None:
            if length > max_sequence_length:
                raise ValueError(
                    f"`{first}` may have at most max_sequence_length={max_sequence_length} "
                    f"positions. Received: {first} with shape={shape}"
                )
    positions = inputs.get("mask_positions")
    token_ids = inputs.get("token_ids")
    if isinstance(positions, np.ndarray) and positions.size and token_ids is not None:
        length = tuple(token_ids.shape)[1]
        if length is not None and (positions.min() < 0 or positions.max() >= length):
            raise ValueError(
                f"`mask_positions` must index the sequence, in [0, {length}). "
                f"Received: mask_positions with values in [{positions.min()}, {positions.max()}]"
            )


def _check_images(model, inputs):
    patches = _maybe_layer(model, "patch_embedding")
    if patches is None or "images" not in inputs:
        return
    shape = tuple(inputs["images"].shape)
    height, width = patches.patch_size
    if (shape[1] is not None and shape[1] % height) or (shape[2] is not None and shape[2] % width):
        raise ValueError(
            "`images` must have a height and width that are multiples of "
            f"`patch_size`={patches.patch_size}. Received: images with shape={shape}"
        )
