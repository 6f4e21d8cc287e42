"""`AcqeReader`: validates a `.acqe` file in one linear pipeline, then decodes tensors lazily.

Opening a file reads the header, section table, footer trailer, directory and metadata (all bounded by
the 16 MiB cap, which for zlib-compressed sections of format 1.1 also bounds the inflated size, checked
before inflating) and checks everything about them; nothing proportional to a declared size is allocated
before the declared size has been checked against the file size. Payloads are memory-mapped and decoded
on demand; every decode checks the payload CRC and, for chunked codecs, every chunk CRC.
"""
from __future__ import annotations

import hashlib
import mmap
import os
import struct
import zlib
from collections.abc import Iterator

import numpy as np

from acqe_format import constants as C
from acqe_format import decode_budget, dtypes, native
from acqe_format.codecs import get_codec
from acqe_format.errors import (AcqeError, ChecksumMismatchError, DecodedSizeError, LayoutError, LimitExceededError,
                                NotAcqeFileError, TruncatedFileError, UnsupportedVersionError)
from acqe_format.layout import (DIR_FIXED_STRUCT, DIR_TAIL_STRUCT, MIN_DIR_ENTRY_SIZE, U16, U32, U64, Footer,
                                Header, SectionEntry, TensorInfo, checked_numel, crc32, has_control_character,
                                unpack_assets)
from acqe_format.metadata import parse_metadata

_KNOWN_SIGNATURES = [
    (b"PK\x03\x04", "a zip archive (a PyTorch .pt/.ckpt?)"),
    (b"\x80", "a pickle (a legacy PyTorch checkpoint?)"),
    (b"GGUF", "a GGUF file"),
    (b"\x89PNG", "a PNG image"),
]


def _describe_foreign(head: bytes, size: int) -> str:
    for sig, what in _KNOWN_SIGNATURES:
        if head.startswith(sig):
            return f"it looks like {what}"
    if size >= 9 and head[8:9] == b"{":
        return "it looks like a safetensors file"
    if head[:1] == b"\x89" and head[1:5] == b"ACQE":
        return "the magic is damaged (text-mode newline conversion?)"
    return f"it starts with {head[:8].hex(' ')}"


def _nonzero(view) -> bool:
    """True if any byte of `view` is not zero (in C, not a Python loop)."""
    b = bytes(view)
    return b.count(0) != len(b)


def _kind_name(kind: int) -> str:
    return C.SectionKind(kind).name if kind in C.SectionKind._value2member_map_ else f"kind {kind}"


