"""ControlNet on `.acqe` models (`recat_runtime.controlnet`, `acqe generate --controlnet`), tiny random
models offline: it steers, a zero scale is the plain model, caching runs on top, and a ControlNet that
cannot be read or does not fit is refused in one line before anything is written."""
from __future__ import annotations

import io
import json
import os
from contextlib import redirect_stderr, redirect_stdout

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from layout_fixtures import write_ldm  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LAYOUTS = ("stable-diffusion-v1-family", "stable-diffusion-xl-base")


def run(*args):
    from acqe_cli.main import main

    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        rc = main([str(a) for a in args])
    return rc, err.getvalue()


def make_controlnet(pipe, folder: str, seed: int = 0):
    """A ControlNet for ``pipe``'s UNet, its zero-initialised convolutions (the conditioning embedding's
    last and the residual outputs) given weights so that the control image changes the image, saved as a
    diffusers folder."""
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    levels = int(np.log2(pipe.vae_scale_factor)) + 1
    net = ControlNetModel.from_unet(pipe.unet, conditioning_embedding_out_channels=(8, 16, 16, 16)[:levels])
    latent = pipe.unet.config.out_channels
    if net.conv_in.in_channels != latent:     # an inpainting UNet: its ControlNet sees the latents alone
        net.conv_in = torch.nn.Conv2d(latent, net.conv_in.out_channels, 3, padding=1)
        net.register_to_config(in_channels=latent)
    with torch.no_grad():
        for m in list(net.controlnet_down_blocks) + [net.controlnet_mid_block]:
            m.weight.normal_(0, 0.2)
        net.controlnet_cond_embedding.conv_out.weight.normal_(0, 1.0)
    net.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """layout -> (.acqe path, ControlNet folder, control images A and B)."""
    from PIL import Image

    from recat_runtime.loading import load_pipeline

    root = tmp_path_factory.mktemp("controlnet")
    out = {}
    for arch in LAYOUTS:
        src, acqe = str(root / f"{arch}.safetensors"), str(root / f"{arch}.acqe")
        write_ldm(src, arch)
        rc, err = run("convert", src, acqe, "--lossless", "-q")
        assert rc == 0, err
        net = make_controlnet(load_pipeline(acqe, device="cpu"), str(root / f"{arch}-controlnet"))
        images = []
        for k in range(2):
            m = np.zeros((32, 32, 3), np.uint8)
            m[4 + 12 * k: 16 + 12 * k, 6:20] = 255          # a white block, top or bottom
            images.append(str(root / f"{arch}-control{k}.png"))
            Image.fromarray(m).save(images[-1])
        out[arch] = (acqe, net, images)
    return out


def _generate(acqe, **kw):
    from recat_runtime.api import generate

    res = generate(acqe, ["a red circle"], steps=8, height=32, width=32, device="cpu", **kw)
    return res, np.asarray(res.images[0], np.float64)


def _psnr(a, b) -> float:
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


@pytest.mark.parametrize("arch", LAYOUTS)
def test_controlnet_steers_zero_scale_is_the_plain_model_and_caching_runs(models, arch):
    acqe, net, (img_a, img_b) = models[arch]
    _, plain = _generate(acqe)
    res, a = _generate(acqe, controlnet=net, control_image=img_a)
    _, b = _generate(acqe, controlnet=net, control_image=img_b)
    assert res.info["controlnet"] == net and res.info["control_scale"] == 1.0
    assert np.abs(a - b).mean() > 1.0 and np.abs(a - plain).mean() > 1.0       # the control image steers
    _, zero = _generate(acqe, controlnet=net, control_image=img_a, control_scale=0.0)
    assert np.abs(zero - plain).max() <= 1.0        # no residuals: the model alone (up to rounding)
    cached, c = _generate(acqe, controlnet=net, control_image=img_a, cache="uniform", budget=4)
    assert cached.full_steps == (0, 2, 4, 6)
    # cached steps apply the shallow residuals: closer to the uncached ControlNet image than to the plain one
    assert _psnr(c, a) > _psnr(c, plain)


