"""acqe_demo.dataset: deterministic scenes, captions, rasteriser, PNG writer."""
import hashlib
import zlib

import numpy as np
import pytest

from acqe_demo import dataset as D


def test_same_seed_same_scenes_and_pixels():
    a, b = D.ShapesDataset(seed=7), D.ShapesDataset(seed=7)
    for i in (0, 1, 5, 1000):
        assert a[i] == b[i] and a[i].caption == b[i].caption
        assert np.array_equal(a.image(i), b.image(i))
    _, imgs1 = a.batch(10, 8)
    _, imgs2 = b.batch(10, 8)
    assert hashlib.sha256(imgs1.tobytes()).digest() == hashlib.sha256(imgs2.tobytes()).digest()


def test_items_are_independent_of_access_order():
    ds = D.ShapesDataset(seed=3)
    later = ds[40]
    _ = [ds[i] for i in range(40)]
    assert ds[40] == later


def test_different_seeds_differ():
    assert [D.ShapesDataset(0)[i].caption for i in range(8)] != [D.ShapesDataset(1)[i].caption for i in range(8)]


def test_image_shape_dtype_and_background():
    ds = D.ShapesDataset(seed=0)
    for i in range(20):
        s, img = ds[i], ds.image(i)
        assert img.shape == (D.IMAGE_SIZE, D.IMAGE_SIZE, 3) and img.dtype == np.uint8
        bg = np.array(D.BACKGROUNDS[D.BG_NAMES[s.background]])
        # Each image corner lies outside every object: it shows the background colour exactly.
        assert np.array_equal(img[0, 0], bg) and np.array_equal(img[-1, -1], bg)


def test_objects_drawn_in_their_cells_with_their_colour():
    ds = D.ShapesDataset(seed=11)
    for i in range(30):
        s, img = ds[i], ds.image(i)
        for o in s.objects:
            r, c = divmod(o.cell, 3)
            n = D.IMAGE_SIZE
            cy, cx = int(((r + 0.5) / 3 + o.dy) * n), int(((c + 0.5) / 3 + o.dx) * n)
            assert np.abs(img[cy, cx].astype(int) - D.COLORS[D.COLOR_NAMES[o.color]]).max() <= 2, s.caption


def test_captions_state_the_scene():
    ds = D.ShapesDataset(seed=5)
    forms = set()
    for i in range(200):
        s = ds[i]
        forms.add(s.form)
        assert s.caption.endswith(f"{D.BG_NAMES[s.background]} background")
        for o in s.objects:
            assert f"{D.COLOR_NAMES[o.color]} {D.SHAPES[o.shape]}" in s.caption
        if s.form == "single":
            assert D.SIZES[s.objects[0].size] in s.caption and D.POSITIONS[s.objects[0].cell] in s.caption
        elif s.form == "relation":
            assert D.RELATIONS[s.relation] in s.caption
            (ra, ca), (rb, cb) = divmod(s.objects[0].cell, 3), divmod(s.objects[1].cell, 3)
            assert [ra < rb and ca == cb, ra > rb and ca == cb, ca < cb and ra == rb, ca > cb and ra == rb][s.relation]
        else:
            assert s.objects[0].cell != s.objects[1].cell
    assert forms == set(D.FORMS)


def test_hundreds_of_thousands_of_distinct_captions():
    looks = len(D.COLORS) * len(D.SHAPES)
    pairs = looks * (looks - 1)
    n = len(D.BACKGROUNDS) * (len(D.SIZES) * looks * 9 + pairs * len(D.RELATIONS) + pairs * 9 * 8)
    assert n > 300_000


def test_png_writer_roundtrip(tmp_path):
    img = D.ShapesDataset(seed=0).image(0)
    path = tmp_path / "x.png"
    D.save_png(str(path), img)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    idat = data[data.index(b"IDAT") + 4: data.index(b"IEND") - 8]
    n = D.IMAGE_SIZE
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(n, 1 + n * 3)
    assert np.array_equal(raw[:, 1:].reshape(n, n, 3), img)


def test_tensor_range_roundtrip():
    imgs = D.ShapesDataset(seed=0).batch(0, 4)[1]
    assert np.array_equal(D.from_tensor_range(D.to_tensor_range(imgs)), imgs)


def test_unknown_form_rejected():
    with pytest.raises(ValueError):
        D.make_caption(D.Scene(form="triple", background=0, objects=()))
