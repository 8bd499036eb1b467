#!/usr/bin/env bash
# The CPU check, in one script: every measurement the "fast on the CPUs people rent" work asks for, on the CPU at
# hand, side by side with NeMo, into tables named after this CPU's kind (avx2, avx512, avx512-vnni, avx512-bf16,
# amx; benchmarks/README.md keeps one set per kind seen):
#
#   1. the v2- and v3-shaped benchmark models (random weights; parakeet_models.py, cached under $OUT), with int8
#      directories whose activations are scaled per row (the default) and per tensor (the same weights);
#   2. speed on 60 s beside NeMo (rtfx.py): fp32 and int8 on ONNX Runtime (int8-compare: per tensor), and OpenVINO
#      fp32 / int8 / bf16 where this CPU and the install can run them, for each shape;
#   2b. decoding an encoded batch with the int8 directory's decoding weights, row by row against the batched search
#      (batched_decoding.py; its table says whether this CPU's kernels let the engine batch int8 decoding);
#   3. token agreement with fp32 per precision on the demo model (precision_agreement.py on the demo recipe's
#      held-out recordings, made here with espeak-ng, and on recordings of about 60 s joined from them);
#   4. with FLOPS=1, how close NeMo's and the engine's fp32 encoders run to this CPU's matrix-product rate
#      (flop_rate.py, v3 shape).
#
#   benchmarks/cpu_check.sh                     # all of it (an hour or more on 2 cores; ~10 GB of memory)
#   QUICK=1 benchmarks/cpu_check.sh             # a dry run of every step on the tiny shape (minutes)
#
# Needs the export and openvino extras in PYTHON's environment (default .venv/bin/python; tests/run.sh makes it)
# and espeak-ng for step 3 (without it, step 3 is skipped with a message). Each step's JSON goes under
# benchmarks/results/ and its table into README (default benchmarks/README.md; QUICK=1 writes both under $OUT
# instead, so that a dry run leaves the repository alone). Settings: SHAPES ("v2 v3"), THREADS (2), RUNS (2), ROUNDS
# (2), CASES (60s), CLIPS (agreement clips, default all 400), JOIN (60 s), KIND (default: detected), OUT
# (~/.cache/parakeet-bench), RESULTS, README, PER_TENSOR (1: also the int8 activations per tensor; 0: not).
set -euo pipefail

cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
OUT=${OUT:-$HOME/.cache/parakeet-bench}
THREADS=${THREADS:-2}
PER_TENSOR=${PER_TENSOR:-1}
if [[ -n ${QUICK:-} ]]; then
    SHAPES=${SHAPES:-tiny}; RUNS=${RUNS:-1}; ROUNDS=${ROUNDS:-1}; CASES=${CASES:-5s}; CLIPS=${CLIPS:-6}
    JOIN=${JOIN:-10}; SUFFIX=-quick
    README=${README:-$OUT/README-cpu-check-quick.md}
    RESULTS=${RESULTS:-$OUT/results-quick}
    mkdir -p "$OUT"
    [[ -f $README ]] || cp benchmarks/README.md "$README"
else
    SHAPES=${SHAPES:-v2 v3}; RUNS=${RUNS:-2}; ROUNDS=${ROUNDS:-2}; CASES=${CASES:-60s}; CLIPS=${CLIPS:-400}
    JOIN=${JOIN:-60}; SUFFIX=
    README=${README:-benchmarks/README.md}
fi
RESULTS=${RESULTS:-benchmarks/results}
started=$SECONDS

step() { printf '[%4ds] %s\n' "$((SECONDS - started))" "$*" >&2; }

KIND=${KIND:-$("$PYTHON" - <<'EOF'
from parakeet_runtime.engine.model.cpu import cpu_flags, cpuinfo_text
flags = cpu_flags(cpuinfo_text() or "")
if "amx_tile" in flags:
    print("amx")
elif "avx512_bf16" in flags:
    print("avx512-bf16")
elif "avx512_vnni" in flags:
    print("avx512-vnni")
elif "avx512f" in flags:
    print("avx512")
elif "avx2" in flags:
    print("avx2")
else:
    print("cpu")
EOF
)}
step "CPU kind: $KIND ($("$PYTHON" -c 'from parakeet_runtime.engine.model.cpu import cpu_name, isa_summary; print(cpu_name(), "|", isa_summary())'))"
command -v lscpu >/dev/null && lscpu | grep -E '^(Model name|CPU\(s\)|Thread|Core|Socket|L3)' >&2 || true

mkdir -p "$RESULTS" "$OUT"
read -r -a shapes <<< "$SHAPES"

activations=(per-row-fixed)
[[ $PER_TENSOR == 1 ]] && activations+=(per-tensor)
step "benchmark models: ${shapes[*]}, int8 activations ${activations[*]} (cached under $OUT)"
"$PYTHON" benchmarks/parakeet_models.py --out "$OUT" --shapes "${shapes[@]}" --int8-activations "${activations[@]}"

read -r -a cases <<< "$CASES"
for shape in "${shapes[@]}"; do
    name="parakeet-$shape-shape-$KIND$SUFFIX"
    compare=()
    [[ $PER_TENSOR == 1 ]] && compare=(--compare-int8 "$OUT/$shape/int8-per-tensor")
    step "speed beside NeMo: $name (cases ${cases[*]}, $RUNS runs x $ROUNDS rounds, $THREADS threads)"
    "$PYTHON" benchmarks/rtfx.py --nemo "$OUT/$shape/model.nemo" --fp32 "$OUT/$shape/fp32" --int8 "$OUT/$shape/int8" \
        "${compare[@]}" --openvino --cases "${cases[@]}" --runs "$RUNS" --rounds "$ROUNDS" --threads "$THREADS" \
        --name "$name" --out-dir "$RESULTS" --readme "$README"
    step "decoding a batch with int8 decoding weights, rows alone against the batched search: $name-int8"
    "$PYTHON" benchmarks/batched_decoding.py --model "$OUT/$shape/int8" --threads "$THREADS" --name "$name-int8" \
        --results "$RESULTS" --readme "$README"
done

clips_dir="$OUT/demo-eval$SUFFIX"
if command -v espeak-ng >/dev/null; then
    step "demo recordings for token agreement ($CLIPS clips under $clips_dir)"
    mapfile -t chosen < <("$PYTHON" benchmarks/agreement_clips.py --out "$clips_dir" --count "$CLIPS")
    step "token agreement with fp32 on the demo model: demo-$KIND$SUFFIX (joined into ~$JOIN s recordings too)"
    "$PYTHON" benchmarks/precision_agreement.py --model engine/default_model --clips "${chosen[@]}" --join "$JOIN" \
        --name "demo-$KIND$SUFFIX" --threads "$THREADS" --readme "$README" \
        --out "$RESULTS/agreement-demo-$KIND$SUFFIX.json" \
        --description "the bundled demo model, its recipe's held-out sentences in seen and unseen voices"
else
    step "no espeak-ng: token agreement skipped (apt-get install espeak-ng sox)"
fi

if [[ -n ${FLOPS:-} ]]; then
    shape=${shapes[-1]}
    step "fp32 encoder rate against this CPU's matrix-product rate: $shape-$KIND$SUFFIX"
    "$PYTHON" benchmarks/flop_rate.py --nemo "$OUT/$shape/model.nemo" --fp32 "$OUT/$shape/fp32" --openvino \
        --threads "$THREADS" --label "$shape-$KIND$SUFFIX" --readme "$README" --out-dir "$RESULTS"
fi
step "done: tables in $README, JSON in $RESULTS"
