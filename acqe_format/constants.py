"""Every number of the `.acqe` format, in one place (mirrors the tables of `spec/ACQE.md`).

Retired ids stay here commented out; an id is never given a new meaning.
"""
from __future__ import annotations

from enum import IntEnum

import numpy as np

# --- file framing ------------------------------------------------------------------------------
MAGIC = b"\x89ACQE\r\n\x1a"          # non-ASCII first byte + CR LF + ^Z, as PNG does
FOOTER_MAGIC = b"ACQE_END"
FORMAT_MAJOR = 1
FORMAT_MINOR = 1                     # the newest minor this code implements (1.1: compressed sections)
FORMAT_MINOR_BASE = 0                # what a writer writes when it uses no 1.1 feature
READER_SUPPORTED_MAJORS = (1,)

HEADER_SIZE = 64
SECTION_ENTRY_SIZE = 32
FOOTER_SIZE = 48
MIN_FILE_SIZE = HEADER_SIZE + FOOTER_SIZE

DEFAULT_ALIGNMENT = 64
MIN_ALIGNMENT = 16
MAX_ALIGNMENT = 65536

SECTION_FLAG_REQUIRED = 1
SECTION_FLAG_COMPRESSED = 2          # 1.1: the section is u64 raw_length + one zlib stream (spec §4.1)
KNOWN_SECTION_FLAGS = SECTION_FLAG_REQUIRED | SECTION_FLAG_COMPRESSED

# Feature bits. A reader refuses any required bit it does not know and ignores unknown optional bits.
# 1.0 defines none; 1.1 defines required bit 0: DIRECTORY and METADATA may be zlib-compressed. A writer
# that compresses nothing writes 0 in both masks (and minor 0).
FEATURE_COMPRESSED_SECTIONS = 1
KNOWN_REQUIRED_FEATURES = FEATURE_COMPRESSED_SECTIONS
KNOWN_OPTIONAL_FEATURES = 0
FEATURE_NAMES: dict[int, str] = {FEATURE_COMPRESSED_SECTIONS: "COMPRESSED_SECTIONS"}
COMPRESSED_PREFIX_SIZE = 8           # u64 raw_length before the zlib stream
ZLIB_LEVEL = 9                       # what the reference writer uses

# --- reader limits (a file beyond any of them is invalid) ------------------------------------------
MAX_SECTIONS = 64
MAX_DIRECTORY_PLUS_METADATA = 16 * 1024 * 1024    # bytes of DIRECTORY + METADATA together (stored, and
                                                   # raw: after decompression)
MAX_TENSORS = 65536
MAX_RANK = 8
MAX_NAME_BYTES = 1024                              # tensor and asset names, UTF-8 bytes, >= 1
MAX_NUMEL = 1 << 53                                # also caps the product of the non-zero dims
MAX_ASSETS = 4096
MAX_JSON_DEPTH = 64
MAX_K = 65536                                      # codebook entries
MAX_CHUNK_SYMBOLS = 1 << 20
DEFAULT_CHUNK_SYMBOLS = 1 << 16                    # what the writer uses unless told otherwise
MAX_TABLES = 65536                                 # frequency tables (contexts are u16)
MIN_PRECISION = 1
MAX_PRECISION = 24                                 # rANS probability precision P
RANS_STATE_BITS = 64                               # rANS coder state (spec §13.1)
RANS_WORD_BITS = 32                                # rANS stream words
MAX_TABLE_SLOTS = 1 << 24                          # n_tables * 2**P: bounds a decoder's slot tables
MIN_PACKED_BITS = 1
MAX_PACKED_BITS = 16

# --- enums ---------------------------------------------------------------------------------------


class SectionKind(IntEnum):
    DIRECTORY = 1
    METADATA = 2
    ASSETS = 3
    DATA = 4


class CodecId(IntEnum):
    RAW = 1
    CODEBOOK_RANS = 2
    CODEBOOK_PACKED = 3


class DType(IntEnum):
    F32 = 1
    F16 = 2
    BF16 = 3
    F64 = 4
    I8 = 5
    U8 = 6
    I16 = 7
    I32 = 8
    I64 = 9
    BOOL = 10
    U16 = 11
    U32 = 12
    U64 = 13


# code -> (name used by the API, bytes per element, numpy dtype of the stored little-endian bytes)
# numpy has no bfloat16: BF16 elements are stored and returned as their uint16 bit patterns.
DTYPE_INFO: dict[DType, tuple[str, int, np.dtype]] = {
    DType.F32: ("float32", 4, np.dtype("<f4")),
    DType.F16: ("float16", 2, np.dtype("<f2")),
    DType.BF16: ("bfloat16", 2, np.dtype("<u2")),
    DType.F64: ("float64", 8, np.dtype("<f8")),
    DType.I8: ("int8", 1, np.dtype("i1")),
    DType.U8: ("uint8", 1, np.dtype("u1")),
    DType.I16: ("int16", 2, np.dtype("<i2")),
    DType.I32: ("int32", 4, np.dtype("<i4")),
    DType.I64: ("int64", 8, np.dtype("<i8")),
    DType.BOOL: ("bool", 1, np.dtype("u1")),
    DType.U16: ("uint16", 2, np.dtype("<u2")),
    DType.U32: ("uint32", 4, np.dtype("<u4")),
    DType.U64: ("uint64", 8, np.dtype("<u8")),
}
DTYPE_BY_NAME: dict[str, DType] = {info[0]: code for code, info in DTYPE_INFO.items()}
FLOAT_DTYPES = frozenset({DType.F32, DType.F16, DType.BF16, DType.F64})
# What a codebook codec may decode to.
CODEBOOK_DECODED_DTYPES = FLOAT_DTYPES

# Codebook codec head fields.
SCALE_NONE = 0
SCALE_ROW_F32 = 1
CONTEXT_NONE = 0
CONTEXT_ROW_U16 = 1

CODEBOOK_RANS_HEAD_SIZE = 16
CODEBOOK_PACKED_HEAD_SIZE = 8


def dtype_code(name_or_code) -> DType:
    """`DType` from a code, a name ("float32", "bfloat16", ...) or a numpy dtype."""
    if isinstance(name_or_code, DType):
        return name_or_code
    if isinstance(name_or_code, int):
        return DType(name_or_code)
    if isinstance(name_or_code, str) and name_or_code in DTYPE_BY_NAME:
        return DTYPE_BY_NAME[name_or_code]
    dt = np.dtype(name_or_code)
    if dt.name in DTYPE_BY_NAME:
        return DTYPE_BY_NAME[dt.name]
    raise ValueError(f"unsupported dtype {name_or_code!r}; supported: {', '.join(DTYPE_BY_NAME)}")


def dtype_name(code: int) -> str:
    return DTYPE_INFO[DType(code)][0]


def align_up(offset: int, alignment: int) -> int:
    return (offset + alignment - 1) // alignment * alignment
