"""`acqe generate MODEL.acqe --prompt TEXT ...`: text to image from one `.acqe` file, offline."""
from __future__ import annotations

import json
import math

import click

from acqe_cli import checks
from acqe_cli.progress import progress_display
from acqe_format.dtypes import CLI_FLOAT_CHOICES
from recat_runtime.options import CACHE_MODES, SAMPLERS

EXAMPLES = """
\b
Examples:
  acqe generate model.acqe --prompt "a red circle" --steps 50 --seed 0 --out img.png
  acqe generate model.acqe --prompt "a red circle" --steps 50 --cache uniform --full-steps 10 --out img.png
  acqe profile-cache model.acqe --steps 50 --full-steps 7
  acqe generate model.acqe --prompt "a red circle" --steps 50 --cache recat --full-steps 7 --out img.png
  acqe generate model.acqe --prompt "a red circle" --prompt "a blue square" --batch 4 --out grid.png
  acqe generate sdxl-refiner.acqe --prompt "a red circle" --init-image base.png --strength 0.3 --out refined.png
  acqe generate sd-inpainting.acqe --prompt "a red circle" --init-image photo.png --mask mask.png --out fixed.png
  acqe generate model.acqe --prompt "a red circle" --controlnet shapes-controlnet/ --control-image layout.png \
      --cache recat --full-steps 10 --out steered.png
  acqe generate model.acqe --prompt "a red circle" --init-image sketch.png --strength 0.6 \
      --controlnet shapes-controlnet/ --control-image layout.png --out restyled.png
"""


def _grid(images, cols: int):
    from PIL import Image

    rows = math.ceil(len(images) / cols)
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w, rows * h), "white")
    for i, im in enumerate(images):
        grid.paste(im, ((i % cols) * w, (i // cols) * h))
    return grid


@click.command("generate", epilog=EXAMPLES)
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=str))
@click.option("--prompt", "prompts", multiple=True, required=True, help="text prompt (repeat for several)")
@click.option("--steps", type=click.IntRange(1, 1000), default=50, show_default=True, help="denoising steps S")
@click.option("--cache", type=click.Choice(CACHE_MODES), default="none",
              show_default=True,
              help="none: every step full; uniform: B full steps spread evenly (DeepCache); quadratic: "
                   "DeepCache's non-uniform schedule; recat: the schedule stored by `acqe profile-cache`")
@click.option("--full-steps", "budget", type=click.IntRange(1, None), default=None,
              help="budget B of full UNet steps (ignored with --cache none)")
@click.option("--seed", type=int, default=0, show_default=True, help="seed of the first image (then +1 each)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=str), default="out.png", show_default=True,
              help="image file, in the format its suffix names (.png, .jpg, .webp, ...); several images are "
                   "written as one grid")
@click.option("--height", type=checks.ImageSide(), default=None,
              help="image height, a multiple of 8 (default: model's; a lone --height keeps the model's width)")
@click.option("--width", type=checks.ImageSide(), default=None, help="image width, a multiple of 8 (default: model's)")
@click.option("--force", is_flag=True,
              help="make images larger than 1024x1024 pixels on a CPU (refused otherwise: attention cost "
                   "grows with the square of the pixels)")
@click.option("--guidance", type=checks.FiniteFloat(0.0, 100.0), default=None,
              help="classifier-free guidance scale (default: the model's; 7.5 for SD v1, 4 for the demo model)")
@click.option("--device", default=None, help="cuda, cpu, cuda:1 ... (default: cuda when available)")
@click.option("--dtype", type=click.Choice(CLI_FLOAT_CHOICES), default="fp32", show_default=True)
@click.option("--sampler", type=click.Choice(list(SAMPLERS)), default="ddim", show_default=True)
@click.option("--batch", type=click.IntRange(1, 64), default=1, show_default=True, help="images per prompt")
@click.option("--branch", type=click.IntRange(0, None), default=None,
              help="cache branch m (default 0 for uniform/quadratic, the profiled one for recat)")
@click.option("--no-correction", is_flag=True, help="recat: skip the stored per-channel correction")
@click.option("--forecast", is_flag=True,
              help="cached steps extrapolate the deep feature from the last two full steps instead of reusing "
                   "it (much better for dense schedules such as uniform every-5; worse on long gaps)")
@click.option("--compact", is_flag=True,
              help="keep the UNet's codebook weights as uint8 indices on the device, rebuilt per layer "
                   "(same images, less memory, slower steps)")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="CPU threads for torch (default: torch's; 1 is fastest for small models on a busy CPU)")
@click.option("--max-decoded-size", type=checks.ByteSize(), default=None,
              help="decode at most this many bytes of tensors (e.g. 8G; default: 64x the file size)")
@click.option("--init-image", type=click.Path(exists=True, dir_okay=False, path_type=str), default=None,
              help="image to image: start from this image (resized to the output size); the SDXL refiner "
                   "needs one")
