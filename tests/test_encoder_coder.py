"""ACQ-E coder: exact assignment, decode(encode) == reconstruct, ECSQ never worse than uniform, allocation."""
from __future__ import annotations

import numpy as np
import pytest

from acqe_encoder import allocation, clustering, kernels
from acqe_encoder.encode import encode_tensor


def _tensor(rows=96, cols=200, seed=0):
    rng = np.random.default_rng(seed)
    scale = np.exp(rng.normal(0, 0.6, (rows, 1)))
    return (rng.laplace(size=(rows, cols)) * scale * 0.03).astype(np.float32)


def _hist(x):
    ss, bad, amax = kernels.row_stats(x)
    assert not bad.any()
    return clustering.build_hist(x, ss, float(amax.max()), 1), ss


@pytest.mark.parametrize("n_ctx,uniform", [(1, True), (1, False), (4, False), (16, False)])
def test_decode_of_encode_equals_reconstruct_and_assignment_is_exact(tmp_path, n_ctx, uniform):
    from acqe_format import AcqeReader, AcqeWriter, reconstruct
    x = _tensor()
    h, ss = _hist(x)
    delta = float(np.sqrt(ss.sum() / x.size)) / 5
    ct, sse, cnt = encode_tensor(x, h, delta, n_ctx, uniform, "float32", 1, shape=x.shape)
    rec = reconstruct(ct)
    # the encoder's SSE is the SSE of what decoders produce
    true_sse = float(((rec.astype(np.float64) - x) ** 2).sum())
    assert abs(true_sse - sse) <= 1e-6 * true_sse
    # assignment is exact w.r.t. the thresholds: recompute with a brute-force searchsorted per row
    q = clustering.quantiser(h, delta, n_ctx, uniform)
    ctx = h.row_bucket // (clustering.N_BUCKETS // n_ctx)
    idx = ct.indices.reshape(x.shape)
    for r in range(0, x.shape[0], 7):
        want = np.searchsorted(q.thresholds[ctx[r]], x[r].astype(np.float64), side="left")
        assert np.array_equal(idx[r], want), r
    # ECSQ cells: every value sits in its decision interval, so with midpoint thresholds (uniform) the
    # nearest level wins
    if uniform:
        near = np.abs(x.reshape(-1, 1).astype(np.float64) - ct.codebook.astype(np.float64)[None]).argmin(1)
        assert np.array_equal(near, ct.indices.astype(np.int64))
    p = str(tmp_path / "t.acqe")
    with AcqeWriter(p) as w:
        w.set_metadata({})
        w.add_codebook("t", ct, source_dtype="float32")
    with AcqeReader(p) as r:
        assert np.array_equal(r.read("t"), rec)


def test_fp16_codebook_is_exactly_representable():
    from acqe_format import reconstruct
    x = _tensor(seed=3).astype(np.float16).astype(np.float32)
    h, ss = _hist(x)
    ct, sse, _ = encode_tensor(x, h, 0.004, 4, False, "float16", 1, shape=x.shape)
    assert ct.decoded_dtype == "float16"
    rec = reconstruct(ct)
    assert rec.dtype == np.float16
    assert abs(float(((rec.astype(np.float64) - x) ** 2).sum()) - sse) <= 1e-6 * sse


def test_ecsq_never_worse_than_uniform_at_equal_rate():
    x = _tensor(rows=256, cols=512, seed=5)
    h, ss = _hist(x)
    rms = float(np.sqrt(ss.sum() / x.size))
    deltas = clustering.delta_grid(rms, n=40, per_bit=8, top=2.8)
    ku, bu, su = clustering.sweep(h, deltas, 1, True)
    ke, be, se = clustering.sweep(h, deltas, 4, False)
    ok_u, ok_e = np.isfinite(bu), np.isfinite(be)
    bu, su, be, se = bu[ok_u], su[ok_u], be[ok_e], se[ok_e]
    order = np.argsort(be)
    # on the range both cover, ECSQ's distortion at the uniform point's rate is lower (interpolated in log D)
    for b, s in zip(bu, su):
        if be[order][0] <= b <= be[order][-1]:
            d = np.exp(np.interp(b, be[order], np.log(se[order])))
            assert d <= s * 1.0001, (b, d, s)


def test_allocation_meets_budget_and_prefers_cheap_distortion():
    R = [np.array([10.0, 20.0, 30.0]), np.array([10.0, 20.0, 30.0])]
    D = [np.array([100.0, 10.0, 1.0]), np.array([1000.0, 100.0, 10.0])]
    ch, used = allocation.allocate(R, D, 50.0)
    assert used <= 50.0
    assert list(ch) == [1, 2]       # the tensor with the larger distortion drop gets the bits
    ch, used = allocation.allocate(R, D, 5.0)   # infeasible: smallest candidates
    assert list(ch) == [0, 0]


def test_convert_budget_exact_on_flat_file(tmp_path):
    """Whole-file accounting: the written file is within 1% under the --bits target."""
    from safetensors.numpy import save_file
    from acqe_encoder.encode import Settings, convert
    rng = np.random.default_rng(7)
    sd = {f"l{i}.weight": _tensor(256, 480 + 32 * i, i) for i in range(5)}
    sd.update({f"l{i}.bias": rng.standard_normal(256).astype(np.float32) for i in range(5)})
    p = str(tmp_path / "m.safetensors")
    save_file(sd, p)
    for bits in (3.0, 4.5):
        rep = convert(p, str(tmp_path / "m.acqe"), Settings(keep_unknown=True, bits=bits))
        ratio = rep.file_bytes * 8 / (bits * rep.values)
        assert 0.99 <= ratio <= 1.0, ratio


def test_lossless_mode_is_bit_exact_and_entropy_codes_16_bit_floats(tmp_path):
    from safetensors.numpy import save_file
    from acqe_encoder.encode import Settings, convert
    from acqe_format import AcqeReader
    rng = np.random.default_rng(11)
    w = (rng.standard_normal((1024, 1024)) * 0.02).astype(np.float16)
    b = rng.standard_normal(64).astype(np.float32)
    p = str(tmp_path / "h.safetensors")
    save_file({"w": w, "b": b}, p)
    rep = convert(p, str(tmp_path / "h.acqe"), Settings(keep_unknown=True, bits=None, lossless=True))
    assert rep.bits_per_value < 15.5
    with AcqeReader(str(tmp_path / "h.acqe")) as r:
        assert np.array_equal(r.read("w").view(np.uint16), w.view(np.uint16))
        assert np.array_equal(r.read("b"), b)
