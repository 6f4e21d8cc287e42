#!/usr/bin/env bash
# Build libacqe with AddressSanitizer + UndefinedBehaviorSanitizer and run, under them: the unit tests,
# every spec vector (tests/test_vectors.c), the saved fuzz corpus (fuzz/corpus, through the fuzz harness
# with a plain main: fuzz/replay_main.c) and acqe-dump --verify/--json on the valid vectors.
# Deterministic; about a minute on two cores. For CI:
#
#   bash libacqe/tests/run_sanitized.sh          # CC=clang to use clang (default: cc)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VECTORS="$HERE/../spec/vectors"
cd "$HERE"

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:halt_on_error=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

make -s asan CC="${CC:-cc}" -j"${JOBS:-2}"
B=build-asan
"$B/test_unit"
"$B/test_vectors" "$VECTORS"
"$B/test_threads" "$VECTORS"/valid/*.acqe
"$B/fuzz_replay" fuzz/corpus
"$B/fuzz_replay" "$VECTORS/valid" "$VECTORS/invalid"    # raw bytes (control byte = the file's last byte)
for f in "$VECTORS"/valid/*.acqe; do
    "$B/acqe-dump" --verify "$f" > /dev/null
    "$B/acqe-dump" --json --verify --threads 3 "$f" > /dev/null
done
n=0
for f in "$VECTORS"/invalid/*.acqe; do
    rc=0
    "$B/acqe-dump" --verify "$f" > /dev/null 2>&1 || rc=$?
    if [ "$rc" != 3 ]; then echo "acqe-dump --verify $f: exit $rc, expected 3"; exit 1; fi
    n=$((n + 1))
done
echo "run_sanitized: unit tests, vectors, corpus replay and acqe-dump on $n invalid files: OK"
