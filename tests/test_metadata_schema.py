"""Damaged metadata the runtime trusts: the declared schema refuses it before anything is built, and the
loader refuses tensors that do not fit the model before anything is decoded."""
from __future__ import annotations

import copy
import inspect
import json
import time

import numpy as np
import pytest

from acqe_cli.main import main
from acqe_format import AcqeReader, replace_metadata
from acqe_format.errors import AcqeError, MetadataError
from acqe_format.model import ModelInfo, schema, sd_v1

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from recat_runtime.testing import tiny_pipeline
    from reseal_fuzz import tiny_base

    path = tmp_path_factory.mktemp("schema") / "tiny.acqe"
    tiny_pipeline()
    info = tiny_base(str(path))
    return str(path), info


def _meta(path):
    with AcqeReader(path) as r:
        return copy.deepcopy(r.metadata)


def _resealed(tiny, tmp_path, change, assets=None, extra=None, name="case.acqe"):
    from reseal_fuzz import Case, reseal

    path, _ = tiny
    meta = _meta(path)
    change(meta)
    with AcqeReader(path) as r:
        base_assets = dict(r.assets)
    if assets:
        base_assets.update(assets)
    out = str(tmp_path / name)
    reseal(path, out, Case(0, "test", "", meta, base_assets, extra or {}))
    return out


def _load_error(path) -> AcqeError:
    from recat_runtime.loading import load_pipeline

    with pytest.raises(AcqeError) as e:
        load_pipeline(path, device="cpu")
    return e.value


# --- the schema itself -------------------------------------------------------------------------------
def test_reference_configs_pass():
    from acqe_demo.models import default_configs
    from recat_runtime.testing import SCHEDULER_CONFIG, TINY_TEXT_CONFIG, TINY_UNET_CONFIG, TINY_VAE_CONFIG

    schema.check_configs(sd_v1.configs())
    demo = default_configs()
    demo.pop("architecture")
    schema.check_configs(demo)
    schema.check_configs({"unet": TINY_UNET_CONFIG, "vae": TINY_VAE_CONFIG, "text_encoder": TINY_TEXT_CONFIG,
                          "scheduler": SCHEDULER_CONFIG})


def test_declared_keys_are_the_libraries_constructor_arguments():
    """Each declared class takes exactly the keys its library class does (so SD 2.x / SDXL configs of these
    classes need no new declaration)."""
    import diffusers
    from transformers import CLIPTextConfig, PretrainedConfig

    for name in ("UNet2DConditionModel", "AutoencoderKL", *schema.SCHEDULER_CLASSES):
        params = set(inspect.signature(getattr(diffusers, name).__init__).parameters) - {"self", "kwargs"}
        declared = schema.CONFIG_CLASSES[name].keys
        assert params <= declared, (name, sorted(params - declared))
    clip = set(inspect.signature(CLIPTextConfig.__init__).parameters) | set(
        inspect.signature(PretrainedConfig.__init__).parameters)
    assert clip - {"self", "kwargs"} <= schema.CONFIG_CLASSES["CLIPTextModel"].keys
    assert set().union(*(c.keys for c in schema.CONFIG_CLASSES.values())) <= set(schema.FIELDS)


