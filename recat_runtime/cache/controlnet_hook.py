"""The ControlNet side of a cached step: only the residual the shallow branch uses.

A cached step of branch 0 adds the ControlNet's residual of skip 0 (``conv_in``'s output) and drops the
others, whose blocks it does not run (`recat_runtime.cache.branch.shallow_forward`). Left alone, the whole
ControlNet (its own copy of the UNet's encoder and mid block: about half a UNet call) would still run at
every step for residuals that are thrown away, and would cost more than the cached UNet step itself. On the
steps the UNet hook will cache, this hook computes the one residual that is used, with diffusers' own
operations in diffusers' order (``conv_in`` plus the conditioning embedding, the first zero convolution, the
conditioning scale), and hands zero views of the right shapes for the rest. The images are identical to
running the whole ControlNet (a test checks it bit for bit).

Only branch 0 is shortened (the default; a deeper branch would need the ControlNet's time embedding and down
blocks replayed too): other branches, and runs with a cached-step observer (which runs the whole UNet on
cached steps), keep the whole ControlNet.
"""
from __future__ import annotations

import inspect

import torch
from diffusers.hooks import ModelHook

__all__ = ["RECAT_CONTROLNET_HOOK", "ShallowControlNetHook", "shallow_residual"]

RECAT_CONTROLNET_HOOK = "recat_controlnet"


def shallow_residual(controlnet, sample, controlnet_cond, conditioning_scale, guess_mode: bool) -> torch.Tensor:
    """The ControlNet's residual for skip 0, as its forward computes it (the same operations in the same
    order, so the result is bitwise the same)."""
    order = controlnet.config.controlnet_conditioning_channel_order
    if order == "bgr":
        controlnet_cond = torch.flip(controlnet_cond, dims=[1])
    hidden = controlnet.conv_in(sample)
    hidden = hidden + controlnet.controlnet_cond_embedding(controlnet_cond)
    residual = controlnet.controlnet_down_blocks[0](hidden)
    pooled = controlnet.config.global_pool_conditions
    if guess_mode and not pooled:
        count = len(controlnet.controlnet_down_blocks)
        scales = torch.logspace(-1, 0, count + 1, device=hidden.device) * conditioning_scale
        residual = residual * scales[0]
    else:
        residual = residual * conditioning_scale
    if pooled:
        residual = torch.mean(residual, dim=(2, 3), keepdim=True)
    return residual


class ShallowControlNetHook(ModelHook):
    """On a ``ControlNetModel``: before a step the UNet's ReCaT hook will cache, compute only the skip-0
    residual; before a full step, run the whole ControlNet (and note its residuals' shapes)."""

    _is_stateful = True

    def __init__(self, unet_hook):
        super().__init__()
        self.unet_hook = unet_hook
        self.shallow_calls = 0
        self.full_calls = 0
        self._shapes = None        # ([(shape, dtype, device)] of the down residuals, that of the mid one)
        self._signature = None

    def initialize_hook(self, module):
        self._signature = inspect.signature(type(module).forward)
        return module

    def reset_state(self, module):
        self._shapes = None
        return module

    def new_forward(self, module, *args, **kwargs):
        bound = self._signature.bind(module, *args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        order = module.config.controlnet_conditioning_channel_order
        if (self._shapes is None or order not in ("rgb", "bgr")
                or not self.unet_hook.next_call_is_cached(a["timestep"])
                or self._shapes[0][0][0][0] != a["sample"].shape[0]):     # another batch size than it noted
            out = self.fn_ref.original_forward(*args, **kwargs)
            down, mid = (out.down_block_res_samples, out.mid_block_res_sample) if a["return_dict"] else out
            self._shapes = ([(d.shape, d.dtype, d.device) for d in down], (mid.shape, mid.dtype, mid.device))
            self.full_calls += 1
            return out
        first = shallow_residual(module, a["sample"], a["controlnet_cond"], a["conditioning_scale"], a["guess_mode"])
        # zero views, not zero tensors: the cached step drops them unread, nothing is allocated for them
        zeros = [torch.zeros((), dtype=dt, device=dev).expand(shape) for shape, dt, dev in self._shapes[0][1:]]
        shape, dt, dev = self._shapes[1]
        mid = torch.zeros((), dtype=dt, device=dev).expand(shape)
        self.shallow_calls += 1
        down = [first, *zeros]
        if a["return_dict"]:
            from diffusers.models.controlnets.controlnet import ControlNetOutput

            return ControlNetOutput(down_block_res_samples=down, mid_block_res_sample=mid)
        return down, mid
