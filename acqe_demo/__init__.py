"""The built-in example models: small, really trained text-to-image latent diffusion models of the SD v1 family
(``weights/shapes-sd.ckpt``) and of the SDXL family (``weights/shapes-sdxl.safetensors``).

- `acqe_demo.dataset`: captioned 32x32 scenes of coloured shapes, rendered deterministically from a seed.
- `acqe_demo.models`: SD v1's parts scaled down (UNet2DConditionModel, AutoencoderKL f=4, CLIPTextModel).
- `acqe_demo.models_sdxl`: SDXL base's parts scaled down (two text encoders, size/crop conditioning).
- `acqe_demo.train`: ``python -m acqe_demo.train [--model sdxl]`` reproduces the shipped weights on a 2-core CPU
  (`acqe_demo.training`: the loop both share; `acqe_demo.train_sdxl`: the SDXL model's steps and file).
- `acqe_demo.metrics`: a classifier that reads scenes back; prompt accuracy and a Fréchet distance.
- `acqe_demo.checkpoint`: the ``sd-v1-4.ckpt`` layout (``weights/shapes-sd.ckpt``).
- `acqe_demo.pipeline`: ``load_shapes_pipeline()`` -> diffusers ``StableDiffusionPipeline``.

Importing this package imports nothing heavy; torch/diffusers load with the submodules that need them.
"""
