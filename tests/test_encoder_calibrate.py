"""`acqe convert --calibrate` on every UNet layout: source names of the rebuilt UNet's weights, and the
sensitivity pass itself on SD 1.x and on SDXL's UNets (which also take pooled-text and size conditioning)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("safetensors")

from acqe_encoder import calibrate as cal  # noqa: E402
from acqe_encoder.encode import Settings, _plan_layout  # noqa: E402
from acqe_encoder.sources import open_source  # noqa: E402
from acqe_format.model import architectures as A  # noqa: E402
from acqe_format.model import sd_v1  # noqa: E402
from layout_fixtures import LAYOUTS, write_ldm  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _source(tmp_path, arch: str):
    path = str(tmp_path / f"{arch}.safetensors")
    write_ldm(path, arch)
    src = open_source(path)
    spec = A.get(arch)
    st = Settings(prediction_type=spec.prediction_type if spec.family == "sd-v2" else None)
    plan = _plan_layout(src, {e.name: e.shape for e in src.entries}, st)
    return src, plan


@pytest.mark.parametrize("arch", LAYOUTS)
def test_every_rebuilt_unet_weight_names_its_source_tensor(tmp_path, arch):
    src, plan = _source(tmp_path, arch)
    sd, to_src = cal._unet_state_dict(src, plan.naming, plan.configs["unet"])
    assert set(to_src) == set(sd)
    assert len(set(to_src.values())) == len(to_src)          # one source tensor per UNet weight
    shapes = {e.name: e.shape for e in src.entries}
    for key, name in to_src.items():
        assert name.startswith(A.LDM_UNET)
        assert int(np.prod(shapes[name])) == sd[key].numel(), (key, name)
    if A.get(arch).family == "sd-v1":
        # the SD 1.x key table the mapping replaced gives the same names
        lpb, up_attn, _ = sd_v1.unet_structure(sd.keys())
        assert to_src == {k: sd_v1.PREFIXES["unet"] + sd_v1.unet_key_to_ldm(k, lpb, up_attn) for k in sd}


@pytest.mark.parametrize("arch", ["stable-diffusion-v1-family", "stable-diffusion-xl-base",
                                  "stable-diffusion-xl-refiner"])
def test_sensitivities_cover_the_unets_matrices(tmp_path, arch):
    src, plan = _source(tmp_path, arch)
    said = []
    sens = cal.sensitivities(src, None, plan.configs, plan.naming, said.append, n_latents=1, timesteps=(500,))
    assert any("calibrated" in s for s in said) and not any("warning" in s for s in said), said
    expected = {e.name for e in src.entries
                if e.name.startswith(A.LDM_UNET) and len(e.shape) >= 2 and int(np.prod(e.shape)) >= 1024}
    assert set(sens) == expected
    v = np.array(list(sens.values()))
    assert np.all(np.isfinite(v)) and v.min() >= cal.SENSITIVITY_FLOOR
    assert v.max() > 2 * v.min()          # measured, not a constant: layers differ


def test_sdxl_size_conditioning_follows_the_unets_config():
    g = torch.Generator().manual_seed(0)
    base = {"cross_attention_dim": 64, "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
            "projection_class_embeddings_input_dim": 32 + 6 * 8}
    ctx, added = cal._conditioning(base, {"text_encoder_2": {"projection_dim": 32}}, 2, 16, g)
    assert ctx.shape == (2, 77, 64) and added["text_embeds"].shape == (2, 32)
    assert added["time_ids"].tolist() == [[128.0, 128.0, 0.0, 0.0, 128.0, 128.0]] * 2
    refiner = dict(base, projection_class_embeddings_input_dim=32 + 5 * 8)
    _, added = cal._conditioning(refiner, {"text_encoder_2": {"projection_dim": 32}}, 1, 16, g)
    assert added["time_ids"].tolist() == [[128.0, 128.0, 0.0, 0.0, 6.0]]
    assert cal._conditioning({"cross_attention_dim": 8}, {}, 1, 4, g)[1] is None
    with pytest.raises(ValueError, match="image"):
        cal._conditioning(dict(base, addition_embed_type="image"), {}, 1, 4, g)
    with pytest.raises(ValueError, match="size/crop"):
        cal._conditioning(dict(base, projection_class_embeddings_input_dim=33), {}, 1, 4, g)


def test_an_unknown_added_conditioning_falls_back_to_data_free_distortion(tmp_path):
    src, plan = _source(tmp_path, "stable-diffusion-xl-base")
    configs = dict(plan.configs, unet=dict(plan.configs["unet"], addition_embed_type="image"))
    said = []
    assert cal.sensitivities(src, None, configs, plan.naming, said.append) == {}
    assert len(said) == 1 and said[0].startswith("warning:") and "'image'" in said[0]


def test_a_unet_config_no_model_can_be_built_from_is_one_line(tmp_path, capsys):
    from acqe_cli.main import main
    from layout_fixtures import edit_folder_config, write_folder

    folder = str(tmp_path / "xl")
    write_folder(folder, "stable-diffusion-xl-base")
    # a field the folder check does not compare with the weights: the UNet it builds cannot take them
    edit_folder_config(folder, "unet", time_embedding_dim=100)
    out = tmp_path / "xl.acqe"
    rc = main(["convert", folder, str(out), "--calibrate", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc != 0 and len(err) == 1 and "calibration cannot run" in err[0] and "size mismatch" in err[0], err
    assert not out.exists()
