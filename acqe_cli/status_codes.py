"""Named exit codes (2 is click's own usage-error code)."""

OK = 0
ERROR = 1          # any AcqeError: bad input, failed conversion, ...
USAGE = 2          # click usage errors
VERIFY_FAILED = 3  # `acqe verify` found the file invalid
INTERRUPTED = 130
