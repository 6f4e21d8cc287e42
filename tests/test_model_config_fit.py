"""A diffusers folder's configs against its weights (acqe_format.model.config_fit, `acqe convert`)."""
from __future__ import annotations

import copy
import json
import os

import pytest

pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("safetensors")

from acqe_format.model.config_fit import mismatches  # noqa: E402
from layout_fixtures import LAYOUTS, edit_folder_config, write_folder  # noqa: E402


def _folder_tables(folder: str) -> tuple[dict, dict]:
    """(component -> config, '<component>.<key>' -> shape) as the encoder's folder source sees them."""
    from safetensors import safe_open

    configs, shapes = {}, {}
    for comp in sorted(os.listdir(folder)):
        d = os.path.join(folder, comp)
        if not os.path.isdir(d) or not os.path.exists(os.path.join(d, "config.json")):
            continue
        with open(os.path.join(d, "config.json")) as f:
            configs[comp] = json.load(f)
        for name in os.listdir(d):
            if name.endswith(".safetensors"):
                with safe_open(os.path.join(d, name), "np") as st:
                    for k in st.keys():
                        shapes[f"{comp}.{k}"] = tuple(st.get_slice(k).get_shape())
    return configs, shapes


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("fit")
    out = {}
    for arch in LAYOUTS:
        path = str(root / arch)
        write_folder(path, arch)
        out[arch] = _folder_tables(path)
    return out


@pytest.mark.parametrize("arch", LAYOUTS)
def test_every_layouts_own_configs_fit(folders, arch):
    configs, shapes = folders[arch]
    assert {"unet", "vae"} <= set(configs)
    assert mismatches(configs, shapes) == []


# (component, field, a wrong value): each is a field the weights' shapes prove
WRONG = [("unet", "in_channels", 5), ("unet", "out_channels", 3), ("unet", "cross_attention_dim", 48),
         ("unet", "layers_per_block", 3), ("unet", "block_out_channels", [32, 96]),
         ("unet", "projection_class_embeddings_input_dim", 7),
         ("vae", "latent_channels", 8), ("vae", "block_out_channels", [16, 16]), ("vae", "in_channels", 1),
         ("text_encoder", "hidden_size", 40), ("text_encoder", "num_hidden_layers", 9),
         ("text_encoder", "vocab_size", 1000), ("text_encoder_2", "projection_dim", 5),
         ("text_encoder_2", "intermediate_size", 77)]


@pytest.mark.parametrize("comp,field,value", WRONG)
def test_a_field_the_weights_contradict_is_named(folders, comp, field, value):
    configs, shapes = folders["stable-diffusion-xl-base"]
    bad = copy.deepcopy(configs)
    assert field in bad[comp]
    bad[comp][field] = value
    found = mismatches(bad, shapes)
    assert found and all(line.startswith(f"{comp}/config.json: {field} ") for line in found), found


def test_forms_the_check_does_not_know_are_left_alone(folders):
    configs, shapes = folders["stable-diffusion-xl-base"]
    odd = copy.deepcopy(configs)
    odd["unet"]["cross_attention_dim"] = [2048, 2048]         # per-block widths: not compared
    odd["unet"]["layers_per_block"] = [2, 2]
    assert mismatches(odd, shapes) == []


def test_convert_refuses_the_folder_in_one_line(tmp_path, capsys):
    from acqe_cli.main import main

    folder = str(tmp_path / "sd")
    write_folder(folder, "stable-diffusion-v1-family")
    edit_folder_config(folder, "vae", latent_channels=8)
    out = tmp_path / "sd.acqe"
    assert main(["convert", folder, str(out), "-q"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "configs do not describe its weights: vae/config.json: latent_channels 8" in err[0]
    assert not out.exists()
