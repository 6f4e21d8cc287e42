"""SDXL base at full size: convert time and peak RSS, verify time, fp16 decode time, beside GGUF Q4_0.

    python bench/bench_sdxl.py [--data bench/_data] [--out bench/_out/sdxl.md] [--tiny]

1. writes a stand-in of SDXL base as one fp16 LDM ``.safetensors`` (the real file's key names and shapes:
   UNet ``model.diffusion_model.*``, VAE ``first_stage_model.*``, CLIP-L ``conditioner.embedders.0.transformer.*``,
   OpenCLIP-bigG ``conditioner.embedders.1.model.*``; random weights with make_standin.py's statistics),
   streamed tensor by tensor, so it never holds the 7 GB in memory;
2. ``acqe convert`` (default 3.8 bits/value) under ``/usr/bin/time``: wall time and peak RSS;
3. ``acqe verify``: wall time;
4. decodes every tensor to fp16 (``AcqeReader.iter_tensors(dtype="float16")``) in a fresh process;
5. GGUF Q4_0 of the same source tensors (gguf-py's reference quantiser; rows whose length is not a
   multiple of 32, and 1-D tensors, stay fp16 as GGUF converters keep them): bits per value and SQNR.

SQNR is reported as the value-weighted mean of per-tensor SQNR (capped at 60 dB) over the tensors ACQE
codes (2-D+, >= 1024 values), for both formats; bits per value is file bytes x 8 / all values.
``--tiny`` runs the same steps on the tiny SDXL layout of the tests (seconds; checks the script).
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import time
from math import prod

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from acqe_format.model import architectures as A  # noqa: E402
from acqe_format.model import sd_v1  # noqa: E402

SDXL_UNET = dict(sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=[320, 640, 1280],
                 down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                 up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                 transformer_layers_per_block=[1, 2, 10], attention_head_dim=[5, 10, 20], cross_attention_dim=2048,
                 use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=256,
                 projection_class_embeddings_input_dim=2816, norm_num_groups=32)
SDXL_VAE = dict(block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
                up_block_types=["UpDecoderBlock2D"] * 4, layers_per_block=2, latent_channels=4, sample_size=1024,
                scaling_factor=0.13025, force_upcast=True)
CLIP_L = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, vocab_size=49408, max_position_embeddings=77)
CLIP_G = dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, vocab_size=49408, max_position_embeddings=77,
              projection_dim=1280)


def _diffusers_shapes(cls_name: str, cfg: dict) -> dict[str, tuple]:
    """State-dict shapes of a diffusers model built on the meta device (no memory)."""
    import diffusers
    import torch

    with torch.device("meta"):
        model = getattr(diffusers, cls_name)(**cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _openclip_shapes(cfg: dict) -> dict[str, tuple]:
    h, inter, v, n = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"], cfg["max_position_embeddings"]
    out = {"positional_embedding": (n, h), "token_embedding.weight": (v, h), "ln_final.weight": (h,),
           "ln_final.bias": (h,), "text_projection": (h, cfg["projection_dim"]), "logit_scale": ()}
    for i in range(cfg["num_hidden_layers"]):
        b = f"transformer.resblocks.{i}."
        out.update({b + "ln_1.weight": (h,), b + "ln_1.bias": (h,), b + "attn.in_proj_weight": (3 * h, h),
                    b + "attn.in_proj_bias": (3 * h,), b + "attn.out_proj.weight": (h, h), b + "attn.out_proj.bias": (h,),
                    b + "ln_2.weight": (h,), b + "ln_2.bias": (h,), b + "mlp.c_fc.weight": (inter, h),
                    b + "mlp.c_fc.bias": (inter,), b + "mlp.c_proj.weight": (h, inter), b + "mlp.c_proj.bias": (h,)})
    return out


def sdxl_ldm_shapes(tiny: bool = False) -> dict[str, tuple]:
    """Key -> shape of an SDXL base single file (Stability's names), or of the tests' tiny SDXL."""
    if tiny:
        from recat_runtime.testing import tiny_layout_configs

        c = tiny_layout_configs(A.SDXL_BASE.name)
        unet_cfg, vae_cfg = c["unet"], c["vae"]
        l_cfg = {k: c["text_encoder"][k] for k in CLIP_L}
        g_cfg = dict({k: c["text_encoder_2"][k] for k in CLIP_L}, projection_dim=c["text_encoder_2"]["projection_dim"])
    else:
        unet_cfg, vae_cfg, l_cfg, g_cfg = SDXL_UNET, SDXL_VAE, CLIP_L, CLIP_G
    wrap = lambda d: {k: sd_v1._ShapeOnly(s) for k, s in d.items()}  # noqa: E731
    base = sd_v1.diffusers_to_ldm(wrap(_diffusers_shapes("UNet2DConditionModel", unet_cfg)),
                                  wrap(_diffusers_shapes("AutoencoderKL", vae_cfg)), None)
    out = {k: v.shape for k, v in base.items()}
    prefixes = A.SDXL_BASE.prefixes["ldm"]
    text_l = sd_v1.text_encoder_shapes(dict(sd_v1.TEXT_ENCODER_CONFIG, **l_cfg))
    out.update({prefixes["text_encoder"] + k: s for k, s in text_l.items()})
    out.update({prefixes["text_encoder_2"] + k: s for k, s in _openclip_shapes(g_cfg).items()})
    return out


def write_standin(path: str, shapes: dict[str, tuple], seed: int = 0) -> int:
    """A safetensors file written tensor by tensor (header first): fp16 weights, int64 position ids."""
    sys.path.insert(0, HERE)
    from make_standin import random_tensor

    header, offset = {}, 0
    for k, s in shapes.items():
        dt, size = ("I64", 8) if k.endswith("position_ids") else ("F16", 2)
        n = prod(s) * size
        header[k] = {"dtype": dt, "shape": list(s), "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    rng = np.random.default_rng(seed)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for k, s in shapes.items():
            a = random_tensor(k, s if s else (1,), rng).reshape(s)
            a = a if a.dtype == np.int64 else a.astype(np.float16)
            f.write(np.ascontiguousarray(a).tobytes())
    os.replace(tmp, path)
    return sum(prod(s) for s in shapes.values())


def timed(cmd: list[str]) -> tuple[float, dict, str]:
    """(wall seconds, peak memory, stdout) of a command. Peak memory is sampled from /proc every 0.2 s:
    ``rss`` (as /usr/bin/time reports it), ``anon`` (the process's own memory) and ``file`` (pages of
    memory-mapped files, e.g. the source checkpoint: the page cache, reclaimable), each its own maximum."""
    import threading

    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    peak = {"rss": 0, "anon": 0, "file": 0}

    def sample():
        keys = {"VmRSS:": "rss", "RssAnon:": "anon", "RssFile:": "file"}
        while p.poll() is None:
            try:
                with open(f"/proc/{p.pid}/status") as f:
                    for line in f:
                        k = line.split()[:2]
                        if k and k[0] in keys:
                            peak[keys[k[0]]] = max(peak[keys[k[0]]], int(k[1]) * 1024)
            except (OSError, ValueError, IndexError):
                pass
            time.sleep(0.2)
    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = p.communicate()
    wall = time.perf_counter() - t0
    th.join()
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    return wall, peak, out


DECODE = """
import sys, time
from acqe_format import AcqeReader
t0 = time.perf_counter(); n = 0
with AcqeReader(sys.argv[1]) as r:
    for name, arr in r.iter_tensors(threads=int(sys.argv[2]), dtype="float16"):
        n += arr.size
print(time.perf_counter() - t0, n)
"""


def q4_0_measure(src_path: str, coded: set[str]) -> dict:
    """GGUF Q4_0 of every source tensor: total bytes, and per-tensor SQNR on ``coded``."""
    from gguf import GGMLQuantizationType as T
    from gguf import quants
    from safetensors import safe_open

    total_bytes = values = 0
    sq: dict[str, float] = {}
    with safe_open(src_path, "np") as f:
        for k in f.keys():
            x = f.get_tensor(k)
            values += x.size
            rows = x.reshape(x.shape[0], -1) if x.ndim >= 2 else x.reshape(1, -1)
            if x.ndim >= 2 and rows.shape[1] % 32 == 0 and x.dtype != np.int64:
                q = quants.quantize(rows.astype(np.float32), T.Q4_0)
                total_bytes += q.nbytes
                y = quants.dequantize(q, T.Q4_0).reshape(rows.shape)
            else:
                total_bytes += x.nbytes
                y = rows
            if k in coded:
                r32 = rows.astype(np.float64)
                err = float(((r32 - y.astype(np.float64)) ** 2).sum())
                sig = float((r32 ** 2).sum())
                sq[k] = 60.0 if err == 0 else min(60.0, 10 * np.log10(sig / err))
    return {"bytes": total_bytes, "values": values, "bits_per_value": 8 * total_bytes / values, "sqnr": sq}


def _gb(peak: dict) -> dict:
    return {k: round(v / 1e9, 2) for k, v in peak.items()}


def weighted(sq: dict[str, float], sizes: dict[str, int]) -> float:
    w = sum(sizes[k] for k in sq)
    return sum(v * sizes[k] for k, v in sq.items()) / w


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=os.path.join(HERE, "_data"))
    # the run's own report; the figures quoted in bench/RESULTS.md come from it
    ap.add_argument("--out", default=os.path.join(HERE, "_out", "sdxl.md"))
    ap.add_argument("--tiny", action="store_true", help="the tests' tiny SDXL (checks the script in seconds)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    load_before = os.getloadavg()     # the wall times are only as good as the machine was quiet
    os.makedirs(a.data, exist_ok=True)
    tag = "tiny" if a.tiny else "full"
    src = os.path.join(a.data, f"sdxl-base-standin-{tag}.safetensors")
    acqe = os.path.join(a.data, f"sdxl-base-standin-{tag}.acqe")
    shapes = sdxl_ldm_shapes(a.tiny)
    t0 = time.perf_counter()
    expected = 8 + sum(prod(s) * (8 if k.endswith("position_ids") else 2) for k, s in shapes.items())
    if os.path.exists(src) and os.path.getsize(src) >= expected:        # (+ the header) kept from a run before
        n = sum(prod(s) for s in shapes.values())
    else:
        n = write_standin(src, shapes)
    gen_s = time.perf_counter() - t0
    py = sys.executable
    conv_s, conv_rss, out = timed([py, "-m", "acqe_cli.main", "convert", src, acqe, "--json", "-q"])
    rep = json.loads(out)
    ver_s, ver_rss, _ = timed([py, "-m", "acqe_cli.main", "verify", acqe])
    dec_wall, dec_rss, out = timed([py, "-c", DECODE, acqe, str(a.threads)])
    dec_s = float(out.split()[0])
    sizes = {t["name"]: t["values"] for t in rep["tensors"]}
    coded = {t["name"]: t["sqnr_db"] for t in rep["tensors"] if t.get("sqnr_db") is not None and t["codec"] != "raw"}
    t0 = time.perf_counter()
    q4 = q4_0_measure(src, set(coded))
    q4_s = time.perf_counter() - t0
    from acqe_format import AcqeReader

    with AcqeReader(acqe) as r:
        meta_arch = r.metadata["architecture"]
        comps = sorted(r.metadata["components"])
    res = {
        "model": f"SDXL base stand-in ({tag}): {n:,} values, fp16 single file, {os.path.getsize(src):,} bytes",
        "architecture": meta_arch, "components": comps, "generate_s": round(gen_s, 1),
        "convert_s": round(conv_s, 1), "convert_peak_gb": _gb(conv_rss),
        "verify_s": round(ver_s, 1), "verify_peak_gb": _gb(ver_rss),
        "decode_fp16_s": round(dec_s, 2), "decode_fp16_peak_gb": _gb(dec_rss),
        "acqe_bits_per_value": round(rep["bits_per_value"], 4), "acqe_file_bytes": rep["file_bytes"],
        "acqe_mean_sqnr_db": round(weighted(coded, sizes), 2), "coded_tensors": len(coded),
        "q4_0_bits_per_value": round(q4["bits_per_value"], 4), "q4_0_bytes": q4["bytes"],
        "q4_0_mean_sqnr_db": round(weighted(q4["sqnr"], sizes), 2), "q4_0_measure_s": round(q4_s, 1),
        "convert_timings": rep["timings"], "threads": a.threads, "cpus": os.cpu_count(),
        "load_avg_before": load_before, "load_avg_after": os.getloadavg(),
    }
    print(json.dumps(res, indent=1))
    if not a.tiny:
        os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
        _write_md(a.out, res)
    return 0


def _write_md(path: str, r: dict) -> None:
    lines = [
        "# SDXL base at full size (random-weight stand-in)", "",
        f"{r['model']}; architecture detected: `{r['architecture']}`, components {', '.join(r['components'])}.",
        f"Machine: {r['cpus']} CPUs, load average {r['load_avg_before'][0]:.2f} before the run and "
        f"{r['load_avg_after'][0]:.2f} after it (other jobs stretch every wall time); decode with "
        f"{r['threads']} threads.", "",
        "Command: `PYTHONPATH=$PWD python bench/bench_sdxl.py` (writes the stand-in to bench/_data/, ~7 GB).", "",
        "| step | wall time | peak RSS | peak anonymous | peak file-backed |", "|---|---:|---:|---:|---:|",
        *[f"| {name} | {r[k + '_s']} s | {r[k + '_peak_gb']['rss']} GB | {r[k + '_peak_gb']['anon']} GB | "
          f"{r[k + '_peak_gb']['file']} GB |" for name, k in (("acqe convert (3.8 bits/value)", "convert"),
                                                               ("acqe verify", "verify"),
                                                               ("decode every tensor to fp16", "decode_fp16"))], "",
        "Peak RSS counts the pages of memory-mapped files that were read (the 7 GB source is read through a "
        "memory map, so they stay resident while the page cache has room: reclaimable, not allocated); "
        "the anonymous peak is the memory the process itself allocated. Each column is its own maximum "
        "(sampled every 0.2 s).", "",
        f"convert phases (s): {json.dumps(r['convert_timings'])}", "",
        "| format | bits/value (file) | mean SQNR over the coded tensors |", "|---|---:|---:|",
        f"| ACQE | {r['acqe_bits_per_value']} | {r['acqe_mean_sqnr_db']} dB |",
        f"| GGUF Q4_0 (gguf-py) | {r['q4_0_bits_per_value']} | {r['q4_0_mean_sqnr_db']} dB |", "",
        f"SQNR: value-weighted mean of per-tensor SQNR (capped at 60 dB) over the {r['coded_tensors']} tensors ACQE "
        "codes; Q4_0 keeps rows whose length is not a multiple of 32 (3x3 conv kernels) and 1-D tensors in fp16. "
        "Random weights: these numbers measure the full-size path (time, memory, layout), not a trained "
        "model's quality.", "",
    ]
    with open(path, "w") as f:
        f.write("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
