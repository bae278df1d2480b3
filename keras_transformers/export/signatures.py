"""What each keras_transformers model kind exports: its serving signatures as TensorFlow functions.

`describe(model)` recognizes a builder's model; `SIGNATURES` maps a signature name to how it
is built in TensorFlow, which probe inputs check it and what the source model gives for them.
TensorFlow is imported only inside the functions that build graphs, so the rest runs on JAX
and torch too (the exporter computes the reference outputs there, on the source backend).
"""

import dataclasses

import keras
import numpy as np
from keras import ops

from keras_transformers.layers.arguments import check_positive_int
from keras_transformers.models import bert as bert_module
from keras_transformers.models import gpt2 as gpt2_module
from keras_transformers.models import transformer as transformer_module
from keras_transformers.models import vit as vit_module

# The kinds `describe` recognizes, in the order its error message lists them.
KINDS = (
    "gpt2",
    "transformer",
    "bert",
    "bert_masked_lm",
    "bert_pretraining",
    "bert_classifier",
    "vit",
)
# The settings of `generation.generate` that a `generate` signature fixes at export.
GENERATION_OPTIONS = (
    "sampler",
    "temperature",
    "top_k",
    "top_p",
    "num_beams",
    "length_penalty",
    "stop_token_ids",
    "start_token_id",
)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the exporter needs to know about a model built by keras_transformers.

    Attributes:
        kind: one of `KINDS`.
        input_ranks: input name -> rank (token ids and masks 2, images 4).
        output_names: the names of `serving_default`'s outputs.
        max_sequence_length: the longest sequence accepted (None for ViT).
        sequence_inputs: sequence name -> (token ids input, padding mask input), e.g.
            {"decoder": ("decoder_token_ids", "decoder_padding_mask")}.
        value_limits: integer input -> its number of values (vocabulary, segments).
        num_channels: image channels (ViT), else None.
        patch_size: (height, width) of a patch (ViT), else None.
        num_classes: size of the classifier's logits, or None without a classifier.
        generation: the `generate` signature's fixed settings (sampler, temperature,
            top_k, top_p, stop_token_ids, start_token_id, ...; see
            `keras_transformers.generation.generate`).
    """

    kind: str
    input_ranks: dict
    output_names: tuple
    max_sequence_length: int = None
    sequence_inputs: dict = dataclasses.field(default_factory=dict)
    value_limits: dict = dataclasses.field(default_factory=dict)
    num_channels: int = None
    patch_size: tuple = None
    num_classes: int = None
    generation: dict = dataclasses.field(default_factory=dict)


def _not_a_builder_model(model, reason):
    return ValueError(
        f"`model` must be a model built by keras_transformers ({', '.join(KINDS)}): "
        f"{reason}. Received: model={model!r}"
    )


def describe(model, max_sequence_length=None):
    """Recognizes a keras_transformers model and returns its `ModelSpec`.

    Args:
        model: a model returned by a builder of `keras_transformers.models`.
        max_sequence_length: the longest sequence the export accepts. Defaults to
            the position table's size (GPT-2, BERT); must not exceed it. Required
            for `transformer` models, whose sinusoids have no table (the length
            the model was built for is not stored in its graph).

    Returns:
        A `ModelSpec`.

    Raises:
        ValueError: naming `model` when it is unbuilt or not a builder's model,
            or `max_sequence_length` when it is invalid or missing.

    Example:

    >>> from keras_transformers.models import gpt2
    >>> model = gpt2.gpt2(vocabulary_size=10, num_layers=1, num_heads=2, hidden_dim=4,
    ...                   intermediate_dim=8, max_sequence_length=6)
    >>> spec = describe(model)
    >>> spec.kind, spec.max_sequence_length, spec.output_names
    ('gpt2', 6, ('logits',))
    """
    if not isinstance(model, keras.Model):
        raise _not_a_builder_model(model, "it is not a keras.Model")
    if not model.built:
        raise ValueError(
            f"`model` must be built before export (call it once, or use a builder of "
            f"keras_transformers.models). Received: model={model!r} with built=False"
        )
    if max_sequence_length is not None:
        check_positive_int(max_sequence_length, "max_sequence_length")
    try:
        inputs, outputs = model.input, model.output
    except (AttributeError, ValueError):  # a subclassed model has no symbolic inputs
        raise _not_a_builder_model(model, "it is not a functional model") from None
    if not isinstance(inputs, dict):
        raise _not_a_builder_model(model, "its inputs are not a dict of named inputs")
    names = set(inputs)
    layers = {layer.name: layer for layer in model.layers}

    def has(*layer_names):
        return all(name in layers for name in layer_names)

    def output_rank():
        return None if isinstance(outputs, dict) else len(outputs.shape)

    sequences = {"": ("token_ids", "padding_mask")}
    bert_inputs = set(bert_module.BACKBONE_INPUTS)
    if names == set(gpt2_module.INPUT_NAMES) and has(
        "token_embedding", "position_embedding", "decoder_block_0", "final_layer_norm"
    ):
        kind, output_names = "gpt2", ("logits",)
        limits = {"token_ids": layers["token_embedding"].input_dim}
    elif names == set(transformer_module.INPUT_NAMES) and has("encoder_block_0", "decoder_block_0"):
        kind, output_names = "transformer", ("logits",)
        sequences = {
            side: (f"{side}_token_ids", f"{side}_padding_mask") for side in ("encoder", "decoder")
        }
        limits = {
            f"{side}_token_ids": (
                layers.get(f"{side}_token_embedding") or layers["token_embedding"]
            ).input_dim
            for side in ("encoder", "decoder")
        }
    elif names in (bert_inputs, bert_inputs | {"mask_positions"}) and has(
        "token_embedding", "segment_embedding", "position_embedding", "embeddings_layer_norm"
    ):
        limits = {
            "token_ids": layers["token_embedding"].input_dim,
            "segment_ids": layers["segment_embedding"].input_dim,
        }
        if names == bert_inputs and isinstance(outputs, dict) and has("pooled_dense"):
            kind, output_names = "bert", ("sequence_output", "pooled_output")
        elif names == bert_inputs and has("classifier_dense") and output_rank() == 2:
            kind, output_names = "bert_classifier", ("logits",)
        elif names != bert_inputs and isinstance(outputs, dict) and has("nsp_dense"):
            kind, output_names = "bert_pretraining", ("mlm_logits", "nsp_logits")
        elif names != bert_inputs and has("mlm_output_bias") and output_rank() == 3:
            kind, output_names = "bert_masked_lm", ("logits",)
        else:
            raise _not_a_builder_model(model, "it has BERT inputs but not a known head")
    elif names == set(vit_module.INPUT_NAMES) and has("patch_embedding", "final_layer_norm"):
        patch_embedding = layers["patch_embedding"]
        has_head = output_rank() == 2
        spec = ModelSpec(
            kind="vit",
            input_ranks={"images": 4},
            output_names=("logits",) if has_head else ("sequence_output",),
            num_channels=inputs["images"].shape[-1],
            patch_size=tuple(patch_embedding.patch_size),
            num_classes=outputs.shape[-1] if has_head else None,
        )
        if max_sequence_length is not None:
            raise ValueError(
                "`max_sequence_length` does not apply to a ViT model (its inputs are "
                f"images). Received: max_sequence_length={max_sequence_length}"
            )
        return spec
    else:
        raise _not_a_builder_model(model, f"no builder makes a model with inputs {sorted(names)}")

    table = layers["position_embedding"].max_sequence_length if "position_embedding" in layers else None
    if max_sequence_length is None and table is None:
        raise ValueError(
            f"`max_sequence_length` must be given to export a {kind} model: its sinusoidal "
            "positions have no table, and the length it was built for is not stored in "
            f"the model. Received: max_sequence_length={max_sequence_length}"
        )
    if max_sequence_length is not None and table is not None and max_sequence_length > table:
        raise ValueError(
            f"`max_sequence_length` must be at most the model's {table} learned positions. "
            f"Received: max_sequence_length={max_sequence_length}"
        )
    return ModelSpec(
        kind=kind,
        input_ranks={name: 2 for name in inputs},
        output_names=output_names,
        max_sequence_length=max_sequence_length or table,
        value_limits=limits,
        sequence_inputs=sequences,
        num_classes=outputs.shape[-1] if kind == "bert_classifier" else None,
    )


def _tf():
    import tensorflow as tf

    return tf


def input_signature(spec):
    """The `tf.TensorSpec`s of the model's inputs: int32 (None, None), float32 images."""
    tf = _tf()
    return [
        {
            name: tf.TensorSpec([None, None, None, spec.num_channels], tf.float32, name=name)
            if rank == 4
            else tf.TensorSpec([None, None], tf.int32, name=name)
            for name, rank in spec.input_ranks.items()
        }
    ]


