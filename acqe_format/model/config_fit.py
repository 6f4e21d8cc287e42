"""Does a diffusers folder's ``config.json`` describe the weights beside it? (torch-free)

A folder's configs are the user's text; a file converted from a folder whose UNet config says 48-wide
cross-attention over weights that take 128 cannot be loaded by any runtime. `mismatches` compares the
config fields that decide tensor shapes with the shapes of the tensors that show them, so `acqe convert`
refuses such a folder in one line before any analysis, instead of writing a file readers refuse later.
Only what the tensors prove is checked (a field the weights cannot show, e.g. the number of attention
heads, is the folder's to state), and a field in a form this check does not know (per-block lists) is
left alone: a false refusal of a valid model would be worse than the runtime's later refusal.
"""
from __future__ import annotations

from acqe_format.model.keys import Component

__all__ = ["mismatches"]


def _int(cfg: dict, key: str) -> int | None:
    v = cfg.get(key)
    return v if isinstance(v, int) and not isinstance(v, bool) else None


def _ints(cfg: dict, key: str) -> list[int] | None:
    v = cfg.get(key)
    if isinstance(v, (list, tuple)) and v and all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        return list(v)
    return None


class _Checker:
    def __init__(self, component: str, cfg: dict, shapes: dict[str, tuple]):
        self.component, self.cfg, self.shapes, self.found = component, cfg, shapes, []

    def dim(self, key: str, tensor: str, axis: int, what: str | None = None, value: int | None = None) -> None:
        """Config ``key`` (or ``value``) must equal ``tensor``'s size along ``axis`` (when both exist)."""
        want = _int(self.cfg, key) if value is None else value
        shape = self.shapes.get(tensor)
        if want is None or shape is None or len(shape) <= axis:
            return
        if int(shape[axis]) != want:
            self.found.append(f"{self.component}/config.json: {key} {want}, but {tensor} is "
                              f"{list(shape)}{' (' + what + ')' if what else ''}")

    def count(self, key: str, prefix: str, what: str) -> None:
        """Config ``key`` must equal the number of ``prefix<i>.`` blocks the weights hold."""
        want = _int(self.cfg, key)
        if want is None:
            return
        found = {n[len(prefix):].split(".", 1)[0] for n in self.shapes if n.startswith(prefix)}
        have = len({x for x in found if x.isdigit()})
        if have and have != want:
            self.found.append(f"{self.component}/config.json: {key} {want}, but the weights hold {have} {what}")


def _unet(c: _Checker) -> None:
    boc = _ints(c.cfg, "block_out_channels")
    c.dim("in_channels", "conv_in.weight", 1)
    c.dim("out_channels", "conv_out.weight", 0)
    if boc:
        c.dim("block_out_channels", "conv_in.weight", 0, "the first block's width", boc[0])
        for i, width in enumerate(boc):
            c.dim("block_out_channels", f"down_blocks.{i}.resnets.0.conv1.weight", 0, f"down block {i}", width)
        c.count("layers_per_block", "down_blocks.0.resnets.", "resnets in down block 0")
    attn2 = next((n for n in sorted(c.shapes) if n.endswith("attn2.to_k.weight")), None)
    if attn2 is not None:
        c.dim("cross_attention_dim", attn2, 1, "the text context width")
    c.dim("projection_class_embeddings_input_dim", "add_embedding.linear_1.weight", 1)


def _vae(c: _Checker) -> None:
    boc = _ints(c.cfg, "block_out_channels")
    c.dim("in_channels", "encoder.conv_in.weight", 1)
    c.dim("out_channels", "decoder.conv_out.weight", 0)
    c.dim("latent_channels", "decoder.conv_in.weight", 1)
    if boc:
        c.dim("block_out_channels", "encoder.conv_in.weight", 0, "the first block's width", boc[0])
        c.dim("block_out_channels", "decoder.conv_in.weight", 0, "the last block's width", boc[-1])
        c.count("layers_per_block", "encoder.down_blocks.0.resnets.", "resnets in encoder block 0")


def _text(c: _Checker) -> None:
    # transformers >= 5 may save CLIPTextModel keys without the `text_model.` level
    c.shapes = {n[len("text_model."):] if n.startswith("text_model.") else n: s for n, s in c.shapes.items()}
    c.dim("vocab_size", "embeddings.token_embedding.weight", 0)
    c.dim("hidden_size", "embeddings.token_embedding.weight", 1)
    c.dim("max_position_embeddings", "embeddings.position_embedding.weight", 0)
    c.dim("intermediate_size", "encoder.layers.0.mlp.fc1.weight", 0)
    c.count("num_hidden_layers", "encoder.layers.", "encoder layers")
    c.dim("projection_dim", "text_projection.weight", 0)


_CHECKS = {Component.UNET: _unet, Component.VAE: _vae, Component.TEXT_ENCODER: _text,
           Component.TEXT_ENCODER_2: _text}


def mismatches(configs: dict, shapes: dict[str, tuple]) -> list[str]:
    """Every config field of the folder's components that its weights contradict (``shapes``: the folder's
    ``<component>.<key>`` names), as ``"<component>/config.json: ..."`` lines; empty when they agree."""
    out: list[str] = []
    for comp, check in _CHECKS.items():
        cfg = configs.get(comp)
        if not isinstance(cfg, dict):
            continue
        pre = comp + "."
        own = {n[len(pre):]: tuple(s) for n, s in shapes.items() if n.startswith(pre)}
        if own:
            c = _Checker(comp, cfg, own)
            check(c)
            out += c.found
    return out
