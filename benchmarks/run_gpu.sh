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
run "${LIMIT_FLOAT32:-150}" jax benchmarks/throughput.py --output "$out/throughput_jax_float32.json"
run "${LIMIT_FLOAT32:-150}" torch benchmarks/throughput.py --output "$out/throughput_torch_float32.json"
run "${LIMIT_BF16:-90}" jax benchmarks/throughput.py --dtype mixed_bfloat16 --skip-memory \
    --output "$out/throughput_jax_mixed_bfloat16.json"
run "${LIMIT_BF16:-90}" torch benchmarks/throughput.py --dtype mixed_bfloat16 --skip-memory \
    --output "$out/throughput_torch_mixed_bfloat16.json"
run "${LIMIT_GENERATION:-60}" jax benchmarks/generation.py --repeats 3 --output "$out/generation_jax.json"
run "${LIMIT_GENERATION:-60}" torch benchmarks/generation.py --repeats 3 --output "$out/generation_torch.json"
