"""Where a training step's time goes, ours and keras-hub's, on the current backend.

The models, batch and losses are throughput.py's (each side trains with its library's
loss). Per backend:

- jax: XLA's cost and memory analyses of the compiled forward + backward pass (FLOPs, bytes
  accessed, HLO size, temporary buffers) for both libraries, the step time with dropout
  on and off, and (with dropout) where the compiled step's time goes: each executed HLO
  op's time from a `jax.profiler` trace, grouped (matrix products, dropout's random
  numbers, loss, the rest) and the slowest ops with the JAX operation they come from (an
  op that runs on both cores' threads counts on each: the sum can exceed the step time);
- torch: `torch.profiler`'s operators by self CPU time over a few `train_on_batch` steps;
- tensorflow: `train_on_batch` and `predict_on_batch` with `jit_compile` False and True
  (on a CPU, Keras' "auto" picks False for keras-hub's models and our `Model` picks True).

    KERAS_BACKEND=torch python benchmarks/profile_step.py --model gpt2
"""

import argparse
import statistics
import sys

import common
import throughput


def _loss_and_grad(model, library, jax):
    loss = throughput.library_loss(library)  # each side's, as throughput.py trains them

    def loss_fn(trainable, non_trainable, x, y):
        logits, _ = model.stateless_call(trainable, non_trainable, x, training=True)
        return loss(y, logits)

    return jax.jit(jax.value_and_grad(loss_fn))


def profile_jax(model_name, config, repeats, top):
    import jax

    inputs, labels = throughput.example_inputs(model_name, config)
    steps, hlo_ops = {}, {}
    for dropout in (config["dropout"], 0.0):
        for library in throughput.LIBRARIES:
            model = throughput.build(model_name, library, dict(config, dropout=dropout))
            x = throughput.library_inputs(model_name, library, inputs)
            trainable = [v.value for v in model.trainable_variables]
            non_trainable = [v.value for v in model.non_trainable_variables]
            grad = _loss_and_grad(model, library, jax)
            compiled = grad.lower(trainable, non_trainable, x, labels).compile()
            temp = compiled.memory_analysis().temp_size_in_bytes / 2**20
            if dropout:
                hlo_ops[library] = (compiled, trainable, non_trainable, x)
                cost = compiled.cost_analysis()
                cost = cost[0] if isinstance(cost, list) else cost
                print(
                    f"{library:9s} forward+backward: {cost['flops'] / 1e9:.2f} GFLOP, "
                    f"{cost['bytes accessed'] / 1e9:.3f} GB accessed, "
                    f"{compiled.as_text().count(chr(10))} HLO lines, {temp:.1f} MiB XLA temporaries"
                )
            else:
                print(f"{library:9s} forward+backward without dropout: {temp:.1f} MiB XLA temporaries")
            steps[library, dropout] = (
                lambda c=compiled, t=trainable, n=non_trainable, x=x: jax.block_until_ready(
                    c(t, n, x, labels)
                )
            )
    _print_times(steps, repeats, "forward+backward ms (library, dropout)")
    for library, (compiled, *arguments) in hlo_ops.items():
        _print_hlo_op_times(library, compiled, arguments, labels, top)