def _is_pow2(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


_LARGE_TENSOR = 1 << 20     # elements from which one tensor is decoded by all threads (16+ rANS chunks)
class AcqeReader:
    """Open and validate an `.acqe` file (a path, or the file's bytes).

    Example:
        >>> r = AcqeReader("spec/vectors/valid/001-raw-f32.acqe")
        >>> [(t.name, t.shape, t.codec.name) for t in r.tensors][:1]
        [('x', (3, 5), 'RAW')]
    """

    def __init__(self, source, *, max_decoded_bytes: int | None = None):
        """``max_decoded_bytes``: refuse to decode when the tensors together would decode to more bytes
        than this (default: `acqe_format.decode_budget`'s rule, 64x the file size, at least 256 MiB).
        Opening and listing are never limited; :attr:`decoded_bytes` says what decoding would take."""
        self._max_decoded = max_decoded_bytes
        self._native = None
        self._mmap = None
        self._file = None
        if isinstance(source, (bytes, bytearray, memoryview)):
            self.path = None
            self._buf = memoryview(bytes(source))
        else:
            self.path = os.fspath(source)
            self._file = open(self.path, "rb")
            try:
                size = os.fstat(self._file.fileno()).st_size
                if size:
                    self._mmap = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
                    self._buf = memoryview(self._mmap)
                else:
                    self._buf = memoryview(b"")
            except BaseException:
                self.close()
                raise
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    # --- lifetime -----------------------------------------------------------------------------
    def close(self) -> None:
        c, self._native = getattr(self, "_native", None), None
        if c is not None:
            c.close()                      # releases its hold on the buffer first
        buf, self._buf = getattr(self, "_buf", None), memoryview(b"")
        if buf is not None:
            try:
                buf.release()
            except BufferError:
                pass
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:   # arrays still view the map: it closes when they are collected
                pass
            self._mmap = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # --- validation pipeline -------------------------------------------------------------------
    def _open(self) -> None:
        buf = self._buf
        size = len(buf)
        self.file_size = size
        head = bytes(buf[:16])
        # 1. magic
        if head[:8] != C.MAGIC:
            if size < 8 and C.MAGIC.startswith(head):
                raise TruncatedFileError(f"file is {size} bytes, shorter than the 8-byte magic")
            raise NotAcqeFileError(f"no ACQE magic at the start; {_describe_foreign(bytes(buf[:9]), size)}")
        # 2. version
        if size < 12:
            raise TruncatedFileError(f"file is {size} bytes, an .acqe file has at least {C.MIN_FILE_SIZE}")
        major, minor = struct.unpack_from("<HH", buf, 8)
        if major not in C.READER_SUPPORTED_MAJORS:
            raise UnsupportedVersionError(f"format version {major}.{minor}: this reader reads major "
                                          f"version {', '.join(map(str, C.READER_SUPPORTED_MAJORS))}")
        # 3. header
        if size < C.MIN_FILE_SIZE:
            raise TruncatedFileError(f"file is {size} bytes, an .acqe file has at least {C.MIN_FILE_SIZE}")
        hb = bytes(buf[:C.HEADER_SIZE])
        h = Header.unpack(hb)
        if crc32(hb[:60]) != h.header_crc32:
            raise ChecksumMismatchError(f"header CRC-32 is {crc32(hb[:60]):08x}, header says {h.header_crc32:08x}")
        if h.header_length != C.HEADER_SIZE:
            raise LayoutError(f"header_length is {h.header_length}, must be {C.HEADER_SIZE}")
        unknown = h.required_features & ~C.KNOWN_REQUIRED_FEATURES
        if unknown:
            raise UnsupportedVersionError(f"unknown required feature bits 0x{unknown:016x}")
        if h.file_length > size:
            raise TruncatedFileError(f"header says the file is {h.file_length} bytes, it has {size}")
        if h.file_length < size:
            raise LayoutError(f"{size - h.file_length} trailing bytes after the declared end at {h.file_length}")
        if not _is_pow2(h.alignment) or not C.MIN_ALIGNMENT <= h.alignment <= C.MAX_ALIGNMENT:
            raise LayoutError(f"alignment {h.alignment} is not a power of two in {C.MIN_ALIGNMENT}..{C.MAX_ALIGNMENT}")
        if h.section_table_offset != C.HEADER_SIZE:
            raise LayoutError(f"section table offset is {h.section_table_offset}, must be {C.HEADER_SIZE}")
        if h.section_count > C.MAX_SECTIONS:
            raise LimitExceededError(f"{h.section_count} sections (limit {C.MAX_SECTIONS})")
        footer_at = size - C.FOOTER_SIZE
        table_end = C.HEADER_SIZE + C.SECTION_ENTRY_SIZE * h.section_count
        if table_end > footer_at:
            raise LayoutError(f"section table ends at {table_end}, footer starts at {footer_at}")
        tb = bytes(buf[C.HEADER_SIZE:table_end])
        if crc32(tb) != h.section_table_crc32:
            raise ChecksumMismatchError(f"section table CRC-32 is {crc32(tb):08x}, header says {h.section_table_crc32:08x}")
        # 4. footer trailer
        footer = Footer.unpack_from(buf, footer_at)
        if footer.magic != C.FOOTER_MAGIC:
            raise LayoutError(f"footer magic is {footer.magic!r}, must be {C.FOOTER_MAGIC!r}")
        if footer.file_length != h.file_length:
            raise LayoutError(f"footer says the file is {footer.file_length} bytes, header says {h.file_length}")
        self.header = h
        self.footer_sha256 = footer.sha256
        # 5. sections: sorted, aligned, no holes or overlaps, zero padding
        sections: list[SectionEntry] = []
        by_kind: dict[int, SectionEntry] = {}
        compression = bool(h.required_features & C.FEATURE_COMPRESSED_SECTIONS)
        prev_end = table_end
        for i in range(h.section_count):
            s = SectionEntry.unpack_from(tb, i * C.SECTION_ENTRY_SIZE)
            if s.reserved:
                raise LayoutError(f"section {i}: reserved field is {s.reserved}, must be 0")
            known_flags = C.SECTION_FLAG_REQUIRED | (C.SECTION_FLAG_COMPRESSED if compression else 0)
            if s.flags & ~known_flags:
                extra = (" (COMPRESSED needs the header's COMPRESSED_SECTIONS feature bit)"
                         if s.flags & ~known_flags == C.SECTION_FLAG_COMPRESSED else "")
                raise LayoutError(f"section {i}: unknown flag bits 0x{s.flags & ~known_flags:08x}{extra}")
            if s.compressed and s.kind not in (C.SectionKind.DIRECTORY, C.SectionKind.METADATA):
                raise LayoutError(f"section {i} ({_kind_name(s.kind)}): the COMPRESSED flag is allowed only on "
                                  f"DIRECTORY and METADATA")
            want = C.align_up(prev_end, h.alignment)
            if s.offset != want:
                what = "overlaps the previous structure" if s.offset < prev_end else "leaves a gap"
                raise LayoutError(f"section {i} starts at {s.offset}, must start at {want} ({what})")
            if s.length > footer_at - s.offset:
                raise LayoutError(f"section {i} ends at {s.offset + s.length}, footer starts at {footer_at}")
            if s.kind in C.SectionKind._value2member_map_:
                if s.flags & ~C.SECTION_FLAG_COMPRESSED != C.SECTION_FLAG_REQUIRED:
                    raise LayoutError(f"section {i} ({C.SectionKind(s.kind).name}) must have flags 1, has {s.flags}")
                if s.kind in by_kind:
                    raise LayoutError(f"second {C.SectionKind(s.kind).name} section (section {i})")
                if s.kind == C.SectionKind.DATA and s.crc32 != 0:
                    raise LayoutError(f"DATA section crc32 field is {s.crc32:08x}, must be 0")
                by_kind[s.kind] = s
            elif s.flags & C.SECTION_FLAG_REQUIRED:
                raise UnsupportedVersionError(f"section {i} has unknown kind {s.kind} and is marked required")
            sections.append(s)
            prev_end = s.end
        if prev_end != footer_at:
            raise LayoutError(f"{footer_at - prev_end} bytes between the last section end {prev_end} and the footer")
        prev_end = table_end
        for i, s in enumerate(sections):
            if _nonzero(buf[prev_end:s.offset]):
                raise LayoutError(f"non-zero padding before section {i} (bytes {prev_end}..{s.offset})")
            prev_end = s.end
        for kind in (C.SectionKind.DIRECTORY, C.SectionKind.METADATA, C.SectionKind.DATA):
            if kind not in by_kind:
                raise LayoutError(f"no {kind.name} section")
        self.sections = sections
        self._by_kind = by_kind
        d, m = by_kind[C.SectionKind.DIRECTORY], by_kind[C.SectionKind.METADATA]
        if d.length + m.length > C.MAX_DIRECTORY_PLUS_METADATA:
            raise LimitExceededError(f"directory + metadata are {d.length + m.length} bytes "
                                     f"(limit {C.MAX_DIRECTORY_PLUS_METADATA})")
        # compressed sections (1.1): the limit also holds for the declared raw lengths, checked before
        # anything is inflated
        self._raw_lengths: dict[int, int] = {}
        for s, what in ((d, "DIRECTORY"), (m, "METADATA")):
            if s.compressed:
                if s.length < C.COMPRESSED_PREFIX_SIZE:
                    raise LayoutError(f"compressed {what} section is {s.length} bytes, too short for its "
                                      f"{C.COMPRESSED_PREFIX_SIZE}-byte raw_length")
                (self._raw_lengths[s.offset],) = U64.unpack_from(self._buf, s.offset)
        raw_total = self.raw_length(d) + self.raw_length(m)
        if raw_total > C.MAX_DIRECTORY_PLUS_METADATA:
            raise LimitExceededError(f"directory + metadata are {raw_total} bytes after decompression "
                                     f"(limit {C.MAX_DIRECTORY_PLUS_METADATA})")
        # 6. directory
        db = self._section_contents(d, "DIRECTORY")
        self._tensors = self._parse_directory(db, by_kind[C.SectionKind.DATA], h.alignment)
        self._by_name = {t.name: t for t in self._tensors}
        data_end = by_kind[C.SectionKind.DATA].end
        self._next_offset = {a.name: (data_end if b is None else b.payload_offset)
                             for a, b in zip(self._tensors, self._tensors[1:] + [None])}
        # 7. metadata
        self.metadata = parse_metadata(self._section_contents(m, "METADATA"))
        self._model_info = None
        self._assets = None
        self.decoded_bytes = sum(t.numel * dtypes.itemsize(t.decoded_dtype) for t in self._tensors)
        if self._max_decoded is None:
            self._max_decoded = decode_budget.default_limit(size)
        # 8. the C decoder, on the same bytes (it validates them again, in spec §14's order, and agrees)
        if native.enabled() and size:
            self._native = native.open_buffer(buf)
            self._index = {t.name: i for i, t in enumerate(self._tensors)}

    @property
    def max_decoded_bytes(self) -> int:
        """The most bytes this reader lets the file's tensors decode to (see ``__init__``)."""
        return self._max_decoded

    @property
    def expansion(self) -> float:
        """Decoded bytes of all tensors per byte of the file."""
        return self.decoded_bytes / max(self.file_size, 1)

    def _check_decoded_budget(self) -> None:
        """Refuse to decode past this reader's budget, but only a file that is valid as far as can be told
        without decoding: a tensor that declares more elements than its payload can encode is an invalid
        file (spec §10.4), and that error, not the budget, is what the caller must hear."""
        if self.decoded_bytes > self._max_decoded:
            for t in self._tensors:
                get_codec(t.codec).check_payload(self._payload(t), t)
            raise DecodedSizeError(
                f"the tensors decode to {self.decoded_bytes:,} bytes, {self.expansion:,.0f}x the file's "
                f"{self.file_size:,} bytes; this reader's limit is {self._max_decoded:,} bytes "
                f"(raise max_decoded_bytes to decode it)", decoded=self.decoded_bytes, limit=self._max_decoded)

    def _section_bytes(self, s: SectionEntry, what: str) -> bytes:
        """The stored bytes of a section, CRC-checked."""
        if s.compressed:       # CRC straight from the buffer: no copy of a (possibly long) stream
            got = crc32(self._buf[s.offset:s.end])
            b = b""
        else:
            b = bytes(self._buf[s.offset:s.end])
            got = crc32(b)
        if got != s.crc32:
            raise ChecksumMismatchError(f"{what} section CRC-32 is {got:08x}, section table says {s.crc32:08x}")
        return b

    def _section_contents(self, s: SectionEntry, what: str) -> bytes:
        """The contents of a section: its stored bytes, or for a compressed section (spec §4.1) the
        inflated bytes. CRC of the stored bytes first, then the zlib stream."""
        b = self._section_bytes(s, what)
        return self._inflate(s, what) if s.compressed else b

    def _inflate(self, s: SectionEntry, what: str) -> bytes:
        """Inflate a compressed section: exactly one zlib stream that ends at the end of the section and
        inflates to exactly raw_length bytes. At most raw_length + 1 output bytes are ever produced, and
        the input is fed in 64 KiB pieces, so neither a bomb nor a long stream can make this allocate
        more than about raw_length + 64 KiB."""
        raw_len = self.raw_length(s)
        stored = self._buf[s.offset + C.COMPRESSED_PREFIX_SIZE:s.end]
        n = len(stored)
        d = zlib.decompressobj()
        out = bytearray()
        pos = 0
        step = 1 << 16
        if n >= 2 and stored[1] & 0x20:
            raise LayoutError(f"compressed {what} section: the zlib stream asks for a preset dictionary (FDICT)")
        try:
            while pos < n and not d.eof:
                data = stored[pos:pos + step]
                pos += len(data)
                while True:
                    out += d.decompress(data, raw_len - len(out) + 1)    # max_length >= 1: never unbounded
                    if len(out) > raw_len:
                        raise LayoutError(f"compressed {what} section inflates to more than its raw_length "
                                          f"{raw_len}")
                    data = d.unconsumed_tail
                    if d.eof or not data:
                        break
        except zlib.error as e:
            raise LayoutError(f"compressed {what} section: invalid zlib stream ({e})") from None
        if not d.eof:
            raise LayoutError(f"compressed {what} section: the zlib stream does not end inside the section")
        trailing = len(d.unused_data) + (n - pos)
        if trailing:
            raise LayoutError(f"compressed {what} section: {trailing} trailing bytes after the end of the zlib stream")
        if len(out) != raw_len:
            raise LayoutError(f"compressed {what} section inflates to {len(out)} bytes, its raw_length says {raw_len}")
        return bytes(out)

    def raw_length(self, section: SectionEntry) -> int:
        """Length of a section's contents: its stored `length`, or for a compressed DIRECTORY or METADATA
        section (format 1.1) the `raw_length` it declares (the size after inflating)."""
        if section.compressed and section.offset in getattr(self, "_raw_lengths", {}):
            return self._raw_lengths[section.offset]
        return section.length

    @property
    def compressed(self) -> bool:
        """True if any section of the file is stored zlib-compressed (format 1.1)."""
        return any(s.compressed for s in self.sections)

    def _parse_directory(self, b: bytes, data: SectionEntry, alignment: int) -> list[TensorInfo]:
        n = len(b)
        if n < 4:
            raise LayoutError(f"directory is {n} bytes, too short for its tensor count")
        (count,) = U32.unpack_from(b, 0)
        if count > C.MAX_TENSORS:
            raise LimitExceededError(f"directory declares {count} tensors (limit {C.MAX_TENSORS})")
        if count * MIN_DIR_ENTRY_SIZE > n - 4:
            raise LayoutError(f"directory declares {count} tensors but holds only {n - 4} bytes of entries")
        pos = 4
        out: list[TensorInfo] = []
        names: set[str] = set()
        prev_end = data.offset

        def need(k, i):
            if pos + k > n:
                raise LayoutError(f"directory entry {i} runs past the end of the directory ({n} bytes)")

        for i in range(count):
            need(2, i)
            (nlen,) = U16.unpack_from(b, pos)
            if nlen == 0:
                raise LayoutError(f"directory entry {i} has an empty name")
            if nlen > C.MAX_NAME_BYTES:
                raise LimitExceededError(f"directory entry {i}: name of {nlen} bytes (limit {C.MAX_NAME_BYTES})")
            pos += 2
            need(nlen + DIR_FIXED_STRUCT.size, i)
            try:
                name = b[pos:pos + nlen].decode("utf-8")
            except UnicodeDecodeError:
                raise LayoutError(f"directory entry {i}: name is not valid UTF-8") from None
            if has_control_character(name):
                raise LayoutError(f"directory entry {i}: name {name!r} contains a control character")
            if name in names:
                raise LayoutError(f"duplicate tensor name {name!r}")
            names.add(name)
            pos += nlen
            rank, sd, dd, r8, codec, r16 = DIR_FIXED_STRUCT.unpack_from(b, pos)
            pos += DIR_FIXED_STRUCT.size
            if r8 or r16:
                raise LayoutError(f"tensor {name!r}: reserved directory fields are not zero")
            if rank > C.MAX_RANK:
                raise LimitExceededError(f"tensor {name!r}: rank {rank} (limit {C.MAX_RANK})")
            for code in (sd, dd):
                if code not in C.DType._value2member_map_:
                    raise UnsupportedVersionError(f"tensor {name!r}: unknown dtype code {code}")
            codec_cls = get_codec(codec)
            need(8 * rank + DIR_TAIL_STRUCT.size, i)
            shape = struct.unpack_from(f"<{rank}Q", b, pos)
            pos += 8 * rank
            numel = checked_numel(shape)
            off, length, checked, pcrc = DIR_TAIL_STRUCT.unpack_from(b, pos)
            pos += DIR_TAIL_STRUCT.size
            want = C.align_up(prev_end, alignment)
            if off != want:
                what = "overlaps the previous payload" if off < prev_end else "is not where the layout puts it"
                raise LayoutError(f"tensor {name!r}: payload at {off} {what} (expected {want})")
            if length > data.end - off:
                raise LayoutError(f"tensor {name!r}: payload ends at {off + length}, DATA section ends at {data.end}")
            if checked > length:
                raise LayoutError(f"tensor {name!r}: checked_length {checked} > payload_length {length}")
            info = TensorInfo(name, tuple(shape), C.dtype_name(sd), C.dtype_name(dd), C.CodecId(codec), numel,
                              off, length, checked, pcrc)
            codec_cls.check_entry(info)
            out.append(info)
            prev_end = off + length
        if pos != n:
            raise LayoutError(f"{n - pos} trailing bytes after the last directory entry")
        if prev_end != data.end:
            raise LayoutError(f"DATA section ends at {data.end}, the last payload ends at {prev_end}")
        return out

    # --- listing -------------------------------------------------------------------------------
    @property
    def version(self) -> tuple[int, int]:
        return (self.header.major, self.header.minor)

    @property
    def tensors(self) -> list[TensorInfo]:
        return list(self._tensors)

    def info(self, name: str) -> TensorInfo:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"no tensor named {name!r}") from None

    def __contains__(self, name) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self._tensors)

    @property
    def assets(self) -> dict[str, bytes]:
        """Embedded files (name -> bytes); the section CRC is checked on first access."""
        if self._assets is None:
            s = self._by_kind.get(C.SectionKind.ASSETS)
            self._assets = {} if s is None else unpack_assets(self._section_bytes(s, "ASSETS"))
        return dict(self._assets)

    @property
    def model_info(self):
        """The model conventions of :attr:`metadata` (an `acqe_format.model.ModelInfo`): checked against the
        metadata schema once per open reader (a runtime's loaders each ask for them; the check walks the
        whole metadata, ReCaT profiles included). MetadataError when they do not hold."""
        if self._model_info is None:
            from acqe_format.model import ModelInfo      # the model layer sits above the container

            self._model_info = ModelInfo.from_metadata(self.metadata)
        return self._model_info

    # --- decoding ------------------------------------------------------------------------------
    def stored_payload(self, name: str) -> memoryview:
        """The tensor's payload exactly as stored (a view into the file), its CRC and the padding after it
        checked; nothing decoded. With :meth:`AcqeWriter.add_stored` it copies tensors between files."""
        return self._payload(self.info(name))

    def _payload(self, info: TensorInfo) -> memoryview:
        buf = self._buf
        end = info.payload_offset + info.payload_length
        nxt = self._next_offset[info.name]
        if _nonzero(buf[end:nxt]):
            raise LayoutError(f"tensor {info.name!r}: non-zero padding after its payload (bytes {end}..{nxt})")
        payload = buf[info.payload_offset:end]
        got = crc32(payload[:info.checked_length])
        if got != info.payload_crc32:
            raise ChecksumMismatchError(f"tensor {info.name!r}: payload CRC-32 is {got:08x}, directory says "
                                        f"{info.payload_crc32:08x}")
        return payload

    def read(self, name: str, threads: int | None = None, dtype: str | None = None) -> np.ndarray:
        """Decode one tensor (CRC-checked, bit-exact). BF16 comes back as uint16 bit patterns.

        ``dtype`` ("float16", "bfloat16", "float32") casts a floating tensor exactly as decoding it and then
        ``torch.Tensor.to(dtype)`` would (round to nearest, ties to even; float64 via float32, as torch does);
        integer and bool tensors are returned as decoded. A codebook tensor that decodes to float32 is rounded inside the reconstruction kernel
        (one pass, no float32 copy): the result is the same.
        """
        info = self.info(name)
        self._check_decoded_budget()
        decoded = info.decoded_dtype
        dtype = None if dtype is None else dtypes.canonical(dtype)     # aliases: "fp16", torch.float16
        out_dtype = None if dtype is None or dtype == decoded or decoded not in dtypes.FLOATS else dtypes.cast_target(dtype)
        if self._native is not None:
            return self._native_read(info, out_dtype, threads)
        codec = get_codec(info.codec)
        return codec.decode(self._payload(info), info, threads, out_dtype=out_dtype)

    def _native_read(self, info: TensorInfo, out_dtype: str | None, threads: int | None) -> np.ndarray:
        """Decode through libacqe straight into a new array (its CRC, padding and codec checks are the
        spec's, as the Python decoders'; tests/test_libacqe.py holds them equal)."""
        out = np.empty(info.shape, dtype=dtypes.array_dtype(out_dtype or info.decoded_dtype))
        if threads is None:
            threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        try:
            self._native.decode_into(self._index[info.name], out, out_dtype, max(1, int(threads)))
        except native._libacqe.LibAcqeError as exc:
            raise native.translate(exc) from None
        return out

    def read_codebook(self, name: str, threads: int | None = None):
        """The stored parts of a codebook-coded tensor as a :class:`CodebookTensor` (codebook, row
        scales, row contexts, indices as uint8 when K <= 256), CRC-checked and validated like
        :meth:`read`; ``reconstruct()`` of it equals ``read(name)``. ``None`` for a RAW tensor."""
        info = self.info(name)
        self._check_decoded_budget()
        return get_codec(info.codec).decode_parts(self._payload(info), info, threads)

    def iter_tensors(self, threads: int | None = None, dtype: str | None = None,
                     names: list[str] | None = None) -> Iterator[tuple[str, np.ndarray]]:
        """(name, array) for every tensor (or the given ``names``) in order, on `threads` threads (None:
        every available CPU). A large tensor is decoded with all threads at once (its chunks are
        independent); small ones decode several at a time in a bounded window, so memory stays about
        `2 * threads` small tensors ahead of the consumer. ``dtype``: as in :meth:`read`.

        (One tensor per thread for everything left threads idle behind a large tensor at the head of the
        window: the SD v1.4-size stand-in decoded to fp16 in 4.5-5.0 s that way, 3.5-4.0 s this way.)"""
        if threads is None:
            threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        infos = self._tensors if names is None else [self.info(n) for n in names]
        self._check_decoded_budget()
        if threads <= 1:
            for t in infos:
                yield t.name, self.read(t.name, threads=1, dtype=dtype)
            return
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(threads) as ex:
            window: deque = deque()
            for t in infos:
                if t.numel >= _LARGE_TENSOR:
                    while window:                      # keep the order: drain the small ones first
                        n, f = window.popleft()
                        yield n, f.result()
                    yield t.name, self.read(t.name, threads=threads, dtype=dtype)
                    continue
                window.append((t.name, ex.submit(self.read, t.name, 1, dtype)))
                if len(window) >= 2 * threads:
                    n, f = window.popleft()
                    yield n, f.result()
            while window:
                n, f = window.popleft()
                yield n, f.result()

    def verify(self, threads: int | None = None, progress=None) -> None:
        """Everything the spec lets a reader check: every section CRC, assets, every payload and chunk
        CRC, full decode of every tensor, every padding byte, and the footer SHA-256.

        ``progress``: called as ``progress(phase, done, total)``: ``"decode"`` in values, then
        ``"sha256"`` in bytes."""
        for i, s in enumerate(self.sections):
            if s.kind != C.SectionKind.DATA:
                self._section_bytes(s, C.SectionKind(s.kind).name if s.kind in C.SectionKind._value2member_map_
                                    else f"section {i} (kind {s.kind})")
        self.assets
        total, done = sum(t.numel for t in self.tensors), 0
        numel = {t.name: t.numel for t in self.tensors}
        for name, _array in self.iter_tensors(threads=threads):
            done += numel[name]
            if progress is not None:
                progress("decode", done, total)
        h = hashlib.sha256()
        body = self._buf[:self.file_size - C.FOOTER_SIZE]
        step = 1 << 24
        for i in range(0, len(body), step):
            h.update(body[i:i + step])
            if progress is not None:
                progress("sha256", min(i + step, len(body)), len(body))
        if h.digest() != self.footer_sha256:
            # whole digests: a damaged footer often differs only in its last bytes
            raise ChecksumMismatchError(f"file SHA-256 is {h.hexdigest()}, footer says {self.footer_sha256.hex()}")


__all__ = ["AcqeReader", "TensorInfo", "AcqeError"]
