"""Compact vs dense UNet step time and weight memory, loaded from a `.acqe` file as a user would.

    python bench/bench_compact.py MODEL.acqe [--dtype fp32] [--batch 1] [--res 512] [--reps 3] \
        [--backend torch --backend compile] [--out bench/results/compact_cpu.json]

``load_unet(MODEL, compact=False)`` and ``load_unet(MODEL, compact=True)`` (codebook weights kept as uint8
codes, rebuilt when a layer runs), then one full UNet forward with classifier-free guidance (2 x batch
latents of res/8) per repetition: median seconds after one warm-up, for each rebuild backend
(`recat_runtime.rebuild`). Also the UNet's weight bytes both ways. On the CPU (no Triton kernel there) the
backends are the torch formula and its torch.compile'd form; the GPU numbers come from bench/gpu_check.py.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("--dtype", default="fp32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--res", type=int, default=512)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--backend", action="append", default=None, help="rebuild backends to time (default: torch)")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)

    import torch

    from recat_runtime import rebuild as R
    from recat_runtime.compact import CompactTensor, compact_bytes
    from recat_runtime.loading import load_unet, torch_dtype

    dtype, device = torch_dtype(a.dtype), torch.device(a.device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    def timed(fn):
        fn()
        sync()
        ts = []
        for _ in range(a.reps):
            t = time.perf_counter()
            fn()
            sync()
            ts.append(time.perf_counter() - t)
        return sorted(ts)[len(ts) // 2], ts

    t0 = time.perf_counter()
    dense = load_unet(a.model, torch_dtype=dtype, device=device)
    load_dense = time.perf_counter() - t0
    t0 = time.perf_counter()
    compact = load_unet(a.model, torch_dtype=dtype, device=device, compact=True)
    load_compact = time.perf_counter() - t0
    held, as_dense = compact_bytes(compact)
    others = sum(p.numel() * p.element_size() for p in compact.parameters() if not isinstance(p, CompactTensor))
    total_dense = sum(p.numel() * p.element_size() for p in dense.parameters())
    lat = a.res // 8
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2 * a.batch, 4, lat, lat, generator=g).to(device, dtype)
    ehs = torch.randn(2 * a.batch, 77, dense.config.cross_attention_dim, generator=g).to(device, dtype)
    report = {"model": os.path.basename(a.model), "device": str(device), "dtype": a.dtype, "batch": a.batch,
              "res": a.res, "threads": torch.get_num_threads(), "load_dense_s": round(load_dense, 2),
              "load_compact_s": round(load_compact, 2), "unet_weight_bytes_dense": total_dense,
              "unet_weight_bytes_compact": held + others, "compact_layer_bytes": held,
              "compact_layer_bytes_dense": as_dense}
    with torch.inference_mode():
        ref = dense(x, 500, ehs).sample
        report["dense_s"], report["dense_all_s"] = timed(lambda: dense(x, 500, ehs))
        print(json.dumps({k: v for k, v in report.items()}), flush=True)
        for backend in a.backend or ["torch"]:
            R.set_backend(backend)
            try:
                out = compact(x, 500, ehs).sample
                report[f"compact_{backend}_equal_dense"] = bool(torch.equal(out, ref))
                report[f"compact_{backend}_s"], report[f"compact_{backend}_all_s"] = timed(lambda: compact(x, 500, ehs))
            finally:
                R.set_backend("auto")
            report[f"ratio_{backend}"] = report[f"compact_{backend}_s"] / report["dense_s"]
            print(json.dumps({k: v for k, v in report.items() if backend in k}), flush=True)
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    print(f"UNet weights: compact {(held + others) / 2**20:,.0f} MiB vs dense {total_dense / 2**20:,.0f} MiB "
          f"({100 * (held + others) / total_dense:.0f}%)")
    for backend in a.backend or ["torch"]:
        print(f"full step ({2 * a.batch} latents {lat}x{lat}, {a.dtype}): dense {report['dense_s']:.2f} s, compact "
              f"({backend} rebuild) {report[f'compact_{backend}_s']:.2f} s = {report[f'ratio_{backend}']:.2f}x, "
              f"outputs {'identical' if report[f'compact_{backend}_equal_dense'] else 'DIFFERENT'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
