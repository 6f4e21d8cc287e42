"""`.acqe` -> `.safetensors`, streamed tensor by tensor (temp file + fsync + rename)."""
from __future__ import annotations

import json
import os
import struct
import tempfile

import numpy as np

ST_DTYPE = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64", "int64": "I64",
            "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL", "uint16": "U16",
            "uint32": "U32", "uint64": "U64"}
ITEM = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1,
        "U16": 2, "U32": 4, "U64": 8}
_CHOICE = {"fp16": "float16", "fp32": "float32", "bf16": "bfloat16"}


def _bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _cast(a: np.ndarray, have: str, want: str) -> np.ndarray:
    """Convert a decoded array (bf16 as uint16 bit patterns) to `want` (round to nearest even)."""
    if have == want:
        return a
    f = _bf16_to_f32(a) if have == "bfloat16" else a.astype(np.float32, copy=False)
    if want == "bfloat16":
        from acqe_format.codecs.raw import _bf16_bits_from_f32
        return _bf16_bits_from_f32(f)
    return f.astype(want)


def export_safetensors(src: str, out: str, dtype: str | None = None, threads: int | None = None) -> tuple[int, int]:
    """Write every tensor of `src` to `out`; returns (tensor count, file bytes)."""
    from acqe_format import AcqeReader
    want = _CHOICE.get(dtype, dtype) if dtype else None
    with AcqeReader(src) as r:
        infos = list(r.tensors)
        plan, off = [], 0
        header: dict = {"__metadata__": {"format": "pt", "acqe_source": os.path.basename(src),
                                         "acqe_naming": str(r.metadata.get("naming", ""))}}
        for t in infos:
            have = t.decoded_dtype
            is_float = have in ("float32", "float16", "bfloat16", "float64")
            tgt = want if (want and is_float) else have
            code = ST_DTYPE[tgt]
            nbytes = int(np.prod(t.shape, dtype=np.int64)) * ITEM[code] if len(t.shape) else ITEM[code]
            header[t.name] = {"dtype": code, "shape": list(t.shape), "data_offsets": [off, off + nbytes]}
            plan.append((t.name, have, tgt, nbytes))
            off += nbytes
        hb = json.dumps(header, separators=(",", ":")).encode()
        hb += b" " * (-len(hb) % 8)
        folder = os.path.dirname(os.path.abspath(out))
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(out) + ".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(struct.pack("<Q", len(hb)))
                f.write(hb)
                decoded = r.iter_tensors(threads=threads) if hasattr(r, "iter_tensors") else ((n, r.read(n)) for n, *_ in plan)
                by_name = {p[0]: p for p in plan}
                order = []
                for name, arr in decoded:
                    _, have, tgt, nbytes = by_name[name]
                    a = _cast(np.asarray(arr), have, tgt)
                    a = a if a.flags.c_contiguous else a.copy()
                    b = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes() if a.dtype.byteorder == ">" else memoryview(a).cast("B")
                    if len(b) != nbytes:
                        raise ValueError(f"tensor {name!r}: {len(b)} bytes decoded, {nbytes} expected")
                    order.append(name)
                    f.write(b)
                if order != [p[0] for p in plan]:
                    raise ValueError("reader returned tensors out of directory order")
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, out)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
    return len(plan), os.path.getsize(out)
