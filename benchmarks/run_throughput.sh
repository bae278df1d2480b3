#!/usr/bin/env bash
# Runs benchmarks/throughput.py on tensorflow, jax and torch (one process each), twice: with
# glibc's default malloc (throughput_<backend>.json) and with --keep-freed-memory
# (throughput_<backend>_keep_freed.json: keras_transformers.host_memory.keep_freed_memory(),
# freed blocks kept for the next step, see the README's CPU performance section), into
# benchmarks/results/cpu/<this CPU model>/ (amd_epyc, intel_xeon: the same code's ratios differ
# between CPU models, so each keeps its own rows); then regenerates benchmarks/RESULTS.md from
# every throughput_*.json under benchmarks/results/cpu/ (and under benchmarks/results/gpu/, the
# GPU pass of run_gpu.sh). Extra arguments go to throughput.py (e.g. --repeats 3,
# --memory-repeats 1). Uses .venv (run scripts/setup first). Takes about 50 minutes on 2
# cores; run it on a quiet machine.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="$root/.venv/bin/python"
export TF_CPP_MIN_LOG_LEVEL="${TF_CPP_MIN_LOG_LEVEL:-2}"
out="benchmarks/results/cpu/$("$py" -c 'import sys; sys.path.insert(0, "benchmarks"); import common; print(common.cpu_slug())')"
mkdir -p "$out"
for backend in tensorflow jax torch; do
    env -u GLIBC_TUNABLES KERAS_BACKEND="$backend" "$py" benchmarks/throughput.py \
        --output "$out/throughput_$backend.json" "$@"
    env -u GLIBC_TUNABLES KERAS_BACKEND="$backend" "$py" benchmarks/throughput.py --keep-freed-memory \
        --output "$out/throughput_${backend}_keep_freed.json" "$@"
done
shopt -s nullglob
"$py" benchmarks/throughput.py --table benchmarks/results/cpu/*/throughput_*.json \
    benchmarks/results/gpu/throughput_*.json > benchmarks/RESULTS.md
cat benchmarks/RESULTS.md
