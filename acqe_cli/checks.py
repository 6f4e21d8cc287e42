"""The command line's own checks of option values, each a one-line usage error before any work starts.

Option types (``click.ParamType``) refuse what can be refused from the text alone (NaN bits, an image
side that is not a multiple of 8, a size like ``4G``); the ``check_*`` functions refuse what needs the
rest of the command (an output folder that does not exist, an image format PIL cannot write, a CPU
image larger than the documented limit).
"""
from __future__ import annotations

import math
import os
import re

import click

__all__ = ["FiniteFloat", "ByteSize", "ImageSide", "check_output_path", "image_format", "check_image_size",
           "CPU_MAX_PIXELS"]

# Largest image `acqe generate` makes on a CPU without --force: 1024 x 1024 pixels. Self-attention over
# the latent costs memory and time in the square of its positions: 2048 x 2048 is 16x the attention
# work of 1024 x 1024 and 4096 x 4096 is 256x (hours on a CPU for an SD-size model).
CPU_MAX_PIXELS = 1024 * 1024
IMAGE_MULTIPLE = 8          # the VAE halves the image 3 times (SD): sides are multiples of 8


class FiniteFloat(click.ParamType):
    """A finite float in ``[lo, hi]`` (click's FloatRange lets NaN through: NaN compares false)."""

    name = "float"

    def __init__(self, lo: float, hi: float):
        self.lo, self.hi = lo, hi

    def convert(self, value, param, ctx):
        if isinstance(value, float) and math.isfinite(value) and self.lo <= value <= self.hi:
            return value
        try:
            v = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number", param, ctx)
        if not math.isfinite(v) or not self.lo <= v <= self.hi:
            self.fail(f"{value} is not a finite number in {self.lo:g}..{self.hi:g}", param, ctx)
        return v


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$", re.I)


class ByteSize(click.ParamType):
    """A byte count: ``1073741824``, ``512M``, ``4G``, ``1.5GiB`` (powers of 1024)."""

    name = "size"

    def convert(self, value, param, ctx):
        if isinstance(value, int):
            return value
        m = _SIZE.match(str(value))
        if not m:
            self.fail(f"{value!r} is not a size (e.g. 4G, 512M, 1073741824)", param, ctx)
        n = float(m[1]) * 1024 ** "_kmgt".index((m[2] or "_").lower())
        if not math.isfinite(n) or n > 2 ** 62:
            self.fail(f"{value!r} is too large", param, ctx)
        return int(n)


class ImageSide(click.ParamType):
    """An image height or width in pixels: a multiple of 8 in 8..4096."""

    name = "pixels"

    def convert(self, value, param, ctx):
        try:
            v = int(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a whole number of pixels", param, ctx)
        if not 8 <= v <= 4096 or v % IMAGE_MULTIPLE:
            self.fail(f"{v} is not a multiple of {IMAGE_MULTIPLE} in 8..4096", param, ctx)
        return v


def check_output_path(path: str, option: str) -> None:
    """Refuse an output path whose folder is missing or not writable, naming the user's path."""
    from acqe_format.atomic import check_writable

    try:
        check_writable(path)
    except OSError as e:
        raise click.BadParameter(f"cannot write {click.format_filename(path)}: {e.strerror}",
                                 param_hint=option) from None


def image_format(path: str) -> str:
    """The PIL format that the file name's suffix asks for (PNG for ``.png``, JPEG for ``.jpg``, ...)."""
    from PIL import Image

    ext = os.path.splitext(path)[1].lower()
    fmt = Image.registered_extensions().get(ext)
    if not fmt or fmt not in Image.SAVE:
        common = ".png, .jpg, .webp, .bmp, .tiff"
        raise click.BadParameter(f"{click.format_filename(path)}: {'no suffix' if not ext else repr(ext)} names no "
                                 f"image format this installation can write (e.g. {common})", param_hint="--out")
    return fmt


def check_image_size(height: int, width: int, device_type: str, force: bool) -> None:
    """A CPU image above `CPU_MAX_PIXELS` needs ``--force``: the message says what it would cost."""
    pixels = height * width
    if device_type != "cpu" or force or pixels <= CPU_MAX_PIXELS:
        return
    work = (pixels / CPU_MAX_PIXELS) ** 2
    raise click.BadParameter(
        f"{width}x{height} on the CPU needs about {work:,.0f}x the self-attention work of 1024x1024, the "
        f"largest image made on a CPU without --force", param_hint="--height/--width")
