"""One exception tree for everything that can go wrong reading or writing `.acqe` files.

Every error a reader can raise on bad input derives from `AcqeError`, and also from the matching
built-in (`ValueError`, `EOFError`, ...) so callers that catch built-ins keep working. Messages are one
line and carry the numbers that explain them ("section 3 ends at 1048600, file is 1048576 bytes").
"""


class AcqeError(Exception):
    """Base of every ACQE error."""


class AcqeFormatError(AcqeError, ValueError):
    """The bytes do not form a valid `.acqe` file."""


class NotAcqeFileError(AcqeFormatError):
    """The file does not start with the ACQE magic: it is some other kind of file."""


class UnsupportedVersionError(AcqeFormatError):
    """The file's major version (or a required feature / section / codec) is unknown to this reader."""


class TruncatedFileError(AcqeFormatError, EOFError):
    """The file ends before a structure it declares."""


class ChecksumMismatchError(AcqeFormatError):
    """A CRC-32 or the footer SHA-256 does not match the bytes."""


class LimitExceededError(AcqeFormatError):
    """A count, size or length is above the reader limits of the spec."""


class DecodedSizeError(AcqeError, RuntimeError):
    """The tensors would decode to more bytes than the reader allows (``AcqeReader(max_decoded_bytes=)``);
    ``decoded`` and ``limit`` carry the two numbers. A property of the reader's budget, not an error of
    the file (spec §10.4): it is not an `AcqeFormatError`, and a verifier that stops here has not
    judged the file."""

    def __init__(self, message: str, *, decoded: int = 0, limit: int = 0):
        super().__init__(message)
        self.decoded, self.limit = decoded, limit


class LayoutError(AcqeFormatError):
    """Offsets, lengths, alignment or padding break the layout rules (overlap, holes, non-zero padding)."""


class CodecError(AcqeFormatError):
    """A codec payload is malformed (bad frequency table, index outside the codebook, stream overrun)."""


class MetadataError(AcqeFormatError):
    """The JSON metadata is not strict, inert JSON of the required shape."""


class WriteOrderError(AcqeError, RuntimeError):
    """A writer method was called out of order (e.g. a tensor added after close)."""


class SourceError(AcqeError, ValueError):
    """An input checkpoint cannot be read safely (foreign pickle globals, truncated, unknown layout, NaN)."""


class UnknownLayoutError(SourceError):
    """A checkpoint's tensor groups match no known architecture, or one only partly. ``groups``: the
    unmatched tensor groups (name prefixes); ``keepable``: True when storing them as they are (without a
    loadable meaning) is possible."""

    def __init__(self, message: str, *, groups=(), keepable: bool = False):
        super().__init__(message)
        self.groups, self.keepable = tuple(groups), keepable


class AmbiguousLayoutError(UnknownLayoutError):
    """Two architectures have exactly these tensors (SD 2.x 512-base and 768-v): the caller must say which."""


class RuntimeLoadError(AcqeError, RuntimeError):
    """A `.acqe` file is valid but cannot be turned into a model (missing component, config mismatch)."""
