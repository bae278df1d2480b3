"""Speed of keras_transformers.generation.generate against keras-hub's GPT2CausalLM.generate.

Greedy decoding, 64 new tokens after a 16-token prompt, batch 1 and batch 8, on a small
GPT-2 (vocabulary 8192, 4 layers, 4 heads, hidden 256, intermediate 1024, max length 256,
dropout 0.1, float32). keras-hub's model is `GPT2CausalLM(backbone=GPT2Backbone(...same
config...), preprocessor=None)`, called with the prompt right-padded to 80 positions and
`stop_token_ids=None`; on TensorFlow it runs with `jit_compile` on and off and the faster
is the baseline. Both run in the same process, alternately, after warm-up calls (which
compile); the median time of several calls is reported as new tokens per second, and
`speedup = ours / keras-hub` (higher is better).

Per-token latency: the median time of a generate call with a prompt of P tokens and 17
new tokens, minus one with 1 new token, over 16: the cost of one decode step at positions
P .. P + 16 (the prefill cancels), for P = 32 and P = 224 (batch 1).

Memory floor: a batch-1 step reads every weight once, so the weights' bytes over the
backend's stream bandwidth (`ops.sum` over 256 MB, measured in the same run) bound its
time from below; the table shows both libraries' ms per token against that floor.

    KERAS_BACKEND=jax python benchmarks/generation.py \
        --output benchmarks/results/generation_jax.json
    python benchmarks/generation.py --table benchmarks/results/generation_*.json \
        > benchmarks/GENERATION_RESULTS.md

`benchmarks/run_generation.sh` does both for the three backends.
"""

import argparse
import datetime
import importlib.metadata
import os
import statistics
import time

from common import machine, read_runs, write_json

