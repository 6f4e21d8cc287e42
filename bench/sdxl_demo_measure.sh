#!/usr/bin/env bash
# Measurements of the SDXL-layout demo model for bench/RESULTS.md (section "The SDXL-layout demo model") (issue 14 item 6).
# Usage, from the repository root with the venv active:  nice -n 5 bash bench/sdxl_demo_measure.sh
#   (SKIP_FIDELITY=1 skips step 1; ACQE / PY name the acqe command and the Python to use)
# Writes everything under bench/_out/sdxl-demo/ (ignored); the report is written by hand from its logs.
set -euo pipefail
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
"$ACQE" demo --model sdxl --out "$OUT/demo" --prompts 64 --profile-samples 32 --threads 1 | tee "$OUT/demo.txt"

# 3. caching at equal full steps (10 of 50) and at 70% of them (7), on the converted .acqe with the ReCaT
#    profile step 2 stored in it (validated schedule for 10; 7 derived from the profile's continuous model),
#    as `acqe generate --cache recat|uniform --full-steps B` runs them; the demo's 64 prompts and seeds
"$PY" bench/sdxl_demo_cache.py "$OUT/demo/shapes-sdxl.acqe" --budgets 10 7 --prompts 64 --threads 1 | tee "$OUT/cache.txt"
#    the same on 256 prompts (the training record's evaluation captions), with the original weights first
"$PY" bench/sdxl_demo_cache.py "$OUT/demo/shapes-sdxl.acqe" --budgets 10 7 --prompts 256 --threads 1 \
    --original "$MODEL" | tee "$OUT/cache256.txt"
