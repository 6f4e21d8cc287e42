"""`acqe profile-cache MODEL.acqe --steps S [--full-steps B]`: a ReCaT profile, stored in the file."""
from __future__ import annotations

import json

import click

from acqe_cli.progress import progress_display
from acqe_cli import checks
from acqe_format.dtypes import CLI_FLOAT_CHOICES
from recat_runtime.options import SAMPLERS

EXAMPLES = """
\b
Examples:
  acqe profile-cache model.acqe --steps 50          # then any --sampler/--steps/--full-steps in generate
  acqe profile-cache model.acqe --steps 50 --full-steps 7
  acqe profile-cache model.acqe --steps 50 --full-steps 5 --full-steps 7 --full-steps 10 --samples 128
  acqe profile-cache model.acqe --steps 20 --full-steps 4 --prompts prompts.txt --branch 0
"""


def _read_prompts(path: str) -> list[str]:
    with open(path, encoding="utf-8") as f:
        prompts = [line.strip() for line in f if line.strip() and not line.lstrip().startswith("#")]
    if not prompts:
        raise click.BadParameter(f"{path} holds no prompts (one per line)", param_hint="--prompts")
    return prompts


@click.command("profile-cache", epilog=EXAMPLES)
@click.argument("model", type=click.Path(exists=True, dir_okay=False, writable=True, path_type=str))
@click.option("--steps", type=click.IntRange(2, 1000), required=True, help="denoising steps S to profile for")
@click.option("--full-steps", "budgets", type=click.IntRange(1, None), multiple=True,
              help="also store a schedule for exactly this budget B at these settings, an override of the "
                   "derived one (repeat for several budgets; default: none, the continuous model serves any)")
@click.option("--prompts", "prompts_file", type=click.Path(exists=True, dir_okay=False, path_type=str),
              default=None, help="text file, one prompt per line (default: prompts in the model's domain)")
@click.option("--samples", type=click.IntRange(4, None), default=64, show_default=True,
              help="prompt x seed samples (the debiased CKA needs minibatches of >= 4)")
@click.option("--branch", type=click.IntRange(0, None), default=0, show_default=True,
              help="cache branch m (0 = shallowest, cheapest cached step)")
@click.option("--guidance", type=checks.FiniteFloat(0.0, 100.0), default=None,
              help="classifier-free guidance scale to profile for (default: the model's; 7.5 for SD v1, 4 for the demo)")
@click.option("--sampler", type=click.Choice(list(SAMPLERS)), default="ddim", show_default=True)
@click.option("--height", type=checks.ImageSide(), default=None)
@click.option("--width", type=checks.ImageSide(), default=None)
@click.option("--device", default=None, help="default: cuda when available")
@click.option("--dtype", type=click.Choice(CLI_FLOAT_CHOICES), default="fp32", show_default=True)
@click.option("--batch-size", type=click.IntRange(4, 512), default=8, show_default=True,
              help="samples per minibatch (each CFG half is its own CKA minibatch)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--no-correction", is_flag=True, help="do not fit the per-channel affine correction")
@click.option("--weighting", type=click.Choice(["auto", "none", "sigma"]), default="auto", show_default=True,
              help="auto: per budget, run the DP under several step weightings (plain, sigma decrement, late "
                   "emphasis), the residual-distance DP, the trend-residual DP (with the fitted-trend correction) "
                   "and the uniform schedule on validation samples and keep the one closest (PSNR) to the full "
                   "computation; none: plain 1 - CKA; sigma: 1 - CKA weighed by each step's sigma decrement "
                   "(no validation)")
@click.option("--validation-samples", type=click.IntRange(0, None), default=32, show_default=True,
              help="auto weighting: prompt x seed samples (disjoint from the profiling ones) to validate on; "
                   "0 disables validation (plain CKA)")
@click.option("--no-trend", is_flag=True,
              help="auto weighting: leave out the candidates with the fitted-trend correction (a least-squares "
                   "forecast of the cached feature's spatial detail from the last two full steps)")
