"""Edits that keep every payload byte: replace the metadata of an existing `.acqe` file.

Used to store things learnt after conversion (e.g. a ReCaT cache schedule) without re-encoding: the
file is verified, then rewritten atomically with the new metadata and the same tensors, assets and
alignment (and DIRECTORY/METADATA compression, if the file uses it); payload bytes (and so their CRCs and chunk CRCs) are copied unchanged.
"""
from __future__ import annotations

import os

from acqe_format.reader import AcqeReader
from acqe_format.writer import AcqeWriter


def replace_metadata(path, metadata: dict, *, verify: bool = True) -> None:
    """Rewrite `path` with `metadata` in place of its JSON metadata (atomic: temp file + rename).

    The source is fully verified first (`verify=True`), so a corrupted file is never laundered into
    one with fresh checksums. Raises AcqeError subclasses for invalid files.
    """
    path = os.fspath(path)
    with AcqeReader(path) as reader:
        if verify:
            reader.verify()
        # keep the file's choice: a file with compressed sections (1.1) is rewritten with compression on
        writer = AcqeWriter(path, alignment=reader.header.alignment, compress_sections=reader.compressed)
        try:
            writer.set_metadata(metadata)
            for name, data in reader.assets.items():
                writer.add_asset(name, bytes(data))
            for info in reader.tensors:
                writer.add_stored(info, reader.stored_payload(info.name))
            writer.close()
        except BaseException:
            writer.abort()
            raise
