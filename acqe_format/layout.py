"""Byte layout of the fixed structures: header, section table, directory entries, footer.

The writer packs and the reader unpacks through the same `struct` formats below, so the two can not
drift apart. Everything is little-endian (`<`).
"""
from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from acqe_format import constants as C
from acqe_format.errors import LayoutError, LimitExceededError

# magic, major, minor, header_length, required, optional, file_length, alignment, section_count,
# section_table_offset, section_table_crc32   (header_crc32 follows at byte 60)
HEADER_STRUCT = struct.Struct("<8sHHIQQQIIQI")
SECTION_STRUCT = struct.Struct("<IIQQII")      # kind, flags, offset, length, crc32, reserved
FOOTER_STRUCT = struct.Struct("<32sQ8s")       # sha256, file_length, "ACQE_END"
DIR_FIXED_STRUCT = struct.Struct("<BBBBHH")   # rank, stored, decoded, reserved, codec, reserved
DIR_TAIL_STRUCT = struct.Struct("<QQQI")      # payload_offset, payload_length, checked_length, crc
U16 = struct.Struct("<H")
U32 = struct.Struct("<I")
U64 = struct.Struct("<Q")

assert HEADER_STRUCT.size + 4 == C.HEADER_SIZE
assert SECTION_STRUCT.size == C.SECTION_ENTRY_SIZE
assert FOOTER_STRUCT.size == C.FOOTER_SIZE

# Smallest possible directory entry: name_length + 1-byte name + fixed + tail (rank 0).
MIN_DIR_ENTRY_SIZE = 2 + 1 + DIR_FIXED_STRUCT.size + DIR_TAIL_STRUCT.size
MIN_ASSET_ENTRY_SIZE = 2 + 1 + 8


def crc32(data) -> int:
    """CRC-32/ISO-HDLC (zlib's): reflected poly 0xEDB88320, init and xorout 0xFFFFFFFF."""
    return zlib.crc32(data) & 0xFFFFFFFF


@dataclass(frozen=True)
class Header:
    major: int
    minor: int
    header_length: int
    required_features: int
    optional_features: int
    file_length: int
    alignment: int
    section_count: int
    section_table_offset: int
    section_table_crc32: int
    header_crc32: int

    def pack(self) -> bytes:
        body = HEADER_STRUCT.pack(
            C.MAGIC, self.major, self.minor, self.header_length, self.required_features,
            self.optional_features, self.file_length, self.alignment, self.section_count,
            self.section_table_offset, self.section_table_crc32)
        return body + U32.pack(crc32(body))

    @classmethod
    def unpack(cls, b: bytes) -> "Header":
        (_magic, major, minor, hlen, req, opt, flen, align, nsec, sto, stcrc) = HEADER_STRUCT.unpack_from(b, 0)
        (hcrc,) = U32.unpack_from(b, 60)
        return cls(major, minor, hlen, req, opt, flen, align, nsec, sto, stcrc, hcrc)


@dataclass(frozen=True)
class SectionEntry:
    kind: int
    flags: int
    offset: int
    length: int
    crc32: int
    reserved: int = 0

    def pack(self) -> bytes:
        return SECTION_STRUCT.pack(self.kind, self.flags, self.offset, self.length, self.crc32, self.reserved)

    @classmethod
    def unpack_from(cls, b, off: int) -> "SectionEntry":
        return cls(*SECTION_STRUCT.unpack_from(b, off))

    @property
    def end(self) -> int:
        return self.offset + self.length

    @property
    def compressed(self) -> bool:
        """True if the stored bytes are u64 raw_length + a zlib stream (format 1.1, spec §4.1)."""
        return bool(self.flags & C.SECTION_FLAG_COMPRESSED)


