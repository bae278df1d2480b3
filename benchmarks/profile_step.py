"""Where a training step's time goes, ours and keras-hub's, on the current backend.

The models and batch are throughput.py's. Per backend:

- jax: XLA's cost and memory analyses of the compiled forward + backward pass (FLOPs, bytes
  accessed, HLO size, temporary buffers) for both libraries, and the step time with dropout
  on and off (its random numbers are the one cost that is not a matmul);
- torch: `torch.profiler`'s operators by self CPU time over a few `train_on_batch` steps;
- tensorflow: `train_on_batch` with `jit_compile` False (what "auto" picks on a CPU) and True.

    KERAS_BACKEND=torch python benchmarks/profile_step.py --model gpt2
"""

import argparse
import statistics
import sys

import common
import throughput


def _loss_and_grad(model, jax, keras):
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def loss_fn(trainable, non_trainable, x, y):
        logits, _ = model.stateless_call(trainable, non_trainable, x, training=True)
        return loss(y, logits)

    return jax.jit(jax.value_and_grad(loss_fn))


def profile_jax(model_name, config, repeats):
    import jax
    import keras

    inputs, labels = throughput.example_inputs(model_name, config)
    steps = {}
    for dropout in (config["dropout"], 0.0):
        for library in throughput.LIBRARIES:
            model = throughput.build(model_name, library, dict(config, dropout=dropout))
            x = throughput.library_inputs(model_name, library, inputs)
            trainable = [v.value for v in model.trainable_variables]
            non_trainable = [v.value for v in model.non_trainable_variables]
            grad = _loss_and_grad(model, jax, keras)
            compiled = grad.lower(trainable, non_trainable, x, labels).compile()
            temp = compiled.memory_analysis().temp_size_in_bytes / 2**20
            if dropout:
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
    import keras

    inputs, labels = throughput.example_inputs(model_name, config)
    steps = {}
    for library in throughput.LIBRARIES:
        for jit_compile in (False, True):
            model = throughput.build(model_name, library, config)
            model.compile(
                optimizer=keras.optimizers.AdamW(1e-4),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                jit_compile=jit_compile,
            )
            x = throughput.library_inputs(model_name, library, inputs)
            model.train_on_batch(x, labels)
            steps[library, f"jit_compile={jit_compile}"] = (
                lambda m=model, x=x: m.train_on_batch(x, labels)
            )
    _print_times(steps, repeats, "train_on_batch ms (library, setting)")


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
    parser.add_argument("--top", type=int, default=15, help="torch: operators listed")
    args = parser.parse_args()
    import keras

    backend = keras.backend.backend()
    config = dict(throughput.CONFIG)
    print(f"{backend}, {args.model}, {common.machine()}")
    if backend == "jax":
        profile_jax(args.model, config, args.repeats)
    elif backend == "torch":
        profile_torch(args.model, config, args.top)
    elif backend == "tensorflow":
        profile_tensorflow(args.model, config, args.repeats)
    else:
        sys.exit(f"unsupported backend {backend}")


if __name__ == "__main__":
    main()