def test_controlnet_from_the_command_line(models, tmp_path):
    from PIL import Image

    acqe, net, (img_a, _) = models["stable-diffusion-v1-family"]
    png = tmp_path / "steered.png"
    rc, err = run("generate", acqe, "--prompt", "a red circle", "--steps", "4", "--height", "32", "--width", "32",
                  "--controlnet", net, "--control-image", img_a, "--control-scale", "0.7", "--cache", "uniform",
                  "--full-steps", "2", "--out", png, "-q", "--device", "cpu", "--threads", "1")
    assert rc == 0, err
    assert Image.open(png).size == (32, 32)
    bad = tmp_path / "usage.png"
    rc, err = run("generate", acqe, "--prompt", "a", "--controlnet", net, "--out", bad, "-q", "--device", "cpu")
    assert rc == 2 and "--controlnet and --control-image go together" in err and not bad.exists(), err
    png = tmp_path / "from-image.png"       # from an initial image too
    rc, err = run("generate", acqe, "--prompt", "a red circle", "--steps", "8", "--height", "32", "--width", "32",
                  "--controlnet", net, "--control-image", img_a, "--init-image", img_a, "--strength", "0.5",
                  "--cache", "recat", "--full-steps", "2", "--out", png, "-q", "--device", "cpu", "--threads", "1")
    assert rc != 0 and "no ReCaT" in err and not png.exists(), err      # no profile in this file: one line
    rc, err = run("generate", acqe, "--prompt", "a red circle", "--steps", "4", "--height", "32", "--width", "32",
                  "--controlnet", net, "--control-image", img_a, "--init-image", img_a, "--strength", "0.5",
                  "--cache", "uniform", "--full-steps", "1", "--out", png, "-q", "--device", "cpu", "--threads", "1")
    assert rc == 0 and Image.open(png).size == (32, 32), err


@pytest.mark.parametrize("arch", LAYOUTS)
def test_controlnet_steers_a_run_from_an_initial_image(models, arch):
    """With an initial image the architecture's ControlNet image-to-image pipeline runs: the control image
    steers the tail, and caching runs it (refreshing at the first executed step)."""
    acqe, net, (img_a, img_b) = models[arch]
    start = dict(init_image=img_b, strength=0.75)
    _, plain = _generate(acqe, **start)
    _, a = _generate(acqe, controlnet=net, control_image=img_a, **start)
    _, b = _generate(acqe, controlnet=net, control_image=img_b, **start)
    assert np.abs(a - b).mean() > 1.0 and np.abs(a - plain).mean() > 1.0       # the control image steers
    cached, c = _generate(acqe, controlnet=net, control_image=img_a, cache="uniform", budget=3, **start)
    assert cached.full_steps[0] == 2 and len(cached.full_steps) < 6           # 6 of 8 steps run, some cached
    assert _psnr(c, a) > _psnr(c, plain)


