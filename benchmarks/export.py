"""Forward latency of an exported SavedModel against the same model in Keras, on TensorFlow.

A small GPT-2 (vocabulary 8192, 4 layers, 4 heads, hidden 256, intermediate 1024, float32)
on token sequences of length 128, batch 1 and 32, three ways in one process:

- savedmodel: `tf.saved_model.load(export)` and its `serving_default` signature, the graph
  TF Serving runs (input asserts included), called with tensors;
- predict: `model.predict(x, batch_size=B)` (Keras' loop, compiled `predict_step`);
- call: `model(x, training=False)`, eager.

Every call returns host (numpy) logits of shape (B, 128, 8192), so each one is synced. The
three are timed alternately, several repeats each; the median ms per call is reported, and
`vs_savedmodel = time / savedmodel time` (above 1: the SavedModel is faster). The export
time (trace, write, verification) is reported too.

Generation: the greedy `generate` signature (the KV-cached loop inside the graph) against
Python `keras_transformers.generation.generate` (the same loop, XLA-compiled on first use),
prompts of 64 tokens plus 64 new tokens, batch 1 and 32; new tokens per second (median).

    KERAS_BACKEND=tensorflow python benchmarks/export.py --output benchmarks/results/export_tensorflow.json
    python benchmarks/export.py --table benchmarks/results/export_tensorflow.json > benchmarks/EXPORT_RESULTS.md

(about five minutes on 2 CPU cores).
"""

import argparse
import datetime
import importlib.metadata
import json
import os
import shutil
import statistics
import tempfile
import time

from common import machine, seconds_per_call, write_json

CONFIG = dict(
    vocabulary_size=8192,
    num_layers=4,
    num_heads=4,
    hidden_dim=256,
    intermediate_dim=1024,
    max_sequence_length=128,
)
LENGTH = 128
BATCHES = (1, 32)
METHODS = ("savedmodel", "predict", "call")
PROMPT_LENGTH, NEW_TOKENS = 64, 64
GENERATORS = ("savedmodel", "python")


def run(repeats, iterations, warmup):
    import keras
    import numpy as np
    import tensorflow as tf

    from keras_transformers.export import export_saved_model
    from keras_transformers.generation import generate
    from keras_transformers.models.gpt2 import gpt2

    if keras.backend.backend() != "tensorflow":
        raise SystemExit("Run with KERAS_BACKEND=tensorflow: this compares against TensorFlow.")
    keras.utils.set_random_seed(0)
    model = gpt2(**CONFIG, dropout=0.0)
    folder = tempfile.mkdtemp(prefix="export_benchmark_")
    start = time.perf_counter()
    path = export_saved_model(model, os.path.join(folder, "gpt2"))
    export_seconds = time.perf_counter() - start
    size = sum(
        os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names
    )
    loaded = tf.saved_model.load(path)
    serving_default, generate_signature = (loaded.signatures[k] for k in ("serving_default", "generate"))
    shutil.rmtree(folder)  # loaded: the variables are in memory

    rng = np.random.default_rng(0)
    results = {}
    for batch in BATCHES:
        token_ids = rng.integers(0, CONFIG["vocabulary_size"], (batch, LENGTH)).astype("int32")
        inputs = {"token_ids": token_ids, "padding_mask": np.ones_like(token_ids)}
        tensors = {key: tf.constant(value) for key, value in inputs.items()}
        calls = {
            "savedmodel": lambda: serving_default(**tensors)["logits"].numpy(),
            "predict": lambda: model.predict(inputs, batch_size=batch, verbose=0),
            "call": lambda: keras.ops.convert_to_numpy(model(inputs, training=False)),
        }
        outputs = {method: call() for method, call in calls.items()}
        for method in METHODS[1:]:  # the same numbers all three ways
            np.testing.assert_allclose(outputs[method], outputs["savedmodel"], atol=1e-4, rtol=0)
        for call in calls.values():
            for _ in range(warmup):
                call()
        times = {method: [] for method in METHODS}
        for _ in range(repeats):
            for method in METHODS:  # alternating, so drift hits all three
                times[method].append(seconds_per_call(calls[method], iterations))
        medians = {method: statistics.median(times[method]) for method in METHODS}
        results[f"batch_{batch}"] = {
            **{f"{method}_ms": round(1e3 * medians[method], 3) for method in METHODS},
            **{
                f"{method}_vs_savedmodel": round(medians[method] / medians["savedmodel"], 3)
                for method in METHODS[1:]
            },
            **{f"{method}_ms_all": [round(1e3 * t, 3) for t in times[method]] for method in METHODS},
        }
        print(
            f"batch {batch:3d}: "
            + "  ".join(f"{method} {1e3 * medians[method]:8.2f} ms" for method in METHODS),
            flush=True,
        )
    generation = {}
    for batch in BATCHES:
        token_ids = rng.integers(1, CONFIG["vocabulary_size"], (batch, PROMPT_LENGTH)).astype("int32")
        prompts = {"token_ids": token_ids, "padding_mask": np.ones_like(token_ids)}
        tensors = {key: tf.constant(value) for key, value in prompts.items()}
        new_tokens = tf.constant(NEW_TOKENS)
        calls = {
            "savedmodel": lambda: generate_signature(**tensors, max_new_tokens=new_tokens)["token_ids"].numpy(),
            "python": lambda: generate(model, prompts, NEW_TOKENS)["token_ids"],
        }
        outputs = {name: call() for name, call in calls.items()}  # compiles
        np.testing.assert_array_equal(outputs["savedmodel"], outputs["python"])
        times = {name: [] for name in GENERATORS}
        for _ in range(repeats):
            for name in GENERATORS:
                times[name].append(seconds_per_call(calls[name], 1))
        rates = {name: batch * NEW_TOKENS / statistics.median(times[name]) for name in GENERATORS}
        generation[f"batch_{batch}"] = {
            **{f"{name}_tokens_per_s": round(rates[name], 1) for name in GENERATORS},
            "savedmodel_vs_python": round(rates["savedmodel"] / rates["python"], 3),
            **{f"{name}_s_all": [round(t, 4) for t in times[name]] for name in GENERATORS},
        }
        print(
            f"generate batch {batch:3d}: "
            + "  ".join(f"{name} {rates[name]:9.1f} tokens/s" for name in GENERATORS),
            flush=True,
        )
    return {
        "backend": keras.backend.backend(),
        "versions": {"keras": keras.__version__, "tensorflow": importlib.metadata.version("tensorflow")},
        "machine": machine(),
        "date": datetime.date.today().isoformat(),
        "config": {
            **CONFIG,
            "length": LENGTH,
            "dtype": "float32",
            "repeats": repeats,
            "iterations": iterations,
        },
        "export_seconds": round(export_seconds, 2),
        "savedmodel_megabytes": round(size / 2**20, 2),
        # Other processes share this machine's cores: the load average at the end of the run.
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "results": results,
        "generation": {"prompt_length": PROMPT_LENGTH, "new_tokens": NEW_TOKENS, "results": generation},
    }


