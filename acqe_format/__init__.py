"""ACQE container: read and write `.acqe` files (numpy + numba only; never torch).

    from acqe_format import AcqeWriter, AcqeReader, CodebookTensor, reconstruct
"""
import os as _os

from acqe_format.jit_cache import ensure_numba_cache

ensure_numba_cache(_os.path.dirname(__file__))      # before any kernel is defined (cache=True needs a folder)

from acqe_format.codecs.codebook import CodebookTensor, reconstruct  # noqa: E402
from acqe_format.edit import replace_metadata
from acqe_format.errors import (AcqeError, AcqeFormatError, ChecksumMismatchError, CodecError, LayoutError,
                                LimitExceededError, MetadataError, NotAcqeFileError, TruncatedFileError,
                                UnsupportedVersionError, WriteOrderError)
from acqe_format.layout import TensorInfo
from acqe_format.reader import AcqeReader
from acqe_format.writer import AcqeWriter

__all__ = [
    "AcqeReader", "AcqeWriter", "replace_metadata", "CodebookTensor", "reconstruct", "TensorInfo",
    "AcqeError", "AcqeFormatError", "NotAcqeFileError", "UnsupportedVersionError", "TruncatedFileError",
    "ChecksumMismatchError", "LimitExceededError", "LayoutError", "CodecError", "MetadataError",
    "WriteOrderError",
]
