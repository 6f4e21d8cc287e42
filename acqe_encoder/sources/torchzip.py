"""The zip container `torch.save` writes (PyTorch >= 1.6), read without torch.

Layout: every record sits under one top folder (the archive name, taken from the first central-directory
entry, as torch does): `data.pkl` (the pickle), `version` or `.data/version`, optional `byteorder`
("little" / "big"; absent means little), and one record `data/<key>` per storage, holding exactly the
storage's bytes. torch writes records uncompressed (stored); a re-zipped checkpoint may deflate them.

Every record is read through its own compression method: a stored record is memory-mapped at the data
offset its local header gives; a deflated one is inflated, bounded by its declared size, which must equal
the bytes its storage needs. When the archive is opened, every entry (used or not, as torch's own reader
checks them) must be inside the archive folder, stored or deflated, unencrypted, with a local header
that matches the central directory and data that ends before it; duplicate names, overlapping entries,
inconsistent central-directory lengths and multi-disk end records are refused in one line. CRC-32s are
checked on first use (torch does not check them for stored records; this reader does).
"""
from __future__ import annotations

import struct
import zipfile
import zlib
from dataclasses import dataclass

import numpy as np

from acqe_format.errors import SourceError

STORED, DEFLATED = zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED
# general-purpose flag bits of entries that hold no plain data (APPNOTE 4.4.4)
_UNREADABLE_FLAGS = 0x1 | 0x20 | 0x40 | 0x2000
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_LOCAL_SIG = 0x04034B50


def _line(e: BaseException) -> str:
    s = (str(e).strip().splitlines() or [type(e).__name__])[0]
    return "".join(c if c.isprintable() else "?" for c in s)[:160]


@dataclass
class Record:
    name: str            # full name in the zip
    method: int          # STORED or DEFLATED
    start: int           # offset of the local header
    data_offset: int     # first byte of the (possibly compressed) data
    compressed: int      # bytes at data_offset
    size: int            # uncompressed bytes
    crc: int
    info: zipfile.ZipInfo
    crc_checked: bool = False


