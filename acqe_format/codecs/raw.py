"""Codec 1, RAW: the elements' little-endian bytes in row-major order, nothing else.

payload_length = numel * itemsize, checked_length = payload_length, stored dtype = decoded dtype.
BOOL elements MUST be 0 or 1.
"""
from __future__ import annotations

import numpy as np

from acqe_format import constants as C
from acqe_format.codecs import Codec
from acqe_format.errors import CodecError, LayoutError


def _bf16_bits_from_f32(a: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bit patterns, round to nearest even; NaN stays a (quiet) NaN."""
    u = np.ascontiguousarray(a, dtype="<f4").view("<u4").astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():
        rounded[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return rounded


def to_stored(array, dtype=None) -> tuple[C.DType, np.ndarray]:
    """Normalize user input to (dtype code, little-endian contiguous array of the stored elements).

    `dtype=None` takes the array's own dtype. `dtype="bfloat16"` accepts uint16/int16 bit patterns or
    float32 values (rounded to nearest even). Otherwise no implicit casts: a lossless codec keeps what
    it is given, so a mismatch raises `ValueError`.
    """
    a = np.asarray(array)
    if a.dtype.name == "bfloat16":              # ml_dtypes, when the caller has it
        a = a.view(np.uint16)
        dtype = dtype or "bfloat16"
    if dtype is None:
        code = C.dtype_code(a.dtype)
    else:
        code = C.dtype_code(dtype)
    name, _size, np_dt = C.DTYPE_INFO[code]
    if code == C.DType.BF16:
        if a.dtype in (np.uint16, np.int16):
            a = a.view(np.uint16)
        elif a.dtype == np.float32:
            a = _bf16_bits_from_f32(a)
        else:
            raise ValueError(f"bfloat16 tensors take uint16 bit patterns or float32 values, not {a.dtype}")
    elif code == C.DType.BOOL:
        if a.dtype != np.bool_:
            raise ValueError(f"dtype bool needs a bool array, got {a.dtype}")
        a = a.view(np.uint8)
    elif (a.dtype.kind, a.dtype.itemsize) != (np_dt.kind, np_dt.itemsize):
        raise ValueError(f"array has dtype {a.dtype}, not {name}; convert it explicitly")
    return code, np.ascontiguousarray(a, dtype=np_dt)


class RawCodec(Codec, codec_id=C.CodecId.RAW):
    @classmethod
    def check_entry(cls, info) -> None:
        if info.stored_dtype != info.decoded_dtype:
            raise LayoutError(f"tensor {info.name!r}: RAW stored dtype {info.stored_dtype} != decoded "
                              f"dtype {info.decoded_dtype}")
        itemsize = C.DTYPE_INFO[C.DTYPE_BY_NAME[info.decoded_dtype]][1]
        want = info.numel * itemsize
        if info.payload_length != want:
            raise LayoutError(f"tensor {info.name!r}: RAW payload is {info.payload_length} bytes, shape "
                              f"{list(info.shape)} of {info.decoded_dtype} needs {want}")
        if info.checked_length != info.payload_length:
            raise LayoutError(f"tensor {info.name!r}: RAW checked_length {info.checked_length} != "
                              f"payload_length {info.payload_length}")

    @classmethod
    def decode(cls, payload, info, threads=None) -> np.ndarray:
        code = C.DTYPE_BY_NAME[info.decoded_dtype]
        np_dt = C.DTYPE_INFO[code][2]
        a = np.frombuffer(payload, dtype=np_dt, count=info.numel)
        if code == C.DType.BOOL:
            bad = np.flatnonzero(a > 1)
            if bad.size:
                raise CodecError(f"tensor {info.name!r}: bool element {int(bad[0])} is "
                                 f"{int(a[bad[0]])}, must be 0 or 1")
            return a.view(np.bool_).reshape(info.shape).copy()
        return a.astype(np_dt.newbyteorder("="), copy=True).reshape(info.shape)

    @staticmethod
    def encode(stored: np.ndarray) -> memoryview:
        """The payload: a byte view of the (contiguous, little-endian) elements, without copying."""
        return memoryview(np.ascontiguousarray(stored).reshape(-1).view(np.uint8))
