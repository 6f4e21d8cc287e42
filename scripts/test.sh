#!/usr/bin/env bash
# Installs what the tests need (scripts/setup.sh) and runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
# the C decoder under AddressSanitizer + UndefinedBehaviorSanitizer: unit tests, every spec vector, the
# saved fuzz corpus, acqe-dump (the Python cross-check is tests/test_libacqe.py)
bash libacqe/tests/run_sanitized.sh
exec python -m pytest "$@"
