"""`acqe export IN.acqe OUT.safetensors`: decoded weights under the source key names (atomic write)."""
from __future__ import annotations

import click

from acqe_cli import checks

from acqe_format.dtypes import CLI_FLOAT_CHOICES


@click.command("export")
@click.argument("src", type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.argument("out", type=click.Path(dir_okay=False, path_type=str))
@click.option("--dtype", type=click.Choice(CLI_FLOAT_CHOICES), default=None,
              help="dtype of the floating tensors (default: each tensor's decoded dtype, i.e. the source's)")
@click.option("--threads", type=click.IntRange(1, 256), default=None, help="decode threads")
@click.option("--max-decoded-size", type=checks.ByteSize(), default=None,
              help="decode at most this many bytes of tensors (e.g. 8G; default: 64x the file size)")
def command(src, out, dtype, threads, max_decoded_size):
    """Decode every tensor of SRC and write them to OUT (.safetensors) under the source key names, so any
    runtime that reads the original checkpoint layout (diffusers single-file, ComfyUI, A1111,
    stable-diffusion.cpp) can use the converted model."""
    checks.check_output_path(out, "OUT")
    from acqe_export import export_safetensors
    from acqe_format.decode_budget import decoded_limit

    with decoded_limit(max_decoded_size):
        n, size = export_safetensors(src, out, dtype=dtype, threads=threads)
    click.echo(f"wrote {out}: {n} tensors, {size:,} bytes", err=True)
