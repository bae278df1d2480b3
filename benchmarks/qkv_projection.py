"""Self-attention's query, key and value projections: three matmuls, or one on joined kernels?

Issue 8 names a fused QKV projection as a likely speedup. Our `MultiHeadAttention` keeps
three `EinsumDense` layers (their weights are what checkpoints, converters and SavedModels
name); a fused projection would join the three (D, N, H) kernels at call time and run one
(D, 3N, H) matmul. This times that choice alone, on the current backend, at the
throughput benchmark's sizes (hidden 256, 4 heads of 64): a layer holding the three kernels
and biases, called either way, inside a Keras `Model` trained with SGD on the sum of the three
projections (`train_on_batch`, XLA on TensorFlow and JAX as our models compile, eager
PyTorch) and run by `predict_on_batch`, the two arms alternating in one process. Shapes: GPT-2's
8 x 128 tokens and ViT's 8 x 65. `speedup = separate ms / fused ms` (above 1: fusing helps).

    KERAS_BACKEND=jax python benchmarks/qkv_projection.py \
        --output benchmarks/results/qkv_projection_jax.json
"""

import common
import throughput

_CONFIG = throughput.CONFIG
HIDDEN, HEADS = _CONFIG["hidden_dim"], _CONFIG["num_heads"]
HEAD_DIM = HIDDEN // HEADS
SHAPES = {  # (batch, tokens) of throughput.py's models; ViT: its patches and class token
    "gpt2": (_CONFIG["batch_size"], _CONFIG["sequence_length"]),
    "vit": (_CONFIG["batch_size"], (_CONFIG["image_size"] // _CONFIG["patch_size"]) ** 2 + 1),
}


def projections_layer(fused):
    import keras
    from keras import ops

    class Projections(keras.layers.Layer):
        """Query, key and value of `x` (B, T, D), each (B, T, N, H)."""

        def build(self, input_shape):
            shape = (input_shape[-1], HEADS, HEAD_DIM)
            self.kernels = [
                self.add_weight(shape=shape, initializer="glorot_uniform", name=n) for n in "qkv"
            ]
            self.biases = [
                self.add_weight(shape=shape[1:], initializer="zeros", name=f"{n}_bias")
                for n in "qkv"
            ]

        def call(self, x):
            if not fused:
                return [
                    ops.einsum("btd,dnh->btnh", x, k) + b
                    for k, b in zip(self.kernels, self.biases)
                ]
            joined = ops.einsum("btd,dnh->btnh", x, ops.concatenate(self.kernels, axis=1))
            joined = joined + ops.concatenate(self.biases, axis=0)  # (B, T, 3N, H)
            return ops.split(joined, 3, axis=2)

    return Projections()


def build(fused, tokens):
    import keras

    keras.utils.set_random_seed(0)  # the same kernels in both arms
    x = keras.Input((tokens, HIDDEN))
    query, key, value = projections_layer(fused)(x)
    model = keras.Model(x, query + key + value)
    # As our models compile: XLA on TensorFlow (a CPU too) and JAX, eager PyTorch.
    jit_compile = keras.backend.backend() != "torch"
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse", jit_compile=jit_compile)
    return model


def measure(name, args):
    import numpy as np

    batch, tokens = SHAPES[name]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, tokens, HIDDEN)).astype("float32")
    y = np.zeros((batch, tokens, HEADS, HEAD_DIM), "float32")
    models = {arm: build(arm == "fused", tokens) for arm in ("separate", "fused")}
    outputs = {arm: model.predict_on_batch(x) for arm, model in models.items()}
    difference = float(np.max(np.abs(outputs["separate"] - outputs["fused"])))
    result = {"tokens": batch * tokens, "max_output_difference": difference}
    for kind, call in (
        ("train_on_batch", lambda model: model.train_on_batch(x, y)),
        ("predict_on_batch", lambda model: model.predict_on_batch(x)),
    ):
        arms = {arm: (lambda model=model: call(model)) for arm, model in models.items()}
        result[kind] = common.alternate(
            arms, args.repeats, args.steps, args.warmup, baseline="separate"
        )
        print(
            f"{name} {kind}: separate {result[kind]['separate']['step_ms']} ms, fused "
            f"{result[kind]['fused']['step_ms']} ms, speedup {result[kind]['speedup']:.2f}x",
            flush=True,
        )
    print(f"{name}: largest output difference {difference:.1e}", flush=True)
    return result


def main():
    args, malloc = common.ab_arguments(__doc__, tuple(SHAPES), steps=20, warmup=5)
    record = common.ab_record(None, "qkv_projection.py", "", args, malloc)
    result = {**record, "results": {name: measure(name, args) for name in args.models}}
    if args.output:
        common.write_json(args.output, result)


if __name__ == "__main__":
    main()
