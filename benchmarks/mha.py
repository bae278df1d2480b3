"""Speed of keras_transformers.layers.MultiHeadAttention against keras.layers.MultiHeadAttention.

Causal self-attention, B=8, T=256, hidden 256, 4 heads of key_dim 64, float32, both layers
built with dropout 0.1. Each layer sits alone in a tiny `keras.Model`, compiled with the
backend's default (`jit_compile="auto"`: XLA on TensorFlow and JAX, eager on torch):

- training: `train_on_batch` (forward, backward, SGD update; dropout active);
- inference: `predict_on_batch` (training=False, so dropout is off).

The two layers are timed alternately in the same process, several repeats each; the median
time per step is reported, and `speedup = keras_time / our_time` (higher is better).

    KERAS_BACKEND=jax python benchmarks/mha.py --output benchmarks/results/mha_jax.json
    python benchmarks/mha.py --table benchmarks/results/mha_*.json > benchmarks/MHA_RESULTS.md

`benchmarks/run_mha.sh` does both for the three backends.
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import time

BATCH, LENGTH, HIDDEN, HEADS, KEY_DIM, DROPOUT = 8, 256, 256, 4, 64, 0.1
BACKEND_PACKAGES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def build(kind, keras):
    from keras_transformers import layers

    inputs = keras.Input(shape=(LENGTH, HIDDEN), batch_size=BATCH)
    if kind == "ours":
        layer = layers.MultiHeadAttention(HEADS, KEY_DIM, dropout=DROPOUT, name="attention")
        outputs = layer(inputs, use_causal_mask=True)
    else:
        layer = keras.layers.MultiHeadAttention(HEADS, KEY_DIM, dropout=DROPOUT, name="attention")
        outputs = layer(inputs, inputs, use_causal_mask=True)
    model = keras.Model(inputs, outputs, name=kind)
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    return model


def time_steps(step, iterations):
    start = time.perf_counter()
    for _ in range(iterations):
        step()  # train_on_batch / predict_on_batch return host values: each step is synced.
    return (time.perf_counter() - start) / iterations


def run(repeats, iterations, warmup):
    import keras
    import numpy as np

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, LENGTH, HIDDEN)).astype("float32")
    y = rng.normal(size=(BATCH, LENGTH, HIDDEN)).astype("float32")
    models = {kind: build(kind, keras) for kind in ("ours", "keras")}
    steps = {
        "training": {k: (lambda m=m: m.train_on_batch(x, y)) for k, m in models.items()},
        "inference": {k: (lambda m=m: m.predict_on_batch(x)) for k, m in models.items()},
    }
    results = {}
    for mode, by_kind in steps.items():
        for step in by_kind.values():
            for _ in range(warmup):  # compiles
                step()
        times = {kind: [] for kind in by_kind}
        for _ in range(repeats):
            for kind, step in by_kind.items():  # alternating, so drift hits both
                times[kind].append(time_steps(step, iterations))
        ours, theirs = statistics.median(times["ours"]), statistics.median(times["keras"])
        results[mode] = {
            "ours_ms": round(1e3 * ours, 3),
            "keras_ms": round(1e3 * theirs, 3),
            "speedup": round(theirs / ours, 3),
            "ours_ms_all": [round(1e3 * t, 3) for t in times["ours"]],
            "keras_ms_all": [round(1e3 * t, 3) for t in times["keras"]],
        }
        print(
            f"{keras.backend.backend():10s} {mode:9s} ours {1e3 * ours:8.2f} ms  "
            f"keras {1e3 * theirs:8.2f} ms  speedup {theirs / ours:.2f}x",
            flush=True,
        )
    backend = keras.backend.backend()
    return {
        "backend": backend,
        "versions": {
            "keras": keras.__version__,
            BACKEND_PACKAGES[backend]: importlib.metadata.version(BACKEND_PACKAGES[backend]),
        },
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
        "config": {
            "batch": BATCH,
            "length": LENGTH,
            "hidden": HIDDEN,
            "heads": HEADS,
            "key_dim": KEY_DIM,
            "dropout": DROPOUT,
            "causal": True,
            "dtype": "float32",
            "jit_compile": "auto",
            "repeats": repeats,
            "iterations": iterations,
        },
        "results": results,
    }


def machine():
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()}"


def table(paths):
    runs = []
    for path in sorted(paths):
        with open(path) as f:
            runs.append(json.load(f))
    order = {"tensorflow": 0, "jax": 1, "torch": 2}
    runs.sort(key=lambda r: order.get(r["backend"], 3))
    lines = [
        "# MultiHeadAttention speed: keras_transformers vs keras.layers",
        "",
        "Generated by `benchmarks/run_mha.sh` (benchmarks/mha.py); do not edit by hand.",
        f"Causal self-attention, B={BATCH}, T={LENGTH}, hidden {HIDDEN}, {HEADS} heads x key_dim "
        f"{KEY_DIM}, float32, dropout {DROPOUT}; `jit_compile=\"auto\"` (XLA on TensorFlow and "
        "JAX, eager on torch). Training = `train_on_batch` (dropout on), inference = "
        "`predict_on_batch`. Median ms per step; speedup = keras / ours (higher is better; "
        "targets: >= 1.0x training, >= 1.3x inference).",
        "",
        "| backend | versions | training ours ms | training keras ms | training speedup "
        "| inference ours ms | inference keras ms | inference speedup |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        t, i = r["results"]["training"], r["results"]["inference"]
        versions = ", ".join(f"{k} {v}" for k, v in r["versions"].items())
        lines.append(
            f"| {r['backend']} | {versions} | {t['ours_ms']:.2f} | {t['keras_ms']:.2f} "
            f"| {t['speedup']:.2f}x | {i['ours_ms']:.2f} | {i['keras_ms']:.2f} | {i['speedup']:.2f}x |"
        )
    machines = sorted({r["machine"] for r in runs})
    dates = sorted({r["date"] for r in runs})
    lines += ["", f"Machine: {'; '.join(machines)}. Date: {', '.join(dates)}.", ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=10, help="steps per timed repeat")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument(
        "--table", nargs="+", metavar="JSON", help="print a markdown table of these results and exit"
    )
    args = parser.parse_args()
    if args.table:
        print(table(args.table))
        return
    result = run(args.repeats, args.iterations, args.warmup)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
