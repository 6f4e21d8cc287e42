"""Export errors: one line each, an `AcqeError` (the CLI prints ``Error: cannot export: ...``)."""
from acqe_format.errors import AcqeError

__all__ = ["ExportError"]


class ExportError(AcqeError, ValueError):
    """The file cannot be written in the requested format (names, types or dtypes it cannot carry)."""

    cli_prefix = "cannot export"