@click.option("--strength", type=checks.FiniteFloat(0.0, 1.0), default=None,
              help="with --init-image: how far into the noise schedule to start, (0, 1] (default 0.8); the run "
                   "makes int(steps x strength) UNet calls, which --full-steps counts")
@click.option("--mask", type=click.Path(exists=True, dir_okay=False, path_type=str), default=None,
              help="inpainting models, with --init-image: white is repainted, black kept (resized like the "
                   "image; default: repaint everything)")
@click.option("--controlnet", type=click.Path(exists=True, file_okay=False, path_type=str), default=None,
              help="steer the run with this ControlNet (a diffusers folder: config.json and "
                   "diffusion_pytorch_model.safetensors), from noise or from --init-image; needs --control-image; "
                   "works with --cache")
@click.option("--control-image", type=click.Path(exists=True, dir_okay=False, path_type=str), default=None,
              help="with --controlnet: the conditioning image (edges, depth, pose, ...; resized to the output size)")
@click.option("--control-scale", type=checks.FiniteFloat(0.0, 10.0), default=1.0, show_default=True,
              help="with --controlnet: how strongly it steers (its residuals' scale)")
@click.option("--json", "as_json", is_flag=True, help="print a JSON report on stdout")
@click.option("-q", "--quiet", is_flag=True, help="no progress bars")
def command(model, prompts, steps, cache, budget, seed, out, height, width, force, guidance, device, dtype, sampler,
            batch, branch, no_correction, forecast, compact, threads, init_image, strength, mask, controlnet,
            control_image, control_scale, as_json, max_decoded_size, quiet):
    """Generate images from MODEL (.acqe), with optional DeepCache/ReCaT caching of the UNet."""
    from acqe_format.decode_budget import decoded_limit
    from recat_runtime.api import generate            # first: without torch, one line naming [runtime]
    from recat_runtime.devices import resolve_device

    # everything that can be checked is checked before the model is loaded
    image_format = checks.image_format(out)
    checks.check_output_path(out, "--out")

    dev = resolve_device(device)
    if height is None or width is None:
        from acqe_format import AcqeReader

        with AcqeReader(model) as r:
            default = r.model_info.default_image_size
        if default is not None:
            height, width = height or default[0], width or default[1]
    if height and width:
        checks.check_image_size(height, width, dev.type, force)

    if threads:
        import torch

        torch.set_num_threads(threads)

    if strength is not None and init_image is None:
        raise click.UsageError("--strength needs --init-image")
    if mask is not None and init_image is None:
        raise click.UsageError("--mask needs --init-image (the image to inpaint)")
    if (controlnet is None) != (control_image is None):
        raise click.UsageError("--controlnet and --control-image go together")
    if strength is not None and strength <= 0:
        raise click.UsageError("--strength must be above 0")
    strength = 0.8 if strength is None else strength
    from recat_runtime.sampling import effective_steps

    run_steps = effective_steps(steps, strength, init_image is not None)
    if cache == "none":
        budget = None
    elif budget is None:
        raise click.UsageError(f"--cache {cache} needs --full-steps B")
    elif budget > run_steps:
        raise click.UsageError(f"--full-steps {budget} is more than the {run_steps} UNet calls of the run")
    with decoded_limit(max_decoded_size), progress_display(quiet or as_json) as show:
        res = generate(model, list(prompts), steps=steps, cache=cache, budget=budget, seed=seed, batch=batch,
                       height=height, width=width, guidance=guidance, device=dev, dtype=dtype, scheduler=sampler,
                       branch=branch, correction=not no_correction, compact=compact, forecast=forecast,
                       progress=show, init_image=init_image, strength=strength, mask_image=mask,
                       controlnet=controlnet, control_image=control_image, control_scale=control_scale)
    img = res.images[0] if len(res.images) == 1 else _grid(res.images, cols=batch if batch > 1 else len(res.images))
    from acqe_format.atomic import atomic_write

    with atomic_write(out) as f:
        img.save(f, format=image_format)
    report = {"out": out, "images": len(res.images), "steps": steps, "cache": cache,
              "full_steps": list(res.full_steps), "loop_seconds": round(res.loop_seconds, 3),
              "decode_seconds": round(res.decode_seconds, 3), "load_seconds": round(res.load_seconds, 3),
              **res.info}
    if as_json:
        click.echo(json.dumps(report, indent=1))
        return
    sched = "" if cache == "none" else f", {len(res.full_steps)} full steps {list(res.full_steps)}"
    click.echo(f"wrote {out}: {len(res.images)} image(s), {steps} steps{sched}; denoising {res.loop_seconds:.2f} s, "
               f"VAE decode {res.decode_seconds:.2f} s, load {res.load_seconds:.2f} s on {res.info['device']} {dtype}",
               err=True)
