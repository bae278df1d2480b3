"""Tensor-parallel layouts of the four builders for `keras.distribution` (JAX backend).

Megatron-LM's split (Shoeybi et al. 2019, section 3): attention heads and the first
feed-forward layer column-parallel, the attention and feed-forward output projections
row-parallel, so each block needs one all-reduce per sub-layer.
"""

import math
import re

import keras

BATCH_AXIS = "batch"
MODEL_AXIS = "model"
MODEL_KINDS = ("gpt2", "bert", "transformer", "vit")

_ALL = MODEL_KINDS
_M = MODEL_AXIS

# (regex, axes, model kinds). A regex must match a whole variable path
# (`variable.path`, e.g. "decoder_block_0/self_attention/query/kernel") and no path
# may match two rules: `keras.distribution.LayoutMap` raises on two matches.
# Column-parallel biases are sharded with their kernels (the layer's output is split
# the same way, so the add stays on each device); biases of row-parallel layers and
# LayerNorms are replicated: they apply after the all-reduce, to whole vectors.
#
# Embedding tables are split along the hidden axis, not the vocabulary: JAX shards a
# dimension only into equal pieces, and real vocabularies rarely divide the mesh
# (GPT-2's 50,257 is odd, BERT's 30,522 = 2 x 15,261) while `hidden_dim` must divide
# it anyway (`check_mesh`). Position, segment and patch embeddings share that
# layout, so their sum needs no resharding. The price: a tied output projection
# (logits = x E^T) contracts over the split axis, i.e. one all-reduce of the logits.
_RULES = (
    # Attention (D, N, H) and (N, H): split the heads.
    (r"(.*/)?(query|key|value)/kernel", (None, _M, None), _ALL),
    (r"(.*/)?(query|key|value)/bias", (_M, None), _ALL),
    # Attention output (N, H, D): row-parallel over the heads.
    (r"(.*/)?attention_output/kernel", (_M, None, None), _ALL),
    (r"(.*/)?attention_output/bias", (None,), _ALL),
    # Feed-forward: (D, F) column-parallel, then (F, D) row-parallel.
    (r"(.*/)?feedforward/intermediate_dense/kernel", (None, _M), _ALL),
    (r"(.*/)?feedforward/intermediate_dense/bias", (_M,), _ALL),
    (r"(.*/)?feedforward/output_dense/kernel", (_M, None), _ALL),
    (r"(.*/)?feedforward/output_dense/bias", (None,), _ALL),
    (r"(.*/)?[a-z_]*layer_norm/(gamma|beta)", (None,), _ALL),
    # Embedding tables (V, D) or (T, D): the hidden axis (see above).
    (r"(.*/)?([a-z]+_)?token_embedding/embeddings", (None, _M), ("gpt2", "bert", "transformer")),
    (r"(.*/)?(position|segment)_embedding/embeddings", (None, _M), ("gpt2", "bert")),
    # ViT's patch embedding: every output is a hidden vector, split like the tables.
    (r"(.*/)?patch_embedding/class_token", (None, None, _M), ("vit",)),
    (r"(.*/)?patch_embedding/position_embedding", (None, _M), ("vit",)),
    (r"(.*/)?patch_embedding/patch_projection/kernel", (None, None, None, _M), ("vit",)),
    (r"(.*/)?patch_embedding/patch_projection/bias", (_M,), ("vit",)),
    # Heads. A (D, D) transform is column-parallel; a head onto classes or the
    # vocabulary (whose size need not divide the mesh) is row-parallel over D, which
    # pairs with the column-parallel pooler before it.
    (r"(.*/)?(pooled_dense|mlm_dense)/kernel", (None, _M), ("bert",)),
    (r"(.*/)?(pooled_dense|mlm_dense)/bias", (_M,), ("bert",)),
    (r"(.*/)?(classifier_dense|nsp_dense)/kernel", (_M, None), ("bert",)),
    (r"(.*/)?(classifier_dense|nsp_dense|mlm_output_bias)/bias", (None,), ("bert",)),
    (r"(.*/)?classifier/kernel", (_M, None), ("vit",)),
    (r"(.*/)?classifier/bias", (None,), ("vit",)),
    (r"(.*/)?output_projection/kernel", (_M, None), ("transformer",)),
    (r"(.*/)?output_projection/bias", (None,), ("transformer",)),
)


def _check_model_kind(model_kind):
    if model_kind is not None and model_kind not in MODEL_KINDS:
        raise ValueError(
            f"`model_kind` must be None or one of {MODEL_KINDS}. Received: model_kind={model_kind!r}"
        )


def layout_rules(model_kind=None):
    """The layout rules as a dict from path regex to axes (mesh axis names or None).

    Args:
        model_kind: "gpt2", "bert", "transformer" or "vit" for that family's rules
            (its builder and heads), or None for all of them.

    Returns:
        A dict {regex: axes}, e.g. "(.*/)?(query|key|value)/kernel" ->
        (None, "model", None).

    Example:

    >>> layout_rules("gpt2")["(.*/)?attention_output/kernel"]
    ('model', None, None)
    """
    _check_model_kind(model_kind)
    return {
        pattern: axes
        for pattern, axes, kinds in _RULES
        if model_kind is None or model_kind in kinds
    }


