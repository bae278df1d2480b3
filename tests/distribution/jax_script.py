"""Trains each builder on 8 virtual CPU devices: one device, DataParallel, ModelParallel (2x4).

Run by tests/distribution/test_layout_map.py in a subprocess (the device count is fixed
when JAX starts):

    XLA_FLAGS=--xla_force_host_platform_device_count=8 KERAS_BACKEND=jax \
        python -m tests.distribution.jax_script OUT.json [KIND ...]

Writes, per model kind, the losses and final weights' largest differences between the
runs, every weight's sharding under ModelParallel and DataParallel, and greedy
generations of the single-device and the sharded model. The test does the asserting.
"""

import importlib
import json
import sys
import time

import keras
import numpy as np

from keras_transformers import distribution as kt_distribution
from keras_transformers.models import bert, gpt2, transformer, vit

STEPS = 3
BATCH_SIZE = 8
LENGTH = 8
VOCABULARY_SIZE = 32
SIZES = dict(num_layers=1, num_heads=4, hidden_dim=16, intermediate_dim=32, dropout=0.0)


def build(kind):
    """(model, inputs, targets, loss) for `kind`, built in the current distribution."""
    rng = np.random.default_rng(0)
    ids = lambda shape: rng.integers(1, VOCABULARY_SIZE, size=shape).astype("int32")  # noqa: E731
    mask = np.ones((BATCH_SIZE, LENGTH), "int32")
    mask[1, 5:] = 0
    sparse = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    if kind == "gpt2":
        model = gpt2.gpt2(VOCABULARY_SIZE, max_sequence_length=16, **SIZES)
        x = {"token_ids": ids((BATCH_SIZE, LENGTH)), "padding_mask": mask}
        return model, x, ids((BATCH_SIZE, LENGTH)), sparse
    if kind == "transformer":
        model = transformer.transformer(VOCABULARY_SIZE, VOCABULARY_SIZE, **SIZES)
        x = {
            "encoder_token_ids": ids((BATCH_SIZE, LENGTH)),
            "encoder_padding_mask": mask,
            "decoder_token_ids": ids((BATCH_SIZE, LENGTH)),
            "decoder_padding_mask": mask,
        }
        return model, x, ids((BATCH_SIZE, LENGTH)), sparse
    if kind == "bert":
        backbone = bert.bert(VOCABULARY_SIZE, max_sequence_length=16, **SIZES)
        model = bert.bert_pretraining(backbone)
        x = {
            "token_ids": ids((BATCH_SIZE, LENGTH)),
            "segment_ids": (np.arange(LENGTH) >= LENGTH // 2).astype("int32")[None].repeat(BATCH_SIZE, 0),
            "padding_mask": mask,
            "mask_positions": rng.integers(0, 5, size=(BATCH_SIZE, 2)).astype("int32"),
        }
        y = {"mlm_logits": ids((BATCH_SIZE, 2)), "nsp_logits": rng.integers(0, 2, BATCH_SIZE)}
        return model, x, y, {"mlm_logits": sparse, "nsp_logits": sparse}
    model = vit.vit(image_size=8, patch_size=4, num_classes=10, **SIZES)
    x = {"images": rng.normal(size=(BATCH_SIZE, 8, 8, 3)).astype("float32")}
    return model, x, rng.integers(0, 10, BATCH_SIZE), sparse


def train(kind, distribution, weights):
    """(model, initial weights, losses) after STEPS steps from `weights` (None: its own)."""
    keras.distribution.set_distribution(distribution)
    try:
        model, x, y, loss = build(kind)
        if weights is not None:
            model.set_weights(weights)
        initial = model.get_weights()
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss=loss)
        history = model.fit(x, y, batch_size=BATCH_SIZE, epochs=STEPS, shuffle=False, verbose=0)
    finally:
        keras.distribution.set_distribution(None)
    return model, initial, history.history["loss"]