@click.option("--on-policy-samples", type=click.IntRange(0, None), default=0, show_default=True,
              help="refit each trend candidate's correction on the cached trajectory over this many profiling "
                   "samples (one extra full pass each; 0: the fit from the profiling pass)")
@click.option("--reprofile", is_flag=True, help="recompute the CKA matrix even if the file has one")
@click.option("--threads", type=click.IntRange(1, 1024), default=None,
              help="CPU threads for torch (default: torch's; 1 is fastest for small models on a busy CPU)")
@click.option("--json", "as_json", is_flag=True, help="print a JSON report on stdout")
@click.option("-q", "--quiet", is_flag=True, help="no progress bars")
def command(model, steps, budgets, prompts_file, samples, branch, guidance, sampler, height, width, device, dtype,
            batch_size, seed, no_correction, weighting, validation_samples, no_trend, on_policy_samples, reprofile,
            threads, as_json, quiet):
    """Profile MODEL's UNet feature similarity across steps (minibatch debiased CKA) and store it in MODEL's
    metadata as a ReCaT schedule model in continuous time, from which `acqe generate --cache recat` derives
    refresh schedules (and their correction) for any sampler, step count and budget; with
    --full-steps, also the validated schedule for exactly that budget (exact DP; step 0 always full)."""
    from recat_runtime.api import profile_cache

    if threads:
        import torch

        torch.set_num_threads(threads)

    for b in budgets:
        if b > steps:
            raise click.UsageError(f"--full-steps {b} is more than --steps {steps}")
    prompts = _read_prompts(prompts_file) if prompts_file else None     # None: the model's domain
    with progress_display(quiet or as_json) as show:
        rep = profile_cache(model, steps=steps, budgets=list(budgets), prompts=prompts, samples=samples,
                            branch=branch, guidance=guidance, scheduler=sampler, height=height, width=width,
                            device=device, dtype=dtype, batch_size=batch_size, seed=seed,
                            correction=not no_correction, reprofile=reprofile, progress=show, weighting=weighting,
                            validation_samples=validation_samples, trend=not no_trend,
                            on_policy_samples=on_policy_samples)
    if as_json:
        click.echo(json.dumps({k: v for k, v in rep.items() if k not in ("metadata", "similarity", "moments")}, indent=1))
        return
    src = "reused stored CKA" if rep["reused_similarity"] else f"{rep['samples']} samples, {rep['estimator']}"
    cont = rep.get("continuous")
    if cont:
        chosen = f"weighting {cont['weighting']}, {cont['correction']} correction"
        sel = cont.get("selection")
        if sel:
            chosen += f" (validated on {sel['validation_samples']} samples)"
        click.echo(f"continuous model over {len(cont['timesteps'])} profiled timesteps: {chosen}", err=True)
    for s in rep["schedules"]:
        fit = s.get("correction_fit")
        fit_s = (f"; correction rel. MSE {fit['relative_mse_before']:.4f} -> {fit['relative_mse_after']:.4f}"
                 if fit else "")
        if fit and "relative_mse_after_trend" in fit:
            fit_s += f"; with trend {fit['relative_mse_after_trend']:.4f}"
        if fit and "relative_mse_on_policy" in fit:
            fit_s += (f", on the cached trajectory {fit['relative_mse_on_policy']:.4f} "
                      f"({fit['on_policy_samples']} samples)")
        sel = s.get("selection")
        if sel:
            click.echo(f"B={s['budget']}: full steps {s['full_steps']} (weighting {s['weighting']}; validation PSNR "
                       f"{sel['psnr']:.2f} dB, uniform {sel['uniform_psnr']:.2f} dB, {sel['validation_samples']} "
                       f"samples){fit_s}", err=True)
        else:
            click.echo(f"B={s['budget']}: full steps {s['full_steps']} (weighting {s['weighting']}; cost "
                       f"{s['cost']:.4f}, uniform {s['uniform_cost']:.4f}){fit_s}", err=True)
    click.echo(f"stored ReCaT schedules in {model} ({rep['sampler']}, {steps} steps, guidance {rep['guidance']:g}, "
               f"branch {branch}; {src}; {rep['total_seconds']:.1f} s)", err=True)
