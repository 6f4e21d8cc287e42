"""The declared schema of a `.acqe` file's model metadata: keys, JSON types and ranges, checked before
anything is built from them.

Checksums prove that a file is intact, not that its metadata is sane: a re-sealed file can say
``layers_per_block: 100000`` (minutes and gigabytes of model construction before a traceback),
``max_position_embeddings: 3e8`` or a tokenizer ``model_max_length`` of 10^12 (a 4 TB allocation). The
encoder checks what it writes with :func:`check_metadata` and every reader (through
:meth:`ModelInfo.from_metadata`) checks what it loads, so both sides hold the same rules.

How configs are declared:

- :data:`FIELDS` is the vocabulary of config keys with their types and ranges. diffusers and transformers
  give a key one meaning across classes (``layers_per_block``, ``hidden_size``), so a key is declared once.
- :data:`CONFIG_CLASSES` names, per config class (``UNet2DConditionModel``, ``AutoencoderKL``,
  ``CLIPTextModel``, the schedulers), the keys its constructor takes (tests check these lists against
  the installed diffusers and transformers). A config's class is its ``_class_name`` (diffusers),
  ``architectures[0]`` (transformers) or its component's default class. A new architecture that reuses
  these classes (SD 2.x, SDXL) needs nothing here; a new class adds one `ConfigClass` line.
- Keys starting with ``_`` (``_class_name``, ``_diffusers_version``, ``_name_or_path``) are bookkeeping and
  may hold any short scalar; any other key a class does not take is refused.

Ranges are generous (a real model is far inside them) but finite, so nothing described by valid metadata
takes unbounded time or memory to build. Top-level keys this schema does not know are left alone (the
metadata is extensible); ``source``, ``encoder`` and ``sizes`` are informative and only need to be objects.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

from acqe_format.errors import MetadataError
from acqe_format.metadata import json_type as _json_type
from acqe_format.model.keys import Component, Inference, Keys, Naming, Tokenizer

__all__ = ["check_metadata", "check_config", "check_configs", "check_tokenizer_config", "config_class",
           "FIELDS", "CONFIG_CLASSES", "ConfigClass", "TOKENIZER_FILE_FIELDS"]


def _head(v, n: int = 40):
    """``v`` with every array and object cut to ``n`` items and strings to 2n characters: the first 40
    characters of its repr are those of ``v``'s (each item adds at least one character and a separator;
    only a string holding both quote kinds past its cut may change quote style), and longer reprs are cut
    anyway."""
    if isinstance(v, list):
        return [_head(x, n) for x in v[:n]]
    if isinstance(v, dict):
        return {k[:2 * n] if isinstance(k, str) else k: _head(x, n) for k, x in itertools.islice(v.items(), n)}
    if isinstance(v, str):
        return v[:2 * n]
    return v


def _short(v) -> str:
    # Either tries its options in turn and each failure words a message: repr of a whole profile's
    # moments (megabytes of text) took 50 ms per open before _head bounded it
    s = repr(_head(v))
    return s if len(s) <= 40 else s[:37] + "..."


# --- value specs ------------------------------------------------------------------------------------
class Spec:
    """Checks one JSON value; ``path`` names it in the one-line error (``configs.unet.layers_per_block``)."""

    def check(self, v, path: str) -> None:
        raise NotImplementedError

    def fail(self, v, path: str, want: str):
        raise MetadataError(f"metadata {path} must be {want}, not {_short(v)} ({_json_type(v)})")


class Int(Spec):
    def __init__(self, lo: int, hi: int):
        self.lo, self.hi = lo, hi

    def check(self, v, path):
        if isinstance(v, bool) or not isinstance(v, int) or not self.lo <= v <= self.hi:
            self.fail(v, path, f"a whole number in {self.lo}..{self.hi}")


class Num(Spec):
    def __init__(self, lo: float = -1e30, hi: float = 1e30):
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError("Num's bounds must be finite (ListOf's fast path relies on it)")
        self.lo, self.hi = lo, hi

    def check(self, v, path):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                or not self.lo <= v <= self.hi:
            self.fail(v, path, f"a finite number in {self.lo:g}..{self.hi:g}")


class Str(Spec):
    def __init__(self, max_len: int = 256, choices: tuple[str, ...] | None = None):
        self.max_len, self.choices = max_len, choices

    def check(self, v, path):
        if not isinstance(v, str) or len(v) > self.max_len:
            self.fail(v, path, f"a string of at most {self.max_len} characters")
        if self.choices is not None and v not in self.choices:
            self.fail(v, path, "one of " + ", ".join(repr(c) for c in self.choices))


class Bool(Spec):
    def check(self, v, path):
        if not isinstance(v, bool):
            self.fail(v, path, "true or false")


class Null(Spec):
    def check(self, v, path):
        if v is not None:
            self.fail(v, path, "null")


class Either(Spec):
    def __init__(self, *options: Spec, want: str):
        self.options, self.want = options, want

    def check(self, v, path):
        for o in self.options:
            try:
                o.check(v, path)
                return
            except MetadataError:
                pass
        self.fail(v, path, self.want)


class ListOf(Spec):
    def __init__(self, item: Spec, lo: int = 0, hi: int = 64):
        self.item, self.lo, self.hi = item, lo, hi

    def check(self, v, path):
        if not isinstance(v, list) or not self.lo <= len(v) <= self.hi:
            self.fail(v, path, f"an array of {self.lo}..{self.hi} items")
        if type(self.item) is Num:
            # A profile's pair moments are ~600k numbers, checked on every open: building a path string
            # and calling check per item took 0.1 s a time. A plain float or int inside the (finite)
            # bounds passes here; anything else goes through Num.check, which decides and words the error.
            lo, hi = self.item.lo, self.item.hi
            for i, x in enumerate(v):
                if not ((type(x) is float or type(x) is int) and lo <= x <= hi):
                    self.item.check(x, f"{path}[{i}]")
            return
        for i, x in enumerate(v):
            self.item.check(x, f"{path}[{i}]")


class Obj(Spec):
    """An object with declared ``fields`` (``required`` ones must be present); other keys are checked
    against ``other`` (None: refused)."""

    def __init__(self, fields: dict[str, Spec], required: tuple[str, ...] = (), other: Spec | None = None,
                 max_keys: int = 4096):
        self.fields, self.required, self.other, self.max_keys = fields, required, other, max_keys

    def check(self, v, path):
        if not isinstance(v, dict):
            self.fail(v, path, "an object")
        if len(v) > self.max_keys:
            self.fail(v, path, f"an object of at most {self.max_keys} keys")
        for k in self.required:
            if k not in v:
                raise MetadataError(f"metadata {path} has no {k!r}")
        for k, x in v.items():
            spec = self.fields.get(k, self.other)
            if spec is None:
                raise MetadataError(f"metadata {path} has an unknown key {_short(k)} (known: "
                                    f"{', '.join(sorted(self.fields)[:12])}{', ...' if len(self.fields) > 12 else ''})")
            spec.check(x, f"{path}.{k}")


class AnyJson(Spec):
    """Any value (already strict JSON: the container's parser bounded depth and size)."""

    def check(self, v, path):
        return None


def nullable(spec: Spec, want: str) -> Spec:
    return Either(Null(), spec, want=f"null or {want}")


# --- the config vocabulary --------------------------------------------------------------------------
NAME = Str(128)
TEXT = Str(4096)
CHANNELS = Int(1, 64)                       # image / latent channels
WIDTH = Int(1, 16384)                       # feature widths
COUNT = Int(1, 16)                          # layers per block
BLOCKS = 8                                  # blocks per UNet / VAE
EPS = Num(0.0, 1.0)
FLOAT = Num()
PROB = Num(0.0, 1.0)
INT_OR_PER_BLOCK = lambda spec, want: Either(spec, ListOf(spec, 1, BLOCKS), want=f"{want} or one per block")  # noqa: E731

FIELDS: dict[str, Spec] = {
    # UNet2DConditionModel / AutoencoderKL
    "sample_size": Either(Int(1, 4096), ListOf(Int(1, 4096), 2, 2), want="a size in 1..4096 or [height, width]"),
    "in_channels": CHANNELS, "out_channels": CHANNELS, "latent_channels": CHANNELS,
    "center_input_sample": Bool(), "flip_sin_to_cos": Bool(), "freq_shift": Int(0, 4096),
    "down_block_types": ListOf(NAME, 1, BLOCKS), "up_block_types": ListOf(NAME, 1, BLOCKS),
    "mid_block_type": nullable(NAME, "a block type"),
    "only_cross_attention": INT_OR_PER_BLOCK(Bool(), "true/false"),
    "block_out_channels": ListOf(Int(1, 8192), 1, BLOCKS),
    "layers_per_block": INT_OR_PER_BLOCK(COUNT, "a count in 1..16"),
    "downsample_padding": Int(0, 8), "mid_block_scale_factor": Num(0, 1e3), "dropout": PROB,
    "act_fn": NAME, "norm_num_groups": nullable(Int(1, 1024), "a group count in 1..1024"), "norm_eps": EPS,
    "cross_attention_dim": INT_OR_PER_BLOCK(WIDTH, "a width in 1..16384"),
    "transformer_layers_per_block": Either(Int(1, 64), ListOf(Either(Int(1, 64), ListOf(Int(1, 64), 1, 16),
                                                                     want="a count or counts"), 1, BLOCKS),
                                           want="a count in 1..64 or one per block"),
    "reverse_transformer_layers_per_block": nullable(ListOf(ListOf(Int(1, 64), 1, 16), 1, BLOCKS), "counts"),
    "encoder_hid_dim": nullable(WIDTH, "a width"), "encoder_hid_dim_type": nullable(NAME, "a name"),
    "attention_head_dim": INT_OR_PER_BLOCK(Int(1, 4096), "a width in 1..4096"),
    "num_attention_heads": Either(Null(), Int(1, 256), ListOf(Int(1, 256), 1, BLOCKS),
                                  want="null, a head count in 1..256 or one per block"),
    "dual_cross_attention": Bool(), "use_linear_projection": Bool(),
    "class_embed_type": nullable(NAME, "a name"), "addition_embed_type": nullable(NAME, "a name"),
    "addition_time_embed_dim": nullable(WIDTH, "a width"), "num_class_embeds": nullable(Int(1, 100000), "a count"),
    "upcast_attention": Bool(), "resnet_time_scale_shift": NAME, "resnet_skip_time_act": Bool(),
    "resnet_out_scale_factor": Num(0, 1e3), "time_embedding_type": NAME,
    "time_embedding_dim": nullable(WIDTH, "a width"), "time_embedding_act_fn": nullable(NAME, "a name"),
    "timestep_post_act": nullable(NAME, "a name"), "time_cond_proj_dim": nullable(WIDTH, "a width"),
    "conv_in_kernel": Int(1, 15), "conv_out_kernel": Int(1, 15),
    "projection_class_embeddings_input_dim": nullable(WIDTH, "a width"), "attention_type": NAME,
    "class_embeddings_concat": Bool(), "mid_block_only_cross_attention": nullable(Bool(), "true/false"),
    "cross_attention_norm": nullable(NAME, "a name"), "addition_embed_type_num_heads": Int(1, 256),
    "scaling_factor": Num(1e-6, 1e6), "shift_factor": nullable(FLOAT, "a number"),
    "latents_mean": nullable(ListOf(FLOAT, 1, 64), "numbers"), "latents_std": nullable(ListOf(FLOAT, 1, 64), "numbers"),
    "force_upcast": Bool(), "use_quant_conv": Bool(), "use_post_quant_conv": Bool(),
    "mid_block_add_attention": Bool(),
    # CLIPTextModel (transformers CLIPTextConfig and PretrainedConfig's common keys)
    "vocab_size": Int(1, 1_000_000), "hidden_size": WIDTH, "intermediate_size": Int(1, 65536),
    "projection_dim": WIDTH, "num_hidden_layers": Int(1, 128),
    "max_position_embeddings": Int(1, 8192), "hidden_act": NAME, "layer_norm_eps": EPS,
    "attention_dropout": PROB, "initializer_range": Num(0, 1e3), "initializer_factor": Num(0, 1e3),
    "pad_token_id": nullable(Int(0, 1_000_000), "a token id"), "bos_token_id": nullable(Int(0, 1_000_000), "a token id"),
    "eos_token_id": nullable(Int(0, 1_000_000), "a token id"), "model_type": NAME,
    "architectures": nullable(ListOf(NAME, 0, 8), "class names"), "torch_dtype": nullable(NAME, "a dtype name"),
    "dtype": nullable(NAME, "a dtype name"), "transformers_version": NAME, "output_hidden_states": Bool(),
    "output_attentions": Bool(), "return_dict": Bool(), "chunk_size_feed_forward": Int(0, 1 << 20),
    "is_encoder_decoder": Bool(), "id2label": Obj({}, other=NAME, max_keys=4096),
    "label2id": Obj({}, other=Int(0, 1 << 20), max_keys=4096), "problem_type": nullable(NAME, "a name"),
    "tie_word_embeddings": Bool(), "gradient_checkpointing": Bool(), "use_cache": Bool(),
    # schedulers
    # (string values a scheduler reads only while sampling are enumerated: a typo would fail mid-run)
    "num_train_timesteps": Int(1, 10000), "beta_start": PROB, "beta_end": PROB,
    "beta_schedule": Str(64, ("linear", "scaled_linear", "squaredcos_cap_v2")),
    "trained_betas": nullable(ListOf(PROB, 1, 10000), "an array of betas in 0..1"),
    "clip_sample": Bool(), "set_alpha_to_one": Bool(), "steps_offset": Int(0, 10000),
    "prediction_type": Str(64, ("epsilon", "v_prediction", "sample")),
    "thresholding": Bool(), "dynamic_thresholding_ratio": PROB, "clip_sample_range": Num(0, 1e6),
    "sample_max_value": Num(0, 1e6), "timestep_spacing": Str(64, ("leading", "trailing", "linspace")),
    "rescale_betas_zero_snr": Bool(), "skip_prk_steps": Bool(),
    "interpolation_type": Str(64, ("linear", "log_linear")),
    "use_karras_sigmas": Bool(), "use_exponential_sigmas": Bool(), "use_beta_sigmas": Bool(),
    "sigma_min": nullable(Num(0, 1e6), "a number"), "sigma_max": nullable(Num(0, 1e6), "a number"),
    "timestep_type": Str(64, ("discrete", "continuous")), "final_sigmas_type": Str(64, ("zero", "sigma_min")),
    "solver_order": Int(1, 3), "algorithm_type": Str(64, ("dpmsolver++", "sde-dpmsolver++", "dpmsolver", "sde-dpmsolver")),
    "solver_type": Str(64, ("midpoint", "heun")), "lower_order_final": Bool(), "euler_at_final": Bool(), "use_lu_lambdas": Bool(),
    "use_flow_sigmas": Bool(), "flow_shift": Num(0, 1e3),
    "lambda_min_clipped": Either(Num(), Null(), want="a number"), "variance_type": nullable(Str(64, ("learned", "learned_range")), "learned or learned_range"),
    "use_dynamic_shifting": Bool(), "time_shift_type": Str(64, ("exponential", "linear")),
}

_UNET_KEYS = (
    "sample_size in_channels out_channels center_input_sample flip_sin_to_cos freq_shift down_block_types "
    "mid_block_type up_block_types only_cross_attention block_out_channels layers_per_block downsample_padding "
    "mid_block_scale_factor dropout act_fn norm_num_groups norm_eps cross_attention_dim transformer_layers_per_block "
    "reverse_transformer_layers_per_block encoder_hid_dim encoder_hid_dim_type attention_head_dim num_attention_heads "
    "dual_cross_attention use_linear_projection class_embed_type addition_embed_type addition_time_embed_dim "
    "num_class_embeds upcast_attention resnet_time_scale_shift resnet_skip_time_act resnet_out_scale_factor "
    "time_embedding_type time_embedding_dim time_embedding_act_fn timestep_post_act time_cond_proj_dim "
    "conv_in_kernel conv_out_kernel projection_class_embeddings_input_dim attention_type class_embeddings_concat "
    "mid_block_only_cross_attention cross_attention_norm addition_embed_type_num_heads").split()
_VAE_KEYS = (
    "in_channels out_channels down_block_types up_block_types block_out_channels layers_per_block act_fn "
    "latent_channels norm_num_groups sample_size scaling_factor shift_factor latents_mean latents_std force_upcast "
    "use_quant_conv use_post_quant_conv mid_block_add_attention").split()
_CLIP_TEXT_KEYS = (
    "vocab_size hidden_size intermediate_size projection_dim num_hidden_layers num_attention_heads "
    "max_position_embeddings hidden_act layer_norm_eps attention_dropout dropout initializer_range "
    "initializer_factor pad_token_id bos_token_id eos_token_id model_type architectures torch_dtype dtype "
    "transformers_version output_hidden_states output_attentions return_dict chunk_size_feed_forward "
    "is_encoder_decoder id2label label2id problem_type tie_word_embeddings gradient_checkpointing use_cache").split()
# every scheduler class takes every scheduler key: the one stored config configures any sampler
_SCHEDULER_KEYS = (
    "num_train_timesteps beta_start beta_end beta_schedule trained_betas prediction_type steps_offset "
    "clip_sample set_alpha_to_one thresholding dynamic_thresholding_ratio clip_sample_range sample_max_value "
    "timestep_spacing rescale_betas_zero_snr skip_prk_steps interpolation_type use_karras_sigmas "
    "use_exponential_sigmas use_beta_sigmas sigma_min sigma_max timestep_type final_sigmas_type solver_order "
    "algorithm_type solver_type lower_order_final euler_at_final use_lu_lambdas use_flow_sigmas flow_shift "
    "lambda_min_clipped variance_type use_dynamic_shifting time_shift_type").split()


def _heads_divide_width(cfg: dict, path: str) -> None:
    width, heads = cfg.get("hidden_size"), cfg.get("num_attention_heads")
    if isinstance(width, int) and isinstance(heads, int) and heads > 0 and width % heads:
        raise MetadataError(f"metadata {path}: hidden_size {width} is not a multiple of num_attention_heads {heads}")


@dataclass(frozen=True)
class ConfigClass:
    """A model or scheduler class a config can describe: the component it serves and the keys it takes.
    Schedulers accept every scheduler key (any sampler is configured from the one stored config)."""

    name: str
    component: str
    keys: frozenset[str]
    check: object = None            # optional cross-field check: fn(config, path)


def _same_count(cfg: dict, path: str, keys: tuple[str, ...]) -> None:
    lengths = {k: len(cfg[k]) for k in keys if isinstance(cfg.get(k), list)}
    if len(set(lengths.values())) > 1:
        raise MetadataError(f"metadata {path}: {', '.join(f'{k} has {n}' for k, n in lengths.items())} entries; "
                            f"they must be one per block")


MAX_LAYERS = 256        # blocks x (layers per block + 1) x transformer layers: SDXL's UNet has 90


def _most(v) -> int:
    if isinstance(v, list):
        return max((_most(x) for x in v), default=1)
    return v if isinstance(v, int) and not isinstance(v, bool) else 1


def _per_block(cfg: dict, path: str) -> None:
    _same_count(cfg, path, ("block_out_channels", "down_block_types", "up_block_types"))
    blocks = len(cfg.get("block_out_channels") or [0])
    layers = blocks * (_most(cfg.get("layers_per_block", 1)) + 1) * _most(cfg.get("transformer_layers_per_block", 1))
    if layers > MAX_LAYERS:
        raise MetadataError(f"metadata {path} describes {layers:,} layers (blocks x layers per block x transformer "
                            f"layers; the limit is {MAX_LAYERS})")
    groups = cfg.get("norm_num_groups")
    for c in cfg.get("block_out_channels") or []:
        if isinstance(groups, int) and c % groups:
            raise MetadataError(f"metadata {path}: block_out_channels {c} is not a multiple of norm_num_groups "
                                f"{groups}")


def _betas_cover_training(cfg: dict, path: str) -> None:
    """diffusers indexes ``trained_betas`` by training timestep: a shorter list fails mid-sampling."""
    betas, steps = cfg.get("trained_betas"), cfg.get("num_train_timesteps", 1000)
    if isinstance(betas, list) and isinstance(steps, int) and len(betas) != steps:
        raise MetadataError(f"metadata {path}: trained_betas has {len(betas)} entries; num_train_timesteps is "
                            f"{steps} (one beta per training timestep)")


SCHEDULER_CLASSES = ("DDIMScheduler", "PNDMScheduler", "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler",
                     "DPMSolverMultistepScheduler", "LMSDiscreteScheduler")

CONFIG_CLASSES: dict[str, ConfigClass] = {c.name: c for c in [
    ConfigClass("UNet2DConditionModel", Component.UNET, frozenset(_UNET_KEYS), _per_block),
    ConfigClass("AutoencoderKL", Component.VAE, frozenset(_VAE_KEYS), _per_block),
    ConfigClass("CLIPTextModel", Component.TEXT_ENCODER, frozenset(_CLIP_TEXT_KEYS), _heads_divide_width),
    ConfigClass("CLIPTextModelWithProjection", Component.TEXT_ENCODER, frozenset(_CLIP_TEXT_KEYS),
                _heads_divide_width),
    *[ConfigClass(n, Component.SCHEDULER, frozenset(_SCHEDULER_KEYS), _betas_cover_training)
      for n in SCHEDULER_CLASSES],
]}
DEFAULT_CLASS = {Component.UNET: "UNet2DConditionModel", Component.VAE: "AutoencoderKL",
                 Component.TEXT_ENCODER: "CLIPTextModel", Component.TEXT_ENCODER_2: "CLIPTextModelWithProjection",
                 Component.SCHEDULER: "PNDMScheduler"}

# components that take the classes of another (SDXL's second text encoder is a text encoder)
_ROLE = {Component.TEXT_ENCODER_2: Component.TEXT_ENCODER}

BOOKKEEPING = Either(Null(), Bool(), Num(), Str(1024), want="a short scalar")    # `_`-prefixed keys


def config_class(component: str, cfg: dict) -> str | None:
    """The class a stored config describes: ``_class_name``, ``architectures[0]`` or the component's default."""
    name = cfg.get("_class_name")
    if name is None and isinstance(cfg.get("architectures"), list) and cfg["architectures"]:
        name = cfg["architectures"][0]
    return name if isinstance(name, str) else DEFAULT_CLASS.get(component)


def check_config(component: str, cfg, path: str | None = None) -> None:
    """Check one stored config against its class's keys and the field vocabulary (MetadataError)."""
    path = path or f"{Keys.CONFIGS}.{component}"
    if not isinstance(cfg, dict):
        Obj({}).fail(cfg, path, "an object")
    name = config_class(component, cfg)
    component = _ROLE.get(component, component)
    cls = CONFIG_CLASSES.get(name) if isinstance(name, str) else None
    if cls is None:
        known = ", ".join(c.name for c in CONFIG_CLASSES.values() if c.component == component) or "none"
        raise MetadataError(f"metadata {path} describes {_short(name)}, not a class this reader builds "
                            f"(for {component}: {known})")
    if cls.component != component:
        raise MetadataError(f"metadata {path} describes a {cls.name}, which is not a {component}")
    for k, v in cfg.items():
        if not isinstance(k, str) or len(k) > 128:
            raise MetadataError(f"metadata {path} has a key that is not a short string: {_short(k)}")
        if k.startswith("_"):
            BOOKKEEPING.check(v, f"{path}.{k}")
        elif k in cls.keys:
            FIELDS[k].check(v, f"{path}.{k}")
        else:
            raise MetadataError(f"metadata {path} has a key {_short(k)} that {cls.name} does not take")
    if cls.check is not None:
        cls.check(cfg, path)


# --- tokenizer: the configs.tokenizer description and the embedded tokenizer_config.json ---------------
TOKEN = Either(Str(256), Obj({"content": Str(256)}, required=("content",), other=AnyJson(), max_keys=16),
               want="a token string")
TOKENIZER_FILE_FIELDS: dict[str, Spec] = {
    "model_max_length": Int(1, 8192), "tokenizer_class": NAME, "bos_token": nullable(TOKEN, "a token"),
    "eos_token": nullable(TOKEN, "a token"), "unk_token": nullable(TOKEN, "a token"),
    "pad_token": nullable(TOKEN, "a token"), "do_lower_case": Bool(), "errors": NAME,
    "add_prefix_space": Bool(), "clean_up_tokenization_spaces": Bool(), "name_or_path": TEXT,
    "special_tokens_map_file": nullable(TEXT, "a file name"),
    "added_tokens_decoder": Obj({}, other=Obj({}, other=AnyJson(), max_keys=16), max_keys=1024),
}
TOKENIZER_DESCRIPTION = Obj({
    Tokenizer.CLASS: NAME,
    Tokenizer.FILES: nullable(Obj({}, other=Str(1024), max_keys=16), "{file name: asset name}"),
    Tokenizer.SOURCE: TEXT,
})


def check_tokenizer_config(cfg, path: str = "tokenizer_config.json") -> None:
    """Check an embedded ``tokenizer_config.json`` (MetadataError)."""
    Obj(TOKENIZER_FILE_FIELDS, other=None).check(cfg, path)


# --- ReCaT blocks: what every store format shares (recat_runtime.cache.store reads the rest) -----------
MAX_STEPS = 1000
MATRIX = ListOf(ListOf(Num(), 1, 65536), 1, MAX_STEPS)
CORRECTION = nullable(Obj({"scale": MATRIX, "shift": MATRIX, "trend": nullable(MATRIX, "a matrix")},
                          required=("scale", "shift"), other=AnyJson()), "a correction object")
SCHEDULE = Obj({"budget": Int(1, MAX_STEPS), "full_steps": ListOf(Int(0, MAX_STEPS - 1), 1, MAX_STEPS),
                "correction": CORRECTION}, required=("budget", "full_steps"), other=AnyJson())
PROFILE = Obj({"sampler": NAME, "steps": Int(1, MAX_STEPS), "guidance": Num(0, 1000), "branch": Int(0, 1024),
               "similarity": ListOf(ListOf(Num(), 0, MAX_STEPS), 0, MAX_STEPS),
               "schedules": ListOf(SCHEDULE, 0, MAX_STEPS)},
              required=("sampler", "steps", "guidance", "branch"), other=AnyJson())
MOMENTS = Obj({"count": Num(0, 1e30), "mean": MATRIX, "cross": ListOf(ListOf(Num(), 1, 65536), 1, MAX_STEPS * (MAX_STEPS + 1) // 2),
               "centred": ListOf(ListOf(Num(), 1, 65536), 1, MAX_STEPS * (MAX_STEPS + 1) // 2)},
              required=("count", "mean", "cross", "centred"))
# The weightings of a continuous model each ReCaT format may hold. The weighting decides the derived
# schedules, so a name a reader does not know must not reach it under a format it reads: format 4 adds
# "early05" (the noisy steps weigh more), and a format-3 reader refuses a format-4 block.
CONTINUOUS_WEIGHTINGS = {3: ("none", "late1", "late2", "late4"), 4: ("none", "late1", "late2", "late4", "early05")}


def recat_format_for_weighting(weighting: str) -> int:
    """The lowest ReCaT format whose continuous models may have ``weighting``."""
    return min(f for f, names in CONTINUOUS_WEIGHTINGS.items() if weighting in names)


CONTINUOUS = Obj({"timesteps": ListOf(Num(0, 1e6), 1, MAX_STEPS),
                  "weighting": Str(16, CONTINUOUS_WEIGHTINGS[max(CONTINUOUS_WEIGHTINGS)]),
                  "correction": Str(16, ("none", "affine", "trend")), "num_train_timesteps": Int(1, 1 << 20),
                  "moments": nullable(MOMENTS, "a moments object"), "selection": AnyJson()},
                 required=("timesteps", "weighting", "correction"))
RECAT_FORMATS_CHECKED = (1, 2, 3, 4)


def _check_continuous(c: dict, p: dict, where: str) -> None:
    """The shapes of a continuous model agree with each other and with the profile's similarity."""
    n = len(c["timesteps"])
    sim = p.get("similarity")
    if sim is None or len(sim) != n or any(len(r) != n for r in sim):
        raise MetadataError(f"metadata {where}: needs the profile's [{n}][{n}] similarity for its {n} timesteps")
    m = c.get("moments")
    if m:
        chans = {len(r) for k in ("mean", "cross", "centred") for r in m[k]}
        if len(m["mean"]) != n or len(m["cross"]) != n * (n + 1) // 2 or len(m["centred"]) != n * (n + 1) // 2 \
                or len(chans) != 1:
            raise MetadataError(f"metadata {where}.moments: must be [{n}][C] and [{n * (n + 1) // 2}][C] matrices "
                                f"of one channel count")
    elif c["correction"] != "none":
        raise MetadataError(f"metadata {where}: a {c['correction']} correction needs moments")


def _check_recat(block, path: str) -> None:
    Obj({"format": Int(0, 1 << 20)}, other=AnyJson()).check(block, path)
    if block.get("format") not in RECAT_FORMATS_CHECKED:
        return                       # a store format this schema predates: the store refuses or reads it
    Obj({"format": Int(0, 1 << 20), "profiles": ListOf(PROFILE, 0, 256)}, other=AnyJson()).check(block, path)
    for i, p in enumerate(block.get("profiles", [])):
        steps = p["steps"]
        if p.get("continuous") is not None:
            if block["format"] < 3:
                raise MetadataError(f"metadata {path}.profiles[{i}].continuous: needs ReCaT format 3")
            CONTINUOUS.check(p["continuous"], f"{path}.profiles[{i}].continuous")
            need = recat_format_for_weighting(p["continuous"]["weighting"])
            if block["format"] < need:
                raise MetadataError(f"metadata {path}.profiles[{i}].continuous.weighting: "
                                    f"{p['continuous']['weighting']!r} needs ReCaT format {need}")
            _check_continuous(p["continuous"], p, f"{path}.profiles[{i}].continuous")
        for j, s in enumerate(p.get("schedules", [])):
            where = f"{path}.profiles[{i}].schedules[{j}]"
            if s["budget"] > steps or any(t >= steps for t in s["full_steps"]):
                raise MetadataError(f"metadata {where}: budget or full steps beyond the profile's {steps} steps")
            corr = s.get("correction")
            if corr:
                rows = {len(corr[k]) for k in ("scale", "shift", "trend") if corr.get(k) is not None}
                cols = {len(r) for k in ("scale", "shift", "trend") if corr.get(k) is not None for r in corr[k]}
                if rows != {steps} or len(cols) != 1:
                    raise MetadataError(f"metadata {where}.correction: must be [{steps}][channels] matrices of one "
                                        f"channel count")


# --- the whole metadata --------------------------------------------------------------------------------
COMPONENT_PREFIX = Either(Str(1024), Obj({"prefix": Str(1024)}, required=("prefix",), other=AnyJson()),
                          want="a tensor-name prefix")
TOP_LEVEL: dict[str, Spec] = {
    Keys.ARCHITECTURE: Str(128),
    Keys.NAMING: Str(32, (Naming.LDM, Naming.DIFFUSERS, Naming.FLAT)),
    Keys.COMPONENTS: Obj({}, other=COMPONENT_PREFIX, max_keys=64),
    Keys.CONFIGS: Obj({}, other=AnyJson(), max_keys=64),      # each config: check_config
    Keys.SOURCE: Obj({}, other=AnyJson()), Keys.ENCODER: Obj({}, other=AnyJson()),
    Keys.SIZES: Obj({}, other=AnyJson()),
    Keys.INFERENCE: Obj({Inference.GUIDANCE: Num(0, 1000)}, other=AnyJson()),
    Keys.RECAT: AnyJson(),                                    # _check_recat
}


def check_configs(configs: dict, path: str = Keys.CONFIGS) -> None:
    """Check every config of ``configs`` (component -> config; ``tokenizer`` -> description or null)."""
    TOP_LEVEL[Keys.CONFIGS].check(configs, path)
    for name, cfg in configs.items():
        if name in Component.TOKENIZERS:
            if cfg is not None:
                TOKENIZER_DESCRIPTION.check(cfg, f"{path}.{name}")
        elif name in DEFAULT_CLASS:
            check_config(name, cfg, f"{path}.{name}")
        else:                        # a component of another architecture: its class decides
            if not isinstance(cfg, dict):
                Obj({}).fail(cfg, f"{path}.{name}", "an object")
            cls = CONFIG_CLASSES.get(config_class(name, cfg) or "")
            check_config(cls.component if cls else name, cfg, f"{path}.{name}")


def check_metadata(metadata: dict) -> None:
    """Check the model keys of a file's metadata against the schema; raise MetadataError with one line."""
    if not isinstance(metadata, dict):
        raise MetadataError(f"metadata must be an object, not {_json_type(metadata)}")
    for key, spec in TOP_LEVEL.items():
        if key in metadata and metadata[key] is not None:
            spec.check(metadata[key], key)
    if isinstance(metadata.get(Keys.CONFIGS), dict):
        check_configs(metadata[Keys.CONFIGS])
    if metadata.get(Keys.RECAT) is not None:
        _check_recat(metadata[Keys.RECAT], Keys.RECAT)
