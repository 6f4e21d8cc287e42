"""`acqe verify FILE`: every check the spec allows; exit 0 when valid, 3 with one line when not."""
from __future__ import annotations

import time

import click

from acqe_cli import checks, status_codes
from acqe_cli._errors import format_error
from acqe_cli.progress import progress_display


@click.command("verify")
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@click.option("--threads", type=click.IntRange(1, 256), default=None, help="decode threads (default: all CPUs)")
@click.option("-q", "--quiet", is_flag=True, help="print nothing (no progress) when the file is valid")
@click.option("--max-decoded-size", type=checks.ByteSize(), default=None,
              help="decode at most this many bytes of tensors (e.g. 8G; default: 64x the file size)")
@click.pass_context
def command(ctx, file, threads, quiet, max_decoded_size):
    """Check FILE completely: structure, limits, every section/payload/chunk checksum, full decode of
    every tensor, padding, and the footer SHA-256.

    Exit status: 0 valid, 3 invalid (one line on stderr), 1 the file cannot be read at all or not verified
    to the end (a decode budget stopped it: that says nothing about the file).
    """
    from acqe_format import AcqeError, AcqeReader
    from acqe_format.errors import DecodedSizeError

    t0 = time.perf_counter()
    try:
        with AcqeReader(file, max_decoded_bytes=max_decoded_size) as r, progress_display(quiet) as show:
            r.verify(threads=threads, progress=show)
            r.model_info     # the model metadata a loader would check, too
            n, params, size = len(r), sum(t.numel for t in r.tensors), r.file_size
            decoded, expansion = r.decoded_bytes, r.expansion
    except DecodedSizeError as exc:
        click.echo(f"Error: not verified: {format_error(exc)}", err=True)
        ctx.exit(status_codes.ERROR)
        return
    except AcqeError as exc:
        click.echo(f"Error: {format_error(exc)}", err=True)
        ctx.exit(status_codes.VERIFY_FAILED)
        return
    if not quiet:
        click.echo(f"OK {click.format_filename(file)}: {n} tensors, {params:,} parameters, {size:,} bytes "
                   f"decoding to {decoded:,} bytes ({expansion:.1f}x), all checksums and decodes verified in "
                   f"{time.perf_counter() - t0:.2f} s")
