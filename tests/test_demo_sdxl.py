"""The SDXL-layout demo model: its conditioning matches StableDiffusionXLPipeline's, the shipped single file is
detected as acqe-shapes-sdxl, loads and follows prompts; `acqe demo --model` is wired."""
import json
import os

import numpy as np
import pytest
import torch

from acqe_demo import metrics, models_sdxl
from acqe_demo.story import MODELS

SHIPPED = MODELS["sdxl"][0]
shipped = pytest.mark.skipif(not os.path.isfile(SHIPPED), reason="shipped SDXL demo checkpoint missing")


@pytest.fixture(scope="module")
def random_models():
    torch.manual_seed(0)
    return models_sdxl.build_models(models_sdxl.default_configs(0.6))


def test_training_conditioning_is_the_pipelines(random_models):
    """What the UNet is trained on (`encode_prompts`, zeros for a dropped caption) is what the pipeline feeds."""
    from acqe_demo.train_sdxl import build_pipeline

    pipe = build_pipeline(random_models, models_sdxl.default_configs(0.6))
    captions = ["a red circle in the top left on a white background", "a blue square on a black background"]
    with torch.no_grad():
        emb, neg, pooled, neg_pooled = pipe.encode_prompt(captions, device="cpu", num_images_per_prompt=1,
                                                          do_classifier_free_guidance=True)
        tok1, tok2 = models_sdxl.tokenizers()
        ours, ours_pooled = models_sdxl.encode_prompts(random_models["text_encoder"], random_models["text_encoder_2"],
                                                       tok1, tok2, captions)
    assert ours.shape == (2, 77, models_sdxl.UNET_CONFIG["cross_attention_dim"])
    torch.testing.assert_close(ours, emb)
    torch.testing.assert_close(ours_pooled, pooled)
    assert not neg.any() and not neg_pooled.any()      # force_zeros_for_empty_prompt: dropped captions are zeros
    # the pipeline's own time ids at the model's size: the unaugmented training condition
    ids = pipe._get_add_time_ids((32, 32), (0, 0), (32, 32), dtype=torch.float32,
                                 text_encoder_projection_dim=pooled.shape[-1])
    assert ids.tolist() == [models_sdxl.time_ids((32, 32), (0, 0), (32, 32))]


def test_micro_condition_size_and_crop():
    from acqe_demo.dataset import ShapesDataset

    _, imgs = ShapesDataset(seed=3).batch(0, 64)
    out, ids = models_sdxl.micro_condition(imgs, np.random.default_rng(1))
    assert out.shape == imgs.shape and out.dtype == np.uint8 and ids.shape == (64, 6)
    kinds = set()
    for i, (oh, ow, top, left, th, tw) in enumerate(ids.int().tolist()):
        assert (th, tw) == (32, 32) and oh == ow
        if oh == 32:                         # unchanged scenes
            kinds.add("plain")
            assert (top, left) == (0, 0) and np.array_equal(out[i], imgs[i])
        elif oh == 40:                       # a crop of the edge-padded 40 px original
            kinds.add("crop")
            big = np.pad(imgs[i], ((4, 4), (4, 4), (0, 0)), mode="edge")
            assert np.array_equal(out[i], big[top:top + 32, left:left + 32])
        else:                                # a low-resolution original: blurred, not shifted
            kinds.add("low")
            assert oh in (16, 24) and (top, left) == (0, 0) and not np.array_equal(out[i], imgs[i])
    assert kinds == {"plain", "crop", "low"}


@shipped
def test_shipped_file_layout():
    from safetensors import safe_open

    assert os.path.getsize(SHIPPED) <= 20_000_000
    with safe_open(SHIPPED, "np") as f:
        cfg = json.loads(f.metadata()["acqe_configs"])
        names = list(f.keys())
        dtypes = {k: f.get_tensor(k).dtype for k in names}
    assert cfg["architecture"] == "acqe-shapes-sdxl"
    # the configs it carries are the ones models_sdxl builds (with the reused VAE's latent scale)
    assert cfg == json.loads(json.dumps(models_sdxl.default_configs(cfg["vae"]["scaling_factor"])))
    assert set(cfg) == {"architecture", "unet", "vae", "text_encoder", "text_encoder_2", "scheduler"}
    prefixes = ("model.diffusion_model.", "first_stage_model.", "conditioner.embedders.0.transformer.",
                "conditioner.embedders.1.model.")
    assert all(n.startswith(prefixes) for n in names)
    for p in prefixes:
        assert any(n.startswith(p) for n in names), p
    # SDXL single-file names, to catch a mapping that drifts
    for k in ("model.diffusion_model.label_emb.0.0.weight", "model.diffusion_model.input_blocks.4.1.proj_in.weight",
              "conditioner.embedders.1.model.text_projection",
              "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"):
        assert k in names, k
    assert "model.diffusion_model.input_blocks.1.1.proj_in.weight" not in names   # no attention at level 0
    assert {str(d) for k, d in dtypes.items() if not k.endswith("position_ids")} == {"float16"}


