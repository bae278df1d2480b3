"""The fastest a GPT-2 training step can be on this backend without changing its math.

A training step of throughput.py's GPT-2 is a fixed list of matrix products: per layer the
Q/K/V, output and feed-forward projections and the two batched attention products, then the
tied vocabulary projection, each once forward and twice backward (the gradients of its left
and right operands: "input" and "weight" gradient, for Q K^T and P V the gradients of Q or P
and of K or V). Any implementation of the same math (ours, keras-hub's) does at least these
products. This script times each one alone, compiled the backend's usual way, in the fastest
of the equivalent operand layouts (A B, A B^T, A^T B, ...; Q/K/V as one product when that is
faster than three; on TensorFlow with or without XLA), and sums them: the *floor*, a lower
bound on the step time that leaves out every norm, softmax, dropout, loss and optimizer
update. Then it times both libraries' `train_on_batch` (alternating, as throughput.py does)
and prints

    ceiling = keras-hub step / floor

the largest speedup over keras-hub that any same-math implementation could reach here. Where
the ceiling is below a target (issue 8 asks for 1.25x), the target needs less work, not a
faster implementation of the same work.

    KERAS_BACKEND=tensorflow python benchmarks/matmul_floor.py [--output floor.json]
"""

import argparse
import json
import statistics

import common
import throughput

LAYOUTS = ("nn", "nt", "tn", "tt")  # which operands are stored transposed


def training_products(config):
    """[(name, batch, m, k, n, count)]: the (m, k) @ (k, n) products of one GPT-2 training
    step, `batch` independent ones at a time, `count` times per step (forward and both
    gradients of each forward product)."""
    n = config["batch_size"] * config["sequence_length"]
    d, f, v = config["hidden_dim"], config["intermediate_dim"], config["vocabulary_size"]
    heads, t, layers = config["num_heads"], config["sequence_length"], config["num_layers"]
    bh, head_dim = config["batch_size"] * heads, d // heads
    forward = [  # (name, batch, m, k, n, count)
        ("query/key/value projection", 1, n, d, 3 * d, layers),
        ("output projection", 1, n, d, d, layers),
        ("feed-forward in", 1, n, d, f, layers),
        ("feed-forward out", 1, n, f, d, layers),
        ("attention scores Q K^T", bh, t, head_dim, t, layers),
        ("attention values P V", bh, t, t, head_dim, layers),
        ("vocabulary projection", 1, n, d, v, 1),
    ]
    products = []
    for name, batch, m, k, cols, count in forward:
        products.append((f"{name}: forward", batch, m, k, cols, count))
        products.append((f"{name}: input gradient", batch, m, cols, k, count))  # dC B^T
        products.append((f"{name}: weight gradient", batch, k, m, cols, count))  # A^T dC
    return products


def product_seconds(batch, m, k, n, repeats=5, calls=10):
    """Best time of one (batch x) (m, k) @ (k, n) product over the layouts; returns
    (seconds, layout)."""
    import keras
    import numpy as np

    backend = keras.backend.backend()
    rng = np.random.default_rng(0)
    best = (float("inf"), None)
    for layout in LAYOUTS:
        a_shape = (k, m) if layout[0] == "t" else (m, k)
        b_shape = (n, k) if layout[1] == "t" else (k, n)
        a = rng.normal(size=(batch, *a_shape)).astype("float32")
        b = rng.normal(size=(batch, *b_shape)).astype("float32")
        if batch == 1:
            a, b = a[0], b[0]
        for run in _compiled_products(backend, a, b, layout):
            run()
            for _ in range(repeats):
                best = min(best, (common.seconds_per_call(run, calls), layout))
    return best