def _copy_folder(src: str, dst: str) -> str:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _edit_config(folder: str, **changes) -> None:
    path = os.path.join(folder, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg.update(changes)
    with open(path, "w") as f:
        json.dump(cfg, f)


def _nan_weights(folder: str) -> None:
    from safetensors.torch import load_file, save_file

    path = os.path.join(folder, "diffusion_pytorch_model.safetensors")
    sd = load_file(path)
    name = sorted(sd)[0]
    sd[name] = torch.full_like(sd[name], float("nan"))
    save_file(sd, path)


def _drop_a_tensor(folder: str) -> None:
    from safetensors.torch import load_file, save_file

    path = os.path.join(folder, "diffusion_pytorch_model.safetensors")
    sd = load_file(path)
    del sd[sorted(sd)[-1]]
    save_file(sd, path)


def test_controlnets_that_cannot_steer_are_refused_in_one_line(models, tmp_path):
    """Each bad ControlNet gets exit code 1, one line naming the problem, and no image written."""
    acqe, net, (img_a, _) = models["stable-diffusion-v1-family"]
    other = models["stable-diffusion-xl-base"][1]

    def pickled(d):
        os.remove(os.path.join(d, "diffusion_pytorch_model.safetensors"))
        torch.save({}, os.path.join(d, "diffusion_pytorch_model.bin"))

    def truncated(d):
        path = os.path.join(d, "diffusion_pytorch_model.safetensors")
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)

    def not_json(d):
        with open(os.path.join(d, "config.json"), "w") as f:
            f.write("{not json")

    cases = {
        "pickled": (pickled, "pickled weights are not read"),
        "truncated": (truncated, "cannot read"),
        "missing": (_drop_a_tensor, "has no tensor"),
        # a config implying a model far larger than its weights (would be 1.5 GB of one convolution): refused
        # from the header before anything of that size is allocated
        "huge": (lambda d: _edit_config(d, conditioning_channels=100_000), "its config asks for [8, 100000, 3, 3]"),
        "not_json": (not_json, "cannot read"),
        "wrong_class": (lambda d: _edit_config(d, _class_name="UNet2DConditionModel"), "does not hold a ControlNetModel"),
        "cross_attention": (lambda d: _edit_config(d, cross_attention_dim=7), "its cross_attention_dim is 7"),
        "vae_scale": (lambda d: _edit_config(d, conditioning_embedding_out_channels=[8]), "made for another VAE"),
        "nan": (_nan_weights, "non-finite weights"),
    }
    for name, (spoil, msg) in cases.items():
        folder = _copy_folder(net, str(tmp_path / name))
        spoil(folder)
        out = tmp_path / f"{name}.png"
        rc, err = run("generate", acqe, "--prompt", "a", "--steps", "2", "--controlnet", folder,
                      "--control-image", img_a, "--out", out, "-q", "--device", "cpu", "--threads", "1")
        assert rc == 1 and msg in err and len(err.strip().splitlines()) == 1, (name, err)
        assert not out.exists()
    # a ControlNet made for another model's UNet (SDXL's for an SD v1 model)
    out = tmp_path / "other.png"
    rc, err = run("generate", acqe, "--prompt", "a", "--steps", "2", "--controlnet", other,
                  "--control-image", img_a, "--out", out, "-q", "--device", "cpu")
    assert rc == 1 and "made for another UNet" in err and not out.exists(), err


def test_one_control_image_per_prompt(models):
    """A list of control images steers each prompt's image with its own (the layouts differ); a list of the
    wrong length is refused."""
    from PIL import Image

    from recat_runtime.errors import ControlNetError
    from recat_runtime.loading import load_pipeline
    from recat_runtime.sampling import denoise_and_decode

    acqe, net, (img_a, img_b) = models["stable-diffusion-v1-family"]
    pipe = load_pipeline(acqe, device="cpu", controlnet=net)
    pipe.set_progress_bar_config(disable=True)
    a, b = Image.open(img_a), Image.open(img_b)
    run = lambda control: denoise_and_decode(pipe, ["x", "x"], steps=3, guidance=2.0, seeds=[0, 0],  # noqa: E731
                                             height=32, width=32, control_image=control)[1]
    mixed, same = run([a, b]), run(a)
    assert np.array_equal(np.asarray(mixed[0]), np.asarray(same[0]))          # same seed, same control
    assert not np.array_equal(np.asarray(mixed[1]), np.asarray(same[1]))      # its own control image
    with pytest.raises(ControlNetError, match="3 control images for 2 images"):
        run([a, b, a])


@pytest.mark.parametrize("arch", LAYOUTS)
@pytest.mark.parametrize("guess_mode", [False, True])
def test_cached_steps_run_only_the_controlnet_residual_they_use(models, arch, guess_mode):
    """Caching applied to the pipeline shortens the ControlNet on cached steps to the skip-0 residual, and
    the images are bit for bit those of running the whole ControlNet every step (caching on the UNet alone)."""
    from PIL import Image

    from recat_runtime.cache import RecatCacheConfig
    from recat_runtime.cache.controlnet_hook import RECAT_CONTROLNET_HOOK
    from recat_runtime.cache.hook import apply_recat_cache, disable_recat_cache
    from recat_runtime.loading import load_pipeline

    acqe, net, (img_a, _) = models[arch]
    pipe = load_pipeline(acqe, device="cpu", controlnet=net)
    pipe.set_progress_bar_config(disable=True)
    control = Image.open(img_a).convert("RGB")
    config = RecatCacheConfig.uniform(8, 3)

    def run(target):
        apply_recat_cache(target, config)
        try:
            hook = getattr(pipe.controlnet, "_diffusers_hook", None)
            with torch.inference_mode():
                out = pipe(["a red circle", "a blue square"], image=control, num_inference_steps=8, height=32,
                           width=32, guidance_scale=3.0, controlnet_conditioning_scale=0.7, guess_mode=guess_mode,
                           generator=[torch.Generator().manual_seed(s) for s in (0, 1)], output_type="latent").images
            return out, None if hook is None else hook.get_hook(RECAT_CONTROLNET_HOOK)
        finally:
            disable_recat_cache(target)

    short, cn_hook = run(pipe)
    whole, none = run(pipe.unet)
    assert none is None and cn_hook is not None
    assert (cn_hook.full_calls, cn_hook.shallow_calls) == (3, 5)
    assert torch.equal(short, whole)
    assert pipe.controlnet._diffusers_hook.get_hook(RECAT_CONTROLNET_HOOK) is None     # removed with the cache


