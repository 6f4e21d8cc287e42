"""Model conventions of `.acqe` files, torch-free: the one home below the encoder and the runtime.

- `keys`: metadata key names (``Keys``, ``Naming``, ``Component``, ``Tokenizer``), as gguf-py's ``Keys``;
- `architectures`: the architectures a file can name, their tensor-name prefixes and defaults;
- `sd_v1`: Stable Diffusion v1's configs, LDM <-> diffusers names, shapes, detection;
- `clip_bpe`: CLIP's BPE tokenizer files (standard library only);
- `info`: :class:`ModelInfo`, a file's model metadata parsed once;
- `layouts`: which architecture a checkpoint's names and shapes are, and the configs they imply;
- `config_fit`: whether a diffusers folder's configs describe its weights;
- `schema`: the metadata schema readers validate.
"""
from acqe_format.model.info import ModelInfo
from acqe_format.model.keys import Component, Inference, Keys, Naming, Tokenizer

__all__ = ["ModelInfo", "Keys", "Naming", "Component", "Tokenizer", "Inference"]
