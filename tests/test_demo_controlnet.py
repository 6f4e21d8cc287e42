"""The demo model's layout ControlNet: silhouette conditioning images and the shipped weights."""
import os

import numpy as np
import pytest
import torch

from acqe_demo import dataset as D
from acqe_demo.pipeline import DEFAULT_CONTROLNET, load_shapes_controlnet, silhouette_conditioning


def _scenes(n: int, seed: int = 21):
    ds = D.ShapesDataset(seed=seed)
    return [ds[i] for i in range(n)]


def test_silhouette_has_render_scene_geometry():
    """Every pixel's silhouette value is the object coverage that render_scene blends colours with."""
    singles = [sc for sc in _scenes(80) if sc.form == "single"]
    assert len(singles) >= 20
    for sc in singles:
        img = D.render_scene(sc).astype(np.float64)
        sil = D.render_silhouette(sc)
        assert sil.dtype == np.uint8 and sil.shape == img.shape
        assert (sil[..., 0] == sil[..., 1]).all() and (sil[..., 0] == sil[..., 2]).all()
        bg = np.asarray(D.BACKGROUNDS[D.BG_NAMES[sc.background]], np.float64)
        color = np.asarray(D.COLORS[D.COLOR_NAMES[sc.objects[0].color]], np.float64)
        c = int(np.abs(color - bg).argmax())  # the channel where coverage shows best
        cover = (img[..., c] - bg[c]) / (color[c] - bg[c])
        # Both images round to integers: allow one grey level of each.
        assert np.abs(sil[..., 0] / 255.0 - cover).max() <= 1 / abs(color[c] - bg[c]) + 1 / 255 + 1e-9


def test_silhouette_support_and_threshold_match_render_scene():
    for sc in _scenes(40, seed=22):
        img = D.render_scene(sc).astype(np.int16)
        bg = np.asarray(D.BACKGROUNDS[D.BG_NAMES[sc.background]], np.int16)
        diff = np.abs(img - bg).max(-1)
        sil = D.render_silhouette(sc)[..., 0]
        assert ((sil > 0) == (diff > 0)).all()  # the same pixels are touched
        # Where the image clearly shows an object (or clearly none), the silhouette says so too.
        full = diff >= 0.9 * diff.max()
        assert full.any() and (sil[full] > 127).all() and (sil[diff == 0] == 0).all()


def test_silhouette_conditioning_tensor():
    scenes = _scenes(3)
    x = silhouette_conditioning(scenes)
    assert x.shape == (3, 3, D.IMAGE_SIZE, D.IMAGE_SIZE) and x.dtype == torch.float32
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    assert torch.equal(x[1, 0], torch.from_numpy(D.render_silhouette(scenes[1])[..., 0] / 255.0).float())


@pytest.mark.skipif(not os.path.isdir(DEFAULT_CONTROLNET), reason="shipped ControlNet missing")
def test_shipped_controlnet_loads_and_steers_the_unet():
    from acqe_demo.pipeline import load_shapes_pipeline

    torch.set_num_threads(min(2, torch.get_num_threads()))
    files = os.listdir(DEFAULT_CONTROLNET)
    assert "diffusion_pytorch_model.safetensors" in files and "config.json" in files
    assert sum(os.path.getsize(os.path.join(DEFAULT_CONTROLNET, f)) for f in files) < 10_000_000
    cn = load_shapes_controlnet()
    unet = load_shapes_pipeline().unet
    n = 2
    z = torch.randn(n, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([500, 500])
    text = torch.zeros(n, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        down, mid = cn(z, t, text, controlnet_cond=silhouette_conditioning(_scenes(n)), return_dict=False)
        # One residual per UNet skip feature (conv_in, 4 levels x 2 layers, 3 downsamplers), on the latent grid
        # and halving per level; the UNet's forward below also fails on any mismatch.
        assert [d.shape[-1] for d in down] == [8, 8, 8, 4, 4, 4, 2, 2, 2, 1, 1, 1]
        assert mid.shape == (n, unet.config.block_out_channels[-1], 1, 1)
        plain = unet(z, t, text).sample
        steered = unet(z, t, text, down_block_additional_residuals=down, mid_block_additional_residual=mid).sample
    # Trained zero convolutions are no longer zero: the silhouettes change the UNet's prediction.
    assert float((steered - plain).abs().mean()) > 1e-3
