#!/usr/bin/env bash
# Runs benchmarks/mha.py on tensorflow, jax and torch (one process each), writes
# benchmarks/results/mha_<backend>.json and regenerates benchmarks/MHA_RESULTS.md.
# Extra arguments go to mha.py (e.g. --repeats 3). Uses .venv (run scripts/setup first).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="$root/.venv/bin/python"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
for backend in tensorflow jax torch; do
    KERAS_BACKEND="$backend" "$py" benchmarks/mha.py --output "benchmarks/results/mha_$backend.json" "$@"
done
"$py" benchmarks/mha.py --table benchmarks/results/mha_{tensorflow,jax,torch}.json > benchmarks/MHA_RESULTS.md
cat benchmarks/MHA_RESULTS.md
