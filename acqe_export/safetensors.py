"""`.acqe` -> `.safetensors`, streamed tensor by tensor, written atomically.

The header is built from the directory alone (no decoding), then tensors are decoded in directory
order, cast in the decoder where asked (``AcqeReader.iter_tensors(dtype=...)``: the same values as
decoding and then ``torch.Tensor.to``) and appended.
"""
from __future__ import annotations

import json
import os
import struct

import numpy as np

from acqe_format import AcqeReader, dtypes
from acqe_format.atomic import atomic_write

# safetensors' dtype names for ours
SAFETENSORS_DTYPES = {"float32": "F32", "float16": "F16", "bfloat16": "BF16", "float64": "F64", "int64": "I64",
                      "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL", "uint16": "U16",
                      "uint32": "U32", "uint64": "U64"}


def export_safetensors(src: str, out: str, dtype: str | None = None, threads: int | None = None,
                       progress=None) -> tuple[int, int]:
    """Write every tensor of ``src`` to ``out``; floats cast to ``dtype`` ("fp16", "bfloat16", ...; None keeps
    each tensor's decoded dtype). ``progress(bytes_done, bytes_total)`` is called after each tensor.
    Returns (tensor count, file bytes)."""
    want = dtypes.cast_target(dtype) if dtype else None
    with AcqeReader(src) as r:
        plan, off = [], 0
        header: dict = {"__metadata__": {"format": "pt", "acqe_source": os.path.basename(src),
                                         "acqe_naming": str(r.metadata.get("naming", ""))}}
        for t in r.tensors:
            tgt = want if (want and t.decoded_dtype in dtypes.FLOATS) else t.decoded_dtype
            nbytes = t.numel * dtypes.itemsize(tgt)
            header[t.name] = {"dtype": SAFETENSORS_DTYPES[tgt], "shape": list(t.shape),
                              "data_offsets": [off, off + nbytes]}
            plan.append((t.name, nbytes))
            off += nbytes
        hb = json.dumps(header, separators=(",", ":")).encode()
        hb += b" " * (-len(hb) % 8)
        with atomic_write(out) as f:
            f.write(struct.pack("<Q", len(hb)))
            f.write(hb)
            decoded = r.iter_tensors(threads=threads, dtype=want)
            done = 0
            for (name, nbytes), (got, arr) in zip(plan, decoded):
                if got != name:
                    raise ValueError("reader returned tensors out of directory order")
                a = np.ascontiguousarray(arr)
                if a.dtype.byteorder == ">":
                    a = a.astype(a.dtype.newbyteorder("<"))
                b = memoryview(a.reshape(-1)).cast("B")
                if len(b) != nbytes:
                    raise ValueError(f"tensor {name!r}: {len(b)} bytes decoded, {nbytes} expected")
                f.write(b)
                done += nbytes
                if progress is not None:
                    progress(done, off)
    return len(plan), os.path.getsize(out)
