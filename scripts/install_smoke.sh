#!/usr/bin/env bash
# Standard installs work: builds the wheel, installs it into two fresh venvs -- the base package and
# [runtime] -- and runs a CLI smoke test in each from outside the source tree (so only the installed
# files are used). A command that needs a missing extra must fail with one line naming it.
# pip's cache is reused and torch comes from the pinned CPU wheel (torch==2.13.0).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
PY=${PYTHON:-python3}
# the smoke test changes directory, so a relative interpreter path (.ci/run passes .venv/bin/python)
# is made absolute first; a bare command name is left to PATH
case $PY in /*) ;; */*) PY=$repo/$PY ;; esac
export PIP_DISABLE_PIP_VERSION_CHECK=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
t0=$SECONDS

"$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$work/dist" . >/dev/null
wheel=$(ls "$work"/dist/acqe-*.whl)

fail() { echo "install smoke: $*" >&2; exit 1; }
# one_line EXPECTED_TEXT CMD...: the command fails with exactly one stderr line containing EXPECTED_TEXT
one_line() {
  local want=$1; shift
  if "$@" >"$work/out" 2>"$work/err"; then fail "expected '$*' to fail"; fi
  [ "$(wc -l <"$work/err")" -eq 1 ] || fail "'$*' printed more than one line: $(cat "$work/err")"
  grep -q -- "$want" "$work/err" || fail "'$*' did not say '$want': $(cat "$work/err")"
}

cd "$work"
vector="$repo/spec/vectors/valid/015-rans-contexts.acqe"

# --- base install: the container tools; the rest says which extra it needs ---------------------------
"$PY" -m venv base
base/bin/pip install -q "$wheel"
base/bin/acqe --help >/dev/null
base/bin/acqe inspect "$vector" >/dev/null
base/bin/acqe verify "$vector" >/dev/null
# reading needs neither numba nor torch: the C decoder does it
base/bin/python -c "
import importlib.util, sys
from acqe_format import AcqeReader, native
assert native.enabled(), 'the C decoder was not built into the wheel'
with AcqeReader(sys.argv[1]) as r:
    r.verify()
    [a for _, a in r.iter_tensors(dtype='float16')]
assert 'numba' not in sys.modules and importlib.util.find_spec('numba') is None, 'numba in a base install'
" "$vector"
base/bin/acqe export "$vector" back.safetensors 2>/dev/null
base/bin/acqe export "$vector" back.gguf 2>/dev/null || true    # (a test vector is no SD model: may refuse)
one_line "acqe\[runtime\]" base/bin/acqe generate "$vector" --prompt a --out x.png
one_line "acqe\[runtime\]" base/bin/acqe demo --out demo
demo_ckpt=$(base/bin/python -c "import acqe_demo.story as s; print(s.DEFAULT_CKPT)")
# converting codes with numba kernels: the encoder extra (or runtime, which includes it)
one_line "acqe\[encoder\]" base/bin/acqe convert "$demo_ckpt" ckpt.acqe -q
echo "install smoke: base install OK ($((SECONDS - t0)) s)"

# --- [runtime]: the demo checkpoint converts and generates offline from the one file ---------------------
"$PY" -m venv rt
rt/bin/pip install -q "torch==2.13.0" "$wheel[runtime]"
rt/bin/acqe convert "$demo_ckpt" demo.acqe -q 2>/dev/null
rt/bin/acqe verify demo.acqe >/dev/null
HF_HUB_OFFLINE=1 rt/bin/acqe generate demo.acqe --prompt "a red circle" --steps 2 --threads 2 --out g.png 2>"$work/err" \
  || fail "runtime generate: $(cat "$work/err")"
grep -q "requires torchvision" "$work/err" && fail "generate printed transformers' torchvision notice"
[ "$(wc -l <"$work/err")" -eq 1 ] || fail "generate printed more than its one report line: $(cat "$work/err")"
rt/bin/python -c "from PIL import Image; im = Image.open('g.png'); assert im.format == 'PNG', im.format"
# a real model file, read back by the base install (no numba, no torch): inspect, verify, both exports
base/bin/acqe inspect demo.acqe >/dev/null || fail "base inspect of a converted model"
base/bin/acqe verify demo.acqe >/dev/null || fail "base verify of a converted model"
base/bin/acqe export demo.acqe demo.safetensors 2>"$work/err" || fail "base export safetensors: $(cat "$work/err")"
base/bin/acqe export demo.acqe demo.gguf --type q8_0 2>"$work/err" || fail "base export gguf: $(cat "$work/err")"
echo "install smoke: [runtime] install OK ($((SECONDS - t0)) s)"
