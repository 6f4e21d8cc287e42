"""`AcqeWriter`: builds a `.acqe` file deterministically and atomically.

Payloads are spooled to an anonymous temporary file as they are added; `close()` writes header, section
table, directory, metadata, assets and the spooled payloads to a temporary file next to the target,
fsyncs it, renames it over the target and fsyncs the folder. An exception (or `abort()`) before that
leaves nothing under the target name. Same inputs in the same order give the same bytes.

With `compress_sections=True` the DIRECTORY and METADATA sections are stored zlib-compressed (format 1.1,
spec §4.1), each only when that is smaller; the file is then version 1.1 with the COMPRESSED_SECTIONS
feature bit. Without it (the default), or when nothing got smaller, the file is a plain 1.0 file.
"""
from __future__ import annotations

import enum
import hashlib
import os
import struct
import zlib

import numpy as np

from acqe_format import constants as C
from acqe_format.atomic import atomic_write, scratch_file
from acqe_format import dtypes
from acqe_format.codecs import CannotEncode, EncodedPayload, codebook_codecs, codec_by_name, get_codec
from acqe_format.codecs import codebook as cbk
from acqe_format.codecs.raw import RawCodec
from acqe_format.errors import WriteOrderError
from acqe_format.layout import (U64, DirEntry, Header, SectionEntry, TensorInfo, check_asset_name, check_asset_names_unique,
                                checked_numel, has_control_character,
                                crc32, directory_size, pack_assets, pack_footer)
from acqe_format.metadata import dump_metadata


class WriterState(enum.Enum):
    OPEN = "open"          # accepting metadata, assets and tensors
    CLOSED = "closed"      # file written and renamed into place
    ABORTED = "aborted"    # nothing written under the target name


def stored_section(raw: bytes, compress: bool) -> tuple[bytes, int]:
    """(stored bytes, section flags) of a DIRECTORY or METADATA section: u64 raw_length + zlib level 9
    when `compress` and that is smaller than the raw bytes, else the raw bytes."""
    if compress:
        z = zlib.compress(raw, C.ZLIB_LEVEL)
        if C.COMPRESSED_PREFIX_SIZE + len(z) < len(raw):
            return U64.pack(len(raw)) + z, C.SECTION_FLAG_REQUIRED | C.SECTION_FLAG_COMPRESSED
    return raw, C.SECTION_FLAG_REQUIRED


def directory_size_estimate(entries, compressed: bool) -> int:
    """Bytes the DIRECTORY of ``entries`` (``(name, shape)`` pairs) will take, before the payloads exist.
    Uncompressed: exact (:func:`~acqe_format.layout.directory_size`). Compressed: zlib of the names and
    shapes (long shared prefixes: ~20x smaller) plus ~12 bytes per entry for the payload offset, lengths
    and CRC, which barely compress (measured on the demo model: 3.7 kB + 10.6 kB for 907 entries)."""
    raw = directory_size(entries)
    if not compressed:
        return raw
    text = b"".join(n.encode() + struct.pack(f"<{len(sh)}Q", *sh) for n, sh in entries)
    return min(raw, C.COMPRESSED_PREFIX_SIZE + len(zlib.compress(text, C.ZLIB_LEVEL)) + 12 * len(entries) + 4)


def overhead_estimate(metadata: bytes, assets: dict[str, bytes], entries, alignment: int,
                      compress_sections: bool) -> int:
    """Every byte of a file but its payloads and the padding between them, before the payloads exist
    (an encoder's budget): header, a four-entry section table, footer, up to one alignment of padding
    per section, the stored ``metadata`` with 64 bytes of slack (an encoder writes the final sizes into
    it later), the assets (with 16 bytes of slack) and the directory (:func:`directory_size_estimate`)."""
    fixed = (C.HEADER_SIZE + 4 * C.SECTION_ENTRY_SIZE + C.FOOTER_SIZE + 4 * alignment
             + len(stored_section(metadata, compress_sections)[0]) + 64)
    fixed += sum(8 + len(n.encode()) + len(b) for n, b in assets.items()) + 16
    return fixed + directory_size_estimate(entries, compress_sections)


