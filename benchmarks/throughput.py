"""Training and inference throughput of our GPT-2, BERT and ViT against keras-hub's backbones.

One small configuration for all three (the issue's): vocabulary 8192, 4 layers, 4 heads,
hidden 256, intermediate 1024, dropout 0.1, sequences of 128 tokens, batch 8; ViT on 32x32x3
images in 4x4 patches (64 patches + a class token). Each model gets the same head on both
sides:

- GPT-2: next-token logits from the tied token embedding (keras-hub: `GPT2Backbone` and its
  `token_embedding(..., reverse=True)`, as `GPT2CausalLM` does); loss over all 128 positions.
- BERT: a Dense(2) classifier on the pooled output (`BertBackbone`'s `pooled_output`;
  ours: `bert_classifier(..., dropout=0.0)`), ours with the tanh GELU that `BertBackbone`
  has built in (our default is the exact one).
- ViT: a Dense(10) classifier on the class token (`ViTBackbone` output at position 0; ours:
  `vit(num_classes=10)`).
- bert_mlm: the BERT backbone with the masked-LM head at 20 masked positions per sequence
  (keras-hub: `BertMaskedLM`; ours: `bert_masked_lm`), loss over those positions.

Our classifiers and masked-LM head run their last encoder block at the positions their
head reads only (every position is still a key and value): the same logits and
gradients, less work. keras-hub's backbones compute every position of every block.

Both libraries' models are compiled alike (AdamW, sparse cross-entropy from logits,
`jit_compile="auto"`: XLA on JAX, eager on torch; on TensorFlow XLA with a GPU, and on a
CPU for ours only: our `Model` resolves "auto" to XLA there, Keras leaves it off), each with its library's
loss and AdamW: Keras' `SparseCategoricalCrossentropy` and `AdamW` for keras-hub (what its task
models compile with), ours for ours (the same values and updates; benchmarks/loss.py and
benchmarks/optimizer.py time each pair alone); timed alternately in one process: `train_on_batch` (dropout on) and `predict_on_batch`, several repeats of a few
steps each after warm-up steps that compile; the median is reported as tokens per second
(ViT: patches per second) and `speedup = ours / keras-hub`.

Model FLOPs utilisation: the matmul FLOPs of one step, counted from the configuration
(`step_flops`; training = 3 x forward), over the step time, as a fraction of the backend's
own measured matmul rate (`matmul_peak`, the best of several square products, measured at the
start and at the end of the run; the higher one counts).

Page faults: the process' minor page faults per step, counted around each side's timed
steps (`common.minor_page_faults`). On a CPU, XLA (JAX) allocates a step's temporaries
afresh at every execution, and PyTorch each large tensor; glibc maps a block above its mmap
threshold (at most 32 MiB) straight from the kernel and unmaps it on free, so each step
first-touches that memory again, one 4 KiB fault per page (about 3 us each on the 2-core VM
these figures come from: 57,000 a step for our JAX GPT-2, whose XLA temporaries are 207
MiB). The run's malloc setting is recorded (`malloc`); `run_throughput.sh` runs each backend
with glibc's defaults and with `--keep-freed-memory`
(`keras_transformers.host_memory.keep_freed_memory()`: freed blocks stay in the process for
the next step, no faults after the first steps).

Peak memory: each model is also built and trained for a few steps in its own process
(`--memory`), which reports the growth of the process' peak resident memory over its
baseline after imports (CPU), or the framework allocator's peak (GPU: torch
`max_memory_allocated`, JAX `peak_bytes_in_use` with preallocation off); the median of
`--memory-repeats` such processes per library (3; the two libraries alternate). On JAX's CPU
backend most of that peak is XLA compiling the training step, which grows with the number of
distinct kernels (about 1 MiB each) and stays mapped as freed malloc heap while the first steps
run.

    KERAS_BACKEND=jax python benchmarks/throughput.py \
        --output benchmarks/results/cpu/amd_epyc/throughput_jax.json
    python benchmarks/throughput.py --table benchmarks/results/cpu/*/throughput_*.json \
        benchmarks/results/gpu/throughput_*.json > benchmarks/RESULTS.md

`benchmarks/run_throughput.sh` does both for the three backends.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

import common

CONFIG = dict(
    vocabulary_size=8192,
    num_layers=4,
    num_heads=4,
    hidden_dim=256,
    intermediate_dim=1024,
    dropout=0.1,
    sequence_length=128,
    batch_size=8,
    image_size=32,
    patch_size=4,
    num_channels=3,
    num_classes={"bert": 2, "vit": 10},
    num_masked=20,  # bert_mlm: masked positions per sequence (~15% of 128, as BERT masks)
)
MODELS = ("gpt2", "bert", "vit", "bert_mlm")
LIBRARIES = ("ours", "keras_hub")
DEFAULT_TIMING = {"repeats": 5, "steps": 5, "warmup": 3}  # repeats of `steps` timed steps each


def example_inputs(model_name, config, seed=0):
    """Random inputs and labels of one batch: (inputs, labels)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    batch, length = config["batch_size"], config["sequence_length"]
    if model_name == "vit":
        size = config["image_size"]
        images = rng.uniform(size=(batch, size, size, config["num_channels"])).astype("float32")
        labels = rng.integers(0, config["num_classes"]["vit"], (batch,)).astype("int32")
        return {"images": images}, labels
    token_ids = rng.integers(1, config["vocabulary_size"], (batch, length)).astype("int32")
    inputs = {"token_ids": token_ids, "padding_mask": np.ones((batch, length), "int32")}
    if model_name in ("bert", "bert_mlm"):
        segment_ids = np.zeros((batch, length), "int32")
        segment_ids[:, length // 2 :] = 1
        inputs["segment_ids"] = segment_ids
    if model_name == "bert":
        return inputs, rng.integers(0, 2, (batch,)).astype("int32")
    if model_name == "bert_mlm":
        masked = config["num_masked"]
        inputs["mask_positions"] = np.sort(
            [rng.choice(length, masked, replace=False) for _ in range(batch)], axis=1
        ).astype("int32")
        return inputs, rng.integers(0, config["vocabulary_size"], (batch, masked)).astype("int32")
    labels = rng.integers(0, config["vocabulary_size"], (batch, length)).astype("int32")
    return inputs, labels


def library_inputs(model_name, library, inputs):
    """keras-hub's ViTBackbone takes the image array itself; every other model, the dict."""
    return inputs["images"] if (model_name, library) == ("vit", "keras_hub") else inputs


def build(model_name, library, config, dtype=None):
    """The model of `library` ("ours" or "keras_hub") with the head described above."""
    import keras

    widths = dict(
        num_layers=config["num_layers"],
        num_heads=config["num_heads"],
        hidden_dim=config["hidden_dim"],
    )
    # The language models' arguments have the same names in both libraries.
    text = dict(
        vocabulary_size=config["vocabulary_size"],
        intermediate_dim=config["intermediate_dim"],
        max_sequence_length=config["sequence_length"],
        dropout=config["dropout"],
        dtype=dtype,
        **widths,
    )
    if library == "ours":
        from keras_transformers.models import bert, gpt2, vit

        if model_name == "gpt2":
            return gpt2.gpt2(**text)
        if model_name == "bert":
            # keras-hub's BertBackbone has the tanh GELU built in (ours defaults to the
            # exact one, Hugging Face's): the same here, so both do the same work.
            backbone = bert.bert(**text, activation="gelu_approximate")
            # Our classifier (its last block computes [CLS] alone); no dropout on the
            # head, as keras-hub's side below.
            return bert.bert_classifier(backbone, config["num_classes"]["bert"], dropout=0.0)
        if model_name == "bert_mlm":
            return bert.bert_masked_lm(bert.bert(**text, activation="gelu_approximate"))
        return vit.vit(
            config["image_size"],
            config["patch_size"],
            intermediate_dim=config["intermediate_dim"],
            num_classes=config["num_classes"]["vit"],
            num_channels=config["num_channels"],
            dropout=config["dropout"],
            dtype=dtype,
            **widths,
        )

    import keras_hub

    if model_name == "gpt2":
        backbone = keras_hub.models.GPT2Backbone(**text)
        logits = backbone.token_embedding(backbone.output, reverse=True)
        return keras.Model(backbone.input, keras.ops.cast(logits, "float32"), name="keras_hub_gpt2")
    if model_name == "bert":
        backbone = keras_hub.models.BertBackbone(**text)
        return _with_head(keras, backbone, backbone.output["pooled_output"], config, "bert", dtype)
    if model_name == "bert_mlm":
        masked_lm = keras_hub.models.BertMaskedLM(keras_hub.models.BertBackbone(**text))
        return keras.Model(
            masked_lm.input, keras.ops.cast(masked_lm.output, "float32"), name="keras_hub_bert_mlm"
        )
    size = config["image_size"]
    backbone = keras_hub.models.ViTBackbone(
        image_shape=(size, size, config["num_channels"]),
        patch_size=config["patch_size"],
        mlp_dim=config["intermediate_dim"],
        dropout_rate=config["dropout"],
        attention_dropout=config["dropout"],
        dtype=dtype,
        **widths,
    )
    return _with_head(keras, backbone, backbone.output[:, 0], config, "vit", dtype)


def _with_head(keras, backbone, features, config, model_name, dtype):
    logits = keras.layers.Dense(
        config["num_classes"][model_name], dtype=dtype, name="benchmark_head"
    )(features)
    return keras.Model(backbone.input, keras.ops.cast(logits, "float32"), name=f"{backbone.name}_head")


def library_loss(library):
    """Sparse cross-entropy from logits: for keras-hub, Keras' loss (what its
    `GPT2CausalLM`/`TextClassifier` compile with); for ours, ours (the same values, faster
    on PyTorch and JAX: benchmarks/loss.py)."""
    import keras

    from keras_transformers.losses import SparseCategoricalCrossentropy

    if library == "ours":
        return SparseCategoricalCrossentropy(from_logits=True, reduction="sum_over_batch_size")
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def library_optimizer(library):
    """AdamW(1e-4): for keras-hub, Keras' (what its tasks compile with); for ours, ours
    (`keras_transformers.optimizers.AdamW`: the same update, one fused kernel on PyTorch's
    CPU)."""
    import keras

    from keras_transformers.optimizers import AdamW

    return AdamW(1e-4) if library == "ours" else keras.optimizers.AdamW(1e-4)


def compile_model(model, library, jit_compile="auto"):
    """The library's AdamW (`library_optimizer`) and loss (`library_loss`)."""
    model.compile(
        optimizer=library_optimizer(library), loss=library_loss(library), jit_compile=jit_compile
    )
    return model


def items_per_step(model_name, config):
    """Tokens (ViT: patches) in one batch."""
    if model_name == "vit":
        return config["batch_size"] * (config["image_size"] // config["patch_size"]) ** 2
    return config["batch_size"] * config["sequence_length"]


def step_flops(model_name, config, training, library="keras_hub"):
    """Matmul FLOPs of one forward (x3 when `training`) pass over one batch, as `library`
    computes it.

    Per layer and position: 2 x (4 d^2 + 2 d f) for the projections and the feed-forward
    network, plus 4 T d for Q K^T and the attention-weighted values (the full T x T square,
    as PaLM's MFU counts it). Heads: GPT-2's vocabulary projection at every position,
    BERT's pooler and classifier once per sequence, ViT's patch projection per patch and
    classifier once per image. Embedding look-ups, norms and softmax are not counted.
    BERT's masked-LM head: the Dense transform and the vocabulary projection at the masked
    positions. Our BERT and ViT heads run the last block at the positions they read only
    ([CLS], the class token, the masked positions; keys and values still at every
    position): the other rows are not counted for ours, so MFU compares the matmul rates of
    the work each side does.
    """
    d, f, layers = config["hidden_dim"], config["intermediate_dim"], config["num_layers"]
    rows = 1  # positions the head reads after the last block
    if model_name == "vit":
        patches = (config["image_size"] // config["patch_size"]) ** 2
        length = patches + 1  # the class token
        patch_values = config["patch_size"] ** 2 * config["num_channels"]
        head = 2 * patches * patch_values * d + 2 * d * config["num_classes"]["vit"]
    else:
        length = config["sequence_length"]
        if model_name == "gpt2":
            head = 2 * length * d * config["vocabulary_size"]
        elif model_name == "bert_mlm":
            rows = config["num_masked"]
            head = rows * (2 * d * d + 2 * d * config["vocabulary_size"])
        else:
            head = 2 * d * d + 2 * d * config["num_classes"]["bert"]
    per_position = 2 * (4 * d * d + 2 * d * f) + 4 * length * d
    blocks = layers * length * per_position
    if library == "ours" and model_name != "gpt2":
        blocks -= (length - rows) * (per_position - 2 * 2 * d * d)  # all but keys and values
    forward = config["batch_size"] * (blocks + head)
    return 3 * forward if training else forward


def work_ratio(model_name, config):
    """keras-hub's counted matmul FLOPs over ours for one step (the same in training and
    inference): the speedup the two would show if both ran their matmuls at the same rate.
    Where both sides are compiled alike (XLA on JAX) and run near the same MFU, it is the
    ceiling of the speedup that doing less work can give; above it, the matmuls themselves
    must run faster."""
    return step_flops(model_name, config, False, "keras_hub") / step_flops(
        model_name, config, False, "ours"
    )


def matmul_peak(dtype="float32", size=None, repeats=20):
    """FLOP/s of the best of `repeats` timed (size x size) @ (size x size) products, compiled
    the backend's usual way (jax.jit, tf.function(jit_compile=True), eager torch).

    Twenty, not five: on the shared 2-core CPU one eager PyTorch run measured 99 GFLOP/s
    with five where twenty reach 181 (and the model's own products 198, see
    matmul_floor.py): a low peak reads as an MFU above 100%."""
    import time

    import keras
    import numpy as np

    backend = keras.backend.backend()
    on_gpu = common.accelerator() is not None
    size = size or (8192 if on_gpu else 2048)
    host = np.random.default_rng(0).normal(size=(size, size)).astype("float32")
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        a = jnp.asarray(host, dtype=dtype)
        product = jax.jit(lambda x: x @ x)

        def run():
            product(a).block_until_ready()

    elif backend == "tensorflow":
        import tensorflow as tf

        a = tf.cast(tf.constant(host), dtype)
        product = tf.function(lambda x: tf.matmul(x, x), jit_compile=True)

        def run():
            product(a).numpy()

    else:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        a = torch.as_tensor(host, device=device).to(getattr(torch, dtype))

        def run():
            a @ a
            if device == "cuda":
                torch.cuda.synchronize()
            # On the CPU the product is done when `@` returns.

    run()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def measure(config, models, repeats, steps, warmup, dtype, on_model=None):
    """Times every model of both libraries alternately; returns the results dict.

    `on_model(partial)`, if given, is called after each model with the results so far (the
    start-of-run matmul peak only), so that a run cut short by a time limit keeps them."""
    import keras

    keras.utils.set_random_seed(0)
    peak_dtype = "bfloat16" if dtype == "mixed_bfloat16" else "float16" if dtype == "mixed_float16" else "float32"
    peak = matmul_peak(peak_dtype)
    print(f"{keras.backend.backend()}: matmul peak {peak / 1e9:.1f} GFLOP/s ({peak_dtype})", flush=True)
    results = {}
    for model_name in models:
        inputs, labels = example_inputs(model_name, config)
        built = {
            library: compile_model(build(model_name, library, config, dtype), library) for library in LIBRARIES
        }
        steps_by_mode = {
            "training": {
                lib: (lambda m=m, x=library_inputs(model_name, lib, inputs): m.train_on_batch(x, labels))
                for lib, m in built.items()
            },
            "inference": {
                lib: (lambda m=m, x=library_inputs(model_name, lib, inputs): m.predict_on_batch(x))
                for lib, m in built.items()
            },
        }
        results[model_name] = {
            "parameters": {lib: int(m.count_params()) for lib, m in built.items()},
            # What "auto" resolved to: on a TensorFlow CPU, XLA for ours only.
            "jit_compile": {lib: bool(m.jit_compile) for lib, m in built.items()},
        }
        for mode, by_library in steps_by_mode.items():
            for step in by_library.values():
                for _ in range(warmup):
                    step()
            times = {library: [] for library in by_library}
            faults = {library: [] for library in by_library}
            for _ in range(repeats):
                for library, step in by_library.items():  # alternating, so drift hits both
                    before = common.minor_page_faults()
                    times[library].append(common.seconds_per_call(step, steps))
                    faults[library].append((common.minor_page_faults() - before) / steps)
            items = items_per_step(model_name, config)
            entry = {}
            for library, values in times.items():
                flops = step_flops(model_name, config, mode == "training", library)
                seconds = statistics.median(values)
                entry[library] = {
                    "items_per_second": round(items / seconds, 1),
                    "step_ms": round(1e3 * seconds, 3),
                    "step_ms_all": [round(1e3 * t, 3) for t in values],
                    "mfu": round(flops / seconds / peak, 4),
                    "page_faults_per_step": round(statistics.median(faults[library])),
                }
            entry["speedup"] = round(
                entry["ours"]["items_per_second"] / entry["keras_hub"]["items_per_second"], 3
            )
            results[model_name][mode] = entry
            print(
                f"{keras.backend.backend():10s} {model_name:4s} {mode:9s} "
                f"ours {entry['ours']['items_per_second']:9.0f}/s  "
                f"keras-hub {entry['keras_hub']['items_per_second']:9.0f}/s  "
                f"speedup {entry['speedup']:.2f}x  MFU ours {entry['ours']['mfu']:.1%} "
                f"keras-hub {entry['keras_hub']['mfu']:.1%}  page faults/step ours "
                f"{entry['ours']['page_faults_per_step']} keras-hub {entry['keras_hub']['page_faults_per_step']}",
                flush=True,
            )
        del built
        if on_model is not None:
            on_model(_measured(peak, None, peak_dtype, results))
    # Measured again at the end, and the higher one kept: a run that the shared machine slowed
    # while the peak was measured would otherwise read as too high an MFU (torch once measured
    # 103 GFLOP/s at the start of a run and 184 just after it).
    end_peak = matmul_peak(peak_dtype)
    print(f"{keras.backend.backend()}: matmul peak at the end {end_peak / 1e9:.1f} GFLOP/s", flush=True)
    if end_peak > peak:
        for model_result in results.values():
            for mode in ("training", "inference"):
                for library in LIBRARIES:
                    entry = model_result[mode][library]
                    entry["mfu"] = round(entry["mfu"] * peak / end_peak, 4)
    return _measured(peak, end_peak, peak_dtype, results)


def _measured(peak, end_peak, peak_dtype, results):
    """The measured part of a run's result; `end_peak` None while the run goes on."""
    return {
        "matmul_peak_flops": round(max(peak, end_peak or 0)),
        "matmul_peak_dtype": peak_dtype,
        "matmul_peak_start_end_flops": [round(peak), None if end_peak is None else round(end_peak)],
        "results": results,
    }


class _ResidentPeak:
    """Samples the process' resident memory every millisecond in a thread; `peak` is the
    highest value seen. (ru_maxrss cannot be used: the imports' own peak can hide the
    model's.)"""

    def __init__(self):
        import threading

        self.peak = self.current()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    @staticmethod
    def current():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _sample(self):
        while not self._stop.wait(0.001):
            self.peak = max(self.peak, self.current())

    def stop(self):
        self._stop.set()
        self._thread.join()
        return max(self.peak, self.current())


def peak_memory(model_name, library, config, dtype, steps=3):
    """Builds, compiles and trains one model for `steps` steps; returns its peak bytes over
    the baseline before the build."""
    import keras

    # Both libraries are imported before the baseline, so neither pays for its imports.
    import keras_hub  # noqa: F401

    import keras_transformers.models  # noqa: F401

    backend = keras.backend.backend()
    gpu = common.accelerator()
    inputs, labels = example_inputs(model_name, config)
    if gpu and backend == "torch":
        import torch

        torch.cuda.reset_peak_memory_stats()
        baseline = torch.cuda.memory_allocated()
    elif gpu and backend == "jax":
        import jax

        baseline = jax.devices()[0].memory_stats()["bytes_in_use"]
    else:
        sampler = _ResidentPeak()
        baseline = sampler.peak
    model = compile_model(build(model_name, library, config, dtype), library)
    for _ in range(steps):
        model.train_on_batch(library_inputs(model_name, library, inputs), labels)
    if gpu and backend == "torch":
        return torch.cuda.max_memory_allocated() - baseline
    if gpu and backend == "jax":
        return jax.devices()[0].memory_stats()["peak_bytes_in_use"] - baseline
    return sampler.stop() - baseline


def memory_in_subprocesses(config, models, dtype, repeats=3, keep_freed=False):
    """Peak memory of each model, each in a fresh process (peaks do not reset in-process):
    the median of `repeats` runs per library, the libraries alternating (one process'
    peak resident memory moves by tens of MiB from run to run on the CPU)."""
    env = dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false")
    memory, samples = {}, {}
    for model_name in models:
        samples[model_name] = {library: [] for library in LIBRARIES}
        for repeat in range(repeats):
            order = LIBRARIES if repeat % 2 == 0 else LIBRARIES[::-1]
            for library in order:
                command = [sys.executable, __file__, "--memory", model_name, library, "--config",
                           json.dumps(config)]
                if keep_freed:
                    command.append("--keep-freed-memory")
                if dtype:
                    command += ["--dtype", dtype]
                out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
                lines = [line for line in out.stdout.splitlines() if line.startswith("peak_bytes=")]
                if out.returncode or not lines:
                    raise RuntimeError(
                        f"memory run of {model_name}/{library} failed:\n{out.stderr[-3000:]}"
                    )
                samples[model_name][library].append(int(lines[-1].split("=", 1)[1]))
        memory[model_name] = {
            library: int(statistics.median(values)) for library, values in samples[model_name].items()
        }
        print(
            f"{model_name:4s} peak memory (median of {repeats}) "
            + "  ".join(f"{library} {memory[model_name][library] / 2**20:.1f} MiB" for library in LIBRARIES),
            flush=True,
        )
    return memory, samples


def run(args, malloc):
    import keras

    config = dict(CONFIG, **json.loads(args.config)) if args.config else dict(CONFIG)

    def describe(measured):
        return {
            "backend": keras.backend.backend(),
            "accelerator": common.accelerator(),
            "dtype_policy": args.dtype or "float32",
            "malloc": malloc,
            "versions": common.versions("keras-hub"),
            "machine": common.machine(),
            "date": common.today(),
            "config": config,
            "timing": None if args.memory_only else {
                "repeats": args.repeats, "steps": args.steps, "warmup": args.warmup
            },
            "memory_repeats": None if args.skip_memory else args.memory_repeats,
            "memory_method": "allocator peak (GPU)" if common.accelerator() else "peak resident-memory growth (CPU)",
            "loss": {"ours": "keras_transformers.losses", "keras_hub": "keras.losses"},
            "optimizer": {"ours": "keras_transformers.optimizers.AdamW", "keras_hub": "keras.optimizers.AdamW"},
            **measured,
        }

    def write_partial(measured):
        # The models timed so far, written as they finish: a run stopped by a time limit (the
        # GPU passes have one per part) keeps them. The complete result replaces the file.
        if args.output:
            common.write_json(args.output, dict(describe(measured), memory_repeats=None, partial=True), quiet=True)

    if args.memory_only:
        measured = {"results": {model_name: {} for model_name in args.models}}
    else:
        measured = measure(
            config, args.models, args.repeats, args.steps, args.warmup, args.dtype, write_partial
        )
    if not args.skip_memory:
        memory, samples = memory_in_subprocesses(
            config, args.models, args.dtype, args.memory_repeats, args.keep_freed_memory
        )
        for model_name, by_library in memory.items():
            measured["results"][model_name]["peak_memory_bytes"] = by_library
            measured["results"][model_name]["peak_memory_samples"] = samples[model_name]
    return describe(measured)


def table(paths):
    runs = []
    for path in paths:
        with open(path) as f:
            runs.append(json.load(f))
    runs.sort(
        key=lambda r: (
            r.get("accelerator") or "",
            common.cpu_name(r["machine"]),
            common.BACKEND_ORDER.get(r["backend"], 3),
            r["dtype_policy"],
            {"default": 0, common.KEEP_FREED: 1}.get(r.get("malloc", "default"), 2),
            _timing_mark(r),
        )
    )
    config = runs[0]["config"] if runs else CONFIG
    lines = [
        "# Throughput: keras_transformers vs keras-hub",
        "",
        "Generated by `benchmarks/run_throughput.sh` (benchmarks/throughput.py); do not edit by hand.",
        f"Vocabulary {config['vocabulary_size']}, {config['num_layers']} layers, {config['num_heads']} heads, "
        f"hidden {config['hidden_dim']}, intermediate {config['intermediate_dim']}, dropout {config['dropout']}, "
        f"sequence {config['sequence_length']}, batch {config['batch_size']}; ViT {config['image_size']}x"
        f"{config['image_size']} images, patch {config['patch_size']}; bert_mlm: the masked-LM head at "
        f"{config.get('num_masked', '-')} masked positions per sequence. keras-hub: GPT2Backbone/BertBackbone/"
        "ViTBackbone (BertMaskedLM for bert_mlm) with identical hyperparameters and the same heads; "
        "our BERT and ViT heads run the last block only at the positions they read (same outputs and "
        "gradients, less work; MFU counts each side's own matmuls); each side trains with its "
        "library's sparse cross-entropy (ours: keras_transformers.losses, keras-hub: Keras'; the same values) "
        "and AdamW (ours: keras_transformers.optimizers, keras-hub: Keras'; the same update, see each run's note). Items/s = tokens/s (ViT: "
        "patches/s), median of alternating repeats; speedup = ours / keras-hub (targets: >= 1.25x); "
        "matmul work = keras-hub's counted matmul FLOPs a step over ours (`work_ratio`): the speedup "
        "both sides would show at the same MFU, so the most that skipped work gives; "
        "MFU = counted matmul FLOP/s over the backend's measured matmul peak (target for GPT-2 "
        "training: >= 60%), in training and in inference: where both sides run near the same "
        "MFU on the same work (GPT-2), a speedup needs the matmuls themselves to run faster; "
        "memory = peak during build + compile + 3 training steps, each model in its own process, the median of the runs' `memory_repeats` processes per library (targets: "
        "ours <= keras-hub). Page faults = the process' minor page "
        "faults per step (first touches of freshly mapped memory, each a 4 KiB page the kernel "
        "zero-fills; about 3 us each on the 2-core CPU VM), ours / keras-hub. malloc = the run's glibc "
        "malloc setting: `keep_freed_memory` (`keras_transformers.host_memory.keep_freed_memory()`, "
        "applied to the whole process, so to both libraries) keeps freed blocks in the process for "
        "the next step (see the README's CPU performance section).",
        "",
        "| device | backend | dtype | malloc | model | matmul work keras-hub / ours "
        "| train ours/s | train keras-hub/s | train speedup "
        "| MFU ours | MFU keras-hub | infer ours/s | infer keras-hub/s | infer speedup "
        "| infer MFU ours | infer MFU keras-hub "
        "| memory ours MiB | memory keras-hub MiB | train page faults/step | infer page faults/step |",
        "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        on_cpu = not r.get("accelerator")
        device = (f"CPU ({common.cpu_name(r['machine'])})" if on_cpu else r["accelerator"]) + _timing_mark(r)
        for model_name, result in r["results"].items():
            t, i = result["training"], result["inference"]
            memory = result.get("peak_memory_bytes", {})
            mib = {lib: f"{memory[lib] / 2**20:.0f}" if lib in memory else "-" for lib in LIBRARIES}
            malloc = r.get("malloc", "default").replace("glibc.malloc.", "") if on_cpu else "-"
            lines.append(
                f"| {device} | {r['backend']} | {r['dtype_policy']} | {malloc} | {model_name} "
                f"| {work_ratio(model_name, r['config']):.2f}x "
                f"| {t['ours']['items_per_second']:,.0f} | {t['keras_hub']['items_per_second']:,.0f} "
                f"| {t['speedup']:.2f}x | {_percent(t['ours']['mfu'])} | {_percent(t['keras_hub']['mfu'])} "
                f"| {i['ours']['items_per_second']:,.0f} | {i['keras_hub']['items_per_second']:,.0f} "
                f"| {i['speedup']:.2f}x | {_percent(i['ours']['mfu'])} | {_percent(i['keras_hub']['mfu'])} "
                f"| {mib['ours']} | {mib['keras_hub']} "
                f"| {_faults(t)} | {_faults(i)} |"
            )
    lines += ["", "Runs:", ""]
    for r in runs:
        versions = ", ".join(f"{k} {v}" for k, v in r["versions"].items())
        lines.append(
            f"- {r['backend']} ({r['dtype_policy']}{_malloc_note(r)}), {r['date']}: "
            f"{r['machine']}; {versions}; "
            f"matmul peak {r['matmul_peak_flops'] / 1e9:,.0f} GFLOP/s ({r['matmul_peak_dtype']}); "
            f"timing {r['timing']}; {_memory_note(r)}; {_loss_note(r)}{_optimizer_note(r)}{_jit_note(r)}"
            + ("; stopped by its time limit after the models shown (matmul peak from the start)"
               if r.get("partial") else "") + "."
        )
    return "\n".join(lines) + "\n"


def _timing_mark(run):
    """", R x S steps" for a run timed with other repeats or steps than the defaults (a longer
    run of a few models, beside the default run of all of them)."""
    timing = run.get("timing") or DEFAULT_TIMING
    if timing == DEFAULT_TIMING:
        return ""
    return f", {timing['repeats']}x{timing['steps']} steps"


def _memory_note(run):
    # Runs from before the memory runs were repeated have no "memory_repeats" key: one each.
    if not any("peak_memory_bytes" in result for result in run["results"].values()):
        return "memory not measured"
    repeats = run.get("memory_repeats", 1)
    return "memory: one run per library" if repeats == 1 else f"memory: median of {repeats} runs per library"


def _loss_note(run):
    # Runs from before the compile step gave each library its own loss have no "loss" key.
    if "loss" not in run:
        return "both sides trained with Keras' loss"
    return f"loss ours {run['loss']['ours']}, keras-hub {run['loss']['keras_hub']}"


def _optimizer_note(run):
    # Runs from before each library got its own AdamW have no "optimizer" key.
    if "optimizer" not in run:
        return "; both sides trained with Keras' AdamW"
    return f"; optimizer ours {run['optimizer']['ours']}, keras-hub {run['optimizer']['keras_hub']}"


def _jit_note(run):
    # Runs from before the results recorded it have no "jit_compile" key.
    settings = [result["jit_compile"] for result in run["results"].values() if "jit_compile" in result]
    if not settings:
        return ""
    return f"; jit_compile (XLA) ours {settings[0]['ours']}, keras-hub {settings[0]['keras_hub']}"


def _malloc_note(run):
    return "" if run.get("accelerator") else f", malloc {run.get('malloc', 'default')}"


def _faults(entry):
    """Page faults per step, "ours / keras-hub" ("-" for runs from before they were counted)."""
    counts = [entry[lib].get("page_faults_per_step") for lib in LIBRARIES]
    if None in counts:
        return "-"
    return " / ".join(f"{n / 1000:.1f}k" if n >= 1000 else str(n) for n in counts)


def _percent(fraction):
    return f"{fraction:.0%}" if fraction >= 0.1 else f"{fraction:.1%}"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", help="JSON file to write the results to")
    parser.add_argument("--table", nargs="+", metavar="JSON", help="print the Markdown table of these runs")
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--dtype", choices=("mixed_bfloat16", "mixed_float16"), default=None,
                        help="dtype policy of both libraries' models (default float32)")
    parser.add_argument("--repeats", type=int, default=DEFAULT_TIMING["repeats"])
    parser.add_argument("--steps", type=int, default=DEFAULT_TIMING["steps"], help="steps timed per repeat")
    parser.add_argument("--warmup", type=int, default=DEFAULT_TIMING["warmup"])
    parser.add_argument("--config", help="JSON object overriding CONFIG entries (e.g. a bigger batch)")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--memory-only", action="store_true",
                        help="measure peak memory alone (no throughput; not a table input)")
    parser.add_argument("--memory-repeats", type=int, default=3,
                        help="memory runs per model and library (the median is reported)")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="apply keras_transformers.host_memory.keep_freed_memory() first "
                             "(to the memory processes too)")
    parser.add_argument("--memory", nargs=2, metavar=("MODEL", "LIBRARY"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_only and args.skip_memory:
        parser.error("--memory-only and --skip-memory exclude each other")
    if args.memory_repeats < 1:
        parser.error(f"--memory-repeats must be at least 1, got {args.memory_repeats}")
    if args.table:
        print(table(args.table), end="")
        return
    # Before the backend runs anything: a thread that has allocated keeps its malloc arena.
    malloc = common.keep_freed_memory() if args.keep_freed_memory else common.malloc_tunables()
    if args.memory:
        config = dict(CONFIG, **json.loads(args.config)) if args.config else dict(CONFIG)
        print(f"peak_bytes={peak_memory(*args.memory, config, args.dtype)}")
        return
    result = run(args, malloc)
    if args.output:
        common.write_json(args.output, result)


if __name__ == "__main__":
    main()
