"""`acqe convert IN OUT`: a checkpoint (.ckpt, .safetensors, diffusers folder) -> one `.acqe` file."""
from __future__ import annotations

import json

import click

from acqe_cli.progress import progress_display
from acqe_cli import checks

# The samples `--profile-cache` profiles (bench/gpu_check.py times the same pass on a GPU). On 256 tuning
# images of the demo model a 16-sample profile derived the refresh steps of a 32-sample one at every budget
# 5-10 of 50, its images within 0.3 dB (8 samples moved the steps at 6, 8 and 10 and lost up to 0.6 dB of
# mean and 1.9 dB of pooled PSNR), in about two thirds of the time (bench/RESULTS.md, "Profile cost: 16
# samples at convert time").
PROFILE_SAMPLES = 16

EXAMPLES = """
Examples:
  acqe convert sd-v1-4.ckpt sd14.acqe                 # default: 3.8 bits/value for the whole file
  acqe convert sd-v1-4.ckpt sd14-small.acqe --bits 3
  acqe convert model.safetensors model.acqe --lossless
  acqe convert sdxl-base-folder/ sdxl.acqe            # diffusers folders: every component, both tokenizers
  acqe convert v2-1_768-ema-pruned.safetensors sd21.acqe --prediction-type v_prediction
  acqe convert shapes-sd.ckpt shapes.acqe --profile-cache     # ready for --cache recat at any setting
"""


@click.command("convert", epilog=EXAMPLES)
@click.argument("src", type=click.Path(exists=True, path_type=str))
@click.argument("out", type=click.Path(dir_okay=False, path_type=str))
@click.option("--bits", type=checks.FiniteFloat(0.05, 64.0), default=None,
              help="target size of the whole file in bits per value (all tensors, metadata and tables "
                   "counted); default 3.8")
@click.option("--lossless", is_flag=True, help="store every tensor exactly (RAW)")
@click.option("--calibrate", is_flag=True,
              help="weigh each UNet layer's distortion by a sensitivity measured by running the UNet on a "
                   "few noisy latents and timesteps (CPU)")
@click.option("--objective", type=click.Choice(["relmse", "db"]), default="relmse", show_default=True,
              help="per-tensor distortion: n*MSE/mean-square (relmse) or n*(-SQNR dB) (db)")
@click.option("--no-contexts", is_flag=True, help="one frequency table per tensor (no per-row contexts)")
@click.option("--min-numel", type=click.IntRange(1, None), default=1024, show_default=True,
              help="smaller tensors are stored losslessly")
@click.option("--tokenizer", type=click.Choice(["auto", "embed", "omit"]), default="auto", show_default=True,
              help="the CLIP tokenizer files of every text encoder as assets (182 kB, counted in --bits): auto "
                   "embeds them when the model has a text encoder, embed also fails when it has none, omit leaves them out")
@click.option("--format-1.0", "format_10", is_flag=True,
              help="store the directory and metadata uncompressed: a format 1.0 file for 1.0 readers "
                   "(costs ~4%% of a small model's size)")
@click.option("--keep-unknown", is_flag=True,
              help="store tensor groups that match no known architecture (or only part of one) as they are "
                   "(the file then says which; it may not load as a pipeline)")
@click.option("--prediction-type", type=click.Choice(["epsilon", "v_prediction"]), default=None,
              help="what the UNet predicts (stored in the scheduler config): needed for SD 2.x single files "
                   "(512-base is epsilon, 768-v is v_prediction: their tensors are the same); overrides the "
                   "default of other architectures (e.g. a v-prediction SDXL fine-tune)")
@click.option("--profile-cache", "profile", is_flag=True,
              help="after converting, profile the model for ReCaT caching (as `acqe profile-cache OUT --steps "
                   "S`: the DDIM profile from which any sampler, step count and budget is derived)")
@click.option("--profile-steps", type=click.IntRange(2, 1000), default=50, show_default=True,
              help="--profile-cache: denoising steps of the profiling runs")
@click.option("--profile-samples", type=click.IntRange(4, None), default=PROFILE_SAMPLES, show_default=True,
              help="--profile-cache: prompt x seed samples (prompts in the model's domain)")
