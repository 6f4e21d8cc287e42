"""The re-sealing fuzzer in CI: 200 damaged-but-checksummed variants of the tiny pipeline file through
load_pipeline, `acqe inspect` and (every 20th) `acqe generate`: no traceback, no hang, no silently wrong
weight, no memory out of proportion (tests/reseal_fuzz.py; 10,000+ cases: bench/fuzz_reseal.py)."""
from __future__ import annotations

import pytest

from reseal_fuzz import run

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]


def test_two_hundred_resealed_files(tmp_path):
    res = run(200, str(tmp_path), seed0=0, generate_every=20, limit_s=120)
    c = res["counts"]
    summary = "\n".join(f"seed {p['seed']} {p['kind']} {p['what'][:60]}: {p['problems'][:2]}" for p in res["problems"])
    assert not res["problems"], summary
    assert c["cases"] >= 150                   # the rest the writer itself refuses to seal (not strict JSON)
    assert c["refused"] > 0 and c["loaded"] > 0
    assert set(c["by_kind"]) == {"metadata", "config", "tokenizer", "recat", "tensors"}
