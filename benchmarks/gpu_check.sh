#!/usr/bin/env bash
# The GPU check, in one script (under 8 minutes on one GPU): install the GPU extras, build and convert the
# Parakeet-v2-shaped benchmark model, check parity against NeMo on the GPU, measure RTFx at batch 1, 32 and
# 128 for NeMo (CUDA), ONNX Runtime CUDA fp32/fp16 and TensorRT fp16, and write JSON under benchmarks/results/.
#
#   benchmarks/gpu_check.sh                  # on a machine with an NVIDIA GPU
#   SHAPE=tiny DEVICE=cpu benchmarks/gpu_check.sh   # a dry run of every step on a CPU (no install)
#
# Needs a Python environment with the export extra (NeMo, torch with CUDA): PYTHON (default .venv/bin/python).
# WHEELS=DIR installs the GPU extras from a folder of wheels (no index), for machines without internet.
# Each step's Python is a script under benchmarks/ (gpu_models.py, gpu_parity.py, gpu_rtfx.py) that also runs
# on a CPU (--device cpu, --shape tiny). Nothing here has been run on a GPU yet.
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
SHAPE=${SHAPE:-v2}
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-$HOME/.cache/parakeet-gpu}
RESULTS=${RESULTS:-benchmarks/results}
BATCHES=${BATCHES:-1 32 128}
CLIP_S=${CLIP_S:-10}
RUNS=${RUNS:-3}
# Time limits of the two measuring steps (the RTFx JSON is rewritten after every case, so a run stopped by its
# limit keeps what it measured).
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
started=$SECONDS

step() { printf '[%4ds] %s\n' "$((SECONDS - started))" "$*" >&2; }

if [[ $DEVICE == cuda ]]; then
    step "install the GPU extras (onnxruntime-gpu, tensorrt)"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
    pip_args=(--quiet)
    if [[ -n ${WHEELS:-} ]]; then
        pip_args+=(--no-index --find-links "$WHEELS")
    fi
    # onnxruntime and onnxruntime-gpu install the same module: only the GPU build may be present.
    "$PYTHON" -m pip uninstall --quiet --yes onnxruntime || true
    "$PYTHON" -m pip install "${pip_args[@]}" --no-deps -e .
    "$PYTHON" -m pip install "${pip_args[@]}" "onnxruntime-gpu>=1.17" "tensorrt>=10.0"
    "$PYTHON" - <<'EOF'
import onnxruntime as ort
providers = ort.get_available_providers()
print("onnxruntime", ort.__version__, providers)
assert "CUDAExecutionProvider" in providers, "onnxruntime-gpu without the CUDA provider"
EOF
fi

mkdir -p "$RESULTS" "$OUT"
models="$OUT/$SHAPE-models.json"

step "build and convert the $SHAPE-shaped model (fp32, portable, fp16) into $OUT/$SHAPE"
"$PYTHON" benchmarks/gpu_models.py --out "$OUT" --shape "$SHAPE" --json "$models"
cat "$models" >&2

step "parity against NeMo on $DEVICE"
parity_rc=0
timeout "${PARITY_TIMEOUT_S:-120}" "$PYTHON" benchmarks/gpu_parity.py --models "$models" --device "$DEVICE" \
    --out "$RESULTS/gpu-parity-$SHAPE-$DEVICE-$STAMP.json" || parity_rc=$?

step "RTFx at batch $BATCHES on $DEVICE"
rtfx_rc=0
# shellcheck disable=SC2086  # BATCHES is a list of numbers
timeout "${RTFX_TIMEOUT_S:-240}" "$PYTHON" benchmarks/gpu_rtfx.py --models "$models" --device "$DEVICE" --batches $BATCHES --clip-s "$CLIP_S" \
    --runs "$RUNS" --out "$RESULTS/gpu-rtfx-$SHAPE-$DEVICE-$STAMP.json" || rtfx_rc=$?

step "done: $RESULTS/gpu-parity-$SHAPE-$DEVICE-$STAMP.json, $RESULTS/gpu-rtfx-$SHAPE-$DEVICE-$STAMP.json"
if ((parity_rc != 0)); then
    echo "gpu_check: fp32 parity with NeMo failed (see the parity JSON)" >&2
    exit "$parity_rc"
fi
exit "$rtfx_rc"