@shipped
def test_shipped_file_is_detected_as_shapes_sdxl():
    from acqe_encoder.encode import Settings, _plan_layout
    from acqe_encoder.sources import open_source
    from acqe_format.model import architectures as A
    from acqe_format.model import layouts

    with open_source(SHIPPED) as src:
        shapes = {e.name: tuple(e.shape) for e in src.entries}
        plan = _plan_layout(src, shapes, Settings())
        stored = src.configs
    assert plan.architecture == "acqe-shapes-sdxl"
    assert set(plan.components) == {"unet", "vae", "text_encoder", "text_encoder_2"}
    # without its stated name the tensors are an SDXL base layout; with it, the registry entry
    assert layouts.detect_ldm(shapes).architecture is A.SDXL_BASE
    lay = layouts.detect_ldm(shapes, hint="acqe-shapes-sdxl")
    assert lay.architecture is A.SHAPES_SDXL and lay.architecture.family == "sdxl"
    assert A.for_components("acqe-shapes-sdxl", lay.components).default_guidance == 4.0
    # the shapes alone imply the stored UNet's arrangement and its size/crop embedding
    unet = layouts.infer_configs(shapes, lay)["unet"]
    for k in ("down_block_types", "up_block_types", "block_out_channels", "transformer_layers_per_block",
              "addition_embed_type", "addition_time_embed_dim", "projection_class_embeddings_input_dim",
              "cross_attention_dim", "use_linear_projection"):
        assert unet[k] == stored["unet"][k], k


@shipped
def test_shipped_model_follows_prompts():
    from diffusers import StableDiffusionXLPipeline

    from acqe_demo.story import load_original

    torch.set_num_threads(min(2, torch.get_num_threads()))
    pipe = load_original("sdxl", SHIPPED)
    assert isinstance(pipe, StableDiffusionXLPipeline)
    pipe.set_progress_bar_config(disable=True)
    got, chance = metrics.prompt_following(pipe, metrics.load_classifier())
    assert got["attribute"] > chance["attribute"] + 0.2, (got, chance)
    assert got["attr_background"] >= 0.8, got


def test_cli_demo_model_option(monkeypatch, tmp_path):
    from click.testing import CliRunner

    import acqe_demo.story as story
    from acqe_cli.commands import demo

    seen = []
    real_run_demo = story.run_demo

    class Stop(Exception):
        pass

    def fake_run_demo(s, say=print, progress=None):
        seen.append(s)
        raise Stop

    monkeypatch.setattr(story, "run_demo", fake_run_demo)
    choices = next(p for p in demo.command.params if p.name == "model").type.choices
    assert list(choices) == list(MODELS)
    for argv, want, threads in ((["--model", "sdxl", "--threads", "1"], "sdxl", 1), ([], "sd-v1", 2)):
        res = CliRunner().invoke(demo.command, argv + ["--out", str(tmp_path)])
        assert isinstance(res.exception, Stop), res.output
        assert seen[-1].model == want and seen[-1].ckpt is None and seen[-1].threads == threads
    res = CliRunner().invoke(demo.command, ["--model", "nonsense"])
    assert res.exit_code == 2 and "nonsense" in res.output and len(seen) == 2
    assert [line for line in res.output.splitlines() if line.startswith("Error")] != []
    with pytest.raises(ValueError, match="unknown demo model"):
        real_run_demo(story.DemoSettings(model="nonsense", out_dir=str(tmp_path)))


def test_every_demo_architecture_declares_its_profiling_prompts():
    """`acqe profile-cache` finds a model's prompts through the acqe.prompts entry point of its architecture."""
    import tomllib

    from acqe_demo import models

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with open(os.path.join(root, "pyproject.toml"), "rb") as f:
        declared = tomllib.load(f)["project"]["entry-points"]["acqe.prompts"]
    for arch in (models.ARCHITECTURE, models_sdxl.ARCHITECTURE):
        assert declared.get(arch) == "acqe_demo.dataset:profiling_prompts", arch
