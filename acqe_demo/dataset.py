"""Procedural "shapes" scenes with captions: the training data of the built-in demo model.

Every 32x32 scene is drawn from a seed with numpy alone (own anti-aliased rasteriser, no PIL): a background colour
and one or two coloured shapes placed on a coarse 3x3 grid, each described by a caption such as

    "a small red circle in the top left on a gray background"
    "a blue square above a green triangle on a black background"
    "a yellow cross in the center and a pink circle in the bottom right on a white background"

The attributes (background, per grid cell: colour, shape, size) are chosen so that a small classifier reads
them back reliably (`acqe_demo.metrics`). About 313 000 distinct captions are possible.

Example:
    >>> ds = ShapesDataset(seed=0)
    >>> s = ds[3]
    >>> s.caption, ds.image(3).shape
    ('...', (32, 32, 3))
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

IMAGE_SIZE = 32
GRID = 3

BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (18, 18, 18),
    "white": (236, 236, 236),
    "gray": (128, 128, 128),
    "brown": (105, 68, 40),
}
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (225, 30, 30),
    "green": (30, 170, 50),
    "blue": (35, 75, 235),
    "yellow": (245, 220, 30),
    "purple": (135, 45, 190),
    "orange": (250, 135, 15),
    "cyan": (35, 205, 225),
    "pink": (250, 130, 200),
}
SHAPES = ("circle", "square", "triangle", "cross")
SIZES = ("small", "large")
# Half-extent of a shape, as a fraction of the image side.
SIZE_RADIUS = {"small": 0.105, "large": 0.15}
JITTER = 0.015
POSITIONS = (
    "top left", "top middle", "top right",
    "middle left", "center", "middle right",
    "bottom left", "bottom middle", "bottom right",
)  # index = row * 3 + col
RELATIONS = ("above", "below", "to the left of", "to the right of")
FORMS = ("single", "relation", "pair")
FORM_PROBS = (0.4, 0.3, 0.3)
SUPERSAMPLE = 4

BG_NAMES = tuple(BACKGROUNDS)
COLOR_NAMES = tuple(COLORS)


@dataclass(frozen=True)
class ShapeObject:
    color: int  # index into COLOR_NAMES
    shape: int  # index into SHAPES
    size: int  # index into SIZES
    cell: int  # row * 3 + col
    dx: float = 0.0  # jitter, fraction of the image side
    dy: float = 0.0


@dataclass(frozen=True)
class Scene:
    """One captioned scene. ``form`` says which attributes the caption states:

    - ``single``: one object; caption names size, colour, shape, cell, background.
    - ``relation``: two objects; caption names both colours and shapes, ``relation`` of the first to the
      second, background (cells and sizes free).
    - ``pair``: two objects; caption names colours, shapes and cells of both, background (sizes free).
    """

    form: str
    background: int
    objects: tuple[ShapeObject, ...]
    relation: int = -1
    caption: str = field(default="", compare=False)


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def make_caption(scene: Scene) -> str:
    bg = f" on {_article(BG_NAMES[scene.background])} {BG_NAMES[scene.background]} background"
    o = scene.objects

    def noun(obj: ShapeObject, with_size: bool) -> str:
        words = ([SIZES[obj.size]] if with_size else []) + [COLOR_NAMES[obj.color], SHAPES[obj.shape]]
        return f"{_article(words[0])} {' '.join(words)}"

    if scene.form == "single":
        return f"{noun(o[0], True)} in the {POSITIONS[o[0].cell]}{bg}"
    if scene.form == "relation":
        return f"{noun(o[0], False)} {RELATIONS[scene.relation]} {noun(o[1], False)}{bg}"
    if scene.form == "pair":
        return (f"{noun(o[0], False)} in the {POSITIONS[o[0].cell]} and "
                f"{noun(o[1], False)} in the {POSITIONS[o[1].cell]}{bg}")
    raise ValueError(f"unknown scene form {scene.form!r}; expected one of {FORMS}")


def _relation_cells(rng: np.random.Generator, relation: int) -> tuple[int, int]:
    """Cells (first, second) such that the first object is `relation` of the second."""
    a, b = sorted(rng.choice(GRID, size=2, replace=False))  # a < b
    line = int(rng.integers(GRID))
    if relation == 0:  # above: same column, smaller row
        return a * GRID + line, b * GRID + line
    if relation == 1:  # below
        return b * GRID + line, a * GRID + line
    if relation == 2:  # left of: same row, smaller column
        return line * GRID + a, line * GRID + b
    return line * GRID + b, line * GRID + a


def sample_scene(rng: np.random.Generator) -> Scene:
    """Draw one captioned scene."""
    form = FORMS[int(rng.choice(len(FORMS), p=FORM_PROBS))]
    bg = int(rng.integers(len(BACKGROUNDS)))

    def jitter() -> tuple[float, float]:
        d = rng.uniform(-JITTER, JITTER, size=2)
        return float(d[0]), float(d[1])

    def appearance() -> tuple[int, int]:
        return int(rng.integers(len(COLORS))), int(rng.integers(len(SHAPES)))

    relation = -1
    if form == "single":
        cells = [int(rng.integers(GRID * GRID))]
        looks = [appearance()]
    else:
        looks = [appearance()]
        while True:  # the two objects must differ in colour or shape, so the caption is unambiguous
            second = appearance()
            if second != looks[0]:
                break
        looks.append(second)
        if form == "relation":
            relation = int(rng.integers(len(RELATIONS)))
            cells = list(_relation_cells(rng, relation))
        else:
            cells = [int(c) for c in rng.choice(GRID * GRID, size=2, replace=False)]
    objects = tuple(
        ShapeObject(color=c, shape=s, size=int(rng.integers(len(SIZES))), cell=cell, dx=jx, dy=jy)
        for (c, s), cell, (jx, jy) in zip(looks, cells, (jitter() for _ in cells))
    )
    scene = Scene(form=form, background=bg, objects=objects, relation=relation)
    return Scene(form, bg, objects, relation, make_caption(scene))


def _inside(shape: int, x: np.ndarray, y: np.ndarray, r: float) -> np.ndarray:
    """Boolean mask of points (x, y), relative to the shape centre (y down), inside a shape of radius r."""
    if shape == 0:  # circle
        return x * x + y * y <= r * r
    if shape == 1:  # square, area close to the circle's
        h = 0.87 * r
        return (np.abs(x) <= h) & (np.abs(y) <= h)
    if shape == 2:  # equilateral triangle pointing up, circumradius 1.2 r, centroid at the centre
        R = 1.2 * r
        inside = (y <= 0.5 * R) & (x == x)
        for ang in (np.pi / 6, 5 * np.pi / 6):  # the two upper edges' outward normals
            nx, ny = np.cos(ang), -np.sin(ang)
            inside &= x * nx + y * ny <= 0.5 * R
        return inside
    if shape == 3:  # plus-shaped cross
        w = 0.36 * r
        ax, ay = np.abs(x), np.abs(y)
        return ((ax <= w) & (ay <= r)) | ((ay <= w) & (ax <= r))
    raise ValueError(f"unknown shape index {shape}; expected 0..{len(SHAPES) - 1}")


def _coverage(obj: ShapeObject, size: int) -> tuple[int, int, int, int, np.ndarray]:
    """Where an object lies in a ``size`` image: its box ``(y0, y1, x0, x1)`` and the fraction of each box pixel
    it covers, float32 [y1 - y0, x1 - x0, 1] (supersampled, so edges are anti-aliased)."""
    ss = SUPERSAMPLE
    offsets = (np.arange(ss, dtype=np.float32) + 0.5) / ss
    row, col = divmod(obj.cell, GRID)
    cx = ((col + 0.5) / GRID + obj.dx) * size
    cy = ((row + 0.5) / GRID + obj.dy) * size
    r = SIZE_RADIUS[SIZES[obj.size]] * size
    reach = 1.25 * r + 1
    x0, x1 = max(int(np.floor(cx - reach)), 0), min(int(np.ceil(cx + reach)), size)
    y0, y1 = max(int(np.floor(cy - reach)), 0), min(int(np.ceil(cy + reach)), size)
    xs = (np.arange(x0, x1, dtype=np.float32)[:, None] + offsets[None, :]).reshape(-1) - cx
    ys = (np.arange(y0, y1, dtype=np.float32)[:, None] + offsets[None, :]).reshape(-1) - cy
    mask = _inside(obj.shape, xs[None, :], ys[:, None], r)
    cover = mask.reshape(y1 - y0, ss, x1 - x0, ss).mean(axis=(1, 3), dtype=np.float32)[..., None]
    return y0, y1, x0, x1, cover


def _paint(scene: Scene, size: int, background, color_of) -> np.ndarray:
    """Composite the scene's objects, in order, over ``background`` with ``color_of(obj)`` as their colour."""
    img = np.empty((size, size, 3), np.float32)
    img[:] = background
    for obj in scene.objects:
        y0, y1, x0, x1, cover = _coverage(obj, size)
        color = np.asarray(color_of(obj), np.float32)
        patch = img[y0:y1, x0:x1]
        img[y0:y1, x0:x1] = patch * (1 - cover) + color * cover
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def render_scene(scene: Scene, size: int = IMAGE_SIZE) -> np.ndarray:
    """Rasterise a scene to uint8 [size, size, 3], anti-aliased by supersampling."""
    return _paint(scene, size, BACKGROUNDS[BG_NAMES[scene.background]], lambda obj: COLORS[COLOR_NAMES[obj.color]])


