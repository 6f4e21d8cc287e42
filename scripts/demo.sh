#!/usr/bin/env bash
# Installs what the demo needs (scripts/setup.sh) and runs the whole story on the built-in model:
# convert -> inspect -> verify -> generate (original, converted, cached) -> sizes, timings, quality.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
exec acqe demo "$@"