def _rank(x):
    """The rank counted at run time: the graph optimizer folds tf.rank (and Rank, Size,
    Shape of Shape) to the signature's static rank, which a fed tensor may not have."""
    tf = _tf()
    return tf.shape(tf.where(tf.shape(x) >= 0), out_type=tf.int32)[0]


# Reductions over the run-time elements: a reduction over the static axes of the
# signature's rank would leave axes of a fed tensor of higher rank.
def _min(x):
    return _tf().reduce_min(_tf().reshape(x, [-1]))


def _max(x):
    return _tf().reduce_max(_tf().reshape(x, [-1]))


def checked_inputs(spec, inputs):
    """The inputs, gated by run-time checks that raise an InvalidArgumentError naming them.

    The signature's TensorSpecs already refuse another dtype; TF Serving feeds the
    graph without checking shapes, so rank, length, matching shapes and value
    ranges are asserted in the graph, and every later op waits for the asserts.
    The asserts run in any order, so none may fail for another's reason: the shapes
    they read are padded (no index out of range) and all but the rank checks are
    waived when a rank is wrong, so that the message names the actual fault.
    """
    tf = _tf()
    ranks = {name: _rank(x) for name, x in inputs.items()}
    checks = [
        tf.debugging.Assert(
            tf.equal(ranks[name], rank),
            [f"`{name}` must have rank {rank}. Received: {name} with rank", ranks[name]],
        )
        for name, rank in spec.input_ranks.items()
    ]
    ranks_ok = tf.reduce_all(
        tf.stack([tf.equal(ranks[name], rank) for name, rank in spec.input_ranks.items()])
    )
    shapes = {
        name: tf.concat([tf.shape(x), tf.ones([4], tf.int32)], axis=0)[: spec.input_ranks[name]]
        for name, x in inputs.items()
    }

    def check(condition, message, *values):
        condition = tf.logical_or(tf.logical_not(ranks_ok), condition)
        checks.append(tf.debugging.Assert(condition, [message, *values]))

    first_ids = None
    for ids_name, mask_name in spec.sequence_inputs.values():
        first_ids = first_ids or ids_name
        length = shapes[ids_name][1]
        check(
            length <= spec.max_sequence_length,
            f"`{ids_name}` may have at most max_sequence_length={spec.max_sequence_length} "
            f"positions. Received: {ids_name} with length",
            length,
        )
        others = [mask_name] + (["segment_ids"] if ids_name == "token_ids" and "segment_ids" in inputs else [])
        for name in others:
            check(
                tf.reduce_all(tf.equal(shapes[name], shapes[ids_name])),
                f"`{name}` must have the shape of `{ids_name}`. Received: {name} and {ids_name} "
                "with shapes",
                shapes[name],
                shapes[ids_name],
            )
        if ids_name != first_ids:
            check(
                tf.equal(shapes[ids_name][0], shapes[first_ids][0]),
                f"`{ids_name}` must have the batch size of `{first_ids}`. Received: batch sizes",
                shapes[ids_name][0],
                shapes[first_ids][0],
            )
    for name, limit in spec.value_limits.items():
        smallest, largest = _min(inputs[name]), _max(inputs[name])
        check(
            smallest >= 0, f"`{name}` must be non-negative. Received: {name} with minimum", smallest
        )
        check(
            largest < limit, f"`{name}` must be less than {limit}. Received: {name} with maximum", largest
        )
    if "mask_positions" in inputs:
        positions, length = inputs["mask_positions"], shapes["token_ids"][1]
        check(
            tf.equal(shapes["mask_positions"][0], shapes["token_ids"][0]),
            "`mask_positions` must have the batch size of `token_ids`. Received: batch sizes",
            shapes["mask_positions"][0],
            shapes["token_ids"][0],
        )
        check(
            tf.logical_and(_min(positions) >= 0, _max(positions) < length),
            "`mask_positions` must index the sequence, in [0, length of `token_ids`). "
            "Received: mask_positions with minimum, maximum and length",
            _min(positions),
            _max(positions),
            length,
        )
    if spec.kind == "vit":
        shape = shapes["images"]
        check(
            tf.equal(shape[3], spec.num_channels),
            f"`images` must have {spec.num_channels} channels. Received: images with shape",
            shape,
        )
        for axis, (size, side) in enumerate(zip(spec.patch_size, ("height", "width")), 1):
            check(
                tf.equal(shape[axis] % size, 0),
                f"`images` must have a {side} that is a multiple of the patch size {size}. "
                "Received: images with shape",
                shape,
            )
    with tf.control_dependencies(checks):
        return {name: tf.identity(x) for name, x in inputs.items()}


