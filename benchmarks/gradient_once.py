"""JAX: our models' forward + backward pass with and without `gradient_computed_once`.

`keras_transformers.layers.arguments.gradient_computed_once` makes XLA compute the residual
stream's gradient once, instead of copying its chain of element-wise sums into each consumer.
This compiles the throughput benchmark's GPT-2 and ViT (pre-norm: the function on each block's
output) and BERT and BERT-MLM (post-norm: on each branch's output, before dropout; dropout on)
twice in one process, once with the function switched off (traced while it is replaced by the identity),
and times the two jitted `value_and_grad` calls alternately: the median of `--repeats` rounds
of `--steps` calls each, after warm-up calls. It also reports each compiled step's longest
fused computation (HLO instructions) and the largest difference between the two gradients.
`speedup = off ms / on ms`.

    KERAS_BACKEND=jax python benchmarks/gradient_once.py --keep-freed-memory \
        --output benchmarks/results/gradient_once_jax.json
"""

import statistics

import common
import throughput

MODELS = ("gpt2", "vit", "bert", "bert_mlm")


def compiled_step(model_name, config, switched_off):
    """(jitted loss-and-gradient call with its arguments bound, longest fusion length)."""
    import jax
    import keras

    from keras_transformers.layers import arguments

    keras.utils.set_random_seed(0)  # the same weights and dropout masks for both arms
    inputs, labels = throughput.example_inputs(model_name, config)
    model = throughput.build(model_name, "ours", config)
    x = throughput.library_inputs(model_name, "ours", inputs)
    loss = throughput.library_loss("ours")
    trainable = [v.value for v in model.trainable_variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def loss_fn(trainable):
        logits, _ = model.stateless_call(trainable, non_trainable, x, training=True)
        return loss(labels, logits)

    original = arguments.gradient_computed_once
    if switched_off:
        arguments.gradient_computed_once = lambda x: x
    try:  # tracing happens here, while the switch holds
        compiled = jax.jit(jax.value_and_grad(loss_fn)).lower(trainable).compile()
    finally:
        arguments.gradient_computed_once = original
    computations = [block.strip().splitlines() for block in compiled.as_text().split("\n\n")]
    longest = max(len(lines) for lines in computations if lines and "fused_computation" in lines[0])
    return (lambda: jax.block_until_ready(compiled(trainable))), longest


def measure(model_name, config, repeats, steps, warmup):
    import numpy as np

    arms = {"on": compiled_step(model_name, config, False), "off": compiled_step(model_name, config, True)}
    outputs = {}
    for arm, (step, _) in arms.items():
        for _ in range(warmup):
            outputs[arm] = step()
    (loss_on, grads_on), (loss_off, grads_off) = outputs["on"], outputs["off"]
    difference = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b)))) for a, b in zip(grads_on, grads_off))
    times = {arm: [] for arm in arms}
    for _ in range(repeats):
        for arm, (step, _) in arms.items():  # alternating, so drift hits both
            times[arm].append(common.seconds_per_call(step, steps))
    result = {
        arm: {
            "step_ms": round(1e3 * statistics.median(times[arm]), 2),
            "step_ms_all": [round(1e3 * t, 2) for t in times[arm]],
            "longest_fusion_instructions": arms[arm][1],
        }
        for arm in arms
    }
    result["speedup"] = round(result["off"]["step_ms"] / result["on"]["step_ms"], 3)
    result["loss"] = {"on": float(loss_on), "off": float(loss_off)}
    result["max_gradient_difference"] = difference
    print(
        f"{model_name}: on {result['on']['step_ms']} ms (longest fusion {arms['on'][1]}), "
        f"off {result['off']['step_ms']} ms (longest fusion {arms['off'][1]}), speedup "
        f"{result['speedup']:.2f}x; losses {float(loss_on):.6f} / {float(loss_off):.6f}, "
        f"largest gradient difference {difference:.1e}",
        flush=True,
    )
    return result


def main():
    args, malloc = common.ab_arguments(__doc__, MODELS, steps=5, warmup=2)
    record = common.ab_record("jax", "gradient_once.py", "JAX (the function acts there only)", args, malloc)
    config = dict(throughput.CONFIG)
    result = {
        **record,
        "results": {name: measure(name, config, args.repeats, args.steps, args.warmup) for name in args.models},
    }
    if args.output:
        common.write_json(args.output, result)


if __name__ == "__main__":
    main()
