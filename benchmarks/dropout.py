"""Our `Dropout`'s mask against Keras', on the current backend (its CPU).

`keras_transformers.layers.Dropout` is Keras' `Dropout` with a faster mask on a CPU:
PyTorch draws it with `uniform_` instead of `torch.nn.functional.dropout` (a `bernoulli_`
draw); JAX computes `jax.random.bernoulli`'s own mask with the Threefry hash written out
(the same bits); TensorFlow under XLA draws unseeded masks from that hash instead of
`stateless_dropout`. Two measurements, each alternating the two in one process:

- layer: one forward + backward of a dropout layer over the tensors the throughput
  benchmark's models drop out (attention probabilities 8 x 4 x 128 x 128, block outputs
  8 x 128 x 256), `keras.layers.Dropout` against ours (JAX and TensorFlow: compiled with
  XLA, as our models' training steps are);
- model: `train_on_batch` of the throughput benchmark's models (ours, with our AdamW,
  dropout 0.1), two copies with the same weights: one as built, one with every `Dropout`
  layer calling Keras' `keras.layers.Dropout.call` (set on each instance before the first
  step, so before JAX and TensorFlow trace it). On JAX and TensorFlow, a third copy is
  traced with the hashed mask not forced into memory (`_computed_once` as the identity):
  `mask_once_speedup` = that copy's ms / ours.

Each figure is the median of `--repeats` rounds of `--steps` calls; `speedup = Keras ms /
ours ms`. It also reports the fraction of values each mask kept (the rate is 0.1).

    KERAS_BACKEND=torch python benchmarks/dropout.py --output benchmarks/results/dropout_torch.json
    KERAS_BACKEND=jax python benchmarks/dropout.py --keep-freed-memory --output benchmarks/results/dropout_jax.json
    KERAS_BACKEND=tensorflow python benchmarks/dropout.py --output benchmarks/results/dropout_tensorflow.json
"""

import types

import common
import throughput

SHAPES = {"attention probabilities": (8, 4, 128, 128), "block output": (8, 128, 256)}


def measure_layer(shape, rate, repeats, steps, warmup):
    import keras
    import numpy as np

    from keras_transformers.layers import Dropout

    layers = {"ours": Dropout(rate), "keras": keras.layers.Dropout(rate)}
    rng = np.random.default_rng(0)
    x, upstream = (rng.normal(size=shape).astype("float32") for _ in range(2))
    step = {"torch": _torch_step, "jax": _jax_step, "tensorflow": _tensorflow_step}[keras.backend.backend()]
    arms = {arm: step(layer, x, upstream) for arm, layer in layers.items()}
    result = common.alternate(arms, repeats, steps, warmup, baseline="keras")
    ones = np.ones(shape, "float32")
    result["kept_fraction"] = {
        arm: float(np.mean(keras.ops.convert_to_numpy(layer(ones, training=True)) != 0))
        for arm, layer in layers.items()
    }
    return result


def _torch_step(layer, x, upstream):
    import torch

    x, upstream = torch.tensor(x, requires_grad=True), torch.tensor(upstream)

    def step():
        layer(x, training=True).backward(upstream)
        x.grad = None

    return step


def _jax_step(layer, x, upstream):
    import jax

    def loss(x, state):  # the layer's seed state goes in and out, as in a training step
        y, state = layer.stateless_call([], state, x, training=True)
        return (y * upstream).sum(), state

    gradient = jax.jit(jax.grad(loss, has_aux=True))
    state = [v.value for v in layer.non_trainable_variables]
    x, upstream = jax.numpy.asarray(x), jax.numpy.asarray(upstream)

    def step():
        nonlocal state
        grad, state = gradient(x, state)
        grad.block_until_ready()

    return step


def _tensorflow_step(layer, x, upstream):
    import tensorflow as tf

    x, upstream = tf.constant(x), tf.constant(upstream)

    @tf.function(jit_compile=True)
    def gradient():
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
        return tape.gradient(y, x, output_gradients=upstream)

    return lambda: gradient().numpy()


def measure_model(model_name, config, repeats, steps, warmup):
    import keras

    from keras_transformers.layers import Dropout
    from keras_transformers.layers import dropout as dropout_module

    inputs, labels = throughput.example_inputs(model_name, config)
    names = ("ours", "keras")
    if keras.backend.backend() != "torch":  # PyTorch has no compiled step to fuse the hash
        names += ("hash_in_consumers",)
    models = {}
    for arm in names:
        keras.utils.set_random_seed(0)  # the same weights in all
        model = throughput.compile_model(throughput.build(model_name, "ours", config), "ours")
        dropouts = [layer for layer in _all_layers(model) if isinstance(layer, Dropout)]
        if arm == "keras":
            for layer in dropouts:
                layer.call = types.MethodType(keras.layers.Dropout.call, layer)
        computed_once = dropout_module._computed_once
        if arm == "hash_in_consumers":
            dropout_module._computed_once = lambda mask: mask
        try:
            model.train_on_batch(inputs, labels)  # traced now, each arm as set above
        finally:
            dropout_module._computed_once = computed_once
        models[arm] = model
    arms = {arm: (lambda m=model: m.train_on_batch(inputs, labels)) for arm, model in models.items()}
    result = common.alternate(arms, repeats, steps, warmup, baseline="keras")
    result["dropout_layers"] = len(dropouts)
    if "hash_in_consumers" in result:
        result["mask_once_speedup"] = round(
            result["hash_in_consumers"]["step_ms"] / result["ours"]["step_ms"], 3
        )
    return result


def _all_layers(layer):
    """`layer` and every layer under it (`Layer._flatten_layers` is private)."""
    seen, stack = [], [layer]
    while stack:
        current = stack.pop()
        if any(current is s for s in seen):
            continue
        seen.append(current)
        stack.extend(getattr(current, "_layers", []))
    return seen


def main():
    args, malloc = common.ab_arguments(__doc__, throughput.MODELS, steps=5, warmup=3)
    record = common.ab_record(None, "dropout.py", "", args, malloc)
    config = dict(throughput.CONFIG)
    result = {
        **record,
        "rate": config["dropout"],
        "layer": {},
        "model": {},
    }
    for name, shape in SHAPES.items():
        entry = measure_layer(shape, config["dropout"], args.repeats, 4 * args.steps, args.warmup)
        result["layer"][name] = {"shape": list(shape), **entry}
        print(
            f"layer {name} {shape}: ours {entry['ours']['step_ms']} ms, Keras {entry['keras']['step_ms']} ms, "
            f"speedup {entry['speedup']:.2f}x; kept {entry['kept_fraction']}",
            flush=True,
        )
    for name in args.models:
        entry = measure_model(name, config, args.repeats, args.steps, args.warmup)
        result["model"][name] = entry
        print(
            f"model {name} train_on_batch ({entry['dropout_layers']} Dropout layers): ours "
            f"{entry['ours']['step_ms']} ms, Keras {entry['keras']['step_ms']} ms, speedup {entry['speedup']:.2f}x"
            + (
                f"; hash in its consumers {entry['hash_in_consumers']['step_ms']} ms, "
                f"mask once {entry['mask_once_speedup']:.3f}x"
                if "mask_once_speedup" in entry
                else ""
            ),
            flush=True,
        )
    if args.output:
        common.write_json(args.output, result)


if __name__ == "__main__":
    main()