def _named(spec, outputs):
    # Float32 outputs whatever the dtype policy: TF Serving's JSON has no bfloat16.
    tf = _tf()
    if not isinstance(outputs, dict):
        outputs = {spec.output_names[0]: outputs}
    return {name: tf.cast(outputs[name], tf.float32) for name in spec.output_names}


def _serving_default_function(model, spec):
    def serving_default(inputs):
        return _named(spec, model(checked_inputs(spec, inputs), training=False))

    return serving_default


def _classify_function(model, spec):
    tf = _tf()

    def classify(inputs):
        logits = tf.cast(model(checked_inputs(spec, inputs), training=False), tf.float32)
        return {
            "probabilities": tf.nn.softmax(logits, axis=-1),
            "label": tf.argmax(logits, axis=-1, output_type=tf.int64),
        }

    return classify


def _probe_inputs(spec, seed=0):
    """Small deterministic inputs within the model's limits, the second row padded."""
    rng = np.random.default_rng(seed)
    if spec.kind == "vit":
        height, width = spec.patch_size
        return {"images": rng.normal(size=(2, 2 * height, 3 * width, spec.num_channels)).astype("float32")}
    probes = {}
    for index, (ids_name, mask_name) in enumerate(spec.sequence_inputs.values()):
        length = min(spec.max_sequence_length, 7 - 2 * index)
        limit = spec.value_limits[ids_name]
        probes[ids_name] = rng.integers(min(1, limit - 1), limit, size=(2, length)).astype("int32")
        mask = np.ones((2, length), "int32")
        mask[1, max(1, length - 2) :] = 0
        probes[mask_name] = mask
    if "segment_ids" in spec.input_ranks:
        segments = np.zeros_like(probes["token_ids"])
        segments[:, segments.shape[1] // 2 :] = spec.value_limits["segment_ids"] - 1
        probes["segment_ids"] = segments
    if "mask_positions" in spec.input_ranks:
        last = probes["token_ids"].shape[1] - 1
        probes["mask_positions"] = np.array([[0, last], [last // 2, 0]], "int32")
    return probes


def _numpy(x, dtype=None):
    x = np.asarray(ops.convert_to_numpy(x))
    return x if dtype is None else x.astype(dtype)


def _predict(model, inputs):
    # JAX compiles each eager op for each new shape: one compiled step is several times
    # faster there. TensorFlow and torch run eagerly at once.
    if keras.backend.backend() == "jax":
        return model.predict_on_batch(inputs)
    return model(inputs, training=False)


def _serving_default_reference(model, spec, probes):
    outputs = _predict(model, probes)
    if not isinstance(outputs, dict):
        outputs = {spec.output_names[0]: outputs}
    return {name: _numpy(ops.cast(outputs[name], "float32")) for name in spec.output_names}


def _classify_reference(model, spec, probes):
    logits = ops.cast(_predict(model, probes), "float32")
    return {
        "probabilities": _numpy(ops.softmax(logits, axis=-1)),
        "label": _numpy(ops.argmax(logits, axis=-1), "int64"),
    }


def _prompt_spec(spec):
    """The spec of `generate`'s prompt inputs: GPT-2's, or the Transformer's source."""
    ids_name, mask_name = next(iter(spec.sequence_inputs.values()))
    return dataclasses.replace(
        spec,
        input_ranks={ids_name: 2, mask_name: 2},
        sequence_inputs={"": (ids_name, mask_name)},
        value_limits={ids_name: spec.value_limits[ids_name]},
    )


def _samples(spec):
    return spec.generation.get("sampler", "greedy") not in ("greedy", "beam")


def _generate_input_signature(spec):
    tf = _tf()
    (signature,) = input_signature(_prompt_spec(spec))
    signature["max_new_tokens"] = tf.TensorSpec([], tf.int32, name="max_new_tokens")
    if _samples(spec):
        signature["seed"] = tf.TensorSpec([], tf.int32, name="seed")
    return [signature]


def _generate_function(model, spec):
    """KV-cached decoding inside the graph: `generation.generate_tensors`, checked inputs."""
    from keras_transformers.generation import generate_tensors

    tf = _tf()
    prompt_spec = _prompt_spec(spec)
    ids_name, mask_name = prompt_spec.sequence_inputs[""]

    def generate(inputs):
        prompt = checked_inputs(prompt_spec, {name: inputs[name] for name in (ids_name, mask_name)})
        token_ids, padding_mask = prompt[ids_name], prompt[mask_name]
        scalars = {name: inputs[name] for name in ("max_new_tokens", "seed") if name in inputs}
        # A scalar's static shape is fully known, so tf.shape and tf.size fold to constants:
        # the values are counted instead (one for a scalar).
        sizes = {
            name: tf.shape(tf.where(tf.reshape(x, [-1]) >= tf.int32.min), out_type=tf.int32)[0]
            for name, x in scalars.items()
        }
        checks = [
            tf.debugging.Assert(
                tf.equal(size, 1), [f"`{name}` must be a scalar. Received: {name} with size", size]
            )
            for name, size in sizes.items()
        ]
        # The next checks are waived for non-scalars, so that the message names the fault.
        scalars_ok = tf.reduce_all(tf.stack([tf.equal(size, 1) for size in sizes.values()]))
        max_new_tokens = _min(inputs["max_new_tokens"])
        # GPT-2 continues its prompts; the Transformer decodes from its start token.
        length = (tf.shape(token_ids)[1] if spec.kind == "gpt2" else 1) + max_new_tokens
        checks += [
            tf.debugging.Assert(
                tf.logical_or(tf.logical_not(scalars_ok), max_new_tokens >= 1),
                ["`max_new_tokens` must be >= 1. Received:", max_new_tokens],
            ),
            tf.debugging.Assert(
                tf.logical_or(tf.logical_not(scalars_ok), length <= spec.max_sequence_length),
                [
                    f"The output (prompt and `max_new_tokens`) may have at most "
                    f"max_sequence_length={spec.max_sequence_length} positions. Received: "
                    "output length",
                    length,
                ],
            ),
        ]
        if spec.kind == "gpt2":
            lengths = tf.reduce_sum(tf.cast(padding_mask != 0, tf.int32), axis=1)  # (B,)
            right_padded = tf.range(tf.shape(padding_mask)[1])[None, :] < lengths[:, None]
            checks.append(
                tf.debugging.Assert(
                    tf.logical_and(
                        tf.reduce_all(lengths >= 1),
                        tf.reduce_all(tf.equal(padding_mask != 0, right_padded)),
                    ),
                    [
                        "`padding_mask` must mark a prompt of at least one token at the start "
                        "of every row (right padding). Received: padding_mask",
                        padding_mask,
                    ],
                )
            )
        with tf.control_dependencies(checks):
            scalars = {name: tf.reshape(x, []) for name, x in scalars.items()}
        token_ids, padding_mask = generate_tensors(
            model, token_ids, padding_mask, scalars["max_new_tokens"], seed=scalars.get("seed"),
            **spec.generation,
        )
        return {
            "token_ids": tf.cast(token_ids, tf.int32),
            "padding_mask": tf.cast(padding_mask, tf.int32),
        }

    return generate


def _generate_probe_inputs(spec, seed=1):
    """Two prompts (the second right-padded) and a few new tokens, within the limits."""
    rng = np.random.default_rng(seed)
    ids_name, mask_name = _prompt_spec(spec).sequence_inputs[""]
    maximum = spec.max_sequence_length
    if spec.kind == "gpt2":
        length = max(1, min(4, maximum // 2))
        new_tokens = max(1, min(3, maximum - length))
    else:
        length, new_tokens = min(5, maximum), max(1, min(3, maximum - 1))
    mask = np.ones((2, length), "int32")
    mask[1, max(1, length - 2) :] = 0
    limit = spec.value_limits[ids_name]
    token_ids = rng.integers(min(1, limit - 1), limit, size=(2, length)).astype("int32") * mask
    probes = {ids_name: token_ids, mask_name: mask, "max_new_tokens": np.array(new_tokens, "int32")}
    if _samples(spec):
        probes["seed"] = np.array(seed, "int32")
    return probes


def _generate_reference(model, spec, probes):
    from keras_transformers.generation import generate

    ids_name, mask_name = _prompt_spec(spec).sequence_inputs[""]
    outputs = generate(
        model,
        {ids_name: probes[ids_name], mask_name: probes[mask_name]},
        int(probes["max_new_tokens"]),
        seed=int(probes["seed"]) if "seed" in probes else None,
        max_sequence_length=spec.max_sequence_length,
        **spec.generation,
    )
    return {key: value.astype("int32") for key, value in outputs.items()}


@dataclasses.dataclass(frozen=True)
class Signature:
    """One SavedModel signature: which kinds have it and how it is built and checked.

    Attributes:
        name: the signature key (TF Serving's `signature_name`).
        kinds: the model kinds that have it.
        function: (model, spec) -> a Python function of the signature's inputs that
            returns a dict of named outputs, traced by TensorFlow.
        input_signature: spec -> the list of (structures of) `tf.TensorSpec`s.
        probe_inputs: spec -> a dict of numpy inputs to check the export with.
        reference: (model, spec, probes) -> the source model's outputs for the probes,
            as a dict of numpy arrays (computed with keras ops, on any backend).
        available: spec -> whether this model has the signature (beyond its kind).
        requirement: what `available` asks for, for the error message.
    """

    name: str
    kinds: tuple
    function: object
    input_signature: object = input_signature
    probe_inputs: object = _probe_inputs
    reference: object = None
    available: object = lambda spec: True
    requirement: str = ""


SIGNATURES = {
    "serving_default": Signature(
        "serving_default", KINDS, _serving_default_function, reference=_serving_default_reference
    ),
    "classify": Signature(
        "classify",
        ("bert_classifier", "vit"),
        _classify_function,
        reference=_classify_reference,
        available=lambda spec: spec.num_classes is not None,
        requirement="a classification head (num_classes)",
    ),
    "generate": Signature(
        "generate",
        ("gpt2", "transformer"),
        _generate_function,
        input_signature=_generate_input_signature,
        probe_inputs=_generate_probe_inputs,
        reference=_generate_reference,
        available=lambda spec: spec.max_sequence_length >= 2
        and (spec.kind == "gpt2" or "start_token_id" in spec.generation),
        requirement="generation={'start_token_id': ...}, the decoder's first token, and "
        "max_sequence_length >= 2",
    ),
}


def available_signatures(spec):
    """The names of the signatures exported for a model, `serving_default` first.

    Example:

    >>> spec = ModelSpec(kind="vit", input_ranks={"images": 4}, output_names=("logits",),
    ...                  num_channels=3, patch_size=(4, 4), num_classes=10)
    >>> available_signatures(spec)
    ['serving_default', 'classify']
    """
    return [
        name
        for name, signature in SIGNATURES.items()
        if spec.kind in signature.kinds and signature.available(spec)
    ]


def check_signatures(spec, signatures):
    """Validates the `signatures` argument of the exporter; returns the names to export."""
    available = available_signatures(spec)
    if signatures is None:
        return available
    if isinstance(signatures, str) or not all(isinstance(name, str) for name in signatures):
        raise ValueError(
            f"`signatures` must be a list of signature names. Received: signatures={signatures!r}"
        )
    signatures = list(signatures)
    for name in signatures:
        if name in available:
            continue
        if name in SIGNATURES and spec.kind in SIGNATURES[name].kinds:
            raise ValueError(
                f"The `{name}` signature of a {spec.kind} model needs "
                f"{SIGNATURES[name].requirement}. Received: signatures={signatures!r}"
            )
        raise ValueError(
            f"`signatures` must name signatures that a {spec.kind} model has: {available}. "
            f"Received: signatures={signatures!r}"
        )
    if "serving_default" not in signatures:
        raise ValueError(
            "`signatures` must include 'serving_default' (TF Serving requires it). "
            f"Received: signatures={signatures!r}"
        )
    return sorted(set(signatures), key=signatures.index)
