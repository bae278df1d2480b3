"""GPU check: which attention kernel our MultiHeadAttention reaches, per backend and dtype.

Run on a GPU machine with KERAS_BACKEND=jax or torch:

    KERAS_BACKEND=jax python benchmarks/flash_attention_check.py --output results/flash_jax.json

For each dtype policy (float32, mixed_bfloat16, mixed_float16) and mask kind (causal
only; causal + padding), it compiles one inference call of the layer and reports the
fused-attention kernels found (JAX: custom calls in the optimized HLO; torch: CUDA
kernel names from the profiler), whether a fully masked row stays finite and zero, and
how far the output is from the float32 explicit-probabilities path.
"""

import argparse
import json
import os
import platform

import keras
import numpy as np
from keras import ops

from keras_transformers.layers import MultiHeadAttention

KERNEL_MARKERS = ("cudnn", "fmha", "flash", "efficient_attention", "sdpa", "fused_attention")


def _jax_kernels(layer, query, kwargs):
    import jax

    def forward(q):
        return layer(q, **kwargs)

    text = jax.jit(forward).lower(query).compile().as_text()
    names = set()
    for line in text.splitlines():
        if "custom_call_target=" in line:
            names.add(line.split('custom_call_target="')[1].split('"')[0])
    return sorted(names)


def _torch_kernels(layer, query, kwargs):
    import torch

    with torch.no_grad():
        layer(query, **kwargs)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            layer(query, **kwargs)
            torch.cuda.synchronize()
    return sorted({event.key for event in prof.key_averages()})


def check(policy, mask_kind, batch=4, length=512, hidden=512, heads=8):
    rng = np.random.default_rng(0)
    layer = MultiHeadAttention(heads, hidden // heads, dropout=0.1, dtype=policy)
    query = ops.convert_to_tensor(rng.normal(size=(batch, length, hidden)).astype("float32"))
    kwargs = {"use_causal_mask": True, "training": False}
    if mask_kind == "causal+padding":
        padding = np.ones((batch, length), dtype=bool)
        padding[1, length // 2 :] = False
        padding[2, :] = False  # a row with nothing to attend to
        kwargs["padding_mask"] = ops.convert_to_tensor(padding)
    layer(query, **kwargs)
    backend = keras.backend.backend()
    all_kernels = (_jax_kernels if backend == "jax" else _torch_kernels)(layer, query, kwargs)
    fused = [k for k in all_kernels if any(m in k.lower() for m in KERNEL_MARKERS)]
    fast = ops.convert_to_numpy(ops.cast(layer(query, **kwargs), "float32"))
    reference, _ = layer(query, return_attention_scores=True, **kwargs)
    reference = ops.convert_to_numpy(ops.cast(reference, "float32"))
    result = {
        "policy": policy,
        "mask": mask_kind,
        "fused_kernels": fused,
        "finite": bool(np.all(np.isfinite(fast))),
        "max_abs_diff_vs_probabilities_path": float(np.abs(fast - reference).max()),
    }
    if mask_kind == "causal+padding":
        result["masked_row_is_zero"] = bool(np.all(fast[2] == 0))
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    results = {
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "machine": platform.node(),
        "checks": [
            check(policy, mask)
            for policy in ("float32", "mixed_bfloat16", "mixed_float16")
            for mask in ("causal", "causal+padding")
        ],
    }
    text = json.dumps(results, indent=2)
    print(text)
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