def get_layout_map(device_mesh, model_kind=None):
    """A `keras.distribution.LayoutMap` that shards a builder's weights over "model".

    Tensor (model) parallelism along the mesh axis named "model"; the batch goes
    along "batch" (`ModelParallel(layout_map=..., batch_dim_name="batch")`).
    Per block: query/key/value kernels (D, N, H) and biases split on the heads
    axis, the attention output kernel (N, H, D) on its heads axis; the
    feed-forward `intermediate_dense` kernel (D, F) and bias on F, `output_dense`
    (F, D) on F. Token, position and segment embeddings and ViT's patch embedding
    split on the hidden axis D (GPT-2's 50,257-token vocabulary does not divide a
    mesh; D must). BERT's pooler and masked-LM transform are column-parallel; the
    classifier, next-sentence and untied output-projection kernels row-parallel
    (on D). LayerNorms and the biases of row-parallel layers are replicated.
    Every weight of every builder has exactly one rule (a test checks it), so
    replication is never an accident.

    The sizes must divide: `check_mesh` (which `model_parallel` runs) checks
    `num_heads`, `hidden_dim` and `intermediate_dim` against the mesh first.

    Args:
        device_mesh: a `keras.distribution.DeviceMesh` with an axis named "model"
            (and usually "batch").
        model_kind: "gpt2", "bert", "transformer", "vit", or None for one map that
            covers every builder.

    Returns:
        A `keras.distribution.LayoutMap` keyed by variable-path regexes.

    Example:

    >>> mesh = keras.distribution.DeviceMesh(
    ...     (2, 4), ("batch", "model"), devices=[f"cpu:{i}" for i in range(8)])
    >>> layout_map = get_layout_map(mesh, "gpt2")
    >>> layout_map["decoder_block_0/self_attention/query/kernel"].axes
    (None, 'model', None)
    >>> layout_map["decoder_block_0/feedforward/output_dense/kernel"].axes
    ('model', None)
    """
    if not isinstance(device_mesh, keras.distribution.DeviceMesh):
        raise ValueError(
            "`device_mesh` must be a keras.distribution.DeviceMesh. "
            f"Received: device_mesh={device_mesh!r}"
        )
    if MODEL_AXIS not in device_mesh.axis_names:
        raise ValueError(
            f"`device_mesh` must have an axis named {MODEL_AXIS!r}. "
            f"Received: device_mesh with axis_names={tuple(device_mesh.axis_names)}"
        )
    layout_map = keras.distribution.LayoutMap(device_mesh)
    for pattern, axes in layout_rules(model_kind).items():
        layout_map[pattern] = keras.distribution.TensorLayout(axes)
    return layout_map


def unmatched_paths(model, layout_map):
    """The paths of `model`'s weights that no key of `layout_map` matches.

    Under `ModelParallel` such a weight is silently replicated: check a model
    (or one with a new layer) before a long run.

    Args:
        model: a built `keras.Model`.
        layout_map: a `keras.distribution.LayoutMap`, e.g. from `get_layout_map`.

    Returns:
        The sorted list of unmatched `variable.path`s (empty when all match).

    Example:

    >>> from keras_transformers.models.gpt2 import gpt2
    >>> model = gpt2(vocabulary_size=10, num_layers=1, num_heads=2, hidden_dim=4,
    ...              intermediate_dim=8, max_sequence_length=4)
    >>> mesh = keras.distribution.DeviceMesh((1, 2), ("batch", "model"),
    ...                                      devices=["cpu:0", "cpu:1"])
    >>> unmatched_paths(model, get_layout_map(mesh, "gpt2"))
    []
    """
    return sorted(
        {
            weight.path
            for weight in model.weights
            if not any(re.fullmatch(pattern, weight.path) for pattern in layout_map)
        }
    )


def _sizes_from_model(model):
    sizes = {}
    for weight in model.weights:
        shape = tuple(weight.shape)
        if weight.path.endswith("query/kernel"):  # (D, N, H)
            sizes.setdefault("hidden_dim", shape[0])
            sizes.setdefault("num_heads", shape[1])
        elif weight.path.endswith("intermediate_dense/kernel"):  # (D, F)
            sizes.setdefault("intermediate_dim", shape[1])
    return sizes


def _model_sizes(config):
    """(num_heads, hidden_dim, intermediate_dim, model kind or None) of a config."""
    kind = None
    if isinstance(config, str):
        from keras_transformers.models import presets

        sizes = presets.preset_config(config)  # raises for an unknown name
        kind = config.split("_")[0]
    elif isinstance(config, dict):
        sizes = config
    elif isinstance(config, keras.Model):
        sizes = _sizes_from_model(config)
    else:
        sizes = {}
    names = ("num_heads", "hidden_dim", "intermediate_dim")
    values = tuple(sizes.get(name) for name in names)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise ValueError(
            "`config` must be a preset name, a dict of builder arguments with positive "
            "int `num_heads`, `hidden_dim` and `intermediate_dim`, or a model built by "
            f"keras_transformers.models. Received: config={config!r}"
        )
    return dict(zip(names, values)), kind