def _compiled_products(backend, a, b, layout):
    """No-argument functions computing op_a(a) @ op_b(b), each returning when it is done:
    jax.jit; TensorFlow with and without XLA (oneDNN); eager torch."""
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        a, b = jnp.asarray(a), jnp.asarray(b)
        product = jax.jit(lambda a, b: _oriented(jnp.swapaxes, a, b, layout))
        return [lambda: product(a, b).block_until_ready()]
    if backend == "tensorflow":
        import tensorflow as tf

        a, b = tf.constant(a), tf.constant(b)
        products = [
            tf.function(
                lambda a, b: tf.matmul(a, b, transpose_a=layout[0] == "t", transpose_b=layout[1] == "t"),
                jit_compile=jit_compile,
            )
            for jit_compile in (True, False)
        ]
        return [lambda p=p: p(a, b).numpy() for p in products]  # .numpy(): done when it returns
    import torch

    a, b = torch.as_tensor(a), torch.as_tensor(b)
    return [lambda: _oriented(torch.transpose, a, b, layout)]  # eager: done when it returns


def _oriented(swapaxes, a, b, layout):
    a = swapaxes(a, -1, -2) if layout[0] == "t" else a
    b = swapaxes(b, -1, -2) if layout[1] == "t" else b
    return a @ b


def floor(config):
    """The summed best product times of one training step; returns (seconds, rows)."""
    rows = []
    for name, batch, m, k, n, count in training_products(config):
        seconds, layout = product_seconds(batch, m, k, n)
        if name.startswith("query/key/value"):  # or as three products with a d-wide side
            d = config["hidden_dim"]
            split = [size // 3 if size == 3 * d else size for size in (m, k, n)]
            separate, separate_layout = product_seconds(batch, *split)
            if 3 * separate < seconds:
                seconds, layout = 3 * separate, f"3 x {separate_layout}"
        flops = 2 * batch * m * k * n
        rows.append(
            {
                "product": name,
                "shape": f"{batch} x ({m}, {k}) @ ({k}, {n})" if batch > 1 else f"({m}, {k}) @ ({k}, {n})",
                "count": count,
                "layout": layout,
                "ms": round(1e3 * seconds, 3),
                "gflops": round(flops / seconds / 1e9, 1),
            }
        )
    return sum(row["ms"] * row["count"] for row in rows) / 1e3, rows


def library_steps(config, repeats, steps, warmup):
    """Median train_on_batch seconds of GPT-2, ours and keras-hub's, timed alternately."""
    inputs, labels = throughput.example_inputs("gpt2", config)
    runs = {}
    for library in throughput.LIBRARIES:
        model = throughput.compile_model(throughput.build("gpt2", library, config), library)
        x = throughput.library_inputs("gpt2", library, inputs)
        runs[library] = lambda m=model, x=x: m.train_on_batch(x, labels)
        for _ in range(warmup):
            runs[library]()
    times = {library: [] for library in runs}
    for _ in range(repeats):
        for library, run in runs.items():
            times[library].append(common.seconds_per_call(run, steps))
    return {library: statistics.median(values) for library, values in times.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", help="JSON file to write the results to")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    import keras

    config = dict(throughput.CONFIG)
    backend = keras.backend.backend()
    floor_seconds, rows = floor(config)
    steps = library_steps(config, args.repeats, args.steps, args.warmup)
    print(f"{backend}, GPT-2 training step, {common.machine()}")
    print("| product | shape | per step | fastest layout | ms each | GFLOP/s |")
    print("|---|---|---:|---|---:|---:|")
    for row in rows:
        print(
            f"| {row['product']} | {row['shape']} | {row['count']} | {row['layout']} "
            f"| {row['ms']:.2f} | {row['gflops']:.0f} |"
        )
    print(f"floor (products only): {1e3 * floor_seconds:.1f} ms")
    for library, seconds in steps.items():
        print(f"{library}: {1e3 * seconds:.1f} ms per step = floor x {seconds / floor_seconds:.2f}")
    ceiling = steps["keras_hub"] / floor_seconds
    speedup = steps["keras_hub"] / steps["ours"]
    print(f"speedup now {speedup:.2f}x; ceiling for the same math {ceiling:.2f}x")
    if args.output:
        result = {
            "backend": backend,
            "machine": common.machine(),
            "versions": common.versions("keras-hub"),
            "date": common.today(),
            "config": config,
            "floor_ms": round(1e3 * floor_seconds, 2),
            "products": rows,
            "step_ms": {library: round(1e3 * s, 2) for library, s in steps.items()},
            "speedup": round(speedup, 3),
            "ceiling": round(ceiling, 3),
        }
        with open(args.output, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
