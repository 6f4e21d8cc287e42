"""Every registered layout end to end on tiny random models, offline: LDM single file and diffusers folder
-> convert -> verify -> inspect -> load -> generate (and image to image); nothing dropped silently."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("safetensors")

from acqe_format import AcqeReader  # noqa: E402
from acqe_format.model import architectures as A  # noqa: E402
from layout_fixtures import LAYOUTS, write_folder, write_ldm  # noqa: E402
from recat_runtime.testing import tiny_layout_models  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# what each layout's tiny single file carries that conversion leaves out on purpose
EXPECTED_DROPS = {
    "sd-v1": ("model_ema.",),
    "sd-v2": ("model_ema.", "cond_stage_model.model.logit_scale", "cond_stage_model.model.transformer.resblocks.2.",
              "cond_stage_model.model.text_projection"),
    "sdxl": ("model_ema.", "conditioner.embedders.1.model.logit_scale", "conditioner.embedders.0.model.logit_scale"),
}


def run(*args, stdout: bool = False):
    """The CLI in-process, as `acqe` runs it: (exit code, stderr text; or stdout text with ``stdout``)."""
    import io
    from contextlib import redirect_stderr, redirect_stdout

    from acqe_cli.main import main

    err, out = io.StringIO(), io.StringIO()
    with redirect_stderr(err), redirect_stdout(out):
        rc = main([str(a) for a in args])
    return rc, (out if stdout else err).getvalue()


def _convert_args(arch: str) -> list[str]:
    spec = A.get(arch)
    return ["--prediction-type", spec.prediction_type] if spec.family == "sd-v2" else []


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """(layout, source kind) -> (source path, .acqe path, source tensor names), converted once."""
    root = tmp_path_factory.mktemp("layouts")
    cache = {}

    def get(arch: str, kind: str):
        if (arch, kind) not in cache:
            src = str(root / (f"{arch}.safetensors" if kind == "ldm" else arch))
            if kind == "ldm":
                names = set(write_ldm(src, arch))
            else:
                write_folder(src, arch)
                names = None
            out = str(root / f"{arch}-{kind}.acqe")
            rc, err = run("convert", src, out, "--lossless", "-q", *_convert_args(arch) if kind == "ldm" else ())
            assert rc == 0, err
            cache[arch, kind] = (src, out, names)
        return cache[arch, kind]
    return get


@pytest.mark.parametrize("arch", LAYOUTS)
def test_single_file_every_tensor_is_stored_or_deliberately_dropped(converted, arch):
    _, out, names = converted(arch, "ldm")
    with AcqeReader(out) as r:
        meta = r.metadata
        stored = {t.name for t in r.tensors}
        assets = set(r.assets)
    assert meta["architecture"] == arch or (arch == "stable-diffusion-v1-family" and meta["architecture"] in A.ARCHITECTURES)
    dropped = set(meta["source"]["dropped"])
    assert stored | dropped == names and not stored & dropped
    family = A.get(meta["architecture"]).family
    assert all(n.startswith(EXPECTED_DROPS[family]) for n in dropped), sorted(dropped)
    assert any(n.startswith("model_ema.") for n in dropped)
    reasons = meta["source"]["dropped_reasons"]
    assert sum(r["count"] for r in reasons) == len(dropped) and all(r["reason"] for r in reasons)
    # every text encoder has its own tokenizer description; one merge list serves them all
    spec = A.get(meta["architecture"])
    for tok, pad in spec.pad_tokens.items():
        files = meta["configs"][tok]["files"]
        assert set(files.values()) <= assets
    assert sum(n.endswith("merges.txt.xz") for n in assets) == 1


@pytest.mark.parametrize("arch", LAYOUTS)
def test_folder_converts_every_tensor_of_every_component(converted, arch):
    src, out, _ = converted(arch, "folder")
    from safetensors import safe_open

    with AcqeReader(out) as r:
        meta = r.metadata
        names = {t.name for t in r.tensors}
    comps = {d for d in os.listdir(src) if os.path.isfile(os.path.join(src, d, "config.json"))}
    assert {n.split(".", 1)[0] for n in names} == comps == set(meta["components"])
    source = set()
    for comp in comps:
        weights = next(f for f in os.listdir(os.path.join(src, comp)) if f.endswith(".safetensors"))
        with safe_open(os.path.join(src, comp, weights), "np") as f:
            source |= {f"{comp}.{k}" for k in f.keys()}
    assert names == source                       # every tensor of every component, nothing else
    assert meta["architecture"] == arch or arch == "stable-diffusion-v1-family"
    # the safety checker is left out on purpose, with the reason in the file
    assert ("safety_checker/" in meta["source"]["dropped"]) == (A.get(arch).family != "sdxl")


@pytest.mark.parametrize("arch", ["stable-diffusion-2-v", "stable-diffusion-xl-base", "stable-diffusion-xl-refiner"])
def test_verify_and_inspect_name_architecture_and_components(converted, arch):
    _, out, _ = converted(arch, "ldm")
    rc, err = run("verify", out)
    assert rc == 0, err
    rc, text = run("inspect", out, "--no-tensors", stdout=True)
    assert rc == 0, text
    line = next(line for line in text.splitlines() if line.startswith("model:"))
    spec = A.get(arch)
    assert arch in line and spec.pipeline in line
    for comp in spec.components:
        assert comp in line
    rc, text = run("inspect", out, "--json", "--no-tensors", stdout=True)
    model = json.loads(text)["model"]
    assert set(model["components"]) == set(spec.components) and set(model["tokenizers"]) == set(spec.pad_tokens)


def _reference_pipeline(arch: str, loaded):
    """The diffusers pipeline of the very models the tiny file was made from (scheduler and tokenizers
    as loaded: the comparison is about weights, configs and the pipeline class)."""
    models = tiny_layout_models(arch)
    parts = {k: getattr(loaded, k) for k in ("scheduler", "tokenizer", "tokenizer_2") if hasattr(loaded, k)}
    if "text_encoder" not in models:          # the refiner
        parts.update(text_encoder=None, tokenizer=None)
    cls = type(loaded)
    extra = {k: v for k, v in loaded.config.items() if k in ("requires_aesthetics_score", "force_zeros_for_empty_prompt")}
    if "safety_checker" in loaded.components:
        extra.update(safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    if "add_watermarker" in __import__("inspect").signature(cls.__init__).parameters:
        extra["add_watermarker"] = False
    return cls(**models, **parts, **extra)


@pytest.mark.parametrize("arch,kind", [(a, "ldm") for a in LAYOUTS]
                         + [("stable-diffusion-2-v", "folder"), ("stable-diffusion-xl-base", "folder")])
def test_loaded_pipeline_samples_exactly_as_the_source_models(converted, arch, kind):
    """Lossless file -> the same pipeline class, weights and configs as the source models: the same latents
    (v-prediction, both SDXL text encoders, size/crop and aesthetic conditioning included)."""
    from PIL import Image

    from recat_runtime.loading import load_pipeline

    _, out, _ = converted(arch, kind)
    spec = A.get(arch)
    pipe = load_pipeline(out, device="cpu", img2img=spec.family == "sd-v1" and spec.in_channels == 9)
    assert type(pipe).__name__ == spec.pipeline
    assert pipe.scheduler.config.prediction_type == spec.prediction_type
    for tok, pad in spec.pad_tokens.items():
        assert getattr(pipe, tok).pad_token == pad
    ref = _reference_pipeline(arch, pipe)
    kwargs = dict(prompt=["a red circle"], num_inference_steps=2, height=32, width=32, output_type="latent",
                  guidance_scale=5.0)
    if spec.pipeline != "StableDiffusionXLPipeline" and spec.pipeline != "StableDiffusionPipeline":
        kwargs["image"] = Image.new("RGB", (32, 32), (200, 30, 30))
        kwargs["strength"] = 1.0 if spec.in_channels == 9 else 0.6
        if spec.in_channels == 9:
            kwargs["mask_image"] = Image.new("L", (32, 32), 255)
        else:
            del kwargs["height"], kwargs["width"]
    with torch.inference_mode():
        got = pipe(**kwargs, generator=torch.Generator().manual_seed(0)).images
        want = ref(**kwargs, generator=torch.Generator().manual_seed(0)).images
    assert got.shape == want.shape and torch.isfinite(got).all()
    assert torch.equal(got, want)


@pytest.mark.parametrize("arch", LAYOUTS)
def test_generate_and_img2img_from_the_command_line(converted, arch, tmp_path):
    from PIL import Image

    _, out, _ = converted(arch, "ldm")
    spec = A.get(arch)
    png = tmp_path / "t2i.png"
    rc, err = run("generate", out, "--prompt", "a red circle", "--steps", "2", "--height", "32", "--width", "32",
                  "--out", png, "-q", "--device", "cpu", "--threads", "1")
    if spec is A.SDXL_REFINER:
        assert rc == 1 and "needs an initial image" in err and "--init-image" in err
        Image.new("RGB", (32, 32), (10, 200, 10)).save(png)
    else:
        assert rc == 0, err
    assert Image.open(png).size == (32, 32)
    out2 = tmp_path / "i2i.png"
    rc, err = run("generate", out, "--prompt", "a red circle", "--steps", "4", "--height", "32", "--width", "32",
                  "--init-image", png, "--strength", "0.5", "--out", out2, "-q", "--device", "cpu",
                  "--cache", "uniform", "--full-steps", "1", "--threads", "1")
    assert rc == 0, err
    assert Image.open(out2).size == (32, 32)
    img = np.asarray(Image.open(out2))
    assert img.std() > 0


def test_convert_profile_cache_stores_an_unvalidated_profile(tmp_path):
    """`convert --profile-cache` profiles without validation by default (the fitted-trend model: seconds,
    where validating costs minutes on a CPU; the validated path is tested in test_runtime_continuous)."""
    src = str(tmp_path / "v1.safetensors")
    write_ldm(src, "stable-diffusion-v1-family")
    out = tmp_path / "v1.acqe"
    rc, err = run("convert", src, out, "--lossless", "-q", "--profile-cache", "--profile-steps", "10",
                  "--profile-samples", "4", "--device", "cpu")
    assert rc == 0, err
    assert "loading the model" in err and "the conversion's" in err     # the reported cost includes the load
    with AcqeReader(str(out)) as r:
        (prof,) = r.metadata["recat"]["profiles"]
    assert prof["samples"] == 4 and prof["steps"] == 10
    assert prof["continuous"]["selection"] is None and prof["continuous"]["correction"] in ("trend", "affine")
    png = tmp_path / "g.png"
    rc, err = run("generate", out, "--prompt", "a", "--steps", "5", "--cache", "recat", "--full-steps", "2",
                  "--height", "32", "--width", "32", "--out", png, "-q", "--device", "cpu", "--threads", "1")
    assert rc == 0 and png.exists(), err


def test_inpainting_mask_from_the_command_line(converted, tmp_path):
    """--mask reaches the inpainting pipeline (white repainted, black kept): a mask that keeps the left half
    changes the image from the repaint-everything run; a mask without an image, or for a model that does
    not inpaint, is refused in one line."""
    from PIL import Image

    _, out, _ = converted("stable-diffusion-v1-inpainting", "ldm")
    init = tmp_path / "init.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(init)
    mask = tmp_path / "mask.png"
    m = np.zeros((32, 32), np.uint8)
    m[:, 16:] = 255
    Image.fromarray(m).save(mask)
    common = ["--prompt", "a red circle", "--steps", "2", "--height", "32", "--width", "32", "-q", "--device", "cpu",
              "--threads", "1", "--init-image", init, "--strength", "1.0"]
    rc, err = run("generate", out, *common, "--out", tmp_path / "all.png")
    assert rc == 0, err
    rc, err = run("generate", out, *common, "--mask", mask, "--out", tmp_path / "half.png")
    assert rc == 0, err
    everything, half = (np.asarray(Image.open(tmp_path / n), np.float64) for n in ("all.png", "half.png"))
    assert np.abs(everything - half).mean() > 1.0

    rc, err = run("generate", out, "--prompt", "a", "--mask", mask, "--out", tmp_path / "x.png", "-q")
    assert rc == 2 and "--mask needs --init-image" in err and not (tmp_path / "x.png").exists()
    plain = converted("stable-diffusion-v1-family", "ldm")[1]
    rc, err = run("generate", plain, *common, "--mask", mask, "--out", tmp_path / "y.png")
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "does not inpaint" in err, err
    assert not (tmp_path / "y.png").exists()


# --------------------------------------------------------------------------------------------------
# refusals: one line, non-zero exit, no file
def test_unknown_group_is_refused_in_one_line_and_kept_when_asked(tmp_path):
    src = str(tmp_path / "x.safetensors")
    names = set(write_ldm(src, "stable-diffusion-xl-base",
                          extra={"conditioner.embedders.2.model.proj": np.ones((4, 4), np.float32)}))
    out = tmp_path / "x.acqe"
    rc, err = run("convert", src, out, "--lossless", "-q")
    assert rc == 1 and len(err.strip().splitlines()) == 1 and not out.exists()
    assert "conditioner.embedders.2" in err and "--keep-unknown" in err
    rc, err = run("convert", src, out, "--lossless", "-q", "--keep-unknown")
    assert rc == 0 and "conditioner.embedders.2" in err          # says what it kept
    with AcqeReader(str(out)) as r:
        stored = {t.name for t in r.tensors}
        meta = r.metadata
    assert "conditioner.embedders.2.model.proj" in stored
    assert meta["source"]["kept_unknown"] == ["conditioner.embedders.2"]
    assert stored | set(meta["source"]["dropped"]) == names


def test_partial_layout_is_refused_naming_what_is_missing(tmp_path):
    src = str(tmp_path / "x.safetensors")
    sd = write_ldm(src, "stable-diffusion-xl-base")
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in sd.items() if not k.startswith("conditioner.embedders.1.")}, src)
    rc, err = run("convert", src, tmp_path / "x.acqe", "--lossless", "-q")
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert "only partly" in err and "text_encoder_2 (conditioner.embedders.1.model.*)" in err


def test_nothing_known_is_refused(tmp_path):
    from safetensors.numpy import save_file

    src = str(tmp_path / "x.safetensors")
    save_file({"lora_unet_down.alpha": np.ones((4, 4), np.float32), "encoder.w": np.ones((4, 4), np.float32)}, src)
    rc, err = run("convert", src, tmp_path / "x.acqe", "--lossless", "-q")
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert "encoder, lora_unet_down match no known architecture" in err


def test_sd2_single_file_needs_its_prediction_type(tmp_path):
    src = str(tmp_path / "x.safetensors")
    write_ldm(src, "stable-diffusion-2-v")
    rc, err = run("convert", src, tmp_path / "x.acqe", "--lossless", "-q")
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "--prediction-type" in err


def test_unknown_folder_component_is_refused(tmp_path):
    from safetensors.numpy import save_file

    src = tmp_path / "f"
    write_folder(str(src), "stable-diffusion-xl-base")
    (src / "image_encoder").mkdir()
    save_file({"w": np.ones((4, 4), np.float32)}, str(src / "image_encoder" / "model.safetensors"))
    index = json.loads((src / "model_index.json").read_text())
    index["image_encoder"] = ["transformers", "CLIPVisionModelWithProjection"]
    (src / "model_index.json").write_text(json.dumps(index))
    rc, err = run("convert", src, tmp_path / "x.acqe", "--lossless", "-q")
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "image_encoder/" in err


def test_diffusers_native_loading_builds_the_layouts_pipelines(converted):
    """``*.from_single_file(path.acqe)`` through the registered integration: the SDXL classes (and
    CLIPTextModelWithProjection) load SDXL files; an SD pipeline class refuses an SDXL file in one line."""
    import diffusers
    from transformers import CLIPTextModelWithProjection

    from recat_runtime.diffusers_integration import is_registered, register, unregister
    from recat_runtime.errors import RuntimeLoadError

    _, xl, _ = converted("stable-diffusion-xl-base", "ldm")
    _, sd2, _ = converted("stable-diffusion-2-v", "ldm")
    was_registered = is_registered()
    register()
    try:
        pipe = diffusers.StableDiffusionXLPipeline.from_single_file(xl)
        assert type(pipe) is diffusers.StableDiffusionXLPipeline and pipe.text_encoder_2 is not None
        i2i = diffusers.StableDiffusionXLImg2ImgPipeline.from_single_file(xl)
        assert type(i2i) is diffusers.StableDiffusionXLImg2ImgPipeline
        assert not i2i.config.requires_aesthetics_score
        te2 = CLIPTextModelWithProjection.from_single_file(xl)
        want = tiny_layout_models("stable-diffusion-xl-base")["text_encoder_2"].state_dict()
        assert all(torch.equal(te2.state_dict()[k], v) for k, v in want.items())
        with pytest.raises(RuntimeLoadError, match="StableDiffusionXLPipeline"):
            diffusers.StableDiffusionPipeline.from_single_file(xl)
        with pytest.raises(RuntimeLoadError, match="StableDiffusionPipeline"):
            diffusers.StableDiffusionXLPipeline.from_single_file(sd2)
        pipe2 = diffusers.StableDiffusionImg2ImgPipeline.from_single_file(sd2)
        assert pipe2.scheduler.config.prediction_type == "v_prediction"
    finally:
        if not was_registered:          # leave diffusers as the other tests expect it
            unregister()


def test_folder_tokenizer_with_other_tokens_is_refused(tmp_path):
    src = tmp_path / "f"
    write_folder(str(src), "stable-diffusion-xl-base")
    vocab = json.loads((src / "tokenizer_2" / "vocab.json").read_text(encoding="utf-8"))
    vocab["<my-concept>"] = len(vocab)
    (src / "tokenizer_2" / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    rc, err = run("convert", src, tmp_path / "x.acqe", "--lossless", "-q")
    assert rc == 1 and len(err.strip().splitlines()) == 1
    assert "tokenizer_2" in err and "<my-concept>" in err


def test_stated_prediction_type_overrides_the_architectures(tmp_path):
    src = str(tmp_path / "x.safetensors")
    write_ldm(src, "stable-diffusion-xl-base")
    rc, err = run("convert", src, tmp_path / "x.acqe", "--lossless", "-q", "--prediction-type", "v_prediction")
    assert rc == 0, err
    with AcqeReader(str(tmp_path / "x.acqe")) as r:
        assert r.metadata["configs"]["scheduler"]["prediction_type"] == "v_prediction"
        assert r.metadata["architecture"] == "stable-diffusion-xl-base"


def test_gguf_export_labels_the_family_or_refuses(converted, tmp_path):
    import gguf

    _, xl, _ = converted("stable-diffusion-xl-base", "ldm")
    out = tmp_path / "xl.gguf"
    rc, err = run("export", xl, out, "--type", "f16")
    assert rc == 0, err
    field = gguf.GGUFReader(str(out)).fields["general.architecture"]
    assert bytes(field.parts[field.data[0]]).decode() == "sdxl"
    _, sd2, _ = converted("stable-diffusion-2-v", "ldm")
    rc, err = run("export", sd2, tmp_path / "sd2.gguf", "--type", "f16")
    assert rc == 1 and len(err.strip().splitlines()) == 1 and "stable-diffusion-2-v" in err


def test_full_size_sdxl_base_configs_are_inferred_from_stabilitys_names():
    """The shapes of SDXL base's single file (built on the meta device, no weights) give its real configs."""
    import importlib.util

    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", "bench_sdxl.py")
    spec = importlib.util.spec_from_file_location("bench_sdxl", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    sdxl_ldm_shapes = bench.sdxl_ldm_shapes

    from acqe_format.model.layouts import detect_ldm, infer_configs

    shapes = sdxl_ldm_shapes()
    lay = detect_ldm(shapes)
    assert lay.architecture is A.SDXL_BASE and set(lay.dropped) == {"conditioner.embedders.1.model.logit_scale"}
    cfg = infer_configs(shapes, lay)
    u = cfg["unet"]
    assert u["block_out_channels"] == [320, 640, 1280] and u["transformer_layers_per_block"] == [1, 2, 10]
    assert u["attention_head_dim"] == [5, 10, 20] and u["cross_attention_dim"] == 2048
    assert (u["projection_class_embeddings_input_dim"], u["addition_time_embed_dim"]) == (2816, 256)
    assert u["down_block_types"] == ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"]
    assert u["use_linear_projection"] and u["sample_size"] == 128 and u["layers_per_block"] == 2
    g = cfg["text_encoder_2"]
    assert (g["hidden_size"], g["num_hidden_layers"], g["num_attention_heads"], g["projection_dim"]) == (1280, 32, 20, 1280)
    assert g["hidden_act"] == "gelu" and g["architectures"] == ["CLIPTextModelWithProjection"]
    t = cfg["text_encoder"]
    assert (t["hidden_size"], t["num_hidden_layers"], t["num_attention_heads"]) == (768, 12, 12)
    assert cfg["vae"]["scaling_factor"] == 0.13025 and cfg["vae"]["force_upcast"]
    assert cfg["vae"]["block_out_channels"] == [128, 256, 512, 512]