def _check_mesh_shape(mesh_shape):
    if (
        not isinstance(mesh_shape, (tuple, list))
        or len(mesh_shape) != 2
        or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in mesh_shape)
    ):
        raise ValueError(
            "`mesh_shape` must be two positive ints (batch, model). "
            f"Received: mesh_shape={mesh_shape!r}"
        )
    return tuple(mesh_shape)


def check_mesh(config, mesh_shape):
    """Checks that a model splits evenly over a (batch, model) mesh; no work is done.

    Each device holds num_heads / m heads, hidden_dim / m of every embedding and
    intermediate_dim / m of every feed-forward layer, m = mesh_shape[1]: all three
    must be multiples of m.

    Args:
        config: a preset name ("gpt2_small"), a dict of builder arguments, or a
            model built by `keras_transformers.models`.
        mesh_shape: (batch, model) device counts.

    Returns:
        The model kind ("gpt2", ...) for a preset name, else None.

    Raises:
        ValueError: naming the mesh's model-axis size and each size it does not
            divide.

    Example:

    >>> check_mesh("gpt2_small", (2, 4))
    'gpt2'
    >>> check_mesh("gpt2_small", (1, 8))
    Traceback (most recent call last):
    ...
    ValueError: The model axis of `mesh_shape` must divide num_heads, hidden_dim and intermediate_dim. Received: mesh_shape=(1, 8) (model axis 8) and num_heads=12
    """
    sizes, kind = _model_sizes(config)
    mesh_shape = _check_mesh_shape(mesh_shape)
    model_size = mesh_shape[1]
    bad = [f"{name}={value}" for name, value in sizes.items() if value % model_size]
    if bad:
        raise ValueError(
            "The model axis of `mesh_shape` must divide num_heads, hidden_dim and "
            f"intermediate_dim. Received: mesh_shape={mesh_shape} (model axis {model_size}) "
            f"and {', '.join(bad)}"
        )
    return kind


def model_parallel(config, mesh_shape, devices=None):
    """A `keras.distribution.ModelParallel` for a builder on a (batch, model) mesh.

    Checks the sizes first (`check_mesh`), then lays the devices out as a
    `DeviceMesh(mesh_shape, ("batch", "model"))` and returns
    `ModelParallel(layout_map=get_layout_map(mesh, kind), batch_dim_name="batch")`:
    the batch is split over mesh_shape[0] groups, each group splitting the weights
    `mesh_shape[1]` ways. Variables are laid out when they are created, so set the
    distribution (`keras.distribution.set_distribution`, or `with
    distribution.scope():`) before building the model, and keep batch sizes
    multiples of mesh_shape[0].

    Backends: `keras.distribution` lays out variables and data on JAX only
    (Keras 3.15); on TensorFlow use `tf.distribute.MirroredStrategy`, on PyTorch
    neither exists. The size checks run on every backend, before the backend check.

    Args:
        config: a preset name ("gpt2_small"), a dict of builder arguments, or a
            model built by `keras_transformers.models` (its sizes are read; a
            built model's variables are not moved: rebuild it under the
            distribution and copy the weights).
        mesh_shape: (batch, model) device counts; their product must equal the
            number of devices.
        devices: the devices, e.g. ["gpu:0", ...]; default
            `keras.distribution.list_devices()`.

    Returns:
        A `keras.distribution.ModelParallel`.

    Raises:
        ValueError: before any work, if mesh_shape[1] does not divide num_heads,
            hidden_dim or intermediate_dim, if the backend is not JAX, or if the
            mesh does not use every device.

    Example:

    >>> model_parallel("gpt2_small", mesh_shape=(1, 5))
    Traceback (most recent call last):
    ...
    ValueError: The model axis of `mesh_shape` must divide ... Received: mesh_shape=(1, 5) (model axis 5) and num_heads=12, hidden_dim=768, intermediate_dim=3072
    """
    kind = check_mesh(config, mesh_shape)
    backend = keras.backend.backend()
    if backend != "jax":
        raise ValueError(
            "`model_parallel` needs the JAX backend: Keras lays out variables with "
            "keras.distribution on JAX only (on TensorFlow use "
            f"tf.distribute.MirroredStrategy). Received: backend={backend!r}"
        )
    if devices is None:
        devices = keras.distribution.list_devices()
    devices = list(devices)
    if math.prod(mesh_shape) != len(devices):
        raise ValueError(
            f"`mesh_shape` must use every device: {len(devices)} devices. "
            f"Received: mesh_shape={tuple(mesh_shape)}"
        )
    mesh = keras.distribution.DeviceMesh(
        tuple(mesh_shape), (BATCH_AXIS, MODEL_AXIS), devices=devices
    )
    return keras.distribution.ModelParallel(
        layout_map=get_layout_map(mesh, kind), batch_dim_name=BATCH_AXIS
    )
