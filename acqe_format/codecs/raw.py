"""Codec 1, RAW: the elements' little-endian bytes in row-major order, nothing else.

payload_length = numel * itemsize, checked_length = payload_length, stored dtype = decoded dtype.
BOOL elements MUST be 0 or 1.
"""
from __future__ import annotations

import numpy as np

from acqe_format import constants as C
from acqe_format import dtypes
from acqe_format.codecs import Codec, EncodedPayload
from acqe_format.errors import CodecError, LayoutError


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
            a = dtypes.bf16_bits_from_f32(a)
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
    names = ("raw",)

    @classmethod
    def check_entry(cls, info) -> None:
        if info.stored_dtype != info.decoded_dtype:
            raise LayoutError(f"tensor {info.name!r}: RAW stored dtype {info.stored_dtype} != decoded "
                              f"dtype {info.decoded_dtype}")
        want = cls.payload_size(info.numel, info.decoded_dtype)
        if info.payload_length != want:
            raise LayoutError(f"tensor {info.name!r}: RAW payload is {info.payload_length} bytes, shape "
                              f"{list(info.shape)} of {info.decoded_dtype} needs {want}")
        if info.checked_length != info.payload_length:
            raise LayoutError(f"tensor {info.name!r}: RAW checked_length {info.checked_length} != "
                              f"payload_length {info.payload_length}")

    @classmethod
    def decode(cls, payload, info, threads=None, out_dtype=None) -> np.ndarray:
        code = C.DTYPE_BY_NAME[info.decoded_dtype]
        np_dt = C.DTYPE_INFO[code][2]
        a = np.frombuffer(payload, dtype=np_dt, count=info.numel)
        if code == C.DType.BOOL:
            bad = np.flatnonzero(a > 1)
            if bad.size:
                raise CodecError(f"tensor {info.name!r}: bool element {int(bad[0])} is "
                                 f"{int(a[bad[0]])}, must be 0 or 1")
            return a.view(np.bool_).reshape(info.shape).copy()
        if out_dtype not in (None, info.decoded_dtype):
            return dtypes.cast_float(a, info.decoded_dtype, out_dtype).reshape(info.shape)
        return a.astype(np_dt.newbyteorder("="), copy=True).reshape(info.shape)

    @classmethod
    def encode(cls, array, dtype=None, **_options) -> EncodedPayload:
        """The payload of ``array`` (see :func:`to_stored` for ``dtype``): a byte view of its contiguous,
        little-endian elements, without copying."""
        code, stored = to_stored(array, dtype)
        payload = memoryview(np.ascontiguousarray(stored).reshape(-1).view(np.uint8))
        return EncodedPayload(cls.codec_id, payload, len(payload), C.DTYPE_INFO[code][0])

    @classmethod
    def payload_size(cls, numel: int, dtype: str, **_options) -> int:
        """``numel`` elements of ``dtype``: exactly ``numel * itemsize``."""
        return int(numel) * dtypes.itemsize(dtype)
