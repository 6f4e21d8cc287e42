#!/usr/bin/env bash
# Creates (or refreshes) the project's virtual environment in .venv with everything the demo, the
# tests and the benchmarks need. Idempotent: a second run only checks that everything is installed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# the package compiles libacqe (the C decoder): a C compiler, make and zlib's headers
if ! command -v cc >/dev/null || ! command -v make >/dev/null || [ ! -f /usr/include/zlib.h ]; then
  if command -v apt-get >/dev/null; then
    apt-get update -qq && apt-get install -y -qq gcc make zlib1g-dev >/dev/null
  else
    echo "setup: install a C compiler, make and zlib's headers (Debian: gcc make zlib1g-dev)" >&2; exit 1
  fi
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
stamp=.venv/.acqe-installed
want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
# torch is pinned: an unpinned torch pulls a multi-GB CUDA build; 2.13.0 is the CPU wheel.
pip install -q "torch==2.13.0"
# peft (runtime extra) and triton (test extra, Linux) resolve against the pinned torch without replacing it
pip install -q "torch==2.13.0" -e ".[runtime,encoder,test,bench]"
# open_clip_torch only supplies CLIP's BPE vocabulary file, for the test that checks our shipped copy
# (read, never imported), and DeepCache is a benchmark peer; both would drag in torchvision or another
# torch through their dependencies.
pip install -q --no-deps "open_clip_torch==3.3.0" "DeepCache==0.1.1"
python - <<'PY'
import torch
assert torch.__version__.startswith("2.13.0"), f"unexpected torch {torch.__version__}"
PY
echo "$want" > "$stamp"
