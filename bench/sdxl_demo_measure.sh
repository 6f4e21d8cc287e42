#!/usr/bin/env bash
# Measurements of the SDXL-layout demo model for bench/RESULTS-sdxl-demo.md (issue 14 item 6).
# Usage, from the repository root with the venv active:  nice -n 5 bash bench/sdxl_demo_measure.sh [N_CACHE]
#   N_CACHE: evaluation images per caching variant (default 128).
# Writes everything under bench/_out/sdxl-demo/ (ignored); the report is written by hand from its logs.
set -euo pipefail
N_CACHE=${1:-128}
ACQE=${ACQE:-acqe}
PY=${PY:-python}
OUT=bench/_out/sdxl-demo
MODEL=acqe_demo/weights/shapes-sdxl.safetensors
mkdir -p "$OUT"

# 1. size and weight fidelity against GGUF Q4_0 of the same tensors (3 conversions: 80, 85, 100% of Q4_0's size)
#    (fidelity.py exits 1 when a check falls short; the line it prints says which, so go on)
if [ -z "${SKIP_FIDELITY:-}" ]; then
  "$PY" /work/shared/tools/fidelity.py "$(command -v "$ACQE")" "$MODEL" "$OUT/fidelity" | tee "$OUT/fidelity.txt" || true
fi

# 2. the whole story: convert -> verify -> profile -> generate (original, .acqe, uniform, ReCaT) -> figures
"$ACQE" demo --model sdxl --out "$OUT/demo" --prompts 64 --profile-samples 32 | tee "$OUT/demo.txt"

# 3. caching at equal full steps (10 of 50) and at 70% of them (7): schedules stored by `acqe profile-cache`,
#    evaluated as `acqe generate --cache recat|uniform --full-steps B` runs them, on the converted .acqe
"$ACQE" convert "$MODEL" "$OUT/cache.acqe" | tee "$OUT/convert.txt"
"$PY" -c "from acqe_demo.dataset import profiling_prompts; print('\n'.join(profiling_prompts(48)))" > "$OUT/prompts.txt"
"$ACQE" profile-cache "$OUT/cache.acqe" --steps 50 --full-steps 7 --full-steps 10 --samples 32 \
    --validation-samples 16 --prompts "$OUT/prompts.txt" --device cpu | tee "$OUT/profile.txt"
"$PY" bench/bench_cache.py quality --stored --model "$OUT/cache.acqe" --steps 50 --n "$N_CACHE" --batch 32 \
    --threads 1 --intervals --quad-budgets --recat-budgets 7 10 --uniform-budgets 7 10 --variant-budgets \
    --peer-intervals --out-name sdxl_cache_quality.json | tee "$OUT/cache_quality.txt"
