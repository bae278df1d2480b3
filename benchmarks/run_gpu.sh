#!/usr/bin/env bash
# The GPU pass of the benchmarks, as run on a lent GPU machine (which has jax and torch but
# no TensorFlow): throughput.py on jax and torch in float32 (with peak memory) and
# mixed_bfloat16, then generation.py on jax and torch. Wheels the machine lacks (keras,
# keras-hub, namex, optree) travel in .whl/ and are installed into /tmp/site first.
# Results go to $OUT (the device tool's folder) or benchmarks/results/gpu; each run has a
# time limit, so one slow part cannot take the others with it.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out="${OUT:-benchmarks/results/gpu}"
mkdir -p "$out"
py="${PYTHON:-python3}"
if [ -d .whl ]; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:$root"
fi
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false TF_CPP_MIN_LOG_LEVEL=2
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$out/log.txt"
run() {  # run LIMIT_SECONDS BACKEND ARGS...
    local limit=$1 backend=$2
    shift 2
    echo "=== $backend $* ===" | tee -a "$out/log.txt"
    KERAS_BACKEND="$backend" timeout "$limit" "$py" "$@" 2>&1 | grep -v "^W0000\|^I0000" | tee -a "$out/log.txt"
}
# Parts to run (default: all; without jax_gradient_once, about 13 minutes on an H200: more
# than one device call allows, so name a few per call, e.g.
# `bash benchmarks/run_gpu.sh jax_bfloat16 jax_float32`). jax_gradient_once took 81 s for GPT-2
# and ViT; the call timing BERT and BERT-MLM with it, 79 s in all. On the
# H100 (2026-11-27), without memory runs: jax_float32 timed 3 of its 4 models in 160 s, and
# torch_float32 and torch_bfloat16 about 40 s each (the whole call, 390 s); jax_host_copy,
# torch_host_copy and MODELS="vit bert_mlm" jax_bfloat16 together 163 s.
parts=("$@")
[ ${#parts[@]} -gt 0 ] || parts=(jax_gradient_once jax_float32 torch_float32 jax_bfloat16 torch_bfloat16 jax_host_copy torch_host_copy jax_generation torch_generation)
# One memory run per library: the allocators' peaks on a GPU do not move from run to run as
# a CPU process' resident memory does, and device time is short.
memory=(--memory-repeats 1)
[ -n "${SKIP_MEMORY:-}" ] && memory=(--skip-memory)
# MODELS="vit bert_mlm" times only those models in the throughput and gradient_once parts.
models=()
[ -n "${MODELS:-}" ] && read -r -a models <<< "--models $MODELS"
for part in "${parts[@]}"; do
    case "$part" in
        jax_float32|torch_float32)
            run "${LIMIT_FLOAT32:-240}" "${part%_*}" benchmarks/throughput.py "${memory[@]}" \
                "${models[@]}" --output "$out/throughput_$part.json" ;;
        jax_bfloat16|torch_bfloat16)
            run "${LIMIT_BF16:-150}" "${part%_*}" benchmarks/throughput.py --dtype mixed_bfloat16 \
                --skip-memory "${models[@]}" --output "$out/throughput_${part%_*}_mixed_bfloat16.json" ;;
        jax_gradient_once)  # gradient_computed_once on XLA's GPU fusion (H100: 0.98-1.04x)
            run "${LIMIT_GRADIENT_ONCE:-200}" jax benchmarks/gradient_once.py --steps 20 \
                "${models[@]}" --output "$out/gradient_once_jax.json" ;;
        jax_host_copy|torch_host_copy)  # GPT-2's predict_on_batch vs the logits' copy alone
            run "${LIMIT_HOST_COPY:-90}" "${part%_*_*}" benchmarks/host_copy.py \
                --output "$out/host_copy_${part%_*_*}.json" ;;
        jax_generation|torch_generation)
            run "${LIMIT_GENERATION:-120}" "${part%_*}" benchmarks/generation.py --repeats 3 \
                --output "$out/generation_${part%_*}.json" ;;
        *) echo "unknown part: $part" >&2; exit 2 ;;
    esac
done
