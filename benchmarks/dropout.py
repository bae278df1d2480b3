"""PyTorch on a CPU: our `Dropout`'s mask (`uniform_`) against Keras' (`bernoulli_`).

`keras_transformers.layers.Dropout` is Keras' `Dropout` except on PyTorch's CPU, where it draws
its mask with `uniform_` instead of going through `torch.nn.functional.dropout` (a
`bernoulli_` draw). Two measurements, each alternating the two in one process:

- layer: one forward + backward of a dropout layer over the tensors the throughput
  benchmark's models drop out (attention probabilities 8 x 4 x 128 x 128, block outputs
  8 x 128 x 256), `keras.layers.Dropout` against ours, called through `__call__`;
- model: `train_on_batch` of the throughput benchmark's models (ours, AdamW, dropout 0.1),
  with every one of their `Dropout` layers calling our `call` and, alternately, Keras'
  (`keras.layers.Dropout.call`, set on each instance between timed rounds).

Each figure is the median of `--repeats` rounds of `--steps` calls; `speedup = Keras ms /
ours ms`. It also reports the fraction of values each mask kept (the rate is 0.1).

    KERAS_BACKEND=torch python benchmarks/dropout.py --output benchmarks/results/dropout_torch.json
"""

import types

import common
import throughput

SHAPES = {"attention probabilities": (8, 4, 128, 128), "block output": (8, 128, 256)}


def measure_layer(shape, rate, repeats, steps, warmup):
    import keras
    import torch

    from keras_transformers.layers import Dropout

    layers = {"ours": Dropout(rate), "keras": keras.layers.Dropout(rate)}
    x = torch.randn(*shape, requires_grad=True)
    upstream = torch.randn(*shape)

    def step(layer):
        layer(x, training=True).backward(upstream)
        x.grad = None

    arms = {arm: (lambda layer=layer: step(layer)) for arm, layer in layers.items()}
    result = common.alternate(arms, repeats, steps, warmup, baseline="keras")
    with torch.no_grad():
        ones = torch.ones(*shape)
        result["kept_fraction"] = {arm: float((layer(ones, training=True) != 0).float().mean()) for arm, layer in layers.items()}
    return result


def measure_model(model_name, config, repeats, steps, warmup):
    import keras

    from keras_transformers.layers import Dropout

    keras.utils.set_random_seed(0)
    inputs, labels = throughput.example_inputs(model_name, config)
    model = throughput.compile_model(throughput.build(model_name, "ours", config), "ours")
    dropouts = [layer for layer in _all_layers(model) if isinstance(layer, Dropout)]

    def use(call):
        for layer in dropouts:
            if call is None:
                vars(layer).pop("call", None)  # back to the class' (our) `call`
            else:
                layer.call = types.MethodType(call, layer)

    def step(call):
        use(call)
        return model.train_on_batch(inputs, labels)

    arms = {"ours": lambda: step(None), "keras": lambda: step(keras.layers.Dropout.call)}
    result = common.alternate(arms, repeats, steps, warmup, baseline="keras")
    use(None)
    result["dropout_layers"] = len(dropouts)
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
    args, malloc = common.ab_arguments(__doc__, throughput.MODELS, steps=5, warmup=3, keep_freed_memory_option=False)
    record = common.ab_record("torch", "dropout.py", "PyTorch (the mask differs there only)", args, malloc)
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
            f"{entry['ours']['step_ms']} ms, Keras {entry['keras']['step_ms']} ms, speedup {entry['speedup']:.2f}x",
            flush=True,
        )
    if args.output:
        common.write_json(args.output, result)


if __name__ == "__main__":
    main()
