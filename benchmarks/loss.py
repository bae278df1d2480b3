"""Language-model loss: our `SparseCategoricalCrossentropy` vs Keras' own, forward + backward.

Both from logits, no label smoothing, on (batch, sequence, vocabulary) float32 logits (the
throughput benchmark's GPT-2 head: 8 x 128 x 8192), alternating in one process. Each arm
returns the loss and its gradient with respect to the logits (the part of a training step
the loss adds). `speedup = keras ms / ours ms`.

    KERAS_BACKEND=torch python benchmarks/loss.py --output benchmarks/results/loss_torch.json
"""

import argparse
import json
import statistics

import common


def value_and_grad_fn(loss, logits, labels):
    """A no-argument function returning (loss, d loss / d logits) on the current backend."""
    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        def step():
            x = logits.detach().requires_grad_(True)
            value = loss(labels, x)
            value.backward()
            return value, x.grad

        return step
    if backend == "jax":
        import jax

        grad_fn = jax.jit(jax.value_and_grad(lambda x: loss(labels, x)))

        def step():
            value, grad = grad_fn(logits)
            grad.block_until_ready()
            return value, grad

        return step
    import tensorflow as tf

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            tape.watch(logits)
            value = loss(labels, logits)
        return value, tape.gradient(value, logits)

    def run():
        value, grad = step()
        grad.numpy()
        return value, grad

    return run


def measure(batch, length, vocabulary, repeats, steps):
    import keras
    import numpy as np

    from keras_transformers.losses import SparseCategoricalCrossentropy

    rng = np.random.default_rng(0)
    logits = keras.ops.convert_to_tensor(rng.normal(size=(batch, length, vocabulary)).astype("float32"))
    labels = keras.ops.convert_to_tensor(rng.integers(0, vocabulary, (batch, length)).astype("int32"))
    arms = {
        "ours": SparseCategoricalCrossentropy(from_logits=True, reduction="sum_over_batch_size"),
        "keras": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    }
    steps_by_arm = {name: value_and_grad_fn(loss, logits, labels) for name, loss in arms.items()}
    values = {name: step() for name, step in steps_by_arm.items()}  # also the warm-up
    difference = float(np.max(np.abs(
        keras.ops.convert_to_numpy(values["ours"][1]) - keras.ops.convert_to_numpy(values["keras"][1])
    )))
    times = {name: [] for name in arms}
    for _ in range(repeats):
        for name, step in steps_by_arm.items():  # alternating, so drift hits both
            times[name].append(common.seconds_per_call(step, steps))
    ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    result = {
        "ours_ms": round(ms["ours"], 2),
        "keras_ms": round(ms["keras"], 2),
        "speedup": round(ms["keras"] / ms["ours"], 3),
        "loss_ours": float(keras.ops.convert_to_numpy(values["ours"][0])),
        "loss_keras": float(keras.ops.convert_to_numpy(values["keras"][0])),
        "max_gradient_difference": difference,
    }
    print(
        f"{keras.backend.backend():10s} logits {batch}x{length}x{vocabulary}: ours {ms['ours']:7.2f} ms  "
        f"keras {ms['keras']:7.2f} ms  speedup {result['speedup']:.2f}x  "
        f"(loss {result['loss_ours']:.6f} vs {result['loss_keras']:.6f}, gradients within {difference:.1e})",
        flush=True,
    )
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", help="JSON file to write the results to")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--vocabulary", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=3, help="calls timed per repeat")
    args = parser.parse_args()
    import keras

    result = measure(args.batch, args.length, args.vocabulary, args.repeats, args.steps)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(
                {
                    "backend": keras.backend.backend(),
                    "machine": common.machine(),
                    "versions": common.versions(),
                    "date": common.today(),
                    "shape": [args.batch, args.length, args.vocabulary],
                    "timing": {"repeats": args.repeats, "steps": args.steps},
                    "result": result,
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
