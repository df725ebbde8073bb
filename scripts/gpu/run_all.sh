#!/usr/bin/env bash
# Everything the GPU machine checks and measures, in one call (device time is scarce); results in $OUT.
# Run from the repository root after installing the mamba-ssm / causal-conv1d wheels (../shared/gpu).
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD/mail_policy_node:${PYTHONPATH:-}"
OUT="${OUT:-results/gpu}"
mkdir -p "$OUT"
status=0
run() { echo "=== $*"; timeout "${STEP_LIMIT:-240}" "$@" || { echo "=== FAILED ($?): $*"; status=1; }; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
run python3 scripts/gpu/model_parity.py --out "$OUT/gpu_model_parity.json"
[ -f scripts/gpu/engine_parity.py ] && run python3 scripts/gpu/engine_parity.py --out "$OUT/gpu_engine_parity.json"
run python3 -m mail_policy_node.cli bench model --device cuda --batch 1,256 --out "$OUT/bench_model_cuda.json"
run python3 -m mail_policy_node.cli bench engine --device cuda --out "$OUT/bench_engine_cuda.json"
exit $status