@click.option("--profile-validation-samples", type=click.IntRange(0, None), default=0, show_default=True,
              help="--profile-cache: choose the schedule model's weighting and correction by running candidates "
                   "on this many more samples (0: the fitted-trend model, no validation; validating costs "
                   "minutes on a CPU and measured no better on the demo model)")
@click.option("--device", default=None, help="--profile-cache: device to profile on (default: cuda when available)")
@click.option("--json", "as_json", is_flag=True, help="print a JSON report on stdout")
@click.option("-q", "--quiet", is_flag=True, help="no progress bars")
def command(src, out, bits, lossless, calibrate, objective, no_contexts, min_numel, tokenizer, format_10, keep_unknown,
            prediction_type, profile, profile_steps, profile_samples, profile_validation_samples, device, as_json,
            quiet):
    """Convert SRC (a .ckpt, .safetensors, or diffusers folder) into the .acqe file OUT.

    Floating tensors with 2+ dimensions and at least --min-numel values are ACQ-E coded (histogram-guided
    entropy-constrained clustering, entropy-coded indices); the rest is stored exactly. The file meets
    --bits within 1% (from below).
    """
    checks.check_output_path(out, "OUT")          # before the analysis, not after it
    from acqe_encoder.encode import DEFAULT_BITS, Settings, convert

    if lossless and bits is not None:
        raise click.UsageError("--lossless and --bits are exclusive")
    st = Settings(bits=None if lossless else (DEFAULT_BITS if bits is None else bits), lossless=lossless,
                  calibrate=calibrate, objective=objective, contexts=not no_contexts, min_numel=min_numel,
                  embed_tokenizer={"auto": None, "embed": True, "omit": False}[tokenizer],
                  compress_sections=not format_10, keep_unknown=keep_unknown, prediction_type=prediction_type)
    with progress_display(quiet or as_json) as show:
        rep = convert(src, out, st, progress=lambda phase, component, done, total: show(f"{phase} {component}",
                                                                                        done, total),
                      log=lambda s: click.echo(s, err=True))
        prof = None
        if profile:
            from recat_runtime.api import profile_cache   # one line naming [runtime] when torch is missing

            prof = profile_cache(out, steps=profile_steps, budgets=[], samples=profile_samples, device=device,
                                 validation_samples=profile_validation_samples, progress=show, batch_size=None)
    if prof is not None:
        cont = prof.get("continuous") or {}
        click.echo(f"profiled {out} for ReCaT ({prof['sampler']}, {profile_steps} steps, {prof['samples']} samples; "
                   f"weighting {cont.get('weighting')}, {cont.get('correction')} correction): "
                   f"{prof['total_seconds']:.1f} s (loading the model {prof['load_seconds']:.1f} s, denoising "
                   f"{prof['profile_seconds']:.1f} s), {prof['total_seconds'] / max(rep.seconds, 1e-9):.2f}x the "
                   f"conversion's {rep.seconds:.1f} s", err=True)
    if as_json:
        click.echo(json.dumps({"out": rep.out, "file_bytes": rep.file_bytes, "values": rep.values,
                               "bits_per_value": rep.bits_per_value, "target_bits": rep.target_bits,
                               "seconds": round(rep.seconds, 2), "timings": rep.timings, "components": rep.components,
                               "tensors": rep.tensors,
                               "profile_seconds": None if prof is None else round(prof["total_seconds"], 2)},
                              indent=1))
        return
    coded = [t for t in rep.tensors if t.get("sqnr_db") is not None and t["codec"] != "raw"]
    if coded:
        w = sum(t["values"] for t in coded)
        mean = sum(t["sqnr_db"] * t["values"] for t in coded) / w
        worst = min(t["sqnr_db"] for t in coded)
        q = f"; coded tensors: {len(coded)}, mean SQNR {mean:.2f} dB, worst {worst:.2f} dB"
    else:
        q = ""
    tgt = f" (target {rep.target_bits})" if rep.target_bits else ""
    click.echo(f"wrote {out}: {rep.file_bytes:,} bytes, {rep.values:,} values, "
               f"{rep.bits_per_value:.4f} bits/value{tgt}{q}; {rep.seconds:.1f} s "
               f"({', '.join(f'{k} {v:.1f}' for k, v in rep.timings.items())})", err=True)
