"""The fused rebuilds of compact weights are bit-identical to the codec's formula: the one-pass Triton kernel
(under Triton's interpreter on the CPU; on CUDA in tests/test_runtime_cuda.py) and the torch.compile'd
formula (inductor's CPU backend), for every decoded / compute dtype pair, with and without row scales."""
import importlib
import warnings

import pytest
import torch

from recat_runtime import rebuild as R

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def _parts(rows, cols, scaled, seed=0):
    """A 256-entry codebook with values at the fp16/bf16 rounding boundaries, tiny, huge and signed zero."""
    g = torch.Generator().manual_seed(seed)
    codebook = torch.cat([torch.randn(200, generator=g),
                          torch.tensor([1 + 2**-11, 1 + 3 * 2**-11, 1 + 2**-8, 1 + 3 * 2**-8, 2**-24, 3e-8,
                                        65504.0, 7e4, -1e-40, -0.0]),
                          torch.randn(46, generator=g) * 1e3])
    codes = torch.randint(0, 256, (rows * cols,), generator=g, dtype=torch.uint8)
    scales = torch.rand(rows, generator=g) * 3 + 0.25 if scaled else None
    return codes, codebook, scales


def _bits(t):
    return t.reshape(-1).view(torch.int32 if t.dtype == torch.float32 else torch.int16)


@pytest.fixture()
def interpreted_triton(monkeypatch):
    pytest.importorskip("triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    import recat_runtime.triton_kernels as K

    importlib.reload(K)               # the kernels are built for the interpreter when imported with it set
    yield K
    monkeypatch.delenv("TRITON_INTERPRET")
    importlib.reload(K)


@pytest.mark.parametrize("decoded", DTYPES + [torch.float64])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scaled", [False, True])
def test_triton_kernel_equals_the_formula(interpreted_triton, decoded, dtype, scaled):
    for rows, cols in ((12, 33), (37, 50)):                 # within one block; several blocks with a tail
        codes, codebook, scales = _parts(rows, cols, scaled)
        want = R.rebuild_torch(codes, codebook, scales, (rows, cols), decoded, dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # numpy's "overflow in cast" for 7e4 -> fp16 inf
            got = R.rebuild_triton(codes, codebook, scales, (rows, cols), decoded, dtype)
        assert got.dtype == dtype and got.shape == (rows, cols)
        assert torch.equal(_bits(got), _bits(want)), (rows, cols)


def test_triton_backend_runs_a_compact_unet_exactly(interpreted_triton, tmp_path):
    from recat_runtime.loading import load_unet
    from recat_runtime.testing import tiny_pipeline
    from runtime_fixtures import write_tiny_acqe

    path = tmp_path / "t.acqe"
    write_tiny_acqe(path, tiny_pipeline(seed=3), codebook=True)
    dense = load_unet(path, device="cpu", torch_dtype=torch.float16)
    compact = load_unet(path, device="cpu", torch_dtype=torch.float16, compact=True)
    x, ehs = torch.randn(1, 4, 8, 8).half(), torch.randn(1, 77, 32).half()
    R.set_backend("triton")
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            got = compact(x, 500, ehs).sample
    finally:
        R.set_backend("auto")
    with torch.no_grad():
        assert torch.equal(got, dense(x, 500, ehs).sample)


@pytest.mark.parametrize("decoded, dtype, scaled", [(torch.float32, torch.float16, True),
                                                    (torch.bfloat16, torch.bfloat16, True),
                                                    (torch.float16, torch.float32, False)])
def test_compiled_rebuild_equals_the_formula(decoded, dtype, scaled):
    codes, codebook, scales = _parts(37, 50, scaled)
    want = R.rebuild_torch(codes, codebook, scales, (37, 50), decoded, dtype)
    got = R.rebuild_compiled(codes, codebook, scales, (37, 50), decoded, dtype)
    assert got.dtype == dtype and torch.equal(_bits(got), _bits(want))


def test_backend_choice():
    codes, codebook, scales = _parts(4, 8, True)
    assert R.get_backend() == "auto"
    assert torch.equal(R.rebuild(codes, codebook, scales, (4, 8), torch.float32, torch.float16),
                       R.rebuild_torch(codes, codebook, scales, (4, 8), torch.float32, torch.float16))
    with pytest.raises(ValueError, match="unknown rebuild backend 'cuda'"):
        R.set_backend("cuda")