@dataclass(frozen=True)
class DirEntry:
    """One directory record exactly as stored."""
    name: bytes
    shape: tuple[int, ...]
    stored_dtype: int
    decoded_dtype: int
    codec: int
    payload_offset: int
    payload_length: int
    checked_length: int
    payload_crc32: int
    reserved8: int = 0
    reserved16: int = 0

    def pack(self) -> bytes:
        return b"".join([
            U16.pack(len(self.name)), self.name,
            DIR_FIXED_STRUCT.pack(len(self.shape), self.stored_dtype, self.decoded_dtype, self.reserved8,
                                  self.codec, self.reserved16),
            struct.pack(f"<{len(self.shape)}Q", *self.shape),
            DIR_TAIL_STRUCT.pack(self.payload_offset, self.payload_length, self.checked_length,
                                 self.payload_crc32),
        ])

    @classmethod
    def unpack_from(cls, b, pos: int = 0) -> tuple["DirEntry", int]:
        """The inverse of :meth:`pack`: ``(entry, position after it)``. Structural only (``struct.error``
        when the bytes end early): the reader's validating parser decides what a valid entry is."""
        (nlen,) = U16.unpack_from(b, pos)
        pos += 2
        name = bytes(b[pos:pos + nlen])
        if len(name) != nlen:
            raise struct.error(f"name of {nlen} bytes runs past the end")
        pos += nlen
        rank, sd, dd, r8, codec, r16 = DIR_FIXED_STRUCT.unpack_from(b, pos)
        pos += DIR_FIXED_STRUCT.size
        shape = struct.unpack_from(f"<{rank}Q", b, pos)
        pos += 8 * rank
        off, length, checked, pcrc = DIR_TAIL_STRUCT.unpack_from(b, pos)
        pos += DIR_TAIL_STRUCT.size
        return cls(name, tuple(shape), sd, dd, codec, off, length, checked, pcrc, r8, r16), pos

    @staticmethod
    def size(name_length: int, rank: int) -> int:
        """Bytes of one directory record: u16 name length, the name, the fixed part, the shape, the tail."""
        return 2 + name_length + DIR_FIXED_STRUCT.size + 8 * rank + DIR_TAIL_STRUCT.size


def directory_size(entries) -> int:
    """Exact bytes of an uncompressed DIRECTORY holding ``entries`` (``(name, shape)`` pairs)."""
    return 4 + sum(DirEntry.size(len(name.encode("utf-8")), len(shape)) for name, shape in entries)


@dataclass(frozen=True)
class Footer:
    sha256: bytes
    file_length: int
    magic: bytes = C.FOOTER_MAGIC

    def pack(self) -> bytes:
        return FOOTER_STRUCT.pack(self.sha256, self.file_length, self.magic)

    @classmethod
    def unpack_from(cls, b, off: int) -> "Footer":
        return cls(*FOOTER_STRUCT.unpack_from(b, off))


def pack_footer(sha256: bytes, file_length: int) -> bytes:
    return Footer(sha256, file_length).pack()


_RESERVED_DEVICE_NAMES = frozenset({"con", "prn", "aux", "nul", "conin$", "conout$"}
                                   | {f"com{d}" for d in range(10)} | {f"lpt{d}" for d in range(10)})
_ASSET_FORBIDDEN = frozenset('\\:*?"<>|')


def asset_name_problem(name: str) -> str | None:
    """Why ``name`` breaks spec §9's rules 1-4 for asset names, or None."""
    if any(not 0x20 <= ord(ch) <= 0x7E for ch in name):
        return "only printable ASCII is allowed"
    if any(ch in _ASSET_FORBIDDEN for ch in name):
        return 'it holds one of \\ : * ? " < > |'
    for part in name.split("/"):
        if part == "":
            return "empty path component"
        if part in (".", ".."):
            return "'.' or '..' component"
        if part[-1] in ". ":
            return "a component ends with '.' or ' '"
        if part.split(".", 1)[0].rstrip(" ").lower() in _RESERVED_DEVICE_NAMES:
            return "a reserved device name (CON, PRN, AUX, NUL, COM0-9, LPT0-9, CONIN$, CONOUT$)"
    return None


def check_asset_name(name: str) -> None:
    """Asset names are portable relative paths (spec §9, rules 1-4): printable ASCII, none of
    \\ : * ? " < > |, '/'-separated parts that are not empty, '.' or '..', do not end with '.' or a
    space and are not Windows device names; they can be written to disk under a folder on any common
    file system without escaping it. Rules 5-6 are :func:`check_asset_names_unique`."""
    why = asset_name_problem(name)
    if why:
        raise LayoutError(f"asset name {name!r} is not a safe relative path ({why})")


def check_asset_names_unique(name: str, seen: set, folders: set) -> None:
    """Spec §9 rules 5-6 for ``name`` against the names before it: no two names equal ignoring ASCII case,
    no name that is also another's folder. ``seen`` holds the earlier names' ASCII lower-case forms,
    ``folders`` the lower-case forms of every folder they lie in (both updated)."""
    key = name.lower()            # the name is ASCII (rule 1): this is ASCII case folding
    if key in seen:
        raise LayoutError(f"duplicate asset name {name!r} (names are compared ignoring ASCII case)")
    if key in folders:
        raise LayoutError(f"asset name {name!r} is also the folder of another asset")
    parts = key.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts))]
    if any(p in seen for p in prefixes):
        raise LayoutError(f"asset name {name!r} lies inside another asset's name used as a folder")
    seen.add(key)
    folders.update(prefixes)