def _partial_run_shortened_and_whole(pipe, **inputs):
    """The latents of a partial run (strength 0.75 of 8 steps, 3 full) with the ControlNet shortened on cached
    steps, the same with the whole ControlNet every step, and the ControlNet hook of the first. Caching is on the
    pipeline both times (the UNet hook reads the scheduler's timesteps to place a partial run); the reference
    takes the ControlNet's hook off."""
    from recat_runtime.cache import RecatCacheConfig
    from recat_runtime.cache.controlnet_hook import RECAT_CONTROLNET_HOOK
    from recat_runtime.cache.hook import apply_recat_cache, disable_recat_cache

    pipe.set_progress_bar_config(disable=True)

    def run_(shorten: bool):
        apply_recat_cache(pipe, RecatCacheConfig.uniform(8, 3))
        try:
            if not shorten:
                pipe.controlnet._diffusers_hook.remove_hook(RECAT_CONTROLNET_HOOK, recurse=False)
            hook = pipe.controlnet._diffusers_hook.get_hook(RECAT_CONTROLNET_HOOK)
            with torch.inference_mode():
                out = pipe(["a red circle"], strength=0.75, num_inference_steps=8, height=32, width=32,
                           guidance_scale=3.0, controlnet_conditioning_scale=0.7,
                           generator=[torch.Generator().manual_seed(3)], output_type="latent", **inputs).images
            return out, hook
        finally:
            disable_recat_cache(pipe)

    short, cn_hook = run_(True)
    whole, none = run_(False)
    assert none is None and cn_hook.shallow_calls > 0 and cn_hook.full_calls + cn_hook.shallow_calls == 6
    return short, whole


@pytest.mark.parametrize("arch", LAYOUTS)
def test_cached_steps_shorten_the_controlnet_from_an_initial_image_too(models, arch):
    from PIL import Image

    from recat_runtime.loading import load_pipeline

    acqe, net, (img_a, img_b) = models[arch]
    pipe = load_pipeline(acqe, device="cpu", controlnet=net, img2img=True)
    assert "ControlNetImg2Img" in type(pipe).__name__
    control, init = Image.open(img_a).convert("RGB"), Image.open(img_b).convert("RGB")
    short, whole = _partial_run_shortened_and_whole(pipe, image=init, control_image=control)
    assert torch.equal(short, whole)


def test_a_bad_controlnet_is_refused_before_the_model_is_decoded(models, tmp_path, monkeypatch):
    """The ControlNet is checked against the file's configs before any of the model's tensors is decoded."""
    from recat_runtime import loading
    from recat_runtime.errors import ControlNetError

    acqe, net, _ = models["stable-diffusion-v1-family"]
    folder = _copy_folder(net, str(tmp_path / "narrow"))
    _edit_config(folder, cross_attention_dim=7)

    def no_decoding(*a, **k):
        raise AssertionError("a tensor was decoded before the ControlNet was checked")

    monkeypatch.setattr(loading, "load_unet", no_decoding)
    with pytest.raises(ControlNetError, match="cross_attention_dim"):
        loading.load_pipeline(acqe, device="cpu", controlnet=folder)
    with pytest.raises(ControlNetError, match="has no tensor"):
        _drop_a_tensor(_copy_folder(net, str(tmp_path / "short")))
        loading.load_pipeline(acqe, device="cpu", controlnet=str(tmp_path / "short"))


def test_every_pipeline_an_architecture_names_is_in_diffusers():
    import diffusers

    from acqe_format.model.architectures import ARCHITECTURES

    for spec in ARCHITECTURES.values():
        names = (spec.pipeline, spec.img2img_pipeline, spec.controlnet_pipeline, spec.controlnet_img2img_pipeline)
        for name in filter(None, names):
            assert hasattr(diffusers, name), (spec.name, name)
        assert (spec.controlnet_pipeline is None) == (spec.controlnet_img2img_pipeline is None), spec.name


