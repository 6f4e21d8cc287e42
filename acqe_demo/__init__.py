"""The built-in example model: a small, really trained text-to-image latent diffusion model of the SD v1 family.

- `acqe_demo.dataset`: captioned 32x32 scenes of coloured shapes, rendered deterministically from a seed.
- `acqe_demo.models`: SD v1's parts scaled down (UNet2DConditionModel, AutoencoderKL f=4, CLIPTextModel).
- `acqe_demo.train`: ``python -m acqe_demo.train`` reproduces the shipped weights on a 2-core CPU.
- `acqe_demo.metrics`: a classifier that reads scenes back; prompt accuracy and a Fréchet distance.
- `acqe_demo.checkpoint`: the ``sd-v1-4.ckpt`` layout (``weights/shapes-sd.ckpt``).
- `acqe_demo.pipeline`: ``load_shapes_pipeline()`` -> diffusers ``StableDiffusionPipeline``.

Importing this package imports nothing heavy; torch/diffusers load with the submodules that need them.
"""
