#!/usr/bin/env bash
# Prepares what `bench/gpu_check.py` needs on a lent GPU machine that cannot reach a package index:
#   .whl/         wheels the GPU image lacks (diffusers, the deepcache peer, and the test-only codecs)
#   gpu_payload/  the demo model as one .acqe with its ReCaT schedules stored (50 steps, B = 7, 8, 10)
# Both folders are git-ignored locally (.git/info/exclude) and travel with `carry`. Then, in one device call:
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && \
#   export PYTHONPATH=/tmp/site:$PWD:$PWD/tests && \
#   python3 -m pytest -q tests/test_runtime_cuda.py && \
#   python3 bench/gpu_check.py --out $OUT --model gpu_payload/shapes.acqe
set -euo pipefail
cd "$(dirname "$0")/.."
for d in /.whl/ /gpu_payload/; do
  grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude
done
py=${PYTHON:-.venv/bin/python}
# The GPU image runs CPython 3.12 on x86-64 (see the device notes); pure wheels fit any version.
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  diffusers==0.42.1 DeepCache==0.1.1 importlib_metadata==10.2.0 lazy-importer==0.1.0 \
  constriction==0.5.0 gguf==0.19.0 zstandard==0.25.0 open_clip_torch==3.3.0
mkdir -p gpu_payload
rm -f gpu_payload/shapes.acqe
.venv/bin/acqe convert acqe_demo/weights/shapes-sd.ckpt gpu_payload/shapes.acqe --tokenizer embed -q
.venv/bin/acqe profile-cache gpu_payload/shapes.acqe --steps 50 --full-steps 7 --full-steps 8 --full-steps 10 \
  --samples 128 -q
du -sh .whl gpu_payload