def has_control_character(name: str) -> bool:
    """True if ``name`` holds a control character (U+0000-U+001F, U+007F-U+009F), which tensor names
    may not (spec §6)."""
    return any(ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F for ch in name)


def pack_assets(assets: list[tuple[bytes, bytes]]) -> bytes:
    """ASSETS section: u32 count, then per asset u16 name_length, name, u64 data_length, data."""
    out = [U32.pack(len(assets))]
    for name, data in assets:
        out += [U16.pack(len(name)), name, U64.pack(len(data)), bytes(data)]
    return b"".join(out)


def unpack_assets(b) -> dict[str, bytes]:
    """The inverse of :func:`pack_assets`, validating as spec §9 and §14 say (one-line errors)."""
    n = len(b)
    if n < 4:
        raise LayoutError(f"assets section is {n} bytes, too short for its count")
    (count,) = U32.unpack_from(b, 0)
    if count > C.MAX_ASSETS:
        raise LimitExceededError(f"{count} assets (limit {C.MAX_ASSETS})")
    if count * MIN_ASSET_ENTRY_SIZE > n - 4:
        raise LayoutError(f"assets section declares {count} assets but holds only {n - 4} bytes")
    pos, out = 4, {}
    seen: set = set()
    folders: set = set()
    for i in range(count):
        if pos + 2 > n:
            raise LayoutError(f"asset {i} runs past the end of the assets section")
        (nlen,) = U16.unpack_from(b, pos)
        pos += 2
        if nlen == 0:
            raise LayoutError(f"asset {i} has an empty name")
        if nlen > C.MAX_NAME_BYTES:
            raise LimitExceededError(f"asset {i}: name of {nlen} bytes (limit {C.MAX_NAME_BYTES})")
        if pos + nlen + 8 > n:
            raise LayoutError(f"asset {i} runs past the end of the assets section")
        try:
            name = bytes(b[pos:pos + nlen]).decode("utf-8")
        except UnicodeDecodeError:
            raise LayoutError(f"asset {i}: name is not valid UTF-8") from None
        check_asset_name(name)
        check_asset_names_unique(name, seen, folders)
        pos += nlen
        (dlen,) = U64.unpack_from(b, pos)
        pos += 8
        if dlen > n - pos:
            raise LayoutError(f"asset {name!r} of {dlen} bytes runs past the end of the assets section")
        out[name] = b[pos:pos + dlen]
        pos += dlen
    if pos != n:
        raise LayoutError(f"{n - pos} trailing bytes after the last asset")
    return out


def checked_numel(shape) -> int:
    """Element count, refusing dims or partial products above MAX_NUMEL (zero dims count as 1 in the
    product bound, so [0, 2**64-1] is refused like any other absurd shape)."""
    bound = 1
    numel = 1
    for d in shape:
        if d > C.MAX_NUMEL:
            raise LimitExceededError(f"dimension {d} exceeds the limit {C.MAX_NUMEL}")
        if d:
            if bound > C.MAX_NUMEL // d:
                raise LimitExceededError(f"shape {list(shape)} has more than {C.MAX_NUMEL} elements")
            bound *= d
        numel *= d
    return numel


def rows_of(shape) -> tuple[int, int]:
    """(rows, row_length) of the codebook codecs: rows = shape[0] (1 for rank 0)."""
    numel = 1
    for d in shape:
        numel *= d
    rows = shape[0] if len(shape) else 1
    if numel == 0:
        return rows, 0
    return rows, numel // rows


@dataclass(frozen=True)
class TensorInfo:
    """A tensor as listed by the directory (nothing decoded). dtypes are names: "float32", "bfloat16"..."""
    name: str
    shape: tuple[int, ...]
    stored_dtype: str
    decoded_dtype: str
    codec: C.CodecId
    numel: int
    payload_offset: int
    payload_length: int
    checked_length: int
    payload_crc32: int

    @property
    def decoded_nbytes(self) -> int:
        from acqe_format.dtypes import itemsize
        return self.numel * itemsize(self.decoded_dtype)

    @property
    def bits_per_param(self) -> float:
        return self.payload_length * 8 / self.numel if self.numel else 0.0
