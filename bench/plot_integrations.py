"""The integration figures as one PNG: GGUF types on the demo model (size vs the error each adds), and
stable-diffusion.cpp loading the SD v1.4 stand-in's exports (file size, load time, peak memory).

    python bench/plot_integrations.py [--gguf bench/results/gguf_demo.json] \
        [--sdcpp bench/results/sdcpp_sd14_standin.json] [--out bench/results/integrations.png]
"""
from __future__ import annotations

import argparse
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--gguf", default=os.path.join(HERE, "results", "gguf_demo.json"))
    p.add_argument("--sdcpp", default=os.path.join(HERE, "results", "sdcpp_sd14_standin.json"))
    p.add_argument("--out", default=os.path.join(HERE, "results", "integrations.png"))
    a = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(a.gguf) as f:
        g = json.load(f)
    with open(a.sdcpp) as f:
        s = json.load(f)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.5))
    rows = [r for r in g["rows"] if r["sqnr_db_converted"] != float("inf")]
    ax1.plot([r["file_bytes"] / 1e6 for r in rows], [r["sqnr_db_converted"] for r in rows], "o-", label="converted tensors")
    ax1.plot([r["file_bytes"] / 1e6 for r in rows], [r["sqnr_db_all"] for r in rows], "s--", label="all floating tensors")
    for r in rows:
        ax1.annotate(r["type"], (r["file_bytes"] / 1e6, r["sqnr_db_converted"]), textcoords="offset points",
                     xytext=(5, -12))
    f32 = next(r for r in g["rows"] if r["type"] == "f32")
    ax1.axvline(f32["file_bytes"] / 1e6, color="grey", lw=0.8)
    ax1.text(f32["file_bytes"] / 1e6, ax1.get_ylim()[0] + 2, " f32 (exact)", color="grey")
    ax1.set_xlabel("GGUF file size (MB)")
    ax1.set_ylabel("error added to the decoded .acqe (SQNR, dB; higher is better)")
    ax1.set_title(f"acqe export --type, demo model (.acqe {g['acqe_bytes'] / 1e6:.2f} MB)")
    ax1.legend()
    ok = [r for r in s["rows"] if "error" not in r]
    labels = [f"{r['format']}\n{r['type']}" for r in ok]
    x = range(len(ok))
    w = 0.27
    ax2.bar([i - w for i in x], [r["file_bytes"] / 2**30 for r in ok], w, label="file (GiB)")
    ax2.bar(list(x), [r["peak_rss_bytes"] / 2**30 for r in ok], w, label="peak RSS (GiB)")
    ax2b = ax2.twinx()
    ax2b.bar([i + w for i in x], [r["load_seconds"] for r in ok], w, color="tab:green", label="load (s)")
    ax2.set_xticks(list(x), labels)
    ax2.set_ylabel("GiB")
    ax2b.set_ylabel("load seconds")
    ax2.set_title(f"stable-diffusion.cpp, SD v1.4 stand-in (.acqe {s['acqe_bytes'] / 2**30:.2f} GiB), 64x64, 1 step")
    h1, l1 = ax2.get_legend_handles_labels()
    h2, l2 = ax2b.get_legend_handles_labels()
    ax2.legend(h1 + h2, l1 + l2, loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)
    print(a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
