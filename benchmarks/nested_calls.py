"""Our models with nested sublayer calls made directly (`call_sublayer`) vs through Keras'
`Layer.__call__`, alternating in one process.

The models, batch and timing are throughput.py's (ours only). The baseline is the same model
with `call_sublayer` always taking `__call__`; `gain = baseline step time / direct step time`.
Matters on eager PyTorch (every step runs the Python); on JAX and TensorFlow the step is
compiled and both arms should time the same.

    KERAS_BACKEND=torch python benchmarks/nested_calls.py \
        --output benchmarks/results/nested_calls_torch.json
"""

import argparse
import json
import statistics

import common
import throughput


def measure(models, config, repeats, steps, warmup, dtype=None):
    import keras

    from keras_transformers.layers import sublayers

    direct = sublayers._is_direct_call_safe
    arms = {"direct": direct, "keras_call": lambda *args: False}
    results = {}
    for model_name in models:
        inputs, labels = throughput.example_inputs(model_name, config)
        model = throughput.compile_model(throughput.build(model_name, "ours", config, dtype), "ours")
        x = throughput.library_inputs(model_name, "ours", inputs)
        modes = {
            "training": lambda: model.train_on_batch(x, labels),
            "inference": lambda: model.predict_on_batch(x),
        }
        results[model_name] = {}
        for mode, step in modes.items():
            times = {arm: [] for arm in arms}
            try:
                for arm, check in arms.items():
                    sublayers._is_direct_call_safe = check
                    for _ in range(warmup):
                        step()
                for _ in range(repeats):
                    for arm, check in arms.items():  # alternating, so drift hits both
                        sublayers._is_direct_call_safe = check
                        times[arm].append(common.seconds_per_call(step, steps))
            finally:
                sublayers._is_direct_call_safe = direct
            ms = {arm: 1e3 * statistics.median(values) for arm, values in times.items()}
            gain = ms["keras_call"] / ms["direct"]
            results[model_name][mode] = {**{f"{arm}_ms": round(v, 3) for arm, v in ms.items()}, "gain": round(gain, 3)}
            print(
                f"{keras.backend.backend():10s} {model_name:4s} {mode:9s} direct {ms['direct']:8.2f} ms  "
                f"__call__ {ms['keras_call']:8.2f} ms  gain {gain:.2f}x",
                flush=True,
            )
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", help="JSON file to write the results to")
    parser.add_argument("--models", nargs="+", choices=throughput.MODELS, default=list(throughput.MODELS))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5, help="steps timed per repeat")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--config", help="JSON object overriding throughput.CONFIG entries")
    parser.add_argument("--dtype", help="dtype policy of the models, e.g. mixed_bfloat16")
    args = parser.parse_args()
    import keras

    config = dict(throughput.CONFIG, **json.loads(args.config)) if args.config else dict(throughput.CONFIG)
    results = measure(args.models, config, args.repeats, args.steps, args.warmup, args.dtype)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(
                {
                    "backend": keras.backend.backend(),
                    "accelerator": common.accelerator(),
                    "machine": common.machine(),
                    "versions": common.versions(),
                    "date": common.today(),
                    "config": config,
                    "dtype": args.dtype or "float32",
                    "timing": {"repeats": args.repeats, "steps": args.steps, "warmup": args.warmup},
                    "results": results,
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