@pytest.mark.parametrize("component, key, value, needle", [
    ("unet", "layers_per_block", 1e5, "layers_per_block"),
    ("unet", "layers_per_block", 100000, "layers_per_block"),
    ("text_encoder", "max_position_embeddings", 300000000, "max_position_embeddings"),
    ("unet", "layers_per_blok", 2, "does not take"),
    ("unet", "block_out_channels", "320", "block_out_channels"),
    ("vae", "_class_name", "Evil", "not a class"),
    ("scheduler", "num_train_timesteps", 10 ** 9, "num_train_timesteps"),
    ("unet", "transformer_layers_per_block", [64, 64, 64, 64], "layers"),
    ("scheduler", "beta_schedule", "CLIPTextModel", "beta_schedule"),      # fuzzer seed 141: NotImplementedError
    ("scheduler", "timestep_spacing", "sideways", "timestep_spacing"),
    ("text_encoder", "num_attention_heads", 40, "multiple of num_attention_heads"),   # fuzzer seed 101114
    ("scheduler", "trained_betas", [1], "one beta per training timestep"),   # fuzzer seed 203580: IndexError
])
def test_absurd_or_unknown_config_values_are_refused(component, key, value, needle):
    cfg = sd_v1.configs()
    cfg[component][key] = value
    t0 = time.perf_counter()
    with pytest.raises(MetadataError, match=needle):
        ModelInfo.from_metadata({"architecture": "stable-diffusion-v1", "naming": "ldm", "configs": cfg})
    assert time.perf_counter() - t0 < 1


@pytest.mark.parametrize("meta, needle", [
    ({"configs": {"unet": [1, 2]}}, "configs.unet must be an object"),
    ({"configs": []}, "configs must be an object"),
    ({"components": {"unet": 5}}, "components.unet"),
    ({"naming": "weird"}, "naming"),
    ({"inference": {"guidance": "high"}}, "guidance"),
    ({"configs": {"tokenizer": {"files": [1]}}}, "configs.tokenizer.files"),
])
def test_wrong_json_types_are_refused(meta, needle):
    with pytest.raises(MetadataError, match=needle):
        ModelInfo.from_metadata(meta)


def test_tokenizer_config_with_a_huge_length_is_refused():
    from acqe_format.model.clip_bpe import clip_tokenizer_files, decode_tokenizer_files

    files = clip_tokenizer_files()
    files["tokenizer_config.json"] = json.dumps({"model_max_length": 10 ** 12}).encode()
    with pytest.raises(MetadataError, match="model_max_length"):
        decode_tokenizer_files(files)


def _recat(meta):
    return meta["recat"]["profiles"][0]["schedules"][0]


@pytest.mark.parametrize("damage, needle", [
    (lambda m: _recat(m).pop("budget"), "budget"),
    (lambda m: m["recat"]["profiles"][0].update(steps="four"), "steps"),
    (lambda m: _recat(m).update(full_steps=[0, 9]), "beyond"),
    (lambda m: _recat(m)["correction"].update(scale=[[1.0] * 3] * 4, shift=[[1.0] * 5] * 4), "channel"),
])
def test_damaged_recat_blocks_are_refused(tiny, damage, needle):
    meta = _meta(tiny[0])
    damage(meta)
    with pytest.raises(MetadataError, match=needle):
        ModelInfo.from_metadata(meta)


