"""ACQE container: read and write `.acqe` files (numpy, and the C decoder `acqe_format._libacqe`; never torch).

    from acqe_format import AcqeWriter, AcqeReader, CodebookTensor, reconstruct

Reading and verifying need neither numba nor llvmlite: libacqe decodes. numba compiles the writer's
entropy coder and the reference decoders (acqe_format.rans, acqe_format.codecs._kernels), imported only
when they run.
"""
from acqe_format.codecs.codebook import CodebookTensor, reconstruct
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
