#!/usr/bin/env bash
# One GPU call of the fused-kernel work (issue 4), results under $OUT; device time is scarce, so each
# step has a time limit and the whole call stays under LIMIT seconds (default 280):
#   tune:  kernel parity (paper-size stacks, PDL on and off), D-Ma DDPM-16 stream timing of the fused
#          kernel VARIANTS (writes best.env), eager profile, engine parity (fp32, CUDA graphs) with the best
#          settings, then `mail-il bench engine` at K=5 in the time left
#   final: engine parity and the benchmark with the settings in $BEST_ENV (or the defaults)
#   v4:    camera-trunk A/B (fused GroupNorm epilogues, channels-last; writes ENCODER_FLAGS to best.env),
#          the fp64 floor of D-Ma and ED-Ma, engine parity, `mail-il bench engine` at K=5 with the chosen
#          encoder flags, then an eager profile in the time left
#   v5:    block_out against its split form (block_scan + block_proj, model/fused.py SPLIT_OUT) in D-Ma DDPM-16
#          stream timing (writes best.env), engine parity with the chosen kernels (includes the module-encoder
#          case), `mail-il bench engine` at K=5 with them and the fused encoder, an eager profile
# Run from the repository root with mamba-ssm / causal-conv1d importable (see ../shared/gpu).
set -u
cd "$(dirname "$0")/../.."
export PYTHONPATH="$PWD/mail_policy_node:${PYTHONPATH:-}"
OUT="${OUT:-results/gpu}"
mode="${1:-tune}"
LIMIT="${LIMIT:-280}"
mkdir -p "$OUT"
LOGS="$OUT"  # v4: logs outside $OUT, joined into one file at the end (at most 8 files come back)
[ "$mode" = v4 ] || [ "$mode" = v5 ] && LOGS=$(mktemp -d)
left() { echo $(( LIMIT - SECONDS )); }
step() {  # step <seconds> <log name> cmd...
  local t=$1 log=$2; shift 2
  (( $(left) < t )) && t=$(left)
  (( t < 10 )) && { echo "=== SKIPPED (no time): $*"; return; }
  echo "=== [$SECONDS s] $* (limit $t s)"
  timeout "$t" "$@" 2>&1 | tee "$LOGS/$log.log" | grep -v "^  warnings.warn" | tail -n 60
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
if [ "$mode" = tune ]; then
  step 60 kernels python3 scripts/gpu/engine_speed.py --sections env,kernels --out "$OUT/speed_kernels.json"
  step 80 timing python3 scripts/gpu/engine_speed.py --sections timing,profile --best-env "$OUT/best.env" \
    --variants "${VARIANTS:-i4o8bc32bo32p1,i4o8bc32bo64p1,i4o8bc32bo32p0}" \
    --out "$OUT/speed_timing.json"
  BEST_ENV="$OUT/best.env"
fi
BENCH_FLAGS=""
ENCODER_FLAGS=""
if [ "$mode" = v4 ]; then
  BEST_ENV="$OUT/best.env"; : > "$BEST_ENV"
  step 90 encoder python3 scripts/gpu/engine_speed.py --sections env,encoder --best-env "$BEST_ENV" \
    --out "$OUT/speed_encoder.json"
  step 90 floor python3 scripts/gpu/engine_speed.py --sections floor --out "$OUT/speed_floor.json"
fi
if [ "$mode" = v5 ]; then
  BEST_ENV="$OUT/best.env"
  step 100 timing python3 scripts/gpu/engine_speed.py --sections env,timing --best-env "$BEST_ENV" \
    --variants "${VARIANTS:-i4o8bc32bo32p1,i4o8bc32bo32p1s16w2,i4o8bc32bo32p1s32w4,i4o8bc32bo32p1s8w1}" \
    --out "$OUT/speed_timing.json"
  echo "ENCODER_FLAGS='--fused-encoder'" >> "$BEST_ENV"
fi
[ -f "${BEST_ENV:-}" ] && { cat "$BEST_ENV"; source "$BEST_ENV"; }
step 80 parity python3 scripts/gpu/engine_parity.py --steps 60 --skip bf16_drift,paper --out "$OUT/parity.json"
step 150 bench python3 -m mail_policy_node.cli bench engine --device cuda --ks 5 --lengths 10,100,1000 --steps 20 \
  $BENCH_FLAGS $ENCODER_FLAGS --out "$OUT/bench_engine.json"
[ "$mode" = v4 ] || [ "$mode" = v5 ] && step 40 profile python3 scripts/gpu/engine_speed.py --sections profile --out "$OUT/speed_profile.json"
echo "=== done at $SECONDS s"
[ "$mode" = v4 ] || [ "$mode" = v5 ] && tail -n +1 "$LOGS"/*.log > "$OUT/logs.txt"