def render_silhouette(scene: Scene, size: int = IMAGE_SIZE) -> np.ndarray:
    """The scene's layout alone, uint8 [size, size, 3]: every object white (255) on black, no colours, with
    `render_scene`'s geometry and anti-aliasing (the ControlNet's conditioning image)."""
    return _paint(scene, size, (0, 0, 0), lambda obj: (255, 255, 255))


class ShapesDataset:
    """An endless, deterministic sequence of captioned scenes: item ``i`` depends only on ``(seed, i)``."""

    def __init__(self, seed: int = 0, size: int = IMAGE_SIZE):
        self.seed = int(seed)
        self.size = int(size)

    def __getitem__(self, index: int) -> Scene:
        return sample_scene(np.random.default_rng([self.seed, int(index)]))

    def image(self, index: int) -> np.ndarray:
        return render_scene(self[index], self.size)

    def batch(self, start: int, n: int) -> tuple[list[Scene], np.ndarray]:
        """Scenes ``start .. start+n-1`` and their images as uint8 [n, size, size, 3]."""
        scenes = [self[i] for i in range(start, start + n)]
        return scenes, np.stack([render_scene(s, self.size) for s in scenes])


def profiling_prompts(n: int) -> list[str]:
    """``n`` captions for profiling the demo model's cache schedules (entry point ``acqe.prompts``): from a
    seed that the demo's training and evaluation sets do not use."""
    ds = ShapesDataset(seed=7919)
    return [make_caption(ds[i]) for i in range(n)]


def to_tensor_range(images: np.ndarray) -> np.ndarray:
    """uint8 [N, H, W, 3] → float32 [N, 3, H, W] in [-1, 1] (the VAE's input range)."""
    return (images.astype(np.float32).transpose(0, 3, 1, 2) / 127.5) - 1.0


def from_tensor_range(x: np.ndarray) -> np.ndarray:
    """float [N, 3, H, W] in [-1, 1] → uint8 [N, H, W, 3]."""
    return np.clip(np.rint((np.asarray(x, np.float32).transpose(0, 2, 3, 1) + 1.0) * 127.5), 0, 255).astype(np.uint8)


def image_grid(images: np.ndarray, cols: int, pad: int = 2, fill: int = 255) -> np.ndarray:
    """Tile uint8 [N, H, W, 3] images into one uint8 grid image."""
    n, h, w, _ = images.shape
    rows = -(-n // cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, 3), fill, np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = images[i]
    return grid


def save_png(path: str, image: np.ndarray) -> None:
    """Write a uint8 [H, W, 3] image as PNG with zlib alone (no PIL needed)."""
    import struct
    import zlib

    h, w, _ = image.shape
    raw = b"".join(b"\x00" + image[y].tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b""))
    with open(path, "wb") as f:
        f.write(png)
