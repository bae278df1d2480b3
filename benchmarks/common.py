"""What every benchmark here shares: the machine's description, versions and a step timer.

The benchmark scripts run as `python benchmarks/<name>.py`, so this module is importable
as `common` from them.
"""

import argparse
import datetime
import importlib.metadata
import os
import platform
import re
import resource
import statistics
import time

BACKEND_PACKAGES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
BACKEND_ORDER = {"tensorflow": 0, "jax": 1, "torch": 2}


def _cpu_model():
    """The CPU's model name as the kernel gives it ("Intel(R) Xeon(R) Processor")."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def machine():
    """The CPU model (or GPU name, when one is in use), core count and OS, in one line."""
    gpu = accelerator()
    described = f"{_cpu_model()}, {os.cpu_count()} cores, {platform.system()}"
    return f"{gpu}; host {described}" if gpu else described


def cpu_name(described=None):
    """The CPU model of a `machine()` line (this machine's by default), without trademark
    marks or the word "Processor": "AMD EPYC", "Intel Xeon". For a GPU run, its host's CPU."""
    cpu = _cpu_model() if described is None else described.split("; host ", 1)[-1].split(",", 1)[0]
    cpu = re.sub(r"\((R|TM)\)|\bProcessor\b|\bCPU\b", " ", cpu, flags=re.IGNORECASE)
    return " ".join(cpu.split())


def cpu_slug():
    """`cpu_name()` as a folder name: "amd_epyc", "intel_xeon" (benchmarks/results/cpu/<slug>/
    keeps each CPU model's runs apart: the same code's ratios differ between them)."""
    return re.sub(r"[^a-z0-9]+", "_", cpu_name().lower()).strip("_") or "unknown"


def accelerator():
    """The name of the GPU the current Keras backend computes on, or None on CPU."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        return None if device.platform == "cpu" else device.device_kind
    if backend == "torch":
        import torch

        return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        return gpus[0].name if gpus else None
    return None


def versions(*extra_packages):
    """Keras, the backend's package and `extra_packages`, name -> installed version."""
    import keras

    names = ["keras", BACKEND_PACKAGES[keras.backend.backend()], *extra_packages]
    return {name: importlib.metadata.version(name) for name in names}


def write_json(path, result, quiet=False):
    """Writes `result` to `path` (creating its folder) as indented JSON."""
    import json

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    if not quiet:
        print(f"wrote {path}")


def read_runs(paths):
    """The JSON results at `paths`, in backend order (TensorFlow, JAX, PyTorch), for a table."""
    import json

    runs = []
    for path in sorted(paths):
        with open(path) as f:
            runs.append(json.load(f))
    return sorted(runs, key=lambda run: BACKEND_ORDER.get(run["backend"], 3))


def today():
    return datetime.date.today().isoformat()


def seconds_per_call(fn, iterations):
    """Mean wall time of `fn()` over `iterations` calls; `fn` must return only when done
    (for example by returning host values, as `train_on_batch` and `predict_on_batch` do)."""
    start = time.perf_counter()
    for _ in range(iterations):
        fn()
    return (time.perf_counter() - start) / iterations


def minor_page_faults():
    """Page faults this process has taken so far (all threads) that needed no disk read:
    mostly first touches of freshly mapped memory, each one a 4 KiB page the kernel maps
    and zero-fills (a 2 MiB one under transparent huge pages)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def malloc_tunables():
    """The glibc malloc tunables this process started with (`GLIBC_TUNABLES`), or "default"."""
    tunables = [t for t in os.environ.get("GLIBC_TUNABLES", "").split(":") if t.startswith("glibc.malloc.")]
    return ":".join(tunables) or "default"


KEEP_FREED = "keep_freed_memory"  # the malloc setting of keras_transformers.host_memory


def keep_freed_memory():
    """Applies `keras_transformers.host_memory.keep_freed_memory()` to this process (before
    the backend runs anything); returns the malloc setting to record, or raises where it
    cannot apply (not glibc)."""
    from keras_transformers.host_memory import keep_freed_memory

    if not keep_freed_memory():
        raise SystemExit("keep_freed_memory() applies to glibc only; this process has another C library")
    return KEEP_FREED


def ab_arguments(doc, models, steps, warmup, keep_freed_memory_option=True):
    """Parses the command line of an A/B benchmark (two arms of one change, alternating):
    --output, --models, --repeats, --steps, --warmup and, if offered, --keep-freed-memory.
    Returns (args, the run's malloc setting), the malloc setting applied first."""
    parser = argparse.ArgumentParser(description=doc.split("\n")[0])
    parser.add_argument("--output", help="JSON file to write the results to")
    parser.add_argument("--models", nargs="+", choices=models, default=list(models))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--steps", type=int, default=steps, help="calls timed per repeat")
    parser.add_argument("--warmup", type=int, default=warmup)
    if keep_freed_memory_option:
        parser.add_argument("--keep-freed-memory", action="store_true",
                            help="apply keras_transformers.host_memory.keep_freed_memory() first")
    args = parser.parse_args()
    if getattr(args, "keep_freed_memory", False):
        return args, keep_freed_memory()
    return args, malloc_tunables()


def ab_record(backend, script, why, args, malloc):
    """The description of an A/B run on `backend` (exits on any other: `why` says so), or on
    the current backend if `backend` is None."""
    import keras

    backend = backend or keras.backend.backend()
    if keras.backend.backend() != backend:
        raise SystemExit(f"{script} measures {why}; got {keras.backend.backend()}")
    return {
        "backend": backend,
        "accelerator": accelerator(),
        "malloc": malloc,
        "versions": versions(),
        "machine": machine(),
        "date": today(),
        "timing": {"repeats": args.repeats, "steps": args.steps, "warmup": args.warmup},
    }


def alternate(arms, repeats, steps, warmup, baseline):
    """{arm: {"step_ms", "step_ms_all"}, "speedup"}: `arms` ({name: call}) timed in turn,
    `repeats` rounds of `steps` calls each after `warmup` calls; speedup = the `baseline`
    arm's median over the first other arm's."""
    for step in arms.values():
        for _ in range(warmup):
            step()
    times = {arm: [] for arm in arms}
    for _ in range(repeats):
        for arm, step in arms.items():  # alternating, so drift hits both
            times[arm].append(seconds_per_call(step, steps))
    result = {
        arm: {"step_ms": round(1e3 * statistics.median(values), 3), "step_ms_all": [round(1e3 * t, 3) for t in values]}
        for arm, values in times.items()
    }
    other = next(arm for arm in arms if arm != baseline)
    result["speedup"] = round(result[baseline]["step_ms"] / result[other]["step_ms"], 3)
    return result
