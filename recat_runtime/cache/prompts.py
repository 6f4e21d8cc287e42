"""Profiling prompts: a model's own domain when its package provides them, else a generic list.

A package that ships a model (its architecture name in the file's metadata) can provide prompts in
that model's domain through the entry-point group ``acqe.prompts``: the entry's name is the
architecture, its object a callable ``(n) -> list[str]``. The built-in demo model does so
(``acqe_demo``'s captions); every other model gets :data:`GENERIC_PROMPTS` (COCO-caption style).
The runtime never imports a model package by name: it only follows the entries installed.
"""
from __future__ import annotations

from importlib.metadata import entry_points

ENTRY_POINT_GROUP = "acqe.prompts"

GENERIC_PROMPTS = (
    "a photograph of an astronaut riding a horse",
    "a bowl of fruit on a wooden table",
    "a red double decker bus driving down a city street",
    "a cat sleeping on a sunny windowsill",
    "a mountain lake at sunrise with mist over the water",
    "a plate with a sandwich and french fries",
    "a man surfing a large wave in the ocean",
    "a living room with a couch, a lamp and a bookshelf",
    "a watercolor painting of a lighthouse on a cliff",
    "a dog catching a frisbee in a park",
    "a busy market street with colorful umbrellas",
    "a close-up of a sunflower with a bee",
    "a train crossing a bridge over a river",
    "a kitchen with white cabinets and a steel refrigerator",
    "a snowy forest at night under the stars",
    "a group of people flying kites on a beach",
    "a vintage car parked in front of a diner",
    "an oil painting of a ship in a storm",
    "a giraffe standing next to a tree in the savanna",
    "a pizza with mushrooms and olives on a table",
    "a child reading a book in a library",
    "a futuristic city skyline at dusk",
    "a bicycle leaning against a brick wall",
    "a herd of sheep grazing on a green hill",
    "a cup of coffee and a croissant on a cafe table",
    "an elephant walking through a dusty plain",
    "a tennis player hitting a ball on a clay court",
    "a stone bridge in an autumn forest",
    "a portrait of an old man with a white beard",
    "a sailboat on a calm sea at sunset",
    "a bedroom with a large window and a wooden floor",
    "a pencil sketch of a castle on a hill",
)


def default_prompts(architecture: str | None, n: int) -> list[str]:
    """At least ``n`` prompts for profiling a model of ``architecture`` (the generic list is returned
    whole and cycled by the profiler)."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == architecture:
            return list(ep.load()(max(int(n), 1)))
    return list(GENERIC_PROMPTS)
