"""The skip-branch structure of a diffusers ``UNet2DConditionModel`` and its shallow (cached-step) forward.

Skip connections are numbered in the order the down path produces them: skip 0 is ``conv_in``'s
output, then one per down-block layer (resnet [+ attention]) and one per downsampler. For SD v1 there
are 12 (``1 + 3 + 3 + 3 + 2``). The up path consumes them in reverse: up-layer q (counting from the
first resnet of ``up_blocks[0]``) concatenates skip ``n-1-q`` to its input.

**Branch m** (DeepCache's ``cache_branch_id`` for SD v1) splits the UNet at skip m:

- a *full step* runs the whole UNet unchanged and caches the *deep feature* — the up-path hidden state
  that enters the up resnet consuming skip m (before the concatenation);
- a *cached step* runs only the shallow branch: the time embedding, ``conv_in`` and the down path up
  to skip m, then the up path from the resnet consuming skip m on the cached deep feature, and the
  output head. Branch 0 runs just ``conv_in``, the last up resnet + attention and ``conv_out``.

:func:`shallow_forward` performs exactly the operations of diffusers' forward for those layers, in the
same order, so a cached step fed with the feature of the same step reproduces the full output bit for
bit (a test checks this).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["BranchPlan", "branch_plan", "shallow_forward", "num_branches"]


@dataclass(frozen=True)
class BranchPlan:
    """Where branch m sits in a particular UNet."""

    branch: int
    num_skips: int
    skip_channels: tuple[int, ...]
    # down path: skip m is produced by down block `down_block` at layer `down_layer` (a resnet index,
    # or len(resnets) for its downsampler); down_block = -1 means conv_in (m = 0)
    down_block: int
    down_layer: int
    # up path: skip m is consumed by resnet `up_layer` of `up_blocks[up_block]`
    up_block: int
    up_layer: int
    feature_channels: int  # channels of the cached deep feature

    @property
    def consumer_name(self) -> str:
        return f"up_blocks.{self.up_block}.resnets.{self.up_layer}"


def _skip_table(unet) -> list[tuple[int, int, int]]:
    """``[(down_block, layer, channels)]`` for every skip, in production order."""
    table = [(-1, 0, unet.conv_in.out_channels)]
    for b, block in enumerate(unet.down_blocks):
        for j, resnet in enumerate(block.resnets):
            table.append((b, j, resnet.out_channels))
        if getattr(block, "downsamplers", None) is not None:
            for ds in block.downsamplers:
                table.append((b, len(block.resnets), ds.out_channels))
    return table


def num_branches(unet) -> int:
    """How many branches (= skip connections) the UNet has; valid branches are ``0 .. n-1``."""
    return len(_skip_table(unet))


def branch_plan(unet, branch: int) -> BranchPlan:
    """Locates branch ``branch`` in ``unet``.

    Raises:
        ValueError: the branch is out of range or the UNet's up path does not mirror its down path.
    """
    table = _skip_table(unet)
    n = len(table)
    up_counts = [len(b.resnets) for b in unet.up_blocks]
    if sum(up_counts) != n:
        raise ValueError(f"UNet has {n} skip connections but {sum(up_counts)} up resnets; cannot split it")
    if not 0 <= branch < n:
        raise ValueError(f"branch must be in [0, {n - 1}] for this UNet, got {branch}")
    down_block, down_layer, skip_ch = table[branch]
    q = n - 1 - branch  # position of the consuming resnet along the up path
    up_block = 0
    while q >= up_counts[up_block]:
        q -= up_counts[up_block]
        up_block += 1
    consumer = unet.up_blocks[up_block].resnets[q]
    feature_ch = consumer.in_channels - skip_ch
    return BranchPlan(
        branch=branch,
        num_skips=n,
        skip_channels=tuple(c for _, _, c in table),
        down_block=down_block,
        down_layer=down_layer,
        up_block=up_block,
        up_layer=q,
        feature_channels=feature_ch,
    )


def _has_freeu(block) -> bool:
    return bool(getattr(block, "s1", None) and getattr(block, "s2", None))


def _attn(block, j, hidden, common):
    attentions = getattr(block, "attentions", None)
    if attentions is None:
        return hidden
    return attentions[j](
        hidden,
        encoder_hidden_states=common["encoder_hidden_states"],
        cross_attention_kwargs=common["cross_attention_kwargs"],
        attention_mask=common["attention_mask"],
        encoder_attention_mask=common["encoder_attention_mask"],
        return_dict=False,
    )[0]


def _block_kwargs(block, common) -> dict:
    if getattr(block, "has_cross_attention", False):
        return {
            "encoder_hidden_states": common["encoder_hidden_states"],
            "attention_mask": common["attention_mask"],
            "cross_attention_kwargs": common["cross_attention_kwargs"],
            "encoder_attention_mask": common["encoder_attention_mask"],
        }
    return {}


def _prepare(unet, sample, timestep, encoder_hidden_states, class_labels, timestep_cond, attention_mask,
             cross_attention_kwargs, added_cond_kwargs, encoder_attention_mask):
    """The part of diffusers' forward before the down path (masks, embeddings, conv_in), unchanged."""
    if attention_mask is not None:
        attention_mask = (1 - attention_mask.to(sample.dtype)) * -10000.0
        attention_mask = attention_mask.unsqueeze(1)
    if encoder_attention_mask is not None:
        encoder_attention_mask = (1 - encoder_attention_mask.to(sample.dtype)) * -10000.0
        encoder_attention_mask = encoder_attention_mask.unsqueeze(1)
    if unet.config.center_input_sample:
        sample = 2 * sample - 1.0
    t_emb = unet.get_time_embed(sample=sample, timestep=timestep)
    emb = unet.time_embedding(t_emb, timestep_cond)
    class_emb = unet.get_class_embed(sample=sample, class_labels=class_labels)
    if class_emb is not None:
        emb = torch.cat([emb, class_emb], dim=-1) if unet.config.class_embeddings_concat else emb + class_emb
    aug_emb = unet.get_aug_embed(emb=emb, encoder_hidden_states=encoder_hidden_states,
                                 added_cond_kwargs=added_cond_kwargs)
    if unet.config.addition_embed_type == "image_hint":
        aug_emb, hint = aug_emb
        sample = torch.cat([sample, hint], dim=1)
    emb = emb + aug_emb if aug_emb is not None else emb
    if unet.time_embed_act is not None:
        emb = unet.time_embed_act(emb)
    encoder_hidden_states = unet.process_encoder_hidden_states(
        encoder_hidden_states=encoder_hidden_states, added_cond_kwargs=added_cond_kwargs
    )
    sample = unet.conv_in(sample)
    if cross_attention_kwargs is not None and cross_attention_kwargs.get("gligen", None) is not None:
        raise ValueError("ReCaT caching does not support GLIGEN")
    common = {
        "encoder_hidden_states": encoder_hidden_states,
        "attention_mask": attention_mask,
        "cross_attention_kwargs": cross_attention_kwargs,
        "encoder_attention_mask": encoder_attention_mask,
    }
    return sample, emb, common