CONFIG = dict(
    vocabulary_size=8192,
    num_layers=4,
    num_heads=4,
    hidden_dim=256,
    intermediate_dim=1024,
    max_sequence_length=256,
    dropout=0.1,
)
PROMPT, NEW_TOKENS, BATCHES, LATENCY_POSITIONS = 16, 64, (1, 8), (32, 224)
BACKEND_PACKAGES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def prompts(batch, prompt_length, total_length, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    token_ids = np.zeros((batch, total_length), "int32")
    vocabulary_size = CONFIG["vocabulary_size"]
    token_ids[:, :prompt_length] = rng.integers(1, vocabulary_size, (batch, prompt_length))
    padding_mask = np.zeros((batch, total_length), "int32")
    padding_mask[:, :prompt_length] = 1
    return {"token_ids": token_ids, "padding_mask": padding_mask}


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()  # both return host (numpy) arrays: every call is synced
        times.append(time.perf_counter() - start)
    return times


def stream_bandwidth(megabytes=256, repeats=7):
    """Bytes per second the backend reads from memory: the median time of `ops.sum` over
    a float32 array of `megabytes` (far larger than any cache), synced on the host."""
    import keras
    from keras import ops

    array = ops.ones((megabytes * 2**20 // 4,), "float32")
    seconds = []
    for i in range(repeats + 1):
        start = time.perf_counter()
        ops.convert_to_numpy(ops.sum(array))
        if i:  # the first call compiles (JAX) or warms the allocator
            seconds.append(time.perf_counter() - start)
    keras.backend.clear_session()
    return megabytes * 2**20 / statistics.median(seconds)


def weight_bytes_per_token(model):
    """The bytes of weights one batch-1 decoding step reads: every weight but the position
    table, of which it reads one row (the tied token embedding is read whole, for the
    logits)."""
    import numpy as np

    return sum(
        int(np.prod(variable.shape)) * np.dtype(variable.dtype).itemsize
        for variable in model.weights
        if "position_embedding" not in variable.path
    )


def keras_hub_model(keras):
    import keras_hub

    backbone = keras_hub.models.GPT2Backbone(**CONFIG)
    return keras_hub.models.GPT2CausalLM(backbone=backbone, preprocessor=None)


def run(repeats, warmup):
    import keras

    from keras_transformers.generation import generate
    from keras_transformers.models.gpt2 import gpt2

    backend = keras.backend.backend()
    keras.utils.set_random_seed(0)
    ours = gpt2(**CONFIG)
    # keras-hub's default; on TensorFlow, also without XLA (its generate follows
    # `jit_compile`; JAX always jits and torch always runs eagerly).
    jit_settings = {"keras_hub": {}}
    if backend == "tensorflow":
        jit_settings = {
            "keras_hub": {"jit_compile": True},
            "keras_hub_no_xla": {"jit_compile": False},
        }
    theirs = {}
    for name, options in jit_settings.items():
        theirs[name] = keras_hub_model(keras)
        theirs[name].compile(sampler="greedy", **options)
    first = theirs["keras_hub"]
    for causal_lm in theirs.values():
        causal_lm.set_weights(first.get_weights())

    results = {}
    for batch in BATCHES:
        padded = prompts(batch, PROMPT, PROMPT + NEW_TOKENS)
        short = {key: value[:, :PROMPT] for key, value in padded.items()}
        calls = {"ours": lambda: generate(ours, short, NEW_TOKENS)}
        if backend == "torch":  # also the opt-in torch.compile of the decoding step
            calls["ours_compiled"] = lambda: generate(ours, short, NEW_TOKENS, jit_compile=True)
        for name, causal_lm in theirs.items():
            calls[name] = lambda lm=causal_lm: lm.generate(padded, stop_token_ids=None)
        times = {name: [] for name in calls}
        for name, call in calls.items():
            for _ in range(warmup):
                call()
        for _ in range(repeats):
            for name, call in calls.items():  # alternating, so drift hits all
                times[name] += timed(call, 1)
        tokens = batch * NEW_TOKENS
        rates = {name: tokens / statistics.median(t) for name, t in times.items()}
        baseline = max((name for name in rates if name.startswith("keras_hub")), key=rates.get)
        results[f"batch_{batch}"] = {
            **{f"{name}_tokens_per_s": round(rate, 1) for name, rate in rates.items()},
            "baseline": baseline,
            "speedup": round(rates["ours"] / rates[baseline], 2),
            "ms_all": {name: [round(1e3 * t, 2) for t in ts] for name, ts in times.items()},
        }
        if "ours_compiled" in rates:
            speedup = rates["ours_compiled"] / rates[baseline]
            results[f"batch_{batch}"]["speedup_compiled"] = round(speedup, 2)
        print(
            f"{backend:10s} batch {batch}: "
            + "  ".join(f"{name} {rate:8.1f}" for name, rate in rates.items())
            + f" tok/s; speedup {rates['ours'] / rates[baseline]:.2f}x (vs {baseline})",
            flush=True,
        )

    latency = {}
    for position in LATENCY_POSITIONS:
        medians = {}
        for new_tokens in (1, 17):
            inputs = prompts(1, position, position)
            for _ in range(warmup):
                generate(ours, inputs, new_tokens)
            medians[new_tokens] = statistics.median(
                timed(lambda: generate(ours, inputs, new_tokens), repeats)
            )
        latency[f"position_{position}_ms"] = round(1e3 * (medians[17] - medians[1]) / 16, 3)
    first, last = (latency[f"position_{position}_ms"] for position in LATENCY_POSITIONS)
    latency["ratio"] = round(last / first, 2)
    print(f"{backend:10s} per-token latency: {latency}", flush=True)
    # At batch 1 a step reads every weight once: the time to stream them from memory is
    # a floor under the time per token, whatever the code.
    memory = {
        "stream_bandwidth_gb_per_s": round(stream_bandwidth() / 1e9, 2),
        "weight_bytes_per_token": weight_bytes_per_token(ours),
    }
    print(f"{backend:10s} memory: {memory}", flush=True)

    return {
        "backend": backend,
        "versions": {
            "keras": keras.__version__,
            "keras_hub": importlib.metadata.version("keras-hub"),
            BACKEND_PACKAGES[backend]: importlib.metadata.version(BACKEND_PACKAGES[backend]),
        },
        "machine": machine(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "date": datetime.date.today().isoformat(),
        "config": dict(
            CONFIG, prompt=PROMPT, new_tokens=NEW_TOKENS, repeats=repeats, warmup=warmup
        ),
        "results": results,
        "latency": latency,
        "memory": memory,
    }


def table(paths):
    runs = read_runs(paths)
    lines = [
        "# Generation speed: keras_transformers.generation vs keras-hub GPT2CausalLM",
        "",
        "Generated by `benchmarks/run_generation.sh` (benchmarks/generation.py); "
        "do not edit by hand.",
        f"Greedy, {NEW_TOKENS} new tokens after a {PROMPT}-token prompt; GPT-2 with vocabulary "
        f"{CONFIG['vocabulary_size']}, {CONFIG['num_layers']} layers, {CONFIG['num_heads']} heads, "
        f"hidden {CONFIG['hidden_dim']}, intermediate {CONFIG['intermediate_dim']}, max length "
        f"{CONFIG['max_sequence_length']}, float32. New tokens per second (median call, warm-up "
        "excluded); speedup = ours / keras-hub's faster setting (TensorFlow: `jit_compile` on or "
        "off). Targets: >= 1.0x on JAX and TensorFlow, >= 10x (batch 1) and >= 5x (batch 8) "
        "on torch.",
        "",
        "| backend | batch | ours tok/s | keras-hub tok/s | keras-hub setting | speedup |",
        "|---|---:|---:|---:|---|---:|",
    ]
    compiled_rows = []
    for r in runs:
        for batch in BATCHES:
            b = r["results"][f"batch_{batch}"]
            baseline = b["baseline"]
            xla = "jit_compile=False" if baseline.endswith("no_xla") else "jit_compile=True"
            setting = {"jax": "jax.jit (its only mode)", "torch": "eager (its only mode)"}.get(
                r["backend"], xla
            )
            lines.append(
                f"| {r['backend']} | {batch} | {b['ours_tokens_per_s']:.0f} "
                f"| {b[baseline + '_tokens_per_s']:.0f} | {setting} | {b['speedup']:.2f}x |"
            )
            if "ours_compiled_tokens_per_s" in b:
                compiled_rows.append(
                    f"| {r['backend']} | {batch} | {b['ours_compiled_tokens_per_s']:.0f} "
                    f"| {b[baseline + '_tokens_per_s']:.0f} | {b['speedup_compiled']:.2f}x |"
                )
    if compiled_rows:
        lines += [
            "",
            "PyTorch with `generate(..., jit_compile=True)` (the decoding step compiled by "
            "`torch.compile`; its compilation, tens of seconds, is in the warm-up):",
            "",
            "| backend | batch | ours tok/s | keras-hub tok/s | speedup |",
            "|---|---:|---:|---:|---:|",
        ] + compiled_rows
    lines += [
        "",
        "Per-token decode latency of ours (batch 1): a step at positions 32..48 and 224..240 "
        "(the cache buffer is the prompt plus 17 positions, so the attention span grows 5x).",
        "",
        "| backend | position 32 ms | position 224 ms | ratio |",
        "|---|---:|---:|---:|",
    ]
    for r in runs:
        lat = r["latency"]
        lines.append(
            f"| {r['backend']} | {lat['position_32_ms']:.3f} | {lat['position_224_ms']:.3f} "
            f"| {lat['ratio']:.2f} |"
        )
    floor_rows = []
    for r in runs:
        if "memory" not in r:  # runs before the floor was measured
            continue
        b = r["results"]["batch_1"]
        mb = r["memory"]["weight_bytes_per_token"] / 1e6
        bandwidth = r["memory"]["stream_bandwidth_gb_per_s"]
        floor_ms = mb / bandwidth  # MB / (GB/s) = ms
        ours_ms = 1e3 / b["ours_tokens_per_s"]
        theirs_ms = 1e3 / b[b["baseline"] + "_tokens_per_s"]
        floor_rows.append(
            f"| {r['backend']} | {mb:.1f} | {bandwidth:.1f} | {floor_ms:.2f} | {ours_ms:.2f} "
            f"| {floor_ms / ours_ms:.0%} | {theirs_ms:.2f} | {theirs_ms / floor_ms:.1f}x |"
        )
    if floor_rows:
        lines += [
            "",
            "Batch 1 against the memory floor: a step reads every weight once (float32; the "
            "tied embedding whole, for the logits), so weights / stream bandwidth (`ops.sum` "
            "over 256 MB, same run) bounds the time per token from below. Ours and keras-hub's "
            "ms per token include the prompt's prefill spread over the 64 tokens.",
            "",
            "| backend | weights MB per token | stream GB/s | floor ms | ours ms | ours at the "
            "floor | keras-hub ms | keras-hub / floor |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ] + floor_rows
    lines += [""]
    for r in runs:
        versions = ", ".join(f"{k} {v}" for k, v in r["versions"].items())
        lines.append(
            f"- {r['backend']}: {versions}; {r['machine']}; load average at the end "
            f"{r['load_average']}; {r['date']}."
        )
    lines.append("")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--output", help="write the results as JSON here")
    parser.add_argument(
        "--table", nargs="+", metavar="JSON", help="print a markdown table of these results, exit"
    )
    args = parser.parse_args()
    if args.table:
        print(table(args.table))
        return
    result = run(args.repeats, args.warmup)
    if args.output:
        write_json(args.output, result, quiet=True)


if __name__ == "__main__":
    main()