def table(path):
    with open(path) as f:
        run = json.load(f)
    c = run["config"]
    lines = [
        "# SavedModel serving latency vs Keras on TensorFlow",
        "",
        "Generated by `benchmarks/export.py --table`; do not edit by hand. GPT-2 with vocabulary "
        f"{c['vocabulary_size']}, {c['num_layers']} layers, {c['num_heads']} heads, hidden "
        f"{c['hidden_dim']}, intermediate {c['intermediate_dim']}, sequences of {c['length']} "
        f"tokens, {c['dtype']}. `savedmodel`: the exported `serving_default` signature loaded "
        "with `tf.saved_model.load` (the graph TF Serving runs, input asserts included, no "
        "network); `predict`: `model.predict(x, batch_size=B)`; `call`: `model(x, "
        "training=False)`. Median ms per call, logits fetched to the host each time; "
        "`x / savedmodel` above 1 means the SavedModel is faster.",
        "",
        "| batch | savedmodel ms | predict ms | call ms | predict / savedmodel | call / savedmodel |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for key, r in run["results"].items():
        lines.append(
            f"| {key.split('_')[1]} | {r['savedmodel_ms']:.2f} | {r['predict_ms']:.2f} | "
            f"{r['call_ms']:.2f} | {r['predict_vs_savedmodel']:.2f}x | {r['call_vs_savedmodel']:.2f}x |"
        )
    g = run["generation"]
    lines += [
        "",
        f"Greedy generation, prompts of {g['prompt_length']} tokens plus {g['new_tokens']} new "
        "tokens: the exported `generate` signature (the KV-cached loop inside the graph) against "
        "Python `generation.generate` (the same loop, XLA-compiled); new tokens per second, "
        "median; the two give the same tokens.",
        "",
        "| batch | savedmodel tokens/s | python tokens/s | savedmodel / python |",
        "|---:|---:|---:|---:|",
    ]
    for key, r in g["results"].items():
        lines.append(
            f"| {key.split('_')[1]} | {r['savedmodel_tokens_per_s']:.1f} | "
            f"{r['python_tokens_per_s']:.1f} | {r['savedmodel_vs_python']:.2f}x |"
        )
    versions = ", ".join(f"{k} {v}" for k, v in run["versions"].items())
    lines += [
        "",
        f"Export (trace, write, reload and verify both signatures): {run['export_seconds']:.1f} s; "
        f"SavedModel size {run['savedmodel_megabytes']:.1f} MB. {c['repeats']} repeats of "
        f"{c['iterations']} calls (generation: {c['repeats']} calls).",
        "",
        f"Versions: {versions}. Machine: {run['machine']}, shared: load average "
        f"{run['load_average'][0]:.1f} at the end of the run. Date: {run['date']}.",
        "",
    ]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--iterations", type=int, default=3, help="calls per timed repeat")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument("--table", metavar="JSON", help="print a markdown table of these results and exit")
    args = parser.parse_args()
    if args.table:
        print(table(args.table))
        return
    result = run(args.repeats, args.iterations, args.warmup)
    if args.output:
        write_json(args.output, result, quiet=True)


if __name__ == "__main__":
    main()
