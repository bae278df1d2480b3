#!/usr/bin/env bash
# Runs benchmarks/generation.py on tensorflow, jax and torch (one process each), writes
# benchmarks/results/generation_<backend>.json and regenerates benchmarks/GENERATION_RESULTS.md.
# Extra arguments go to generation.py (e.g. --repeats 3). Uses .venv (run scripts/setup first).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="$root/.venv/bin/python"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
for backend in tensorflow jax torch; do
    KERAS_BACKEND="$backend" "$py" benchmarks/generation.py --output "benchmarks/results/generation_$backend.json" "$@"
done
"$py" benchmarks/generation.py --table benchmarks/results/generation_{tensorflow,jax,torch}.json > benchmarks/GENERATION_RESULTS.md
cat benchmarks/GENERATION_RESULTS.md