def padding_estimate(payload_bytes: int | None, alignment: int) -> float:
    """Expected padding after a payload: payloads start aligned, so one whose size is a multiple of the
    alignment adds none; any other (or one of unknown size, ``None``) half an alignment on average."""
    if payload_bytes is not None and payload_bytes % alignment == 0:
        return 0
    return (alignment - 1) / 2


class AcqeWriter:
    """Write an `.acqe` file.

    ``compress_sections=True`` stores DIRECTORY and METADATA zlib-compressed (level 9) where that is smaller:
    the file is then format 1.1 with the COMPRESSED_SECTIONS feature (readers of 1.0 refuse it cleanly).
    Off by default; a file that compresses nothing is written as a 1.0 file.

    Example:
        >>> import numpy as np
        >>> from acqe_format import AcqeReader, AcqeWriter
        >>> with AcqeWriter("/tmp/doc-example.acqe") as w:
        ...     w.set_metadata({"architecture": "example"})
        ...     w.add_raw("x", np.arange(6, dtype=np.float32).reshape(2, 3))
        >>> AcqeReader("/tmp/doc-example.acqe").read("x").tolist()
        [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    """

    def __init__(self, path, alignment: int = C.DEFAULT_ALIGNMENT, *, precision: int | None = None,
                 chunk_size: int | None = None, compress_sections: bool = False):
        if not (alignment & (alignment - 1) == 0 and C.MIN_ALIGNMENT <= alignment <= C.MAX_ALIGNMENT):
            raise ValueError(f"alignment must be a power of two in {C.MIN_ALIGNMENT}..{C.MAX_ALIGNMENT}")
        self.path = os.path.abspath(os.fspath(path))
        self.alignment = alignment
        self.precision = precision
        self.chunk_size = chunk_size
        self.compress_sections = bool(compress_sections)
        self._folder = os.path.dirname(self.path)
        self._spool = scratch_file(self.path)           # a missing or read-only folder: an error naming path
        self._spool_len = 0
        self._entries: list[tuple] = []
        self._names: set[bytes] = set()
        self._metadata = b"{}"
        self._assets: dict[bytes, bytes] = {}
        self._asset_keys: set = set()         # spec §9 rules 5-6: names folded to ASCII lower case
        self._asset_folders: set = set()
        self.state = WriterState.OPEN

    # --- state machine -------------------------------------------------------------------------
    def _require_open(self, what: str) -> None:
        if self.state is not WriterState.OPEN:
            raise WriteOrderError(f"{what} after the writer was {self.state.value}")

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False

    def abort(self) -> None:
        """Drop everything; nothing is written under the target name."""
        if self.state is WriterState.OPEN:
            self.state = WriterState.ABORTED
            self._spool.close()

    # --- inputs --------------------------------------------------------------------------------
    def set_metadata(self, metadata: dict) -> None:
        """Set (or replace) the JSON metadata; refused unless it is strict, finite, inert JSON."""
        self._require_open("set_metadata")
        self._metadata = dump_metadata(metadata)

    def add_asset(self, name: str, data: bytes) -> None:
        """Embed a named file (e.g. "tokenizer/vocab.json"); names are safe relative paths."""
        self._require_open("add_asset")
        nb = self._name_bytes(name, "asset")
        check_asset_name(name)
        if len(self._assets) >= C.MAX_ASSETS:
            raise ValueError(f"more than {C.MAX_ASSETS} assets")
        check_asset_names_unique(name, self._asset_keys, self._asset_folders)
        self._assets[nb] = bytes(data)

    def add_raw(self, name: str, array, dtype=None) -> None:
        """Add a tensor stored losslessly (codec RAW). `dtype` defaults to the array's; "bfloat16" takes
        uint16 bit patterns or float32 values (rounded to nearest even)."""
        self._require_open("add_raw")
        nb = self._check_new_name(name)
        shape = tuple(int(d) for d in np.shape(array))
        self._check_shape(name, shape)
        enc = RawCodec.encode(array, dtype)
        self._append(nb, shape, enc.decoded_dtype, enc)

    def add_codebook(self, name: str, ct: cbk.CodebookTensor, source_dtype: str = "float32", *,
                     codec=None, precision: int | None = None, chunk_size: int | None = None,
                     counts=None) -> C.CodecId:
        """Add a codebook tensor with the smallest codebook codec (CODEBOOK_RANS, or CODEBOOK_PACKED when
        that is no larger), or with ``codec`` ("rans", "packed" or an id). ``counts``: the per-context
        index histogram, when the caller already has it (spares the entropy coder a pass). Returns the
        codec used."""
        self._require_open("add_codebook")
        nb = self._check_new_name(name)
        if not isinstance(ct, cbk.CodebookTensor):
            raise TypeError("add_codebook takes a CodebookTensor")
        if dtypes.canonical(source_dtype) not in dtypes.FLOATS:
            raise ValueError(f"source_dtype must be a float type, not {source_dtype}")
        self._check_shape(name, ct.shape)
        options = dict(precision=precision or self.precision, chunk_size=chunk_size or self.chunk_size,
                       counts=counts)
        enc = self._encode_codebook(ct, codec, options)
        self._append(nb, ct.shape, dtypes.canonical(source_dtype), enc)
        return enc.codec

    @staticmethod
    def _encode_codebook(ct, codec, options) -> EncodedPayload:
        """The forced codec's payload, or the smallest of the codebook codecs' (on equal sizes the later
        codec wins: packing beats rANS when it is no larger). A codec that cannot take the tensor
        (`CannotEncode`, e.g. too many contexts for rANS's slot limit; or numba missing) is skipped
        unless it was asked for."""
        if codec is not None:
            return codec_by_name(codec).encode(ct, **options)
        best = None
        for cls in codebook_codecs():
            if best is not None and not cls.size_needs_coding and cls.payload_size(ct, **options) > best.size:
                continue
            try:
                enc = cls.encode(ct, **options)
            except (CannotEncode, ImportError):
                continue
            if best is None or enc.size <= best.size:
                best = enc
        if best is None:
            raise ValueError("no codebook codec can store this tensor")
        return best

    def add_stored(self, info: TensorInfo, payload) -> None:
        """Add a tensor exactly as another file stores it: ``info`` from that file's directory and its
        CRC-checked payload bytes (:meth:`AcqeReader.stored_payload`). Nothing is decoded or re-coded."""
        self._require_open("add_stored")
        nb = self._check_new_name(info.name)
        self._check_shape(info.name, info.shape)
        payload = memoryview(payload)
        if len(payload) != info.payload_length:
            raise ValueError(f"tensor {info.name!r}: {len(payload)} payload bytes, its directory entry says "
                             f"{info.payload_length}")
        get_codec(int(info.codec)).check_entry(info)
        self._append(nb, info.shape, info.stored_dtype,
                     EncodedPayload(C.CodecId(info.codec), payload, info.checked_length, info.decoded_dtype))

    # --- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _name_bytes(name: str, what: str) -> bytes:
        if not isinstance(name, str):
            raise TypeError(f"{what} name must be str")
        nb = name.encode("utf-8")
        if not 1 <= len(nb) <= C.MAX_NAME_BYTES:
            raise ValueError(f"{what} name must be 1..{C.MAX_NAME_BYTES} UTF-8 bytes, {name[:40]!r} has {len(nb)}")
        return nb

    def _check_new_name(self, name: str) -> bytes:
        nb = self._name_bytes(name, "tensor")
        if has_control_character(name):
            raise ValueError(f"tensor name {name!r} contains a control character")
        if nb in self._names:
            raise ValueError(f"duplicate tensor name {name!r}")
        if len(self._names) >= C.MAX_TENSORS:
            raise ValueError(f"more than {C.MAX_TENSORS} tensors")
        return nb

    @staticmethod
    def _check_shape(name, shape) -> None:
        if len(shape) > C.MAX_RANK:
            raise ValueError(f"tensor {name!r}: rank {len(shape)} above {C.MAX_RANK}")
        checked_numel(shape)

    def _append(self, nb, shape, stored_dtype: str, enc: EncodedPayload) -> None:
        payload = enc.payload
        pad = -self._spool_len % self.alignment
        if pad:
            self._spool.write(b"\0" * pad)
        rel = self._spool_len + pad
        self._spool.write(payload)
        self._spool_len = rel + len(payload)
        self._names.add(nb)
        self._entries.append((nb, tuple(shape), int(C.DTYPE_BY_NAME[stored_dtype]),
                              int(C.DTYPE_BY_NAME[enc.decoded_dtype]), int(enc.codec), rel, len(payload),
                              enc.checked_length, crc32(memoryview(payload)[:enc.checked_length])))

    # --- output --------------------------------------------------------------------------------
    def _directory(self, data_offset: int) -> bytes:
        out = [len(self._entries).to_bytes(4, "little")]
        for nb, shape, sd, dd, codec, rel, length, checked, pcrc in self._entries:
            out.append(DirEntry(nb, shape, sd, dd, codec, data_offset + rel, length, checked, pcrc).pack())
        return b"".join(out)

    def _stored(self, raw: bytes) -> tuple[bytes, int]:
        return stored_section(raw, self.compress_sections)

    @staticmethod
    def _padded(raw: bytes, empty_blocks: int) -> bytes:
        """u64 raw_length + a zlib stream of `raw` whose DEFLATE data ends with `empty_blocks` empty stored
        blocks (5 bytes each: 00 00 00 FF FF) and an empty final stored block (01 00 00 FF FF), after a
        sync flush: a valid stream exactly 5 bytes longer per block, to fill a layout exactly."""
        co = zlib.compressobj(C.ZLIB_LEVEL)
        z = co.compress(raw) + co.flush(zlib.Z_SYNC_FLUSH)
        z += b"\x00\x00\x00\xff\xff" * empty_blocks + b"\x01\x00\x00\xff\xff" + struct.pack(">I", zlib.adler32(raw))
        return U64.pack(len(raw)) + z

    def _layout(self, metadata: bytes):
        """The whole layout: (raw directory length, [(kind, stored body, flags)], [(offset, length)],
        data_offset, file_length).

        The directory holds absolute payload offsets, so a compressed directory's length depends on where
        DATA starts, which depends on that length: the writer iterates from the uncompressed layout until
        the data offset is stable (it usually is after one or two rounds, since sections are aligned), and
        stores the directory uncompressed if 16 rounds do not settle it. Deterministic either way."""
        a = self.alignment
        raw_dir_len = len(self._directory(0))
        tail = [(C.SectionKind.METADATA, *self._stored(metadata))]
        if self._assets:
            tail.append((C.SectionKind.ASSETS, pack_assets(list(self._assets.items())), C.SECTION_FLAG_REQUIRED))
        table_end = C.HEADER_SIZE + C.SECTION_ENTRY_SIZE * (len(tail) + 2)

        def place(dir_len: int):
            pos, offsets = table_end, []
            for length in [dir_len] + [len(body) for _k, body, _f in tail]:
                pos = C.align_up(pos, a)
                offsets.append((pos, length))
                pos += length
            return offsets, C.align_up(pos, a)

        offsets, data_offset = place(raw_dir_len)
        directory, dflags = self._directory(data_offset), C.SECTION_FLAG_REQUIRED
        if self.compress_sections:
            # Monotone search: the data offset `at` only grows, so the rounds end (usually after one or
            # two). A compressed directory shorter than the space before `at` is lengthened with empty
            # stored blocks (5 bytes each, less than the alignment) so that DATA starts exactly at `at`.
            at = place(len(self._stored(self._directory(data_offset))[0]))[1]
            for _round in range(64):
                if at >= data_offset:
                    break                          # no gain over the uncompressed directory
                raw = self._directory(at)
                stored, flags = self._stored(raw)
                if not flags & C.SECTION_FLAG_COMPRESSED:
                    break
                offs, nxt = place(len(stored))
                k = 0
                while nxt < at and k <= a:
                    stored = self._padded(raw, k)
                    offs, nxt = place(len(stored))
                    k += 1
                if nxt == at:
                    directory, dflags, offsets, data_offset = stored, flags, offs, at
                    break
                at = max(nxt, at + a)
        bodies = [(C.SectionKind.DIRECTORY, directory, dflags)] + tail
        return raw_dir_len, bodies, offsets, data_offset, data_offset + self._spool_len + C.FOOTER_SIZE

    @property
    def data_bytes(self) -> int:
        """Bytes of the DATA section so far (payloads and the padding between them)."""
        return self._spool_len

    def file_size(self, metadata: dict | None = None) -> int:
        """The exact size `close()` would write now, with `metadata` in place of the current metadata
        (so an encoder can store honest sizes in the metadata itself)."""
        self._require_open("file_size")
        md = self._metadata if metadata is None else dump_metadata(metadata)
        return self._layout(md)[4]

    def close(self) -> None:
        """Write the file (temp + fsync + rename). Calling it twice is an error."""
        self._require_open("close")
        try:
            a = self.alignment
            directory_len, bodies, offsets, data_offset, file_length = self._layout(self._metadata)
            if directory_len + len(self._metadata) > C.MAX_DIRECTORY_PLUS_METADATA:
                raise ValueError(f"directory + metadata are {directory_len + len(self._metadata)} bytes, "
                                 f"above the {C.MAX_DIRECTORY_PLUS_METADATA}-byte limit")
            n_sections = len(bodies) + 1
            entries, blobs = [], []
            for (kind, body, flags), (off, length) in zip(bodies, offsets):
                assert len(body) == length
                entries.append(SectionEntry(int(kind), flags, off, length, crc32(body)))
                blobs.append((off, body))
            entries.append(SectionEntry(int(C.SectionKind.DATA), C.SECTION_FLAG_REQUIRED, data_offset,
                                        self._spool_len, 0))
            compressed = any(e.compressed for e in entries)
            table = b"".join(e.pack() for e in entries)
            # 1.1 only when a 1.1 feature is used: every file without compression stays a 1.0 file
            header = Header(C.FORMAT_MAJOR, C.FORMAT_MINOR if compressed else C.FORMAT_MINOR_BASE, C.HEADER_SIZE,
                            C.FEATURE_COMPRESSED_SECTIONS if compressed else 0, 0, file_length, a,
                            n_sections, C.HEADER_SIZE, crc32(table), 0).pack()

            with atomic_write(self.path) as f:
                sha = hashlib.sha256()

                def put(b):
                    sha.update(b)
                    f.write(b)
                put(header)
                put(table)
                at = len(header) + len(table)
                for off, body in blobs:
                    put(b"\0" * (off - at))
                    put(body)
                    at = off + len(body)
                put(b"\0" * (data_offset - at))
                self._spool.seek(0)
                while True:
                    b = self._spool.read(1 << 22)
                    if not b:
                        break
                    put(b)
                f.write(pack_footer(sha.digest(), file_length))
            self.state = WriterState.CLOSED
        except BaseException:
            self.state = WriterState.ABORTED
            raise
        finally:
            self._spool.close()
