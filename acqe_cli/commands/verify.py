"""`acqe verify FILE`: every check the spec allows; exit 0 when valid, 3 with one line when not."""
from __future__ import annotations

import time

import click

from acqe_cli import status_codes
from acqe_cli._errors import format_error
from acqe_cli.progress import progress_display


@click.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@click.option("--threads", type=click.IntRange(1, 256), default=None, help="decode threads (default: all CPUs)")
@click.option("-q", "--quiet", is_flag=True, help="print nothing (no progress) when the file is valid")
@click.pass_context
def command(ctx, file, threads, quiet):
    """Check FILE completely: structure, limits, every section/payload/chunk checksum, full decode of
    every tensor, padding, and the footer SHA-256.

    Exit status: 0 valid, 3 invalid (one line on stderr), 1 the file cannot be read at all.
    """
    from acqe_format import AcqeError, AcqeReader

    t0 = time.perf_counter()
    try:
        with AcqeReader(file) as r, progress_display(quiet) as show:
            r.verify(threads=threads, progress=show)
            n, params, size = len(r), sum(t.numel for t in r.tensors), r.file_size
    except AcqeError as exc:
        click.echo(f"Error: {format_error(exc)}", err=True)
        ctx.exit(status_codes.VERIFY_FAILED)
        return
    if not quiet:
        click.echo(f"OK {click.format_filename(file)}: {n} tensors, {params:,} parameters, {size:,} bytes, "
                   f"all checksums and decodes verified in {time.perf_counter() - t0:.2f} s")