def capture_feature(unet, plan: BranchPlan, sample: torch.Tensor, timestep,
                    encoder_hidden_states: torch.Tensor, **unet_kwargs) -> torch.Tensor:
    """Runs the whole UNet once and returns the deep feature that a cached step of ``plan`` reuses (the
    first ``plan.feature_channels`` channels entering the consumer block), e.g. to time or test
    :func:`shallow_forward` outside a sampling loop. ``unet_kwargs``: further UNet inputs (SDXL's
    ``added_cond_kwargs``)."""
    got = {}

    def grab(mod, args):
        got["f"] = args[0][:, : plan.feature_channels].clone()

    handle = unet.get_submodule(plan.consumer_name).register_forward_pre_hook(grab)
    try:
        unet(sample, timestep, encoder_hidden_states, **unet_kwargs)
    finally:
        handle.remove()
    return got["f"]


def shallow_forward(unet, plan: BranchPlan, feature: torch.Tensor, sample: torch.Tensor, timestep,
                    encoder_hidden_states: torch.Tensor, class_labels=None, timestep_cond=None,
                    attention_mask=None, cross_attention_kwargs=None, added_cond_kwargs=None,
                    encoder_attention_mask=None, down_block_additional_residuals=None) -> torch.Tensor:
    """A cached step: the UNet output computed from the shallow branch and the cached deep ``feature``.

    ``feature`` is the up-path hidden state entering ``plan.consumer_name`` at a full step
    (``[batch, plan.feature_channels, h, w]``). Returns the noise prediction tensor.

    ``down_block_additional_residuals`` (ControlNet: one per skip, in production order) are added to
    skips 0..m, as diffusers adds them before the up path; the deeper ones belong to blocks a cached step
    does not run and are dropped (as is the mid-block residual, which the caller does not pass).
    """
    residuals = down_block_additional_residuals
    if residuals is not None and len(residuals) != plan.num_skips:
        raise ValueError(f"got {len(residuals)} ControlNet down residuals for a UNet with {plan.num_skips} skips")
    if feature.shape[0] != sample.shape[0]:
        raise ValueError(
            f"cached feature has batch {feature.shape[0]} but this step has batch {sample.shape[0]}; "
            "reset the cache when the batch changes"
        )
    up_factor = 2 ** unet.num_upsamplers
    forward_upsample_size = any(dim % up_factor != 0 for dim in sample.shape[-2:])
    hidden, emb, common = _prepare(unet, sample, timestep, encoder_hidden_states, class_labels, timestep_cond,
                                   attention_mask, cross_attention_kwargs, added_cond_kwargs,
                                   encoder_attention_mask)

    # ---- down path up to skip m
    skips = [hidden]
    for b in range(plan.down_block + 1):
        block = unet.down_blocks[b]
        if b < plan.down_block:
            hidden, res = block(hidden_states=hidden, temb=emb, **_block_kwargs(block, common))
            skips.extend(res)
            continue
        for j in range(min(plan.down_layer + 1, len(block.resnets))):
            hidden = block.resnets[j](hidden, emb)
            hidden = _attn(block, j, hidden, common)
            skips.append(hidden)
        if plan.down_layer == len(block.resnets):
            for ds in block.downsamplers:
                hidden = ds(hidden)
            skips.append(hidden)
    assert len(skips) == plan.branch + 1
    if residuals is not None:
        skips = [s + r for s, r in zip(skips, residuals)]

    # ---- up path from the resnet consuming skip m, on the cached deep feature
    hidden = feature
    block = unet.up_blocks[plan.up_block]
    if _has_freeu(block):
        raise ValueError("ReCaT caching does not support FreeU")
    n_res = len(block.resnets)
    for j in range(plan.up_layer, n_res):
        hidden = torch.cat([hidden, skips.pop()], dim=1)
        hidden = block.resnets[j](hidden, emb)
        hidden = _attn(block, j, hidden, common)
    if block.upsamplers is not None:
        is_final = plan.up_block == len(unet.up_blocks) - 1
        upsample_size = skips[-1].shape[2:] if (not is_final and forward_upsample_size) else None
        for us in block.upsamplers:
            hidden = us(hidden, upsample_size)
    for u in range(plan.up_block + 1, len(unet.up_blocks)):
        block = unet.up_blocks[u]
        if _has_freeu(block):
            raise ValueError("ReCaT caching does not support FreeU")
        n_res = len(block.resnets)
        res = tuple(skips[-n_res:])
        del skips[-n_res:]
        is_final = u == len(unet.up_blocks) - 1
        upsample_size = skips[-1].shape[2:] if (not is_final and forward_upsample_size) else None
        kwargs = _block_kwargs(block, common)
        hidden = block(hidden_states=hidden, temb=emb, res_hidden_states_tuple=res,
                       upsample_size=upsample_size, **kwargs)
    assert not skips

    if unet.conv_norm_out:
        hidden = unet.conv_norm_out(hidden)
        hidden = unet.conv_act(hidden)
    return unet.conv_out(hidden)
