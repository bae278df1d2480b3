"""On a GPU: how much of GPT-2's `predict_on_batch` is copying the logits to the host.

The throughput benchmark's inference step is `predict_on_batch`, which returns NumPy arrays:
for GPT-2 that is (8, 128, 8192) float32 logits, 32 MiB, copied from the GPU at every step.
This times, on the current backend (JAX or PyTorch, GPU only):

- that copy alone (an elementwise add on the device, then to the host), and the add alone;
- each library's GPT-2 (throughput.py's models) through `predict_on_batch`, and its forward
  pass kept on the device (JAX: the jitted `stateless_call`, waited for; PyTorch: the model
  called under `no_grad`, then `cuda.synchronize()`).

Medians of 10 calls after 2 warm-up calls.

    KERAS_BACKEND=jax python benchmarks/host_copy.py --output benchmarks/results/gpu/host_copy_jax.json
"""

import argparse
import statistics
import time

import common
import throughput


def median_ms(fn, calls=10, warmup=2):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def on_device_forward(model, x, backend):
    """A no-argument function running the model's forward pass, waiting for the device but
    leaving the result there."""
    if backend == "jax":
        import jax

        trainable = [v.value for v in model.trainable_variables]
        non_trainable = [v.value for v in model.non_trainable_variables]
        forward = jax.jit(lambda t, n, x: model.stateless_call(t, n, x, training=False)[0])
        return lambda: forward(trainable, non_trainable, x).block_until_ready()
    import torch

    on_device = {k: torch.as_tensor(v, device="cuda") for k, v in x.items()}

    def forward():
        with torch.no_grad():
            model(on_device, training=False)
        torch.cuda.synchronize()

    return forward


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", help="JSON file to write the results to")
    args = parser.parse_args()

    import keras
    import numpy as np

    backend = keras.backend.backend()
    if backend not in ("jax", "torch") or not common.accelerator():
        raise SystemExit(f"host_copy.py needs JAX or PyTorch on a GPU; got {backend} on the CPU")
    config = dict(throughput.CONFIG)
    shape = (config["batch_size"], config["sequence_length"], config["vocabulary_size"])
    if backend == "jax":
        import jax.numpy as jnp

        logits = jnp.ones(shape, "float32")
        copy = median_ms(lambda: np.asarray(logits + 0))
        add = median_ms(lambda: (logits + 0).block_until_ready())
    else:
        import torch

        logits = torch.ones(shape, device="cuda")
        copy = median_ms(lambda: (logits + 0).cpu().numpy())
        add = median_ms(lambda: (logits + 0, torch.cuda.synchronize()))
    result = {
        "backend": backend,
        "machine": common.machine(),
        "versions": common.versions("keras-hub"),
        "date": common.today(),
        "logits_shape": list(shape),
        "add_and_copy_to_host_ms": round(copy, 3),
        "add_on_device_ms": round(add, 3),
        "gpt2": {},
    }
    print(f"{backend}: {shape} float32 logits: add + copy to the host {copy:.2f} ms, add alone {add:.3f} ms")
    inputs, _ = throughput.example_inputs("gpt2", config)
    for library in throughput.LIBRARIES:
        model = throughput.compile_model(throughput.build("gpt2", library, config), library)
        x = throughput.library_inputs("gpt2", library, inputs)
        predict = median_ms(lambda: model.predict_on_batch(x))
        forward = median_ms(on_device_forward(model, x, backend))
        result["gpt2"][library] = {"predict_on_batch_ms": round(predict, 3), "forward_on_device_ms": round(forward, 3)}
        print(f"{backend} {library}: predict_on_batch {predict:.2f} ms, forward kept on the device {forward:.2f} ms")
    for key in ("predict_on_batch_ms", "forward_on_device_ms"):
        ours, theirs = (result["gpt2"][lib][key] for lib in throughput.LIBRARIES)
        result["gpt2"][f"speedup_{key[:-3]}"] = round(theirs / ours, 3)
    if args.output:
        common.write_json(args.output, result)


if __name__ == "__main__":
    main()
