"""replace_metadata keeps every payload byte and refuses to launder a corrupted file."""
import numpy as np
import pytest

from acqe_format import AcqeReader, AcqeWriter, ChecksumMismatchError, CodebookTensor
from acqe_format.edit import replace_metadata


def _write(path):
    rng = np.random.default_rng(0)
    with AcqeWriter(path) as w:
        w.set_metadata({"architecture": "test", "n": 1})
        w.add_asset("tokenizer/merges.txt", b"a b\n")
        w.add_raw("bias", rng.normal(size=(7,)).astype(np.float32))
        idx = rng.geometric(0.3, size=40 * 50).clip(1, 16).astype(np.uint8) - 1
        w.add_codebook("w", CodebookTensor(shape=(40, 50), codebook=np.linspace(-1, 1, 16, dtype=np.float32),
                                           indices=idx, row_scales=rng.uniform(0.5, 2, 40).astype(np.float32),
                                           row_contexts=None))


def _payloads(path):
    with AcqeReader(path) as r:
        return {t.name: (t.codec, bytes(r._payload(t))) for t in r.tensors}, r.assets


def test_replace_metadata_keeps_payload_bytes(tmp_path):
    p = tmp_path / "m.acqe"
    _write(p)
    before, assets = _payloads(p)
    replace_metadata(p, {"architecture": "test", "recat": {"steps": 50, "full": [0, 5, 9]}})
    with AcqeReader(p) as r:
        r.verify()
        assert r.metadata["recat"]["full"] == [0, 5, 9]
    after, assets_after = _payloads(p)
    assert after == before
    assert assets_after == assets


def test_replace_metadata_refuses_corrupted_file(tmp_path):
    p = tmp_path / "m.acqe"
    _write(p)
    with AcqeReader(p) as r:
        last = r.tensors[-1]
        at = last.payload_offset + last.payload_length - 1      # inside the last codebook chunk
    data = bytearray(p.read_bytes())
    data[at] ^= 0x40
    p.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError):
        replace_metadata(p, {"architecture": "x"})
    assert p.read_bytes() == bytes(data)                         # untouched
    assert [f.name for f in tmp_path.iterdir()] == ["m.acqe"]    # no temp file left behind
