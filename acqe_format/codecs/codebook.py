"""Codecs 2 (CODEBOOK_RANS) and 3 (CODEBOOK_PACKED): a float32 codebook, optional per-row float32
scales, and one codebook index per element in row-major order.

What every decoder computes (rows = shape[0], 1 for rank 0; row_length = numel / rows):

    value[r, j] = float32(codebook[index[r * row_length + j]] * row_scale[r])   # one IEEE-754 binary32
                                                                              # multiply, round-to-even
    (no scales: value = codebook[index]), then converted to decoded_dtype with round-to-nearest-even.

Codec 3 payload:  u32 K | u8 bits | u8 scale_mode | u16 reserved=0 | f32 codebook[K]
                  | f32 scales[rows] (scale_mode 1) | ceil(numel*bits/8) bytes of LSB-first packed indices
Codec 2 payload:  u32 K | u8 precision | u8 scale_mode | u8 context_mode | u8 reserved=0 | u32 n_tables
                  | u32 chunk_size | f32 codebook[K] | f32 scales[rows] (scale_mode 1)
                  | u16 contexts[rows] (context_mode 1) | zero pad to a multiple of 4
                  | u32 freqs[n_tables][K] | (u32 word_count, u32 crc32)[n_chunks] | u32 words...
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass

import numpy as np

from acqe_format import constants as C
from acqe_format.codecs import CannotEncode, Codec, EncodedPayload
from acqe_format import dtypes
from acqe_format.errors import ChecksumMismatchError, CodecError, LayoutError, LimitExceededError
from acqe_format.layout import checked_numel, crc32, rows_of

PACKED_HEAD = struct.Struct("<IBBH")
RANS_HEAD = struct.Struct("<IBBBBII")
assert PACKED_HEAD.size == C.CODEBOOK_PACKED_HEAD_SIZE and RANS_HEAD.size == C.CODEBOOK_RANS_HEAD_SIZE

_BLOCK = 1 << 20    # elements per block when unpacking / reconstructing (bounds temporaries)


@dataclass(frozen=True, eq=False)
class CodebookTensor:
    """A tensor as codebook + indices (+ row scales, + per-row entropy contexts): the encoder's output
    and what the codebook codecs store. Construction validates everything (raises `ValueError`)."""
    shape: tuple[int, ...]
    codebook: np.ndarray
    indices: np.ndarray
    row_scales: np.ndarray | None = None
    row_contexts: np.ndarray | None = None
    decoded_dtype: str = "float32"

    def __post_init__(self):
        shape = tuple(int(d) for d in self.shape)
        if len(shape) > C.MAX_RANK or any(d < 0 for d in shape):
            raise ValueError(f"bad shape {shape}")
        numel = checked_numel(shape)
        rows, _ = rows_of(shape)
        cb = np.asarray(self.codebook)
        if cb.dtype != np.float32 or cb.ndim != 1 or not 1 <= cb.size <= C.MAX_K:
            raise ValueError(f"codebook must be float32[K] with 1 <= K <= {C.MAX_K}, got {cb.dtype}{list(cb.shape)}")
        if not np.isfinite(cb).all():
            raise ValueError("codebook entries must be finite")
        idx = np.asarray(self.indices)
        if idx.dtype not in (np.uint8, np.uint16) or idx.ndim != 1 or idx.size != numel:
            raise ValueError(f"indices must be uint8/uint16[{numel}], got {idx.dtype}{list(idx.shape)}")
        if idx.size and int(idx.max()) >= cb.size:
            raise ValueError(f"index {int(idx.max())} outside the codebook (K={cb.size})")
        if self.row_scales is not None:
            s = np.asarray(self.row_scales)
            if s.dtype != np.float32 or s.shape != (rows,) or not np.isfinite(s).all():
                raise ValueError(f"row_scales must be finite float32[{rows}]")
        if self.row_contexts is not None:
            c = np.asarray(self.row_contexts)
            if c.dtype != np.uint16 or c.shape != (rows,):
                raise ValueError(f"row_contexts must be uint16[{rows}]")
        if C.DTYPE_BY_NAME.get(self.decoded_dtype) not in C.CODEBOOK_DECODED_DTYPES:
            raise ValueError(f"decoded_dtype must be one of float32, float16, bfloat16, float64")
        object.__setattr__(self, "shape", shape)

    @property
    def numel(self) -> int:
        return int(self.indices.size)


def _check_head_start(name: str, k: int, reserved: int) -> None:
    """The checks both codebook heads start with: reserved field zero, codebook size within limits."""
    if reserved:
        raise LayoutError(f"tensor {name!r}: reserved head field is {reserved}, must be 0")
    if not 1 <= k <= C.MAX_K:
        raise LimitExceededError(f"tensor {name!r}: codebook size K={k} outside 1..{C.MAX_K}")


def _output(shape, decoded: str) -> tuple[np.ndarray, int]:
    """The flat output array of a reconstruction (native byte order) and the row length."""
    rows, row_length = rows_of(shape)
    numel = rows * row_length if row_length else 0
    return np.empty(numel, dtype=dtypes.array_dtype(decoded)), row_length


def _values_numpy(codebook, indices, scales, shape, decoded: str) -> np.ndarray:
    """The reconstruction formula in plain numpy (the twin of the numba kernel; used by the tests)."""
    out, row_length = _output(shape, decoded)
    numel = out.size
    if numel:
        cb = np.ascontiguousarray(codebook, dtype=np.float32)
        step = max(1, _BLOCK // row_length) * row_length
        for start in range(0, numel, step):
            stop = min(numel, start + step)
            v = cb[indices[start:stop]]
            with np.errstate(over="ignore"):   # finite * finite may round to +-inf: that is the formula
                if scales is not None:
                    r0 = start // row_length
                    v = (v.reshape(-1, row_length) * scales[r0:r0 + (stop - start) // row_length, None]).reshape(-1)
                out[start:stop] = dtypes.round_f32(v, decoded)
    return out.reshape(shape)


_MODES = {"float32": 0, "float64": 1, "float16": 2, "bfloat16": 3}
_PAR_MIN = 1 << 18          # elements per thread below which threading does not pay


def _split(n: int, threads: int | None):
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    parts = max(1, min(int(threads), n // _PAR_MIN))
    bounds = [n * i // parts for i in range(parts + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _run(fn, ranges) -> list:
    if len(ranges) <= 1:
        return [fn(a, b) for a, b in ranges]
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(len(ranges)) as ex:
        return list(ex.map(lambda ab: fn(*ab), ranges))


def _parts(info, codebook, scales, contexts, idx) -> CodebookTensor:
    """The stored parts as a CodebookTensor (copies: independent of the file's memory map)."""
    k = int(codebook.size)
    idx = idx.astype(np.uint8) if k <= 256 else idx.astype(np.uint16, copy=True)
    return CodebookTensor(info.shape, np.array(codebook, np.float32), idx,
                          None if scales is None else np.array(scales, np.float32),
                          None if contexts is None else np.array(contexts, np.uint16), info.decoded_dtype)


def _values(codebook, indices, scales, shape, decoded: str, threads: int | None = 1) -> np.ndarray:
    """The reconstruction formula (numba kernel, fused with the dtype conversion)."""
    from acqe_format.codecs import _kernels as K
    out, row_length = _output(shape, decoded)
    numel = out.size
    if numel:
        cb = np.ascontiguousarray(codebook, dtype=np.float32)
        sc = np.zeros(0, np.float32) if scales is None else np.ascontiguousarray(scales, dtype=np.float32)
        idx = np.ascontiguousarray(indices)
        mode = _MODES[decoded]
        e32 = out if mode == 0 else np.zeros(0, np.float32)
        e64 = out if mode == 1 else np.zeros(0, np.float64)
        e16 = out.view(np.uint16) if mode >= 2 else np.zeros(0, np.uint16)
        _run(lambda a, b: K.reconstruct_range(idx, cb, sc, row_length, a, b, mode, e32, e64, e16),
             _split(numel, threads))
    return out.reshape(shape)


def _decoded_values(codebook, indices, scales, info, out_dtype, threads) -> np.ndarray:
    """The decoded tensor, or for ``out_dtype`` the decoded values rounded to it: straight from the
    float32 values in the kernel when the decoded dtype is float32 (same result, no float32 copy), else
    decoded first and then rounded (a value rounded to bf16 and then to f16 is not always the value
    rounded to f16 directly)."""
    decoded = info.decoded_dtype
    if out_dtype in (None, decoded) or decoded == "float32":
        return _values(codebook, indices, scales, info.shape, out_dtype or decoded, threads)
    return dtypes.cast_float(_values(codebook, indices, scales, info.shape, decoded, threads), decoded, out_dtype)


def reconstruct(ct: CodebookTensor) -> np.ndarray:
    """Exactly what every decoder produces for `ct` (BF16 as uint16 bit patterns)."""
    scales = None if ct.row_scales is None else np.asarray(ct.row_scales, dtype=np.float32)
    return _values(ct.codebook, ct.indices, scales, ct.shape, ct.decoded_dtype, threads=None)


def min_bits(k: int) -> int:
    return max(1, (k - 1).bit_length())


# --- shared decode helpers -----------------------------------------------------------------------

def _take(payload, pos: int, count: int, dtype: str, what: str, name: str):
    nbytes = count * np.dtype(dtype).itemsize
    if pos + nbytes > len(payload):
        raise LayoutError(f"tensor {name!r}: {what} runs past the payload end")
    return np.frombuffer(payload, dtype=dtype, count=count, offset=pos), pos + nbytes


def _check_finite(a, what, name):
    if a.size and not np.isfinite(a).all():
        raise CodecError(f"tensor {name!r}: {what} has a non-finite entry")


def _check_float_entry(info, codec_name):
    if C.DTYPE_BY_NAME[info.decoded_dtype] not in C.CODEBOOK_DECODED_DTYPES:
        raise LayoutError(f"tensor {info.name!r}: {codec_name} cannot decode to {info.decoded_dtype}")
    if C.DTYPE_BY_NAME[info.stored_dtype] not in C.FLOAT_DTYPES:
        raise LayoutError(f"tensor {info.name!r}: {codec_name} source dtype {info.stored_dtype} is not a float type")


# --- codec 3: fixed-width packed indices ------------------------------------------------------------

def pack_indices(indices: np.ndarray, bits: int) -> bytes:
    """LSB-first: bit b of index i is bit (i*bits + b) of the stream; stream bit n is bit n%8 of byte n//8."""
    idx = np.ascontiguousarray(indices, dtype=np.uint32)
    out = []
    step = 8 * (1 << 16)                          # a multiple of 8 indices = whole bytes per block
    shifts = np.arange(bits, dtype=np.uint32)
    for s in range(0, idx.size, step):
        blk = idx[s:s + step]
        bitmat = ((blk[:, None] >> shifts) & 1).astype(np.uint8)
        out.append(np.packbits(bitmat.reshape(-1), bitorder="little").tobytes())
    return b"".join(out)


def unpack_indices(data: np.ndarray, n: int, bits: int) -> np.ndarray:
    """Inverse of `pack_indices` (uint32 out)."""
    if bits == 8:
        return data[:n].astype(np.uint32)
    if bits == 16:
        return data[:2 * n].view("<u2").astype(np.uint32)
    buf = np.zeros(data.size + 3, dtype=np.uint32)
    buf[:data.size] = data
    out = np.empty(n, dtype=np.uint32)
    mask = np.uint32((1 << bits) - 1)
    for s in range(0, n, _BLOCK):
        pos = np.arange(s, min(n, s + _BLOCK), dtype=np.uint64) * np.uint64(bits)
        byte = (pos >> np.uint64(3)).astype(np.intp)
        sh = (pos & np.uint64(7)).astype(np.uint32)
        v = buf[byte] | (buf[byte + 1] << np.uint32(8)) | (buf[byte + 2] << np.uint32(16))
        out[s:s + pos.size] = (v >> sh) & mask
    return out


def packed_payload(ct: CodebookTensor, bits: int | None = None) -> bytes:
    k = ct.codebook.size
    bits = bits or min_bits(k)
    scale_mode = C.SCALE_NONE if ct.row_scales is None else C.SCALE_ROW_F32
    parts = [PACKED_HEAD.pack(k, bits, scale_mode, 0), ct.codebook.astype("<f4").tobytes()]
    if ct.row_scales is not None:
        parts.append(np.asarray(ct.row_scales, dtype="<f4").tobytes())
    parts.append(pack_indices(ct.indices, bits))
    return b"".join(parts)


def packed_length(k: int, bits: int, rows: int, numel: int, scales: bool) -> int:
    """Codec 3's exact payload length (spec §10.3)."""
    return PACKED_HEAD.size + 4 * k + (4 * rows if scales else 0) + (numel * bits + 7) // 8


def packed_size(ct: CodebookTensor) -> int:
    return packed_length(ct.codebook.size, min_bits(ct.codebook.size), rows_of(ct.shape)[0], ct.numel,
                         ct.row_scales is not None)


class PackedCodec(Codec, codec_id=C.CodecId.CODEBOOK_PACKED):
    names = ("packed", "codebook_packed")
    stores_codebooks = True

    @classmethod
    def encode(cls, ct: CodebookTensor, **_options) -> EncodedPayload:
        payload = packed_payload(ct)
        return EncodedPayload(cls.codec_id, payload, len(payload), ct.decoded_dtype)

    @classmethod
    def payload_size(cls, ct: CodebookTensor, **_options) -> int:
        return packed_size(ct)

    @classmethod
    def check_entry(cls, info) -> None:
        _check_float_entry(info, "CODEBOOK_PACKED")
        if info.checked_length != info.payload_length:
            raise LayoutError(f"tensor {info.name!r}: CODEBOOK_PACKED checked_length {info.checked_length}"
                              f" != payload_length {info.payload_length}")
        if info.payload_length < PACKED_HEAD.size:
            raise LayoutError(f"tensor {info.name!r}: CODEBOOK_PACKED payload of {info.payload_length} bytes "
                              f"is shorter than its {PACKED_HEAD.size}-byte head")

    @classmethod
    def check_payload(cls, payload, info) -> None:
        cls.parse_head(payload, info)

    @classmethod
    def parse_head(cls, payload, info):
        """The head's checks (nothing proportional to numel): ``(k, bits, codebook, scales, packed bytes)``."""
        name = info.name
        k, bits, scale_mode, reserved = PACKED_HEAD.unpack_from(payload, 0)
        _check_head_start(name, k, reserved)
        if not C.MIN_PACKED_BITS <= bits <= C.MAX_PACKED_BITS:
            raise CodecError(f"tensor {name!r}: index width {bits} bits outside 1..16")
        if k > (1 << bits):
            raise CodecError(f"tensor {name!r}: K={k} does not fit in {bits}-bit indices")
        if scale_mode not in (C.SCALE_NONE, C.SCALE_ROW_F32):
            raise CodecError(f"tensor {name!r}: unknown scale mode {scale_mode}")
        rows, _ = rows_of(info.shape)
        want = packed_length(k, bits, rows, info.numel, bool(scale_mode))
        if want != info.payload_length:
            raise LayoutError(f"tensor {name!r}: CODEBOOK_PACKED payload is {info.payload_length} bytes, "
                              f"its head implies {want}")
        pos = PACKED_HEAD.size
        codebook, pos = _take(payload, pos, k, "<f4", "codebook", name)
        _check_finite(codebook, "codebook", name)
        scales = None
        if scale_mode:
            scales, pos = _take(payload, pos, rows, "<f4", "row scales", name)
            _check_finite(scales, "row scales", name)
        data = np.frombuffer(payload, dtype=np.uint8, offset=pos)
        extra = info.numel * bits % 8
        if extra and data[-1] >> extra:
            raise CodecError(f"tensor {name!r}: unused bits of the last index byte are not zero")
        return k, bits, codebook, scales, data

    @classmethod
    def parse(cls, payload, info, threads=1):
        name = info.name
        k, bits, codebook, scales, data = cls.parse_head(payload, info)
        idx = np.empty(info.numel, dtype=np.uint16)
        if info.numel:
            from acqe_format.codecs import _kernels as K
            m = max(_run(lambda a, b: int(K.unpack_range(data, bits, a, b, idx)), _split(info.numel, threads)))
            if m >= k:
                where = int(np.argmax(idx >= k))
                raise CodecError(f"tensor {name!r}: index {m} at element {where} is outside the codebook (K={k})")
        return codebook, scales, idx

    @classmethod
    def decode(cls, payload, info, threads=None, out_dtype=None) -> np.ndarray:
        codebook, scales, idx = cls.parse(payload, info, threads)
        return _decoded_values(codebook, idx, scales, info, out_dtype, threads)

    @classmethod
    def decode_parts(cls, payload, info, threads=None) -> CodebookTensor:
        codebook, scales, idx = cls.parse(payload, info, threads)
        return _parts(info, codebook, scales, None, idx)


# --- codec 2: rANS-coded indices ---------------------------------------------------------------------

def _rans():
    from acqe_format import rans   # numba import only when a rANS payload is actually touched
    return rans


def rans_head_length(k: int, rows: int, n_tables: int, numel: int, chunk_size: int, scales: bool,
                     contexts: bool) -> int:
    """Codec 2's exact checked_length (spec §10.4): head, codebook, row scales and contexts, padding to 4,
    frequency tables, chunk table."""
    n_chunks = -(-numel // chunk_size)
    pos = RANS_HEAD.size + 4 * k + (4 * rows if scales else 0) + (2 * rows if contexts else 0)
    return pos + (-pos % 4) + 4 * n_tables * k + 8 * n_chunks


class RansCodec(Codec, codec_id=C.CodecId.CODEBOOK_RANS):
    names = ("rans", "codebook_rans")
    stores_codebooks = True
    size_needs_coding = True       # the word count is known only after coding

    @classmethod
    def check_payload(cls, payload, info) -> None:
        cls.parse_head(payload, info)

    @classmethod
    def encode(cls, ct: CodebookTensor, *, precision: int | None = None, chunk_size: int | None = None,
               counts=None, threads: int | None = None, **_options) -> EncodedPayload:
        """Codec 2 payload of ``ct``: tables at ``precision`` (None: chosen from the histogram, see
        `acqe_format.rans.choose_precision`), chunks of ``chunk_size`` symbols. ``counts`` [n_contexts, K]
        is the per-context histogram of ``ct.indices`` when the caller already has it (the encoder's
        assignment kernel counts as it assigns): it spares a pass over the indices."""
        chunk_size = chunk_size or C.DEFAULT_CHUNK_SYMBOLS
        if precision is not None and not C.MIN_PRECISION <= precision <= C.MAX_PRECISION:
            raise ValueError(f"precision must be in {C.MIN_PRECISION}..{C.MAX_PRECISION}")
        if not 1 <= chunk_size <= C.MAX_CHUNK_SYMBOLS:
            raise ValueError(f"chunk_size must be in 1..{C.MAX_CHUNK_SYMBOLS}")
        payload, checked = rans_payload(ct, precision, chunk_size, threads, counts)
        return EncodedPayload(cls.codec_id, payload, checked, ct.decoded_dtype)

    @classmethod
    def payload_size(cls, ct: CodebookTensor, **options) -> int:
        """Exact, by coding (see ``size_needs_coding``); :meth:`size_estimate` sizes a plan without coding."""
        return cls.encode(ct, **options).size

    @staticmethod
    def size_estimate(k: int, n_tables: int, rows: int, numel: int, index_bits: float, chunk_size: int) -> float:
        """Payload bytes of a tensor whose indices cost ``index_bits`` in total (ideal code length), before
        it is coded: the exact head (:func:`rans_head_length`, no row scales) plus the words, each chunk's
        final state costing about 1.5 words on average."""
        n_chunks = -(-numel // chunk_size)
        return (rans_head_length(k, rows, n_tables, numel, chunk_size, False, n_tables > 1)
                + 4 * (np.ceil(index_bits / 32.0) + 1.5 * n_chunks))

    @classmethod
    def check_entry(cls, info) -> None:
        _check_float_entry(info, "CODEBOOK_RANS")
        if info.checked_length > info.payload_length or info.checked_length < RANS_HEAD.size:
            raise LayoutError(f"tensor {info.name!r}: CODEBOOK_RANS checked_length {info.checked_length} "
                              f"outside {RANS_HEAD.size}..payload_length {info.payload_length}")

    @classmethod
    def parse_head(cls, payload, info):
        """Validates the CRC-checked head; returns a dict of views (nothing proportional to numel)."""
        name = info.name
        k, precision, scale_mode, context_mode, reserved, n_tables, chunk_size = RANS_HEAD.unpack_from(payload, 0)
        _check_head_start(name, k, reserved)
        if not C.MIN_PRECISION <= precision <= C.MAX_PRECISION:
            raise CodecError(f"tensor {name!r}: precision {precision} outside {C.MIN_PRECISION}..{C.MAX_PRECISION}")
        if scale_mode not in (C.SCALE_NONE, C.SCALE_ROW_F32):
            raise CodecError(f"tensor {name!r}: unknown scale mode {scale_mode}")
        if context_mode not in (C.CONTEXT_NONE, C.CONTEXT_ROW_U16):
            raise CodecError(f"tensor {name!r}: unknown context mode {context_mode}")
        if context_mode == C.CONTEXT_NONE and n_tables != 1:
            raise CodecError(f"tensor {name!r}: {n_tables} frequency tables without row contexts (must be 1)")
        if not 1 <= n_tables <= C.MAX_TABLES:
            raise LimitExceededError(f"tensor {name!r}: {n_tables} frequency tables (limit {C.MAX_TABLES})")
        if n_tables << precision > C.MAX_TABLE_SLOTS:
            raise LimitExceededError(f"tensor {name!r}: {n_tables} tables x 2^{precision} slots exceed "
                                     f"{C.MAX_TABLE_SLOTS}")
        if not 1 <= chunk_size <= C.MAX_CHUNK_SYMBOLS:
            raise LimitExceededError(f"tensor {name!r}: chunk size {chunk_size} outside 1..{C.MAX_CHUNK_SYMBOLS}")
        rows, _ = rows_of(info.shape)
        n_chunks = -(-info.numel // chunk_size)
        pos = RANS_HEAD.size + 4 * k + (4 * rows if scale_mode else 0) + (2 * rows if context_mode else 0)
        pad = -pos % 4
        head_len = rans_head_length(k, rows, n_tables, info.numel, chunk_size, bool(scale_mode), bool(context_mode))
        if head_len != info.checked_length:
            raise LayoutError(f"tensor {name!r}: CODEBOOK_RANS head is {head_len} bytes, checked_length says "
                              f"{info.checked_length}")
        pos = RANS_HEAD.size
        codebook, pos = _take(payload, pos, k, "<f4", "codebook", name)
        _check_finite(codebook, "codebook", name)
        scales = contexts = None
        if scale_mode:
            scales, pos = _take(payload, pos, rows, "<f4", "row scales", name)
            _check_finite(scales, "row scales", name)
        if context_mode:
            contexts, pos = _take(payload, pos, rows, "<u2", "row contexts", name)
            if contexts.size and int(contexts.max()) >= n_tables:
                raise CodecError(f"tensor {name!r}: row context {int(contexts.max())} >= {n_tables} tables")
        if any(payload[pos:pos + pad]):
            raise LayoutError(f"tensor {name!r}: non-zero padding after the row contexts")
        pos += pad
        freqs, pos = _take(payload, pos, n_tables * k, "<u4", "frequency tables", name)
        freqs = freqs.reshape(n_tables, k)
        sums = freqs.sum(axis=1, dtype=np.uint64)
        bad = np.flatnonzero(sums != (1 << precision))
        if bad.size:
            t = int(bad[0])
            raise CodecError(f"tensor {name!r}: frequency table {t} sums to {int(sums[t])}, not 2^{precision}")
        table, pos = _take(payload, pos, 2 * n_chunks, "<u4", "chunk table", name)
        table = table.reshape(n_chunks, 2)
        # exact (Python ints): a uint64 sum wraps once a forged chunk table holds 2^32 chunks (spec §1.1)
        words_total = int(np.add.reduce(table[:, 0], dtype=object)) if n_chunks else 0
        if info.checked_length + 4 * words_total != info.payload_length:
            raise LayoutError(f"tensor {name!r}: chunks hold {4 * words_total} bytes, payload has "
                              f"{info.payload_length - info.checked_length} after the head")
        return dict(k=k, precision=precision, codebook=codebook, scales=scales, contexts=contexts,
                    freqs=freqs, chunk_size=chunk_size, chunk_table=table, rows=rows)

    @classmethod
    def decode_indices(cls, payload, info, head, threads=None) -> np.ndarray:
        name = info.name
        table = head["chunk_table"]
        n_chunks = table.shape[0]
        counts = table[:, 0].astype(np.int64)
        starts = info.checked_length + 4 * np.concatenate([[0], np.cumsum(counts)[:-1]]) if n_chunks else counts
        for c in range(n_chunks):
            s = int(starts[c])
            got = crc32(payload[s:s + 4 * int(counts[c])])
            if got != int(table[c, 1]):
                raise ChecksumMismatchError(f"tensor {name!r}: chunk {c} CRC-32 is {got:08x}, "
                                            f"chunk table says {int(table[c, 1]):08x}")
        words = np.frombuffer(payload, dtype="<u4", offset=info.checked_length)
        return _rans_decode(words, counts, head, info, threads)

    @classmethod
    def decode(cls, payload, info, threads=None, out_dtype=None) -> np.ndarray:
        head = cls.parse_head(payload, info)
        idx = cls.decode_indices(payload, info, head, threads)
        return _decoded_values(head["codebook"], idx, head["scales"], info, out_dtype, threads)

    @classmethod
    def decode_parts(cls, payload, info, threads=None) -> CodebookTensor:
        head = cls.parse_head(payload, info)
        idx = cls.decode_indices(payload, info, head, threads)
        return _parts(info, head["codebook"], head["scales"], head["contexts"], idx)


def _rans_decode(words, counts, head, info, threads):
    """Decode every chunk's indices (chunk CRCs already checked); coder errors become CodecError."""
    if info.numel == 0:
        return np.zeros(0, dtype=np.uint16)
    rans = _rans()
    row_length = rows_of(info.shape)[1]
    try:
        return rans.decode_chunks(words, counts, info.numel, head["freqs"], head["contexts"], row_length,
                                  head["precision"], head["chunk_size"], threads=threads)
    except CodecError as e:
        raise CodecError(f"tensor {info.name!r}: {e}") from None


def _fallback_table(k: int, precision: int) -> np.ndarray:
    t = np.zeros(k, dtype=np.uint32)
    t[0] = 1 << precision
    return t


def rans_tables(ct: CodebookTensor, precision: int | None, counts=None):
    """(precision, n_tables, uint32 [T, K] tables) the writer stores for `ct`: `quantize_frequencies` of
    each context's histogram; a context with no symbols gets all the mass on symbol 0. ``counts``: the
    histogram when the caller has it (rows beyond the last used context must be zero)."""
    rans = _rans()
    k = ct.codebook.size
    contexts = None if ct.row_contexts is None else np.asarray(ct.row_contexts, dtype=np.uint16)
    n_tables = 1 if contexts is None or contexts.size == 0 else int(contexts.max()) + 1
    if counts is None:
        counts = _histograms(ct, contexts, n_tables)
    else:
        counts = np.asarray(counts, dtype=np.int64).reshape(-1, k)
        if counts.shape[0] < n_tables or counts[n_tables:].any() or int(counts.sum()) != ct.numel:
            raise ValueError(f"counts of shape {counts.shape} and total {int(counts.sum())} are not the histogram "
                             f"of {ct.numel} indices in {n_tables} contexts")
        counts = counts[:n_tables]
    used = counts.sum(axis=1) > 0
    if precision is None:
        precision = rans.choose_precision(counts[used]) if used.any() else rans.DEFAULT_PRECISION
    tables = np.stack([rans.quantize_frequencies(counts[t], precision) if used[t]
                       else _fallback_table(k, precision) for t in range(n_tables)]).astype(np.uint32)
    return precision, n_tables, tables


def _histograms(ct: CodebookTensor, contexts, n_tables: int) -> np.ndarray:
    """int64 [n_tables, K]: how often each index occurs in the rows of each context."""
    rows, row_length = rows_of(ct.shape)
    k = ct.codebook.size
    idx = np.asarray(ct.indices)
    counts = np.zeros((n_tables, k), dtype=np.int64)
    if contexts is None:
        counts[0] = np.bincount(idx, minlength=k)
    elif idx.size:
        flat = counts.reshape(-1)
        step = max(1, _BLOCK // row_length)
        for r0 in range(0, rows, step):                      # histogram per context, in bounded blocks
            r1 = min(rows, r0 + step)
            key = np.repeat(contexts[r0:r1].astype(np.int64) * k, row_length)
            key += idx[r0 * row_length:r1 * row_length]
            flat += np.bincount(key, minlength=n_tables * k)
    return counts


def rans_payload(ct: CodebookTensor, precision: int | None, chunk_size: int,
                 threads: int | None = None, counts=None) -> tuple[bytes, int]:
    """(payload, checked_length) of codec 2 for `ct` (``counts``: see :func:`rans_tables`)."""
    rans = _rans()
    rows, row_length = rows_of(ct.shape)
    k = ct.codebook.size
    contexts = None if ct.row_contexts is None else np.asarray(ct.row_contexts, dtype=np.uint16)
    precision, n_tables, tables = rans_tables(ct, precision, counts)
    if n_tables << precision > C.MAX_TABLE_SLOTS:
        raise CannotEncode(f"{n_tables} tables at precision {precision} exceed {C.MAX_TABLE_SLOTS} slots")
    if ct.numel:
        enc = rans.encode_chunks(ct.indices, tables, contexts, row_length, precision, chunk_size, threads=threads)
        words, chunk_words = enc.words, enc.chunk_words
    else:
        words, chunk_words = np.zeros(0, np.uint32), np.zeros(0, np.int64)
    parts = [RANS_HEAD.pack(k, precision, C.SCALE_NONE if ct.row_scales is None else C.SCALE_ROW_F32,
                            C.CONTEXT_NONE if contexts is None else C.CONTEXT_ROW_U16, 0, n_tables, chunk_size),
             ct.codebook.astype("<f4").tobytes()]
    if ct.row_scales is not None:
        parts.append(np.asarray(ct.row_scales, dtype="<f4").tobytes())
    if contexts is not None:
        parts.append(contexts.astype("<u2").tobytes())
    pos = sum(len(p) for p in parts)
    parts.append(b"\0" * (-pos % 4))
    parts.append(tables.astype("<u4").tobytes())
    wbytes = words.astype("<u4").tobytes()
    table = np.zeros((chunk_words.size, 2), dtype="<u4")
    at = 0
    for c, n in enumerate(chunk_words.tolist()):
        table[c] = (n, crc32(wbytes[at:at + 4 * n]))
        at += 4 * n
    parts.append(table.tobytes())
    checked = sum(len(p) for p in parts)
    parts.append(wbytes)
    return b"".join(parts), checked