def _print_hlo_op_times(library, compiled, arguments, labels, top, calls=3):
    """Traces `calls` runs of `compiled` and prints its HLO ops' time per run, grouped and
    the `top` slowest (XLA on the CPU names each executed fusion in the trace)."""
    import collections
    import glob
    import re
    import tempfile

    import jax

    try:
        from tensorflow.tsl.profiler.protobuf import xplane_pb2  # the trace's format
    except ImportError:  # the GPU machines have JAX without TensorFlow
        print(f"--- {library}: HLO op times skipped: reading the trace needs TensorFlow's xplane_pb2")
        return

    origin = {  # HLO instruction -> (shape, the JAX operation it was lowered from)
        match[1]: (match[2], match[3])
        for match in re.finditer(
            r'^\s*(?:ROOT )?%(\S+) = (\S+) .*?op_name="([^"]*)"', compiled.as_text(), re.M
        )
    }
    with tempfile.TemporaryDirectory() as folder:
        with jax.profiler.trace(folder):
            for _ in range(calls):
                jax.block_until_ready(compiled(*arguments, labels))
        space = xplane_pb2.XSpace()
        with open(glob.glob(f"{folder}/**/*.xplane.pb", recursive=True)[0], "rb") as f:
            space.ParseFromString(f.read())
    seconds = collections.Counter()
    for plane in space.planes:
        names = {key: value.name for key, value in plane.event_metadata.items()}
        for line in plane.lines:
            for event in line.events:
                name = names.get(event.metadata_id, "")
                if name in origin:  # an HLO op (not the executor's own events)
                    seconds[name] += event.duration_ps * 1e-12 / calls
    groups = collections.Counter()
    for name, value in seconds.items():
        groups[_hlo_group(name, origin[name][1])] += value
    print(f"--- {library}: HLO op time per forward+backward, {1e3 * sum(seconds.values()):.1f} ms in all")
    for group, value in groups.most_common():
        print(f"  {group}: {1e3 * value:.1f} ms")
    for name, value in seconds.most_common(top):
        shape, operation = origin[name]
        print(f"  {1e3 * value:6.2f} ms {name} {shape} {operation[-90:]}")


def _hlo_group(name, operation):
    if name.startswith(("dot", "ynn_fusion", "xnn_fusion", "onednn")):
        # XLA's CPU backend also hands some reductions to YNNPACK, and fuses the
        # vocabulary projection with the loss's first reduction.
        return "matrix products (and the reductions in their fusions)"
    if any(word in operation for word in ("_bernoulli", "_uniform", "threefry", "random")):
        return "dropout random numbers"
    if "crossentropy" in operation or "log_softmax" in operation:
        return "loss"
    return "the rest (element-wise fusions, copies, transposes)"


def profile_torch(model_name, config, top):
    import torch

    inputs, labels = throughput.example_inputs(model_name, config)
    for library in throughput.LIBRARIES:
        model = throughput.compile_model(throughput.build(model_name, library, config), library)
        x = throughput.library_inputs(model_name, library, inputs)
        for _ in range(2):
            model.train_on_batch(x, labels)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                model.train_on_batch(x, labels)
        print(f"--- {library}: 3 train_on_batch steps, top {top} operators by self CPU time")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top))


def profile_tensorflow(model_name, config, repeats):
    inputs, labels = throughput.example_inputs(model_name, config)
    steps = {}
    for library in throughput.LIBRARIES:
        for jit_compile in (False, True):
            model = throughput.compile_model(
                throughput.build(model_name, library, config), library, jit_compile
            )
            x = throughput.library_inputs(model_name, library, inputs)
            setting = f"jit_compile={jit_compile}"
            steps[library, setting, "train_on_batch"] = (
                lambda m=model, x=x: m.train_on_batch(x, labels)
            )
            steps[library, setting, "predict_on_batch"] = lambda m=model, x=x: m.predict_on_batch(x)
    _print_times(steps, repeats, "ms a step (library, setting, step)")


def _print_times(steps, repeats, title):
    for step in steps.values():
        step()
    times = {key: [] for key in steps}
    for _ in range(repeats):
        for key, step in steps.items():  # alternating, so drift hits all
            times[key].append(common.seconds_per_call(step, 2))
    print(title)
    for key, values in times.items():
        print(f"  {key}: {1e3 * statistics.median(values):.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", choices=throughput.MODELS, default="gpt2")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--top", type=int, default=15, help="torch: operators listed; jax: HLO ops")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="apply keras_transformers.host_memory.keep_freed_memory() first")
    args = parser.parse_args()
    if args.keep_freed_memory:
        common.keep_freed_memory()  # before the backend runs anything
    import keras

    backend = keras.backend.backend()
    config = dict(throughput.CONFIG)
    print(f"{backend}, {args.model}, {common.machine()}")
    if backend == "jax":
        profile_jax(args.model, config, args.repeats, args.top)
    elif backend == "torch":
        profile_torch(args.model, config, args.top)
    elif backend == "tensorflow":
        profile_tensorflow(args.model, config, args.repeats)
    else:
        sys.exit(f"unsupported backend {backend}")


if __name__ == "__main__":
    main()