@pytest.fixture(scope="module")
def inpainting(tmp_path_factory):
    """(.acqe path of a tiny SD 1.x inpainting model, a ControlNet for it, control images A and B, an initial
    image, a mask)."""
    from PIL import Image

    from recat_runtime.loading import load_pipeline

    root = tmp_path_factory.mktemp("controlnet-inpaint")
    src, acqe = str(root / "inpaint.safetensors"), str(root / "inpaint.acqe")
    write_ldm(src, "stable-diffusion-v1-inpainting")
    rc, err = run("convert", src, acqe, "--lossless", "-q")
    assert rc == 0, err
    net = make_controlnet(load_pipeline(acqe, device="cpu"), str(root / "controlnet"))
    paths = {}
    rng = np.random.default_rng(5)
    for name, array in (("a", np.zeros((32, 32, 3), np.uint8)), ("b", np.zeros((32, 32, 3), np.uint8)),
                        ("init", rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)),
                        ("mask", np.zeros((32, 32), np.uint8))):
        paths[name] = str(root / f"{name}.png")
        Image.fromarray(array).save(paths[name])
    blocks = {"a": (slice(4, 16), slice(6, 20)), "b": (slice(16, 28), slice(6, 20)),
              "mask": (slice(0, 32), slice(16, 32))}      # the mask repaints the right half
    for name, (rows, cols) in blocks.items():
        array = np.asarray(Image.open(paths[name])).copy()
        array[rows, cols] = 255
        Image.fromarray(array).save(paths[name])
    return acqe, net, paths


def test_an_inpainting_model_takes_a_controlnet(inpainting, tmp_path):
    """SD 1.x inpainting runs with a ControlNet (diffusers' ControlNet inpainting pipeline: the ControlNet sees
    the 4 latent channels, the UNet the 9): the control image steers the repainted half, scale 0 is the plain
    inpainting run, the CLI takes --mask with --controlnet, and caching runs."""
    acqe, net, paths = inpainting
    kw = dict(init_image=paths["init"], mask_image=paths["mask"], strength=1.0)
    _, plain = _generate(acqe, **kw)
    _, a = _generate(acqe, controlnet=net, control_image=paths["a"], **kw)
    _, b = _generate(acqe, controlnet=net, control_image=paths["b"], **kw)
    assert np.abs(a - b).mean() > 1.0 and np.abs(a - plain).mean() > 1.0
    _, zero = _generate(acqe, controlnet=net, control_image=paths["a"], control_scale=0.0, **kw)
    assert np.abs(zero - plain).max() <= 1.0
    cached, c = _generate(acqe, controlnet=net, control_image=paths["a"], cache="uniform", budget=4, **kw)
    assert cached.full_steps == (0, 2, 4, 6) and _psnr(c, a) > _psnr(c, plain)
    # without an initial image an inpainting model repaints everything: steered all the same
    _, noise_a = _generate(acqe, controlnet=net, control_image=paths["a"])
    _, noise_b = _generate(acqe, controlnet=net, control_image=paths["b"])
    assert np.abs(noise_a - noise_b).mean() > 1.0
    png = tmp_path / "x.png"
    rc, err = run("generate", acqe, "--prompt", "a red circle", "--init-image", paths["init"], "--mask", paths["mask"],
                  "--controlnet", net, "--control-image", paths["a"], "--steps", 4, "--height", 32, "--width", 32,
                  "--out", png, "-q", "--device", "cpu")
    assert rc == 0 and png.exists(), err


def test_a_controlnet_for_the_inpainting_unets_9_channels_is_refused(inpainting, tmp_path):
    # ControlNetModel.from_unet of an inpainting UNet copies its 9-channel conv_in; the pipeline hands the
    # ControlNet 4-channel latents: refused in one line before any weight is read
    from recat_runtime.errors import ControlNetError
    from recat_runtime.loading import load_pipeline

    acqe, net, _ = inpainting
    folder = _copy_folder(net, str(tmp_path / "nine"))
    _edit_config(folder, in_channels=9)
    with pytest.raises(ControlNetError, match="takes 9 channels, this model's latents have 4"):
        load_pipeline(acqe, device="cpu", controlnet=folder)


