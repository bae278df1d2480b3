"""PyTorch: one AdamW update of our models' weights, `keras_transformers.optimizers.AdamW`
against `keras.optimizers.AdamW`.

For each of the throughput benchmark's models (ours), two copies of its trainable weights
(the same values) are updated with the same gradients, one by each optimizer (learning rate
1e-4, weight decay 0.004, Keras' defaults otherwise), the two `apply` calls alternating: the
median of `--repeats` rounds of `--steps` calls each, after `--warmup` calls. Both copies get
the same number of updates, so it also reports the largest difference between them at the
end. `speedup = Keras ms / ours ms`.

    KERAS_BACKEND=torch python benchmarks/optimizer.py --output benchmarks/results/optimizer_torch.json
"""

import common
import throughput


def measure(model_name, config, repeats, steps, warmup):
    import keras
    import numpy as np

    from keras_transformers.optimizers import AdamW

    keras.utils.set_random_seed(0)
    model = throughput.build(model_name, "ours", config)
    start = [keras.ops.convert_to_numpy(v) for v in model.trainable_variables]
    rng = np.random.default_rng(0)
    grads = [keras.ops.convert_to_tensor(1e-3 * rng.normal(size=v.shape).astype("float32")) for v in start]
    arms = {}
    copies = {}
    for arm, cls in (("ours", AdamW), ("keras", keras.optimizers.AdamW)):
        copies[arm] = [keras.Variable(v, name=f"w{i}") for i, v in enumerate(start)]
        optimizer = cls(learning_rate=1e-4)
        optimizer.build(copies[arm])
        arms[arm] = lambda optimizer=optimizer, weights=copies[arm]: optimizer.apply(grads, weights)
    result = common.alternate(arms, repeats, steps, warmup, baseline="keras")
    result["parameters"] = int(sum(v.size for v in start))
    result["variables"] = len(start)
    result["max_weight_difference"] = max(
        float(np.max(np.abs(keras.ops.convert_to_numpy(a) - keras.ops.convert_to_numpy(b))))
        for a, b in zip(copies["ours"], copies["keras"])
    )
    return result


def main():
    args, malloc = common.ab_arguments(__doc__, throughput.MODELS, steps=10, warmup=3)
    record = common.ab_record("torch", "optimizer.py", "PyTorch (XLA fuses Keras' update elsewhere)", args, malloc)
    config = dict(throughput.CONFIG)
    result = {
        **record,
        "results": {},
    }
    for name in args.models:
        entry = measure(name, config, args.repeats, args.steps, args.warmup)
        result["results"][name] = entry
        print(
            f"{name} ({entry['parameters']:,} weights in {entry['variables']} variables): ours "
            f"{entry['ours']['step_ms']} ms, Keras {entry['keras']['step_ms']} ms, speedup "
            f"{entry['speedup']:.2f}x; largest weight difference {entry['max_weight_difference']:.1e}",
            flush=True,
        )
    if args.output:
        common.write_json(args.output, result)


if __name__ == "__main__":
    main()