class TorchZip:
    """A torch zip checkpoint opened from a verified regular file object (`files.open_regular`)."""

    def __init__(self, f, size: int, base: str):
        self.base, self.size, self._f = base, size, f
        self._cache: tuple[str, np.ndarray] | None = None   # the last inflated record
        try:
            self.zf = zipfile.ZipFile(f)
            infos = self.zf.infolist()
        except Exception as e:  # noqa: BLE001 - zipfile raises many types on hostile input
            raise SourceError(f"{base}: not a readable zip archive (truncated or corrupt?): {_line(e)}") from None
        if not infos:
            raise SourceError(f"{base}: an empty zip archive, not a torch checkpoint")
        names = [i.orig_filename for i in infos]
        if len(set(names)) != len(names):
            dup = next(n for i, n in enumerate(names) if n in names[:i])
            raise SourceError(f"{base}: zip entry {dup[:80]!r} appears twice (ambiguous; refusing the archive)")
        first = names[0]
        if "/" not in first:
            raise SourceError(f"{base}: zip entry {first[:80]!r} is not inside an archive folder (not a torch checkpoint)")
        self.prefix = first.split("/", 1)[0] + "/"
        self.by_name = dict(zip(names, infos))
        self.cd_start = int(getattr(self.zf, "start_dir", size))
        self.mm = np.memmap(f, dtype=np.uint8, mode="r") if size > 0 else np.zeros(0, np.uint8)
        # every entry, used or not, as torch's reader (miniz) checks them when it opens or reads the archive
        self._check_end_record()
        self._check_central_directory(infos)
        self.records: dict[str, Record] = {}
        for name, info in self.by_name.items():
            if not name.startswith(self.prefix):
                raise SourceError(f"{base}: zip entry {name[:80]!r} is outside the archive folder {self.prefix!r}")
            self.records[name] = self._local(info)
        self.check_disjoint(list(self.records.values()))
        if self.has("constants.pkl") or not self.has("data.pkl"):
            what = "a TorchScript archive" if self.has("constants.pkl") else "a zip without data.pkl"
            raise SourceError(f"{base}: {what}, not a torch.save checkpoint")
        if not (self.has("version") or self.has(".data/version")):
            raise SourceError(f"{base}: torch zip checkpoint without its version record (corrupt?)")
        ver = self.read_small(".data/version" if self.has(".data/version") else "version", 16).strip()
        if not ver.isdigit():
            raise SourceError(f"{base}: torch zip checkpoint with version record {ver[:16]!r} (not a number)")
        if self.has(".storage_alignment") and not self.read_small(".storage_alignment", 16).strip().isdigit():
            raise SourceError(f"{base}: torch zip checkpoint with a .storage_alignment record that is not a number")
        self.big_endian = False
        if self.has("byteorder"):
            bo = self.read_small("byteorder", 16)
            if bo not in (b"little", b"big"):
                raise SourceError(f"{base}: byteorder record {bo[:16]!r} is neither 'little' nor 'big'")
            self.big_endian = bo == b"big"

    def _check_end_record(self) -> None:
        """A single-disk archive (zipfile ignores the classic end record's disk fields; torch does not)."""
        tail = self.mm[max(0, self.size - 65557):].tobytes()
        i = tail.rfind(b"PK\x05\x06")
        if i < 0 or len(tail) - i < 22:
            raise SourceError(f"{self.base}: the zip end record is missing (truncated?)")
        disk, cd_disk, n_here, n_total = struct.unpack("<4H", tail[i + 4:i + 12])
        if (disk, cd_disk) not in ((0, 0), (0xFFFF, 0xFFFF)) or n_here != n_total:
            raise SourceError(f"{self.base}: a multi-disk zip archive (not a torch checkpoint)")

    def _check_central_directory(self, infos) -> None:
        """The central directory's own length fields agree with what zipfile decoded from them (zipfile
        tolerates a name length running past the directory; torch's reader does not)."""
        pos = self.cd_start
        for info in infos:
            head = self.mm[pos:pos + 46].tobytes()
            if len(head) != 46 or head[:4] != b"PK\x01\x02":
                raise SourceError(f"{self.base}: the zip central directory is malformed at byte {pos:,}")
            n, m, k, disk = struct.unpack("<HHHH", head[28:36])
            if disk not in (0, 0xFFFF):
                raise SourceError(f"{self.base}: zip entry {info.orig_filename[:80]!r} starts on disk {disk} "
                                  f"(a multi-disk archive, not a torch checkpoint)")
            try:
                raw = info.orig_filename.encode("utf-8" if info.flag_bits & 0x800 else "cp437")
            except UnicodeEncodeError:
                raw = b""
            if (n, m, k) != (len(raw), len(info.extra), len(info.comment)):
                raise SourceError(f"{self.base}: zip entry {info.orig_filename[:80]!r}: its central directory "
                                  f"lengths run past the directory (corrupt)")
            pos += 46 + n + m + k

    # --- records -----------------------------------------------------------------------------------
    def has(self, rel: str) -> bool:
        return self.prefix + rel in self.by_name

    def _info(self, rel: str) -> zipfile.ZipInfo:
        info = self.by_name.get(self.prefix + rel)
        if info is None:
            raise SourceError(f"{self.base}: record {rel[:80]!r} is missing from the zip (truncated or corrupt?)")
        return info

    def read_small(self, rel: str, limit: int) -> bytes:
        """A whole record (data.pkl, version, byteorder) of at most `limit` bytes, CRC-checked by zipfile."""
        info = self._info(rel)
        if info.file_size > limit:
            raise SourceError(f"{self.base}: record {rel!r} declares {info.file_size:,} bytes, above the "
                              f"{limit:,}-byte limit")
        try:
            with self.zf.open(info) as z:
                data = z.read(limit + 1)
        except Exception as e:  # noqa: BLE001
            raise SourceError(f"{self.base}: cannot read record {rel!r}: {_line(e)}") from None
        if len(data) != info.file_size:
            raise SourceError(f"{self.base}: record {rel!r} holds {len(data):,} bytes, its header says "
                              f"{info.file_size:,}")
        return data

    def _local(self, info: zipfile.ZipInfo) -> Record:
        """The entry's local header checked against the central directory, and its data bounds."""
        name = info.orig_filename[len(self.prefix):]
        if info.orig_filename.endswith("/") or info.external_attr & 0x10:
            # torch's reader (miniz) treats such an entry as a directory and reads no bytes from it: a
            # storage record marked so loads as zeros there. Neither reading is safe: refuse.
            raise SourceError(f"{self.base}: zip entry {name[:80]!r} is marked as a directory (corrupt or crafted)")
        if info.flag_bits & _UNREADABLE_FLAGS:
            # encrypted (bit 0), compressed patch data (5), strong encryption (6), masked local headers
            # (13): torch's reader (miniz) refuses each as "unsupported encryption"; none is plain data
            raise SourceError(f"{self.base}: record {name[:80]!r} is encrypted or patch data "
                              f"(zip flags {info.flag_bits:#06x})")
        if info.compress_type not in (STORED, DEFLATED):
            raise SourceError(f"{self.base}: record {name[:80]!r} uses zip compression method {info.compress_type} "
                              f"(only stored and deflated are read)")
        start = info.header_offset
        head = self.mm[start:start + _LOCAL.size].tobytes() if 0 <= start else b""
        if len(head) != _LOCAL.size:
            raise SourceError(f"{self.base}: record {name[:80]!r}: local header at {start} is outside the file")
        sig, _, flags, method, _, _, _, _, _, n, m = _LOCAL.unpack(head)
        raw_name = self.mm[start + 30:start + 30 + n].tobytes()
        try:
            local_name = raw_name.decode("utf-8" if flags & 0x800 else "cp437")
        except UnicodeDecodeError:
            local_name = None
        if sig != _LOCAL_SIG or method != info.compress_type or local_name != info.orig_filename:
            raise SourceError(f"{self.base}: record {name[:80]!r}: its local header does not match the central "
                              f"directory (corrupt or crafted zip)")
        if info.compress_type == STORED and info.compress_size != info.file_size:
            raise SourceError(f"{self.base}: stored record {name[:80]!r} has {info.compress_size:,} bytes, its "
                              f"header says {info.file_size:,}")
        data_offset = start + 30 + n + m
        end = data_offset + info.compress_size
        if end > min(self.cd_start, self.size):
            raise SourceError(f"{self.base}: record {name[:80]!r} ends at byte {end:,}, past the end of its data "
                              f"({min(self.cd_start, self.size):,}; truncated?)")
        return Record(info.orig_filename, info.compress_type, start, data_offset, info.compress_size,
                      info.file_size, info.CRC, info)

    def record(self, rel: str, nbytes: int) -> Record:
        """The record `rel` checked against the storage size it must hold (`nbytes`)."""
        info = self._info(rel)
        if info.file_size != nbytes:
            raise SourceError(f"{self.base}: record {rel!r} holds {info.file_size:,} bytes, its storage needs "
                              f"{nbytes:,}")
        return self.records[info.orig_filename]

    def check_disjoint(self, records: list[Record]) -> None:
        """Refuse records whose bytes overlap (one byte range read as two records)."""
        spans = sorted((r.start, r.data_offset + r.compressed, r.name) for r in records)
        for (a0, a1, an), (b0, _, bn) in zip(spans, spans[1:]):
            if b0 < a1:
                raise SourceError(f"{self.base}: zip records {an[-40:]!r} and {bn[-40:]!r} overlap "
                                  f"(crafted zip; refusing it)")

    def data(self, rec: Record) -> np.ndarray:
        """The record's uncompressed bytes as a read-only uint8 array (stored: a view of the map)."""
        if rec.method == STORED:
            a = self.mm[rec.data_offset:rec.data_offset + rec.size]
            if not rec.crc_checked:
                if zlib.crc32(a) != rec.crc:
                    raise SourceError(f"{self.base}: record {rec.name[len(self.prefix):]!r} fails its CRC-32 "
                                      f"(corrupt checkpoint)")
                rec.crc_checked = True
            return a
        if self._cache is not None and self._cache[0] == rec.name:
            return self._cache[1]
        self._cache = None
        try:
            with self.zf.open(rec.info) as z:
                raw = z.read(rec.size + 1)       # zipfile inflates at most this much; CRC checked at the end
        except Exception as e:  # noqa: BLE001
            raise SourceError(f"{self.base}: cannot inflate record {rec.name[len(self.prefix):]!r}: {_line(e)}") from None
        if len(raw) != rec.size:
            raise SourceError(f"{self.base}: record {rec.name[len(self.prefix):]!r} inflates to {len(raw):,} "
                              f"bytes, its header says {rec.size:,}")
        a = np.frombuffer(raw, np.uint8)
        self._cache = (rec.name, a)
        return a

    def close(self) -> None:
        self._cache = None
        self.mm = None
        try:
            self.zf.close()
        finally:
            self._f.close()
