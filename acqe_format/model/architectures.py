"""The model architectures a `.acqe` file can name (metadata ``architecture``), with their defaults.

An architecture fixes the components, how their tensors are named in each naming scheme, and what a
runtime should assume when the file says nothing more (the guidance scale a model was trained for).
Unknown names are allowed in files (they load when their configs and names are complete); they get
the SD v1 family's defaults.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from acqe_format.model.keys import Component, Naming

# Tensor-name prefix of each component, per naming scheme, for the SD v1 family.
SD_V1_PREFIXES: dict[str, dict[str, str]] = {
    Naming.LDM: {Component.UNET: "model.diffusion_model.", Component.VAE: "first_stage_model.",
                 Component.TEXT_ENCODER: "cond_stage_model.transformer."},
    Naming.DIFFUSERS: {c: f"{c}." for c in Component.WITH_TENSORS},
}


@dataclass(frozen=True)
class Architecture:
    name: str
    family: str
    default_guidance: float
    description: str
    prefixes: dict[str, dict[str, str]] = field(default_factory=lambda: SD_V1_PREFIXES)


SD_V1 = Architecture("stable-diffusion-v1", "sd-v1", 7.5, "Stable Diffusion v1.x (exactly SD v1.4's shapes)")
SD_V1_FAMILY = Architecture("stable-diffusion-v1-family", "sd-v1", 7.5,
                            "an SD v1 LDM checkpoint of other sizes (configs inferred from the shapes)")
# The built-in demo model (acqe_demo): SD v1's parts scaled down, trained for guidance 4.
SHAPES_SD_V1 = Architecture("acqe-shapes-sd-v1", "sd-v1", 4.0, "the built-in shapes demo model (SD v1 layout)")

ARCHITECTURES: dict[str, Architecture] = {a.name: a for a in (SD_V1, SD_V1_FAMILY, SHAPES_SD_V1)}
DEFAULT = SD_V1


def get(name) -> Architecture | None:
    """The registered architecture called ``name``, or None."""
    return ARCHITECTURES.get(name) if isinstance(name, str) else None


def prefixes(architecture, naming: str) -> dict[str, str]:
    """Component -> tensor-name prefix for ``naming`` (the SD v1 family's for unknown architectures);
    empty for a naming that is not loadable."""
    arch = get(architecture) or DEFAULT
    return dict(arch.prefixes.get(naming, {}))


def component_of(name: str, components: dict[str, str]) -> str | None:
    """The component whose prefix starts tensor ``name`` (first match), or None."""
    for component, prefix in components.items():
        if name.startswith(prefix):
            return component
    return None


__all__ = ["Architecture", "ARCHITECTURES", "SD_V1", "SD_V1_FAMILY", "SHAPES_SD_V1", "SD_V1_PREFIXES", "get",
           "prefixes", "component_of"]
