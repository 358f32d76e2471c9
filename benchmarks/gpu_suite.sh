#!/usr/bin/env bash
# One prepared GPU benchmark run (<= 8 minutes on one H100/H200): its output is pasted as is into
# BENCHMARKS.md ("GPU suite"). Run from the repository root on a machine with one NVIDIA GPU:
#
#   pip install -r requirements.txt -e . "jax[cuda12]==0.10.2" torch==2.13.0 && bash benchmarks/gpu_suite.sh
#
# 1. train-step throughput and MFU of MDLM-OWT's 170M DiT at L = 1,024, bfloat16, against the same
#    model in PyTorch eager (benchmarks/train_throughput.py, preset mdlm-small);
# 2. sampler tokens/s at batch 1 and 64 on that DiT (mdlm, mdlm_cache) and on a LLaDA of the same
#    width/depth (llada), dlm_jax's jitted scans against PyTorch eager loops on CUDA
#    (benchmarks/sampler_throughput.py, shape gpt2s);
# 3. FeF (exact speculative sampling) against one-token-per-step decoding at equal quality on the
#    exact oracle: TV to the true law and wall-clock per sample (benchmarks/fef_exactness.py).
# Each part has its own time limit so one slow part cannot eat the others'; SMOKE=1 runs tiny
# shapes on any machine (CPU included) to check the script itself.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-benchmarks/results/gpu_suite}
mkdir -p "$OUT"
if [ "${SMOKE:-0}" = 1 ]; then
  TRAIN="--preset tiny --steps 2 --repeats 2"; SAMPLE="--shape tiny --batches 1 --ks 8 --block-length 8 --repeats 1"
  FEF="--samples 64 --steps 1,4 --repeats 1 --latency 0"; DEV=cpu; LIMIT=300
else
  TRAIN="--preset mdlm-small --dtype bfloat16 --steps 10 --repeats 5 --torch-device cuda"
  SAMPLE="--shape gpt2s --batches 1,64 --ks 64,256 --block-length 256 --repeats 3 --threads 0"
  FEF="--samples 2000 --steps 1,2,4,16 --repeats 3"; DEV=cuda; LIMIT=150
fi
echo "# GPU suite $(date -u +%F\ %T) UTC, git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "(no nvidia-smi)"
python -c "import jax; print('jax', jax.__version__, jax.devices())"
run() {  # name, limit seconds, command...
  local name=$1 limit=$2; shift 2
  echo; echo "## $name"; echo '```'; echo "$*"; echo '```'
  timeout "$limit" "$@" 2>"$OUT/$name.stderr" | tee "$OUT/$name.md"
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || { echo "($name: exit $rc; last stderr lines:)"; tail -5 "$OUT/$name.stderr"; }
}
run train_step "$LIMIT" python benchmarks/train_throughput.py $TRAIN
run sampler_throughput "$((LIMIT * 2))" python benchmarks/sampler_throughput.py $SAMPLE --device $DEV
run fef_vs_one_token "$LIMIT" python benchmarks/fef_exactness.py $FEF --out "$OUT/fef_exactness.png"
