"""glibc's default malloc against `GLIBC_TUNABLES=glibc.malloc.hugetlb=1` and against
`keras_transformers.host_memory.keep_freed_memory()`, on the CPU.

On a CPU, XLA (JAX) allocates a step's temporaries afresh at every execution and PyTorch
allocates each large tensor (a language model's logits: 32 MiB at the benchmark's size).
glibc maps a block above its mmap threshold (at most 32 MiB) straight from the kernel and
unmaps it on free, so every step first-touches that memory again: one minor page fault per
4 KiB page, which the kernel maps and zero-fills. `glibc.malloc.hugetlb=1` (glibc 2.35 or
later, with transparent huge pages in "madvise" or "always" mode) makes malloc ask for 2 MiB
pages, each fault mapping 512 times as much. `keep_freed_memory()` (`mallopt`, from Python)
serves large blocks from the heap and keeps freed ones for the next step: no faults at all
after the first steps. Each setting holds for a whole process, so each runs in its own child
process, the settings alternating `--pairs` times so that the machine's drift hits all of
them; each child times both libraries' models (throughput.py's, same configuration)
alternately: `train_on_batch` and `predict_on_batch`, ms per step and minor page faults per
step, medians over `--repeats`.

    KERAS_BACKEND=jax python benchmarks/malloc.py --model gpt2 \
        --output benchmarks/results/malloc_jax.json
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

import common
import throughput

# setting: what it changes (the environment's GLIBC_TUNABLES, or a call in the child)
SETTINGS = {"default": None, "hugetlb": "glibc.malloc.hugetlb=1", "keep_freed": common.KEEP_FREED}
MODES = ("training", "inference")


def child(model_name, repeats, steps):
    """Times both libraries' `model_name` in this process; returns
    {library: {mode: {"ms": [...], "faults": [...]}}}."""
    config = dict(throughput.CONFIG)
    inputs, labels = throughput.example_inputs(model_name, config)
    calls = {}
    for library in throughput.LIBRARIES:
        model = throughput.compile_model(throughput.build(model_name, library, config), library)
        x = throughput.library_inputs(model_name, library, inputs)
        calls[library] = {
            "training": lambda m=model, x=x: m.train_on_batch(x, labels),
            "inference": lambda m=model, x=x: m.predict_on_batch(x),
        }
        for call in calls[library].values():
            for _ in range(3):  # compile and warm up
                call()
    result = {library: {mode: {"ms": [], "faults": []} for mode in MODES} for library in calls}
    for _ in range(repeats):
        for library, by_mode in calls.items():
            for mode, call in by_mode.items():
                before = common.minor_page_faults()
                seconds = common.seconds_per_call(call, steps)
                result[library][mode]["faults"].append((common.minor_page_faults() - before) / steps)
                result[library][mode]["ms"].append(1e3 * seconds)
    return result


def run_child(model_name, setting, repeats, steps):
    env = {k: v for k, v in os.environ.items() if k != "GLIBC_TUNABLES"}
    command = [sys.executable, __file__, "--child", "--model", model_name,
               "--repeats", str(repeats), "--steps", str(steps)]
    if SETTINGS[setting] == common.KEEP_FREED:
        command.append("--keep-freed-memory")
    elif SETTINGS[setting]:
        env["GLIBC_TUNABLES"] = SETTINGS[setting]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("result=")]
    if out.returncode or not lines:
        raise RuntimeError(f"{setting} child failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1].split("=", 1)[1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=throughput.MODELS, default="gpt2")
    parser.add_argument("--pairs", type=int, default=3, help="child processes per setting")
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--steps", type=int, default=3, help="steps timed per repeat")
    parser.add_argument("--output", help="JSON file to write the results to")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--keep-freed-memory", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.keep_freed_memory:
        common.keep_freed_memory()  # before the backend runs anything
    if args.child:
        print("result=" + json.dumps(child(args.model, args.repeats, args.steps)), flush=True)
        return
    import keras

    samples = {s: {lib: {m: {"ms": [], "faults": []} for m in MODES} for lib in throughput.LIBRARIES}
               for s in SETTINGS}
    for pair in range(args.pairs):
        for setting in SETTINGS:
            measured = run_child(args.model, setting, args.repeats, args.steps)
            for library, by_mode in measured.items():
                for mode, values in by_mode.items():
                    samples[setting][library][mode]["ms"].append(statistics.median(values["ms"]))
                    samples[setting][library][mode]["faults"].append(statistics.median(values["faults"]))
            print(f"pair {pair + 1}, {setting}: " + ", ".join(
                f"{lib} {mode} {statistics.median(v['ms']):.1f} ms"
                for lib, by_mode in measured.items() for mode, v in by_mode.items()), flush=True)
    result = {}
    for library in throughput.LIBRARIES:
        result[library] = {}
        for mode in MODES:
            entry = {}
            for setting in SETTINGS:
                values = samples[setting][library][mode]
                entry[setting] = {
                    "step_ms": round(statistics.median(values["ms"]), 2),
                    "step_ms_all": [round(v, 2) for v in values["ms"]],
                    "page_faults_per_step": round(statistics.median(values["faults"])),
                }
            # Each setting's speedup over glibc's default.
            entry["speedup"] = {
                setting: round(entry["default"]["step_ms"] / entry[setting]["step_ms"], 3)
                for setting in SETTINGS if setting != "default"
            }
            result[library][mode] = entry
            print(f"{keras.backend.backend():10s} {args.model} {library:9s} {mode:9s} " + ", ".join(
                f"{setting} {entry[setting]['step_ms']:7.1f} ms ({entry[setting]['page_faults_per_step']} "
                "faults/step)" + (f" {entry['speedup'][setting]:.2f}x" if setting != "default" else "")
                for setting in SETTINGS), flush=True)
    if args.output:
        with open(args.output, "w") as f:
            json.dump({
                "backend": keras.backend.backend(),
                "machine": common.machine(),
                "versions": common.versions("keras-hub"),
                "date": common.today(),
                "model": args.model,
                "settings": SETTINGS,
                "timing": {"pairs": args.pairs, "repeats": args.repeats, "steps": args.steps},
                "result": result,
            }, f, indent=1)


if __name__ == "__main__":
    main()