# --- through the file: re-sealed with valid checksums ---------------------------------------------------
def test_correction_with_the_wrong_channel_count_is_one_line(tiny, tmp_path, capsys):
    channels = tiny[1]["channels"] + 1

    def change(meta):
        _recat(meta)["correction"] = {"scale": [[1.0] * channels] * 4, "shift": [[0.0] * channels] * 4}
    path = _resealed(tiny, tmp_path, change)
    code = main(["generate", path, "--prompt", "a", "--steps", "4", "--cache", "recat", "--full-steps", "2",
                 "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and f"{channels} channels" in err[0], err


def test_layers_per_block_1e5_is_refused_at_once_everywhere(tiny, tmp_path, capsys):
    path = _resealed(tiny, tmp_path, lambda m: m["configs"]["unet"].update(layers_per_block=1e5))
    t0 = time.perf_counter()
    assert "layers_per_block" in str(_load_error(path))
    assert time.perf_counter() - t0 < 5
    assert main(["generate", path, "--prompt", "a", "--out", str(tmp_path / "x.png")]) == 1
    assert main(["verify", path]) == 3
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(e.startswith("Error: bad metadata:") for e in err), err


def test_inspect_shows_a_damaged_file_and_says_what_is_wrong(tiny, tmp_path, capsys):
    path = _resealed(tiny, tmp_path, lambda m: m["configs"].update(unet="broken"))
    assert main(["inspect", path]) == 0
    out = capsys.readouterr().out
    assert "configs.unet must be an object" in out
    assert main(["inspect", path, "--json"]) == 0
    assert "configs.unet must be an object" in json.loads(capsys.readouterr().out)["metadata_error"]


@pytest.mark.parametrize("component, key, value", [
    ("unet", "attention_head_dim", 4000),     # fuzzer seed 101330: ZeroDivisionError inside diffusers
    ("unet", "act_fn", "no-such-activation"),
])
def test_configs_the_schema_allows_but_the_model_cannot_build_are_one_line(tiny, tmp_path, component, key, value):
    path = _resealed(tiny, tmp_path, lambda m: m["configs"][component].update({key: value}))
    err = _load_error(path)
    assert "does not build a model" in str(err) and "\n" not in str(err)


def test_int64_in_a_float_slot_is_refused(tiny, tmp_path):
    path = _resealed(tiny, tmp_path, lambda m: None, extra={"model.diffusion_model.out.2.bias": ("int64", None)})
    assert "is stored as int64, the model needs a float" in str(_load_error(path))


def test_unused_tensor_under_a_prefix_is_refused_before_decoding(tiny, tmp_path):
    """A 2^26-value tensor the UNet does not use (256 MiB decoded) is refused without being decoded."""
    from reseal_fuzz import PeakRss

    path = _resealed(tiny, tmp_path, lambda m: None,
                     extra={"model.diffusion_model.surprise.weight": ("zeros", 1 << 26)})
    with PeakRss() as rss:
        err = _load_error(path)
    assert "does not use" in str(err) and "surprise.weight" in str(err)
    assert rss.growth < 128 << 20, f"{rss.growth / 1e6:.0f} MB"


def test_unusable_embedded_tokenizer_is_an_error_not_a_substitute(tiny, tmp_path):
    path = _resealed(tiny, tmp_path, lambda m: None, assets={"tokenizer/merges.txt.xz": b"not xz"})
    assert "embedded tokenizer files are unusable" in str(_load_error(path))


def test_tokenizer_longer_than_the_text_encoder_is_refused(tiny, tmp_path):
    cfg = json.dumps({"model_max_length": 78}).encode()
    path = _resealed(tiny, tmp_path, lambda m: None, assets={"tokenizer/tokenizer_config.json": cfg})
    assert "78 tokens" in str(_load_error(path))


def test_convert_refuses_configs_readers_would_refuse(tmp_path, capsys):
    """A checkpoint whose embedded configs are damaged: one line from convert, before the analysis."""
    torch = pytest.importorskip("torch")
    from acqe_demo.models import default_configs

    cfg = default_configs()
    cfg["unet"]["layers_per_block"] = 100000
    ckpt = tmp_path / "m.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.input_blocks.0.0.weight": torch.zeros(8, 4, 3, 3)},
                "acqe_configs": json.dumps(cfg)}, ckpt)
    assert main(["convert", str(ckpt), str(tmp_path / "o.acqe"), "-q"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "layers_per_block" in err[0], err
    assert not (tmp_path / "o.acqe").exists()


def test_a_valid_resealed_file_still_loads_exactly(tiny, tmp_path):
    from recat_runtime.loading import load_pipeline

    path = _resealed(tiny, tmp_path, lambda m: m.update(extra_user_key={"anything": [1, 2]}))
    pipe = load_pipeline(path, device="cpu")
    with AcqeReader(path) as r:
        w = r.read("model.diffusion_model.out.2.weight")
    assert np.array_equal(pipe.unet.conv_out.weight.detach().numpy(), w)


@pytest.fixture
def schema_checks(monkeypatch) -> list:
    """The metadata schema checks made while the test runs, one entry each (the check still runs)."""
    calls = []
    check = schema.check_metadata
    monkeypatch.setattr(schema, "check_metadata", lambda meta: (calls.append(1), check(meta))[1])
    return calls


def test_a_pipeline_load_checks_the_metadata_once(tiny, schema_checks):
    # every component loader asks for the model conventions; the check walks the whole metadata (a ReCaT
    # profile's moments included), so one open reader checks it once
    from recat_runtime.loading import load_pipeline

    load_pipeline(tiny[0], device="cpu")
    assert len(schema_checks) == 1


def test_generate_checks_the_metadata_once_before_the_load_and_once_in_it(tiny, schema_checks):
    # generate reads the conventions first (to refuse a wrong run before paying for the load); the load
    # opens the file again and checks what it reads
    from recat_runtime.api import generate

    generate(tiny[0], ["a red circle"], steps=2, device="cpu", height=32, width=32)
    assert len(schema_checks) == 2


def test_a_reader_whose_metadata_fails_the_check_refuses_it_every_time(tiny, tmp_path):
    path = _resealed(tiny, tmp_path, lambda m: m["configs"]["unet"].update(layers_per_block=10**5))
    with AcqeReader(path) as r:
        for _ in range(2):      # a failed check is not remembered as a pass
            with pytest.raises(MetadataError, match="layers_per_block"):
                r.model_info


def test_replace_metadata_writes_what_readers_accept(tiny, tmp_path):
    import shutil

    path = str(tmp_path / "copy.acqe")
    shutil.copy(tiny[0], path)
    meta = _meta(path)
    meta["inference"] = {"guidance": 5.0}
    replace_metadata(path, meta)
    assert ModelInfo.from_metadata(_meta(path)).default_guidance == 5.0


# --- the fast paths for long number arrays give the per-item verdicts and messages ---------------------
@pytest.mark.parametrize("bad, index, needle", [
    (float("nan"), 3, "finite number"), (True, 0, "finite number"), ("1.5", 7, "finite number"),
    (10 ** 40, 9, "finite number"), (-2e30, 5, "finite number"), (None, 1, "finite number"),
])
def test_number_arrays_refuse_each_bad_item_by_its_index(bad, index, needle):
    values = [0.5, -1, 2.0e29, 3, 4.0, 5, 6.0, 7, 8.0, 9]
    values[index] = bad
    with pytest.raises(MetadataError, match=rf"metadata m\[{index}\] must be a {needle}"):
        schema.ListOf(schema.Num(), 0, 100).check(values, "m")
    schema.ListOf(schema.Num(), 0, 100).check([np.float64(1.5), 2, -0.0], "m")   # float subclasses still pass
    with pytest.raises(MetadataError, match=r"m\[2\] must be a finite number in 0..1"):
        schema.ListOf(schema.Num(0, 1), 0, 100).check([0.0, 1, 1.5], "m")


def test_short_values_in_messages_are_the_head_of_the_repr():
    from hypothesis import given, settings, strategies as st

    leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=120))
    values = st.recursive(leaves, lambda inner: st.one_of(st.lists(inner, max_size=60),
                                                          st.dictionaries(st.text(max_size=90), inner, max_size=60)),
                          max_leaves=200)

    @settings(max_examples=300, deadline=None)
    @given(values)
    def same(v):
        s = repr(v)
        if not (isinstance(v, str) and "'" in v and '"' in v):      # only quote style may differ there
            assert schema._short(v) == (s if len(s) <= 40 else s[:37] + "...")

    same()


def test_a_failed_option_does_not_print_a_whole_profile():
    moments = [[float(i % 97) * 0.5 for i in range(4096)] for _ in range(150)]          # 614k numbers
    t = time.perf_counter()
    text = schema._short(moments)
    assert time.perf_counter() - t < 0.02     # ~0.1 ms: the head only (repr of the whole took ~0.2 s per option)
    assert text == repr(moments)[:37] + "..."
    with pytest.raises(MetadataError, match=r"moments must be null, not \[\[0\.0, 0\.5"):
        schema.Null().check(moments, "moments")
