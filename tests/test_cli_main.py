"""The CLI's error boundary: every library error becomes one line on stderr and a named exit code."""
import subprocess
import sys

import pytest

from acqe_cli._errors import format_error
from acqe_format import errors as E

TRUNCATED = "spec/vectors/invalid/001-truncated-half.acqe"


def _acqe(*args):
    return subprocess.run([sys.executable, "-m", "acqe_cli.main", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("exc, prefix", [
    (E.TruncatedFileError("file ends at 10"), "truncated: file ends at 10"),
    (E.ChecksumMismatchError("payload CRC-32 is 0"), "checksum mismatch: payload CRC-32 is 0"),
    (E.NotAcqeFileError("looks like a zip"), "not an .acqe file: looks like a zip"),
    (E.SourceError("global os.system"), "cannot read input: global os.system"),
    (FileNotFoundError(2, "No such file or directory", "x.acqe"), "no such file: x.acqe: No such file or directory"),
])
def test_known_errors_are_one_line(exc, prefix):
    assert format_error(exc) == prefix


def test_unknown_errors_are_not_swallowed():
    assert format_error(ZeroDivisionError("bug")) is None


def test_truncated_file_is_an_error_not_an_abort(tmp_path):
    # click turns EOFError (TruncatedFileError is one) into Abort; main() must report the cause instead.
    p = _acqe("export", TRUNCATED, str(tmp_path / "out.safetensors"))
    assert p.returncode == 1
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: truncated:"), p.stderr
    assert "Traceback" not in p.stderr and "Aborted" not in p.stderr
    assert not (tmp_path / "out.safetensors").exists()


def test_missing_file_is_one_line():
    p = _acqe("inspect", "/nonexistent/model.acqe")
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_errors_outside_acqe_format_name_their_own_prefix():
    class NoSchedule(E.AcqeError, LookupError):
        cli_prefix = "no ReCaT schedule"

    assert format_error(NoSchedule("profile with acqe profile-cache")) == \
        "no ReCaT schedule: profile with acqe profile-cache"
