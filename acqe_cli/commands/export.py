"""`acqe export IN.acqe OUT.{safetensors,gguf}`: decoded weights for other runtimes (atomic write).

The output format follows OUT's suffix, and a suffix that names neither is refused (a `.bin` must not
silently receive safetensors bytes).
"""
from __future__ import annotations

import os

import click

from acqe_cli import checks
from acqe_cli.progress import progress_display
from acqe_export.gguf import GGUF_TYPES
from acqe_format.dtypes import CLI_FLOAT_CHOICES

# measured on the demo model (2,290,980-byte .acqe; 19,654,155-byte .ckpt) with
# `python bench/bench_gguf.py demo.acqe`: GGUF size, and the error each type adds to the decoded .acqe
# weights as SQNR over all floating tensors / over the tensors converted to the type
# (bench/RESULTS.md, "Where users run models")
EPILOG = """
\b
Formats (by OUT's suffix):
  .safetensors  every decoded tensor under its source name (--dtype casts the floats)
  .gguf         Stable Diffusion v1 for stable-diffusion.cpp: LDM names, --type for the weight
                matrices (biases, norms, embeddings and time-embedding layers stay F32; under a block
                type, 3x3 kernels are F16). On the demo model (.acqe 2.29 MB; weights coded at ~23 dB):
\b
                type   GGUF size   added error (SQNR): all floats / converted tensors
                f32    19.4 MB     none (exact)
                f16    14.6 MB     83 dB / 74 dB   (round to nearest even)
                bf16   14.6 MB     65 dB / 56 dB
                q8_0   14.3 MB     63 dB / 47 dB
                q5_0   14.1 MB     45 dB / 29 dB
                q4_0   14.1 MB     39 dB / 23 dB   (as large as the .acqe coding error itself)
                (the demo's CLIP token embedding, kept F32 as stable-diffusion.cpp does, is 9.5 MB of
                it; on SD v1.4 the type sets the size of almost the whole file: bench/RESULTS.md)
\b
Examples:
  acqe export model.acqe model.safetensors --dtype fp16
  acqe export sd.acqe sd-q8_0.gguf --type q8_0        # then: sd -m sd-q8_0.gguf -p "a red circle"
"""

FORMATS = {".safetensors": "safetensors", ".gguf": "gguf"}


@click.command("export", epilog=EPILOG)
@click.argument("src", type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.argument("out", type=click.Path(dir_okay=False, path_type=str))
@click.option("--dtype", type=click.Choice(CLI_FLOAT_CHOICES), default=None,
              help=".safetensors: dtype of the floating tensors (default: each tensor's decoded dtype, the source's)")
@click.option("--type", "gguf_type", type=click.Choice(list(GGUF_TYPES)), default=None,
              help=".gguf: type of the weight matrices (default f16); see the table below")
@click.option("--threads", type=click.IntRange(1, 256), default=None, help="decode threads")
@click.option("-q", "--quiet", is_flag=True, help="no progress bar")
@click.option("--max-decoded-size", type=checks.ByteSize(), default=None,
              help="decode at most this many bytes of tensors (e.g. 8G; default: 64x the file size)")
def command(src, out, dtype, gguf_type, threads, quiet, max_decoded_size):
    """Decode every tensor of SRC and write them to OUT for runtimes that do not read .acqe: a
    .safetensors file under the source key names (diffusers single-file, ComfyUI, A1111), or a .gguf
    file for stable-diffusion.cpp."""
    fmt = FORMATS.get(os.path.splitext(out)[1].lower())
    if fmt is None:
        raise click.UsageError(f"OUT must end in {' or '.join(FORMATS)} (the format written); got {out!r}")
    if fmt == "gguf" and dtype is not None:
        raise click.UsageError("--dtype is for .safetensors output; a .gguf file takes --type")
    if fmt == "safetensors" and gguf_type is not None:
        raise click.UsageError("--type is for .gguf output; a .safetensors file takes --dtype")
    checks.check_output_path(out, "OUT")
    from acqe_format.decode_budget import decoded_limit

    with decoded_limit(max_decoded_size), progress_display(quiet) as show:
        if fmt == "gguf":
            from acqe_export import export_gguf

            rep = export_gguf(src, out, type=gguf_type or "f16", threads=threads,
                              progress=lambda done, total: show("export gguf", done, total))
            n, size, detail = rep.tensors, rep.file_bytes, " (" + ", ".join(f"{k} {v}" for k, v in rep.types.items()) + ")"
        else:
            from acqe_export import export_safetensors

            n, size = export_safetensors(src, out, dtype=dtype, threads=threads,
                                         progress=lambda done, total: show("export safetensors", done, total))
            detail = ""
    click.echo(f"wrote {out}: {n} tensors{detail}, {size:,} bytes", err=True)