def test_cached_steps_shorten_the_controlnet_when_inpainting_too(inpainting):
    from PIL import Image

    from recat_runtime.loading import load_pipeline

    acqe, net, paths = inpainting
    pipe = load_pipeline(acqe, device="cpu", controlnet=net)
    assert type(pipe).__name__ == "StableDiffusionControlNetInpaintPipeline"
    control, init, mask = (Image.open(paths[k]).convert("RGB") for k in ("a", "init", "mask"))
    short, whole = _partial_run_shortened_and_whole(pipe, image=init, mask_image=mask, control_image=control)
    assert torch.equal(short, whole)


def test_a_model_without_a_controlnet_pipeline_refuses_one_in_one_line(models, tmp_path):
    """The SDXL refiner takes no ControlNet (no diffusers ControlNet pipeline runs it): one line and exit 1,
    from noise and from an initial image, no image written."""
    from recat_runtime.errors import ControlNetError
    from recat_runtime.loading import load_pipeline

    _, net, (img_a, _) = models["stable-diffusion-xl-base"]
    src, acqe = str(tmp_path / "refiner.safetensors"), str(tmp_path / "refiner.acqe")
    write_ldm(src, "stable-diffusion-xl-refiner")
    rc, err = run("convert", src, acqe, "--lossless", "-q")
    assert rc == 0, err
    for img2img in (False, True):
        with pytest.raises(ControlNetError, match="takes no ControlNet"):
            load_pipeline(acqe, device="cpu", controlnet=net, img2img=img2img)
    png = tmp_path / "x.png"
    rc, err = run("generate", acqe, "--prompt", "a", "--init-image", img_a, "--controlnet", net, "--control-image",
                  img_a, "--out", png, "-q", "--device", "cpu")
    assert rc == 1 and "takes no ControlNet" in err and len(err.strip().splitlines()) == 1 and not png.exists(), err


def test_a_profile_can_follow_the_controlnet_trajectories(models):
    # profile_similarity's `inputs` gives each minibatch its pipeline arguments (here the control images):
    # bench_recat's `controlnet --rules cn-...` profiles a ControlNet's own trajectories with it
    from PIL import Image

    from recat_runtime.cache.profile import ProfileSettings, profile_similarity
    from recat_runtime.loading import load_pipeline
    from recat_runtime.sampling import control_inputs

    acqe, net, (img_a, _) = models[LAYOUTS[0]]
    plain, steered = load_pipeline(acqe, device="cpu"), load_pipeline(acqe, device="cpu", controlnet=net)
    for p in (plain, steered):
        p.set_progress_bar_config(disable=True)
    settings = ProfileSettings(steps=6, samples=8, batch_size=4, height=32, width=32)
    prompts = ["a red circle", "a blue square", "a green triangle", "a yellow cross", "two pink circles"]
    calls = []

    def inputs(scale):
        def batch_inputs(first, n):
            calls.append((first, n))
            return control_inputs(steered, Image.open(img_a), scale, n, 32, 32)
        return batch_inputs

    sim_plain, info_plain = profile_similarity(plain, prompts, settings, collect_moments=True)
    sim_zero, info_zero = profile_similarity(steered, prompts, settings, collect_moments=True, inputs=inputs(0.0))
    sim_one, info_one = profile_similarity(steered, prompts, settings, collect_moments=True, inputs=inputs(1.0))
    assert calls == [(0, 4), (4, 4)] * 2
    # no residuals: the plain model's trajectories; with them, other ones
    np.testing.assert_allclose(sim_zero, sim_plain, rtol=0, atol=1e-6)
    np.testing.assert_allclose(info_zero["moments"].s2, info_plain["moments"].s2, rtol=1e-6, atol=1e-6)
    assert np.abs(sim_one - sim_plain).max() > 1e-3
    assert not np.allclose(info_one["moments"].s2, info_plain["moments"].s2, rtol=1e-3)
    # control images sized for another run are refused, not profiled at a size nobody asked for
    with pytest.raises(ValueError, match="profile runs at 32 x 32 px, its inputs ask for 48 x 48"):
        profile_similarity(steered, prompts, settings,
                           inputs=lambda first, n: control_inputs(steered, Image.open(img_a), 1.0, n, 48, 48))