def sharding(variable):
    value = variable.value
    spec = getattr(value.sharding, "spec", None)
    return {
        "type": type(value.sharding).__name__,
        "spec": None if spec is None else [list(a) if isinstance(a, tuple) else a for a in spec],
        "mesh": None if spec is None else dict(value.sharding.mesh.shape),
        "shape": list(value.shape),
        "shard_shape": list(value.addressable_shards[0].data.shape),
        "num_devices": len(value.sharding.device_set),
    }


def generation(kind, model):
    try:
        generate = importlib.import_module("keras_transformers.generation").generate
    except ImportError as error:
        return f"skipped: {error}"
    rng = np.random.default_rng(1)
    prompts = rng.integers(1, VOCABULARY_SIZE, size=(2, 3)).astype("int32")
    mask = np.array([[1, 1, 1], [1, 1, 0]], "int32")
    if kind == "gpt2":
        out = generate(model, {"token_ids": prompts, "padding_mask": mask}, 5, sampler="greedy")
    else:
        out = generate(
            model,
            {"encoder_token_ids": prompts, "encoder_padding_mask": mask},
            5,
            sampler="greedy",
            start_token_id=1,
        )
    return out["token_ids"].tolist()


def run(kind):
    # (No keras.utils.set_random_seed: it imports TensorFlow to seed it too.)
    single, initial, single_losses = train(kind, None, None)
    data_parallel, _, dp_losses = train(kind, keras.distribution.DataParallel(), initial)
    config = dict(SIZES, vocabulary_size=VOCABULARY_SIZE)
    model_parallel, _, mp_losses = train(
        kind, kt_distribution.model_parallel(config, mesh_shape=(2, 4)), initial
    )

    def largest_difference(model):
        return max(
            float(np.max(np.abs(a - b))) for a, b in zip(single.get_weights(), model.get_weights())
        )

    result = {
        "losses": {"single": single_losses, "data_parallel": dp_losses, "model_parallel": mp_losses},
        "weight_difference": {
            "data_parallel": largest_difference(data_parallel),
            "model_parallel": largest_difference(model_parallel),
        },
        "model_parallel_sharding": {w.path: sharding(w) for w in model_parallel.weights},
        "data_parallel_sharding": {w.path: sharding(w) for w in data_parallel.weights},
        "momentum_sharding": [
            [reference.path, sharding(momentum)["spec"]]
            for reference, momentum in zip(
                model_parallel.trainable_variables, model_parallel.optimizer.momentums
            )
        ],
    }
    if kind in ("gpt2", "transformer"):
        result["generation"] = {
            "single": generation(kind, single),
            "model_parallel": generation(kind, model_parallel),
        }
    return result


def layouts():
    """{model name: {path: sharding}} for every builder and head, built under ModelParallel."""
    config = dict(SIZES, vocabulary_size=VOCABULARY_SIZE)
    # GPT-2's come from its training run; each variable costs a compile here, so one
    # model per set of paths (the plain tied `transformer` has a subset of these).
    with kt_distribution.model_parallel(config, mesh_shape=(2, 4)).scope():
        backbone = bert.bert(VOCABULARY_SIZE, max_sequence_length=16, **SIZES)
        models = {
            "bert_pretraining": bert.bert_pretraining(backbone),
            "bert_classifier": bert.bert_classifier(backbone, num_classes=3),
            "transformer_untied": transformer.transformer(
                VOCABULARY_SIZE, VOCABULARY_SIZE, tie_output_projection=False, **SIZES
            ),
            "vit": vit.vit(image_size=8, patch_size=4, num_classes=10, **SIZES),
        }
    return {name: {w.path: sharding(w) for w in model.weights} for name, model in models.items()}


def main(path, kinds):
    """`kinds`: "layouts" and/or model kinds to train (default: all of them)."""
    import jax

    results = {"device_count": jax.device_count(), "times": {}}
    for kind in kinds or ("layouts",) + kt_distribution.MODEL_KINDS:
        start = time.perf_counter()
        results[kind] = layouts() if kind == "layouts" else run(kind)
        results["times"][kind] = time.perf_counter() - start
    results["tensorflow_imported"] = "tensorflow" in sys.modules
    with open(path, "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
