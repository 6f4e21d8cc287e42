"""`ModelInfo`: what a `.acqe` file's metadata says about the model it holds, parsed once.

Readers of model files (the runtime, ``acqe inspect``, exporters) go through this record instead of
poking at metadata keys: it resolves the component prefixes (stored, or the architecture's defaults
for the naming scheme), keeps the configs, the tokenizer description and the inference defaults, and
refuses metadata whose model keys have the wrong JSON types with one line (``MetadataError``).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

from acqe_format.errors import MetadataError, RuntimeLoadError
from acqe_format.model import architectures, schema
from acqe_format.model.keys import Component, Inference, Keys, Naming, Tokenizer


def _typed(meta: dict, key: str, kind, default):
    value = meta.get(key, default)
    if value is None:
        return default
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise MetadataError(f"metadata '{key}' must be a JSON {_json_name(names)}, not {_json_name(type(value).__name__)}")
    return value


def _json_name(py: str) -> str:
    return {"dict": "object", "list": "array", "str": "string", "int": "number", "float": "number",
            "bool": "boolean", "NoneType": "null"}.get(py, py)


@dataclass(frozen=True)
class ModelInfo:
    architecture: str
    naming: str
    components: dict[str, str]                       # component -> tensor-name prefix
    configs: dict[str, dict] = field(default_factory=dict)
    inference: dict = field(default_factory=dict)

    @classmethod
    def from_metadata(cls, metadata: dict) -> "ModelInfo":
        """Parse the model keys of a file's metadata (spec §8.2), checked against the declared schema
        (`acqe_format.model.schema`: types, config keys, ranges; MetadataError); unknown top-level keys
        are ignored."""
        schema.check_metadata(metadata)
        arch = _typed(metadata, Keys.ARCHITECTURE, str, "unknown")
        naming = _typed(metadata, Keys.NAMING, str, Naming.FLAT)
        stored = _typed(metadata, Keys.COMPONENTS, dict, {})
        configs = _typed(metadata, Keys.CONFIGS, dict, {})
        inference = _typed(metadata, Keys.INFERENCE, dict, {})
        components = architectures.prefixes(arch, naming)
        for name, prefix in stored.items():
            if isinstance(prefix, dict):               # tolerated form: {"prefix": "..."}
                prefix = prefix.get("prefix")
            if not isinstance(prefix, str):
                raise MetadataError(f"metadata components.{name} must be a string prefix, not "
                                    f"{_json_name(type(prefix).__name__)}")
            components[name] = prefix
        for name, cfg in configs.items():
            if not isinstance(cfg, dict) and not (name in Component.TOKENIZERS and cfg is None):
                raise MetadataError(f"metadata configs.{name} must be a JSON object, not {_json_name(type(cfg).__name__)}")
        return cls(arch, naming, components, configs, inference)

    @property
    def loadable(self) -> bool:
        """True when the tensor names follow a scheme a runtime can map to model classes."""
        return self.naming in Naming.LOADABLE

    def prefix(self, component: str) -> str:
        if not self.loadable:
            raise RuntimeLoadError(f"tensor naming {self.naming!r} is not a loadable model layout "
                                   f"(want {' or '.join(repr(n) for n in Naming.LOADABLE)})")
        try:
            return self.components[component]
        except KeyError:
            raise RuntimeLoadError(f"the file names no '{component}' component (it has "
                                   f"{', '.join(sorted(self.components)) or 'none'})") from None

    def config(self, component: str) -> dict:
        """A copy of the stored config of ``component`` (RuntimeLoadError when there is none)."""
        cfg = self.configs.get(component)
        if not isinstance(cfg, dict):
            raise RuntimeLoadError(f"the file stores no '{component}' config (metadata configs has {sorted(self.configs)})")
        return copy.deepcopy(cfg)

    @property
    def tokenizer(self) -> dict:
        """The ``configs.tokenizer`` description (``{}`` when absent)."""
        return self.tokenizer_description(Component.TOKENIZER)

    def tokenizer_description(self, component: str = Component.TOKENIZER) -> dict:
        """The ``configs.<component>`` tokenizer description (``{}`` when absent)."""
        desc = self.configs.get(component)
        return desc if isinstance(desc, dict) else {}

    def tokenizer_files(self, assets: dict[str, bytes], component: str = Component.TOKENIZER) -> dict[str, bytes] | None:
        """The embedded files (file name -> bytes) of tokenizer ``component`` named by its description,
        else every asset under ``<component>/``; None when the file embeds none."""
        mapping = self.tokenizer_description(component).get(Tokenizer.FILES)
        if isinstance(mapping, dict) and mapping and all(isinstance(v, str) and v in assets for v in mapping.values()):
            return {k: assets[v] for k, v in mapping.items()}
        found = {name.rsplit("/", 1)[-1]: data for name, data in assets.items()
                 if name.startswith(f"{component}/")}
        return found or None

    @property
    def default_image_size(self) -> tuple[int, int] | None:
        """(height, width) in pixels a pipeline makes when none is given: the UNet's ``sample_size``
        times the VAE's downscaling (2 per block after the first), as diffusers computes it; None when
        the configs do not say."""
        unet, vae = self.configs.get(Component.UNET), self.configs.get(Component.VAE)
        if not isinstance(unet, dict) or not isinstance(vae, dict):
            return None
        size, blocks = unet.get("sample_size", 64), vae.get("block_out_channels", [0] * 4)
        if isinstance(size, list) and len(size) == 2:
            size = tuple(size)
        elif isinstance(size, int) and not isinstance(size, bool):
            size = (size, size)
        else:
            return None
        if not isinstance(blocks, list) or not blocks:
            return None
        scale = 2 ** (len(blocks) - 1)
        return size[0] * scale, size[1] * scale

    @property
    def default_guidance(self) -> float:
        """The guidance scale to use when the user gives none: metadata ``inference.guidance``, else the
        architecture's (4.0 for the demo model, 7.5 for SD v1)."""
        g = self.inference.get(Inference.GUIDANCE)
        if isinstance(g, (int, float)) and not isinstance(g, bool):
            return float(g)
        return (architectures.get(self.architecture) or architectures.DEFAULT).default_guidance


__all__ = ["ModelInfo"]
