"""`AcqeReader.read(name, dtype=...)`: the same values as decoding and then `torch.Tensor.to(dtype)`.

The codebook codecs round inside the reconstruction kernel when the tensor decodes to float32 (the fast
path for loading fp16/bf16 models); every other combination decodes and then casts. Both must agree with
torch bit for bit, NaN/Inf, subnormals, overflow and empty tensors included.
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from acqe_format import AcqeReader, AcqeWriter, CodebookTensor

TORCH = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32, "float64": torch.float64}


def _as_torch(a: np.ndarray, decoded: str) -> torch.Tensor:
    if decoded == "bfloat16":
        return torch.from_numpy(np.ascontiguousarray(a).view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.ascontiguousarray(a).copy())


_INT_OF_SIZE = {2: torch.int16, 4: torch.int32, 8: torch.int64}


def _same(got: np.ndarray, want: torch.Tensor, dtype: str) -> bool:
    """`got` (as the reader returns `dtype`) is bit for bit `want`, except that a NaN only has to be a NaN
    where `want` has one (NaN payload bits may differ between converters)."""
    got_t = _as_torch(got, dtype)
    if got_t.dtype != want.dtype or tuple(got_t.shape) != tuple(want.shape):
        return False
    nan = torch.isnan(want)
    bits = _INT_OF_SIZE[want.element_size()]
    return torch.equal(torch.isnan(got_t), nan) and torch.equal(got_t[~nan].view(bits), want[~nan].view(bits))


finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@st.composite
def codebook_tensors(draw):
    rows = draw(st.integers(0, 5))
    cols = draw(st.integers(1, 7))
    k = draw(st.integers(1, 6))
    # wide range: values that overflow float16, fall into its subnormals, or sit on rounding ties
    cb = np.array(draw(st.lists(st.one_of(finite32, st.sampled_from([65520.0, 1e-7, 1 + 2 ** -11, 3e38])),
                                min_size=k, max_size=k)), np.float32)
    idx = np.array(draw(st.lists(st.integers(0, k - 1), min_size=rows * cols, max_size=rows * cols)), np.uint8)
    scales = None
    if draw(st.booleans()):
        scales = np.array(draw(st.lists(finite32, min_size=rows, max_size=rows)), np.float32)
    decoded = draw(st.sampled_from(["float32", "float16", "bfloat16", "float64"]))
    return CodebookTensor((rows, cols), cb, idx, scales, None, decoded)


def _assert_read_dtype_equals_torch_cast(tmp_path_factory, stored: str, add) -> None:
    """Writes one tensor "t" with ``add(writer)``; reading it with ``dtype=`` must equal decoding it (stored
    as ``stored``) and casting with torch."""
    path = tmp_path_factory.mktemp("rd") / "t.acqe"
    with AcqeWriter(path) as w:
        add(w)
    with AcqeReader(path) as r:
        plain = _as_torch(r.read("t"), stored)
        for dtype in ("float16", "bfloat16", "float32"):
            assert _same(r.read("t", dtype=dtype), plain.to(TORCH[dtype]), dtype), dtype


@settings(max_examples=60, deadline=None)
@given(ct=codebook_tensors(), rans=st.booleans())
def test_codebook_read_dtype_equals_decode_then_torch_cast(tmp_path_factory, ct, rans):
    _assert_read_dtype_equals_torch_cast(
        tmp_path_factory, ct.decoded_dtype, lambda w: w.add_codebook("t", ct, codec="rans" if rans else "packed"))


@settings(max_examples=40, deadline=None)
@given(values=st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=12),
       stored=st.sampled_from(["float64", "float32", "float16", "bfloat16"]))
def test_raw_read_dtype_equals_decode_then_torch_cast(tmp_path_factory, values, stored):
    src = torch.tensor(values, dtype=torch.float64).to(TORCH[stored])
    arr = src.view(torch.int16).numpy().view(np.uint16) if stored == "bfloat16" else src.numpy()
    _assert_read_dtype_equals_torch_cast(tmp_path_factory, stored, lambda w: w.add_raw("t", arr, dtype=stored))


def test_integer_tensors_ignore_dtype_and_bad_dtype_is_refused(tmp_path):
    path = tmp_path / "t.acqe"
    with AcqeWriter(path) as w:
        w.add_raw("i", np.arange(5, dtype=np.int64))
        w.add_raw("f", np.ones(3, np.float32))
    with AcqeReader(path) as r:
        assert r.read("i", dtype="float16").dtype == np.int64
        with pytest.raises(ValueError, match="dtype must be one of"):
            r.read("f", dtype="int8")
        names = [n for n, _ in r.iter_tensors(threads=2, dtype="float16")]
        assert names == ["i", "f"]


@settings(max_examples=30, deadline=None)
@given(ct=codebook_tensors(), rans=st.booleans())
def test_read_codebook_returns_the_stored_parts(tmp_path_factory, ct, rans):
    from acqe_format import reconstruct

    path = tmp_path_factory.mktemp("rc") / "t.acqe"
    with AcqeWriter(path) as w:
        w.add_codebook("t", ct, codec="rans" if rans else "packed")
        w.add_raw("r", np.ones(2, np.float32))
    with AcqeReader(path) as r:
        got = r.read_codebook("t")
        assert r.read_codebook("r") is None
        assert got.shape == ct.shape and got.decoded_dtype == ct.decoded_dtype
        assert np.array_equal(got.codebook, ct.codebook) and np.array_equal(got.indices, ct.indices)
        assert (got.row_scales is None) == (ct.row_scales is None)
        assert np.array_equal(reconstruct(got).view(np.uint8), r.read("t").view(np.uint8))
