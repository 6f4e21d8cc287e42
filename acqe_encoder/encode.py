"""`convert()`: checkpoint -> `.acqe`, with ACQ-E coding under a whole-file size budget.

Three passes over the tensors (each tensor is read from its memory map, never all at once):
1. analysis: row statistics (+ NaN/Inf check), per-context log-bin histogram, then for a grid of steps
   the (rate, distortion) of uniform and ECSQ quantisers, all computed on the histogram;
2. allocation: one candidate per tensor under the budget (`allocation.allocate`), after subtracting
   every fixed cost of the file (raw tensors, metadata, assets, directory, alignment, header, footer);
3. coding: each tensor is quantised once (exact threshold assignment), its codebook refit to the exact
   cell means, and streamed to the writer.

Sizes are honest: `--bits B` means file bytes * 8 <= B * (number of values of all tensors in the file).
"""
from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from math import prod
from typing import Callable

import numpy as np

from acqe_encoder import __version__, allocation, clustering, kernels
from acqe_encoder.sources import Entry, Source, open_source
from acqe_format import constants as C
from acqe_format import dtypes
from acqe_format import rans
from acqe_format.codecs.codebook import RansCodec
from acqe_format.model import Component, Keys, Naming, Tokenizer, architectures, config_fit, layouts, schema
from acqe_format.model.clip_bpe import clip_tokenizer_files
from acqe_format.atomic import check_writable
from acqe_format.writer import overhead_estimate, padding_estimate
from acqe_format.errors import AcqeError, SourceError

Progress = Callable[[str, str, int, int], None]   # (phase, component, done_values, total_values)


class EncoderSettingsError(AcqeError, ValueError):
    """Conversion settings the checkpoint cannot satisfy (e.g. a tokenizer asked for a model without a
    text encoder)."""

    cli_prefix = "cannot convert"

DEFAULT_BITS = 3.8


PRECISION_MAX_LOSS = 8e-3   # rANS table precision: allowed loss in bits/symbol (see choose_precision)


@dataclass
class Settings:
    bits: float | None = DEFAULT_BITS   # whole-file bits per value; None with lossless
    lossless: bool = False
    calibrate: bool = False
    objective: str = "relmse"           # "relmse" (n * MSE / mean square) or "db" (n * -SQNR dB)
    contexts: bool = True               # per-row-bucket frequency tables where they pay
    family: str = "best"                # candidate quantisers: "best" (uniform and ECSQ), "uniform", "ecsq"
    min_numel: int = 1024               # smaller tensors (and 1-D / integer ones) are stored losslessly
    alignment: int | None = None        # None: 64 bytes, or 16 for files under 50 M values (padding counts)
    chunk_size: int = C.DEFAULT_CHUNK_SYMBOLS
    steps_per_bit: int = 8
    margin: float = 0.002               # aim this fraction below the budget
    threads: int = 2
    compress_sections: bool = True      # zlib DIRECTORY/METADATA where smaller (format 1.1; False: a 1.0 file)
    embed_tokenizer: bool | None = None  # SD v1 CLIP tokenizer files as assets: None = whenever the model
                                         # has a text encoder, True = the same but an error when it has
                                         # none, False = never (the runtime then uses its shipped copy)
    keep_unknown: bool = False          # store tensor groups no known architecture explains, as they are
    prediction_type: str | None = None  # "epsilon" / "v_prediction": SD 2.x 512-base vs 768-v (same tensors)


@dataclass
class TensorPlan:
    entry: Entry
    component: str
    coded: bool
    rows: int = 0
    energy: float = 0.0
    rms: float = 0.0
    n_ctx: int = 1
    cand_delta: np.ndarray | None = None     # step of each candidate (NaN: RAW)
    cand_uniform: np.ndarray | None = None
    cand_bits: np.ndarray | None = None
    cand_sse: np.ndarray | None = None
    choice: int = -1
    sensitivity: float = 1.0
    result: dict = field(default_factory=dict)
    hist: dict | None = None
    delta_override: float | None = None   # a step between two grid candidates (budget fill)
    planned_bits: float | None = None


@dataclass
class Report:
    out: str
    file_bytes: int
    values: int
    bits_per_value: float
    target_bits: float | None
    seconds: float
    tensors: list[dict]
    components: dict
    metadata: dict
    timings: dict = field(default_factory=dict)


def _as_2d_f32(a: np.ndarray, shape) -> np.ndarray:
    rows = int(shape[0]) if len(shape) else 1
    x = np.ascontiguousarray(a, dtype=np.float32).reshape(rows, -1)
    return x


def payload_bytes(k: int, n_ctx: int, rows: int, numel: int, index_bits: float, chunk: int) -> float:
    """Codec 2 payload size of a candidate, before coding (the codec's own estimate)."""
    return RansCodec.size_estimate(k, n_ctx, rows, numel, index_bits, chunk)


# --------------------------------------------------------------------------------------------------
@dataclass
class _Plan:
    """What the layout detection decided: the file's naming, components, architecture, configs, drops."""

    naming: str
    components: dict[str, str]
    architecture: str | None
    configs: dict | None
    dropped: dict[str, str] = field(default_factory=dict)      # tensor name -> reason
    kept_unknown: list[str] = field(default_factory=list)
    layout: layouts.Layout | None = None


_LDM_MARKERS = ("model.diffusion_model.", "first_stage_model.", "cond_stage_model.", "conditioner.")


def _plan_layout(src: Source, shapes: dict, st: Settings) -> _Plan:
    """Every tensor's place: a component of the detected architecture, a deliberate drop (with its
    reason), or an unknown group (an error unless ``st.keep_unknown``: then stored as it is)."""
    hint = src.architecture if architectures.get(src.architecture) else None
    if src.naming_hint == Naming.DIFFUSERS:
        present = {c: (src.configs or {}).get(c, {}) for c in Component.WITH_TENSORS
                   if any(n.startswith(f"{c}.") for n in shapes)}
        present[Component.SCHEDULER] = (src.configs or {}).get(Component.SCHEDULER, {})
        lay = layouts.detect_diffusers(present, keep_unknown=st.keep_unknown)
        unknown = [n for n in shapes if architectures.component_of(n, lay.components) is None]
        if unknown:
            if not st.keep_unknown:
                from acqe_format.errors import UnknownLayoutError
                groups = sorted({n.split(".", 1)[0] for n in unknown})
                raise UnknownLayoutError(f"folder components outside {lay.architecture.name}'s: "
                                         f"{', '.join(g + '/' for g in groups)}", groups=groups, keepable=True)
            lay.kept_unknown += sorted({n.split(".", 1)[0] for n in unknown})
        configs = dict(src.configs or {})
        missing = [c for c in lay.components if c not in configs]
        if missing:
            raise SourceError(f"the folder's {', '.join(missing)} ha{'s' if len(missing) == 1 else 've'} no config.json")
        wrong = config_fit.mismatches(configs, shapes)
        if wrong:       # no runtime could load the file: refused before any analysis
            more = f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else ""
            raise SourceError(f"the folder's configs do not describe its weights: {wrong[0]}{more}")
        configs.setdefault(Component.SCHEDULER, layouts.scheduler_config(lay.architecture))
        _set_prediction_type(configs, st)
        return _Plan(Naming.DIFFUSERS, lay.components, src.architecture or lay.architecture.name, configs,
                     {}, lay.kept_unknown, lay)
    no_unet = not any(n.startswith(architectures.LDM_UNET) for n in shapes)
    if not any(n.startswith(_LDM_MARKERS) for n in shapes) or (no_unet and st.keep_unknown and not src.configs):
        if src.configs:          # no known prefixes but configs: tensors named as the configs' owner wishes
            return _Plan(Naming.FLAT, {}, src.architecture, dict(src.configs))
        if not st.keep_unknown:
            from acqe_format.errors import UnknownLayoutError
            groups = sorted({layouts.group_of(n) for n in shapes})
            shown = ", ".join(groups[:8]) + (f" and {len(groups) - 8} more" if len(groups) > 8 else "")
            raise UnknownLayoutError(f"the tensor groups {shown} match no known architecture", groups=groups,
                                     keepable=True)
        return _Plan(Naming.FLAT, {}, None, None, kept_unknown=sorted({layouts.group_of(n) for n in shapes}))
    lay = layouts.detect_ldm(shapes, keep_unknown=st.keep_unknown, prediction_type=st.prediction_type, hint=hint)
    if src.configs:         # what the checkpoint carries, the missing components' configs inferred
        configs = dict(src.configs)
        inferred = None
        for c in list(lay.components) + [Component.SCHEDULER]:
            if c not in configs:
                inferred = inferred or _inferred_configs(shapes, lay)
                configs[c] = inferred[c]
    else:
        configs = _inferred_configs(shapes, lay)
    _set_prediction_type(configs, st)
    return _Plan(Naming.LDM, lay.components, src.architecture or lay.architecture.name, configs, lay.dropped,
                 lay.kept_unknown, lay)


def _inferred_configs(shapes: dict, lay: layouts.Layout) -> dict:
    try:
        return layouts.infer_configs(shapes, lay)
    except (KeyError, IndexError, ValueError) as e:
        raise SourceError(f"the checkpoint has {lay.architecture.name}'s key names in an unknown layout: no "
                          f"config can be inferred from its shapes ({type(e).__name__}: {e})") from None


def _set_prediction_type(configs: dict, st: Settings) -> None:
    """A prediction type the user states wins over the architecture's default (v-prediction fine-tunes of
    SDXL exist): the stored scheduler config carries it."""
    if st.prediction_type is not None and isinstance(configs.get(Component.SCHEDULER), dict):
        configs[Component.SCHEDULER] = dict(configs[Component.SCHEDULER], prediction_type=st.prediction_type)


def _analyse(plan: TensorPlan, st: Settings) -> None:
    e = plan.entry
    x = _as_2d_f32(e.load(), e.shape)
    ss, bad, amax = kernels.row_stats(x)
    if bad.any():
        raise SourceError(f"tensor {e.name!r} has {int(bad.sum())} NaN/Inf values")
    plan.rows = x.shape[0]
    plan.energy = float(ss.sum())
    plan.rms = float(np.sqrt(plan.energy / max(x.size, 1)))
    if plan.energy == 0.0:
        plan.cand_delta = np.array([0.0, np.nan]); plan.cand_uniform = np.array([True, False])
        plan.cand_bits = np.array([8 * payload_bytes(1, 1, plan.rows, x.size, 0.0, st.chunk_size),
                                   8.0 * x.size * dtypes.itemsize(e.dtype)])
        plan.cand_sse = np.zeros(2)
        return
    h = clustering.build_hist(x, ss, float(amax.max()), st.threads)
    _candidates(plan, h, st)
    plan.hist = h.packed          # compact counts (int32, occupied bins): the coding pass reuses them


def _candidates(plan: TensorPlan, h: clustering.TensorHist, st: Settings) -> None:
    e = plan.entry
    numel = h.numel
    # context count: compare total bits at a reference step (about 4 bits/value for a Gaussian)
    options = [1]
    if st.contexts:
        options += [t for t in (4, 16) if h.rows >= 4 * t]
    best_t, best_cost = 1, None
    ref = plan.rms / 4.0
    for t in options:
        q = clustering.quantiser(h, ref, t, uniform=False)
        cost = 8 * payload_bytes(q.codebook.size, t, h.rows, numel, q.index_bits, st.chunk_size)
        # compare at equal distortion: convert the SSE difference to bits at the high-rate slope
        cost += numel * 0.5 * np.log2(max(q.sse, 1e-300) / max(h.energy, 1e-300))
        if best_cost is None or cost < best_cost:
            best_t, best_cost = t, cost
    plan.n_ctx = best_t
    deltas = clustering.delta_grid(plan.rms, n=7 * st.steps_per_bit, per_bit=st.steps_per_bit, top=2.8)
    d_l, u_l, b_l, s_l = [], [], [], []
    fams = {"best": (True, False), "uniform": (True,), "ecsq": (False,)}[st.family]
    for uni in fams:
        t = 1 if uni else best_t
        k_used, bits, sse = clustering.sweep(h, deltas, t, uni)
        ok = np.isfinite(bits)
        for d, k, b, err in zip(deltas[ok], k_used[ok], bits[ok], sse[ok]):
            d_l.append(d); u_l.append(uni); s_l.append(err)
            b_l.append(8 * payload_bytes(int(k), t, h.rows, numel, b, st.chunk_size))
    # lossless RAW candidate
    d_l.append(np.nan); u_l.append(False); b_l.append(8.0 * numel * dtypes.itemsize(e.dtype)); s_l.append(0.0)
    plan.cand_delta = np.array(d_l); plan.cand_uniform = np.array(u_l)
    plan.cand_bits = np.array(b_l); plan.cand_sse = np.array(s_l)


def _refine(coded: list[TensorPlan], slack: float, st: Settings, max_tensors: int = 4) -> None:
    """Spend the slack the discrete candidate grid leaves: move the largest tensors' steps continuously
    towards their next finer grid step (bisection on the step, rates from the same histograms)."""
    for p in sorted(coded, key=lambda p: -p.entry.numel)[:max_tensors]:
        if slack <= 0 or p.hist is None or np.isnan(p.cand_delta[p.choice]) or p.energy == 0:
            continue
        uni = bool(p.cand_uniform[p.choice])
        d0 = float(p.cand_delta[p.choice])
        t = 1 if uni else p.n_ctx
        h = clustering.unpack_hist(p.hist)
        r0 = float(p.cand_bits[p.choice])

        def bits_at(d):
            q = clustering.quantiser(h, d, t, uni)
            return 8 * payload_bytes(q.codebook.size, t, h.rows, h.numel, q.index_bits, st.chunk_size)
        lo, hi = d0 * 2 ** (-1.0 / st.steps_per_bit), d0       # finer step = more bits
        if bits_at(lo) - r0 <= slack:
            continue
        best = None
        for _ in range(14):
            mid = 0.5 * (lo + hi)
            b = bits_at(mid)
            if b - r0 <= slack:
                best, hi = (mid, b), mid
            else:
                lo = mid
        if best is not None and best[1] > r0:
            p.delta_override, p.planned_bits = best[0], best[1]
            slack -= best[1] - r0


def _distortion(plan: TensorPlan, objective: str) -> np.ndarray:
    n = plan.entry.numel
    if plan.energy <= 0:
        return np.zeros_like(plan.cand_sse)
    rel = plan.cand_sse / plan.energy
    if objective == "db":
        # n * (-SQNR dB), capped at 60 dB; candidates under 12 dB are excluded (no tensor is sacrificed
        # to raise the mean)
        db = np.maximum(10 * np.log10(np.maximum(rel, 1e-30)), -60.0)
        return np.where(db < -12.0, plan.sensitivity * n * db, 1e30)
    return plan.sensitivity * n * rel


def _round_codebook(cb: np.ndarray, dtype: str) -> np.ndarray:
    """Codebook values the decoded dtype represents exactly (so SSE measured in float32 is the truth)."""
    f = cb.astype(np.float32)
    if dtype == "float16":
        return f.astype(np.float16).astype(np.float32)
    if dtype == "bfloat16":
        return dtypes.f32_from_bf16_bits(dtypes.bf16_bits_from_f32(f))
    return f


def encode_tensor(x: np.ndarray, h: clustering.TensorHist, delta: float, n_ctx: int, uniform: bool,
                  dtype: str, threads: int = 2, shape=None):
    """Quantise one tensor (x float32 [rows, L], original `shape`) exactly. Returns (CodebookTensor, sse, counts)."""
    from acqe_format import CodebookTensor
    q = clustering.quantiser(h, delta, n_ctx, uniform)
    k = q.codebook.size
    rows = x.shape[0]
    g = clustering.N_BUCKETS // n_ctx
    ctx = (h.row_bucket // g).astype(np.int64)
    out = np.empty(x.size, np.uint8 if k <= 256 else np.uint16)
    thr = np.ascontiguousarray(q.thresholds if k > 1 else np.zeros((n_ctx, 1)), np.float64)
    lut = kernels.assignment_lut(thr, k - 1, h.edges)
    cnt, s1, s2 = kernels.assign(x, ctx, thr, k - 1, k, lut, h.e_floor, h.n_oct, threads, out)
    tot = cnt.sum(0)
    cb = q.codebook.copy()
    if not uniform:
        nz = tot > 0
        cb[nz] = s1[nz] / tot[nz]        # exact cell means of the final assignment
    cb32 = _round_codebook(cb, dtype)
    c64 = cb32.astype(np.float64)
    # exact SSE of the decoded values, from the per-index sums (no second pass over the weights)
    sse = float(np.sum(s2 - 2 * c64 * s1 + tot * c64 * c64))
    sse = max(sse, 0.0)
    decoded = _decoded(dtype)
    ct = CodebookTensor(tuple(int(d) for d in (shape if shape is not None else x.shape)), cb32, out,
                        None, ctx.astype(np.uint16) if n_ctx > 1 else None, decoded)
    return ct, sse, cnt


# --------------------------------------------------------------------------------------------------
def convert(src_path: str, out_path: str, settings: Settings | None = None, progress: Progress | None = None,
            log: Callable[[str], None] | None = None) -> Report:
    """Convert a checkpoint (`.ckpt`, `.safetensors`, diffusers folder) into `out_path` (.acqe)."""
    from acqe_format import AcqeWriter
    st = settings or Settings()
    t0 = time.time()
    prog = progress or (lambda *a: None)
    say = log or (lambda s: None)
    if st.bits is not None and not st.lossless and not (0.05 <= st.bits <= 64):
        raise ValueError(f"the size target must be 0.05..64 bits per value, got {st.bits}")
    check_writable(out_path)        # a missing or read-only output folder fails now, not after the analysis
    src = open_source(src_path)
    try:
        return _convert(src, src_path, out_path, st, prog, say, t0, AcqeWriter)
    finally:
        src.close()


def _sha256_thread(src: Source) -> tuple[threading.Thread, dict]:
    """Hash exactly the regular files the source read (`Source.files`), in the background."""
    res: dict = {}

    def run():
        try:
            res["sha256"] = src.sha256()
        except Exception as e:  # noqa: BLE001 - re-raised in the converting thread after join()
            res["error"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, res


def _convert(src, src_path, out_path, st, prog, say, t0, AcqeWriter):
    sha_t, sha = _sha256_thread(src)
    shapes = {e.name: e.shape for e in src.entries}
    if src.configs:
        schema.check_configs(src.configs)  # configs a checkpoint carries: refused first, as readers would
    lp = _plan_layout(src, shapes, st)
    naming, comps, arch, configs = lp.naming, lp.components, lp.architecture, lp.configs
    if lp.kept_unknown:
        say(f"keeping tensor groups no known architecture explains, as they are: {', '.join(lp.kept_unknown)}")
    if configs:
        schema.check_configs(configs)     # what readers will refuse is refused now, before the analysis
    plans: list[TensorPlan] = []
    for e in src.entries:
        if e.name in lp.dropped:
            continue
        comp = architectures.component_of(e.name, comps) if comps else "model"
        comp = comp or "other"
        coded = (not st.lossless and e.is_float and len(e.shape) >= 2 and e.numel >= st.min_numel)
        plans.append(TensorPlan(e, comp, coded))
    values = sum(p.entry.numel for p in plans)
    align = st.alignment or (C.DEFAULT_ALIGNMENT if values >= 50_000_000 else 16)
    comp_totals: dict[str, int] = {}
    for p in plans:
        if p.coded:
            comp_totals[p.component] = comp_totals.get(p.component, 0) + p.entry.numel

    timings = {"open": time.time() - t0}
    t1 = time.time()
    if st.calibrate:
        # before any numba-parallel kernel runs: torch's and numba's thread pools fight otherwise
        from acqe_encoder import calibrate as cal
        sens = cal.sensitivities(src, plans, configs, naming, say)
        for p in plans:
            if p.entry.name in sens:
                p.sensitivity = float(sens[p.entry.name])
        timings["calibrate"] = time.time() - t1
        t1 = time.time()
    # ---- pass 1: analysis
    done: dict[str, int] = {c: 0 for c in comp_totals}
    for p in plans:
        if p.coded:
            _analyse(p, st)
            done[p.component] += p.entry.numel
            prog("analyse", p.component, done[p.component], comp_totals[p.component])
        elif p.entry.is_float:
            a = p.entry.load()
            if not np.isfinite(a).all():
                raise SourceError(f"tensor {p.entry.name!r} has NaN/Inf values")


    # ---- metadata draft (to count its bytes) and assets
    assets = _assets(arch, st, say, values, comps, src.tokenizers)
    dummy = {c: {"bytes": 10 ** 12, "values": 10 ** 12, "bits_per_value": 1.2345}
             for c in list(comp_totals) + ["other_raw"]}
    dummy.update(file_bytes=10 ** 12, bits_per_value=1.23456)
    meta = _metadata(src, src_path, arch, naming, comps, configs, st, plans, sizes=dummy, sha="0" * 64, assets=assets,
                     lp=lp)
    from acqe_format.metadata import dump_metadata

    timings["analyse"] = time.time() - t1
    t1 = time.time()
    # ---- pass 2: allocation
    fixed = overhead_estimate(dump_metadata(meta), assets, [(p.entry.name, tuple(p.entry.shape)) for p in plans],
                              align, st.compress_sections)
    for p in plans:
        nb = None if p.coded else p.entry.numel * dtypes.itemsize(p.entry.dtype)
        fixed += (nb or 0) + padding_estimate(nb, align)
    coded = [p for p in plans if p.coded]
    target_bits = None
    if st.lossless or st.bits is None:
        for p in coded:
            p.choice = len(p.cand_bits) - 1
    else:
        target_bits = st.bits * values
        budget = target_bits * (1 - st.margin) - 8 * fixed
        R = [p.cand_bits for p in coded]
        D = [_distortion(p, st.objective) for p in coded]
        choice, used = allocation.allocate(R, D, budget)
        if os.environ.get("ACQE_DEBUG_ALLOC"):
            say(f"alloc: target {target_bits / 8:.0f} B, fixed {fixed:.0f} B, budget {budget / 8:.0f} B, used {used / 8:.0f} B")
        for p, c in zip(coded, choice):
            p.choice = int(c)
        _refine(coded, budget - used, st)
        if used > budget * 1.0001 + 1:
            say(f"warning: the smallest coding of every tensor needs {(used + 8 * fixed) / values:.3f} bits/value, "
                f"above the {st.bits} target")

    timings["allocate"] = time.time() - t1
    t1 = time.time()
    # ---- pass 3: coding
    sha_t.join()
    if "error" in sha:
        raise sha["error"]
    timings["sha256_wait"] = time.time() - t1
    t1 = time.time()
    sizes = {c: {"bytes": 0, "values": 0} for c in list(comp_totals) + ["other_raw"]}
    results = []
    with AcqeWriter(out_path, alignment=align, chunk_size=st.chunk_size, compress_sections=st.compress_sections) as w:
        done = {c: 0 for c in comp_totals}
        for p in plans:
            e = p.entry
            before = w.data_bytes
            if not p.coded:
                a = e.load()
                ct = None
                if st.lossless and e.dtype in ("float16", "bfloat16") and len(e.shape) >= 2 and e.numel >= st.min_numel:
                    ct = lossless16(a, e.dtype, e.shape)
                if ct is not None:
                    codec = w.add_codebook(e.name, ct, source_dtype=e.dtype)
                    res = {"name": e.name, "codec": codec.name.lower() + " (lossless)", "values": e.numel,
                           "k": int(ct.codebook.size)}
                else:
                    _add_raw(w, e, a)
                    res = {"name": e.name, "codec": "raw", "values": e.numel}
                key = p.component if p.component in sizes else "other_raw"
            else:
                delta = float(p.cand_delta[p.choice]) if p.delta_override is None else p.delta_override
                x = _as_2d_f32(e.load(), e.shape)
                if np.isnan(delta):
                    _add_raw(w, e, e.load())
                    res = {"name": e.name, "codec": "raw", "values": e.numel, "sqnr_db": 60.0}
                else:
                    uni = bool(p.cand_uniform[p.choice])
                    precision = cnt = None
                    if p.energy == 0:
                        from acqe_format import CodebookTensor
                        ct = CodebookTensor(tuple(e.shape), np.zeros(1, np.float32), np.zeros(e.numel, np.uint8),
                                            None, None, _decoded(e.dtype))
                        sse = 0.0
                    else:
                        h = clustering.unpack_hist(p.hist)
                        ct, sse, cnt = encode_tensor(x, h, delta, 1 if uni else p.n_ctx, uni, e.dtype, st.threads,
                                                     shape=e.shape)
                        # a slightly looser table precision than the writer's default keeps the decoder's
                        # slot tables in cache (spec/ACQE-rans.md §9): ~1.8x faster decoding, <= ~0.2% bytes
                        precision = rans.choose_precision(cnt, max_loss=PRECISION_MAX_LOSS)
                    codec = w.add_codebook(e.name, ct, source_dtype=_decoded(e.dtype), precision=precision,
                                           counts=cnt)
                    p.hist = None
                    sq = 60.0 if sse == 0 else min(60.0, 10 * np.log10(p.energy / sse))
                    res = {"name": e.name, "codec": codec.name.lower(), "values": e.numel, "k": int(ct.codebook.size),
                           "contexts": 1 if ct.row_contexts is None else int(ct.row_contexts.max()) + 1,
                           "uniform": uni, "sqnr_db": round(float(sq), 3),
                           "planned_bits": float(p.cand_bits[p.choice] if p.planned_bits is None else p.planned_bits)}
                key = p.component
                done[p.component] += e.numel
                prog("encode", p.component, done[p.component], comp_totals[p.component])
            nbytes = w.data_bytes - before
            res["bytes"] = int(nbytes)
            sizes.setdefault(key, {"bytes": 0, "values": 0})
            sizes[key]["bytes"] += int(nbytes)
            sizes[key]["values"] += int(e.numel)
            results.append(res)
        for name, data in assets.items():
            w.add_asset(name, data)
        sizes = {k: dict(v, bits_per_value=round(8 * v["bytes"] / v["values"], 4) if v["values"] else 0.0)
                 for k, v in sizes.items() if v["values"]}
        meta = _metadata(src, src_path, arch, naming, comps, configs, st, plans, sizes, sha.get("sha256", ""), assets,
                         lp)
        # the metadata states the file's own size: iterate until it is a fixed point (the size of the
        # number can change the size of the (compressed) metadata)
        meta[Keys.SIZES]["file_bytes"] = 0
        for _ in range(8):
            file_bytes = w.file_size(meta)
            if meta[Keys.SIZES]["file_bytes"] == file_bytes:
                break
            meta[Keys.SIZES]["file_bytes"] = file_bytes
            meta[Keys.SIZES]["bits_per_value"] = round(8 * file_bytes / values, 5)
        schema.check_metadata(meta)
        w.set_metadata(meta)
        timings["encode"] = time.time() - t1
        t1 = time.time()
    actual = os.path.getsize(out_path)
    timings["close"] = time.time() - t1
    return Report(out_path, actual, values, 8 * actual / values, st.bits if target_bits else None,
                  time.time() - t0, results, sizes, meta, {k: round(v, 2) for k, v in timings.items()})


def lossless16(a: np.ndarray, dtype: str, shape):
    """Exact codebook coding of a 16-bit float tensor (every distinct value is a codebook entry), or
    None when its estimated coded size is not below the raw size."""
    from acqe_format import CodebookTensor
    from acqe_format import rans
    a = np.asarray(a)
    if dtype == "float16":
        u = a.reshape(-1).view(np.uint16)
    else:                                  # bf16 sources are loaded as exact float32 values
        u = (np.ascontiguousarray(a, np.float32).reshape(-1).view(np.uint32) >> 16).astype(np.uint16)
    cnt = np.bincount(u, minlength=65536)
    used = np.flatnonzero(cnt)
    k = used.size
    est_bits = rans.entropy_bits(cnt[used]) + 8 * (8 * k + 64)
    if est_bits >= 16 * u.size:
        return None
    remap = np.zeros(65536, np.uint16)
    remap[used] = np.arange(k, dtype=np.uint16)
    idx = remap[u].astype(np.uint8 if k <= 256 else np.uint16)
    if dtype == "float16":
        cb = used.astype(np.uint16).view(np.float16).astype(np.float32)
    else:
        cb = (used.astype(np.uint32) << 16).view(np.float32)
    return CodebookTensor(tuple(int(d) for d in shape), cb, idx, None, None, dtype)


def _add_raw(w, e: Entry, a: np.ndarray) -> None:
    a = np.asarray(a)
    a = a if a.flags.c_contiguous else a.copy()     # (np.ascontiguousarray would make 0-d arrays 1-d)
    if e.dtype == "bfloat16":
        w.add_raw(e.name, a.astype(np.float32, copy=False), dtype="bfloat16")
    else:
        w.add_raw(e.name, a)


def _decoded(dtype: str) -> str:
    """The decoded dtype of a coded tensor: the source's float type (codebook values are rounded to it)."""
    return dtype if dtype in dtypes.FLOATS else "float32"


def _assets(arch: str | None, st: Settings, say, values: int, comps: dict,
            folder_tokenizers: dict | None = None) -> dict[str, bytes]:
    """The tokenizer files of every text encoder: always embedded unless left out on purpose
    (``embed_tokenizer=False``), so the file rebuilds its pipeline offline from itself alone. Every
    tokenizer of the Stable Diffusion generations is CLIP's BPE vocabulary; they differ in the pad token
    (the architecture's, or the one a diffusers folder's tokenizer_config.json names), so the merge list
    is embedded once and each tokenizer gets its own ``tokenizer_config.json``."""
    sd_like = bool(arch) and ("stable-diffusion" in arch or "sd" in arch) and (
        not comps or any(c in comps for c in Component.TOKENIZER_OF))
    if st.embed_tokenizer is False:
        return {}
    if not sd_like:
        if st.embed_tokenizer:
            raise EncoderSettingsError(f"a tokenizer was asked for, but the checkpoint has no text encoder of a "
                                       f"model family with a known tokenizer (architecture {arch or 'unknown'})")
        return {}
    spec = architectures.resolve(arch)
    wanted = [tok for te, tok in Component.TOKENIZER_OF.items() if (not comps and tok == Component.TOKENIZER)
              or te in comps]
    out: dict[str, bytes] = {}
    for tok in wanted:
        own = (folder_tokenizers or {}).get(tok) or {}
        pad = own.get("pad_token", spec.pad_tokens.get(tok, architectures.CLIP_PAD))
        if isinstance(pad, dict):              # transformers' AddedToken form
            pad = pad.get("content")
        if not isinstance(pad, str):
            raise EncoderSettingsError(f"{tok}/tokenizer_config.json: pad_token is not a token string")
        try:
            files = clip_tokenizer_files(pad_token=pad)
        except (OSError, ValueError) as e:     # the shipped vocabulary is missing or damaged: a broken install
            raise EncoderSettingsError(f"cannot embed the tokenizer: {type(e).__name__}: {e}") from None
        for k, v in files.items():
            if k == "merges.txt.xz" and any(n.endswith("/merges.txt.xz") for n in out):
                continue                       # one merge list serves every tokenizer
            out[f"{tok}/{k}"] = bytes(v)
    return out


def _tokenizer_configs(assets: dict) -> dict:
    """``configs.tokenizer`` / ``configs.tokenizer_2`` for the embedded files (the shared merge list
    is named where it is)."""
    merges = next((n for n in sorted(assets) if n.endswith("/merges.txt.xz")), None)
    out = {}
    for tok in Component.TOKENIZERS:
        own = sorted(n for n in assets if n.startswith(f"{tok}/"))
        if not own:
            continue
        files = {n.split("/", 1)[1]: n for n in own}
        if merges and "merges.txt.xz" not in files:
            files["merges.txt.xz"] = merges
        out[tok] = {Tokenizer.CLASS: "CLIPTokenizer", Tokenizer.FILES: files}
    return out


def _metadata(src, src_path, arch, naming, comps, configs, st, plans, sizes, sha, assets=None, lp=None) -> dict:
    cfg = dict(configs) if configs else {}
    dropped = list(src.dropped) + sorted((lp.dropped if lp else {}))
    reasons = dict(src.dropped_reasons)
    for name, why in (lp.dropped if lp else {}).items():
        reasons[name] = why
    meta = {
        Keys.ARCHITECTURE: arch or "unknown",
        Keys.NAMING: naming,
        Keys.COMPONENTS: comps,
        Keys.CONFIGS: cfg,
        Keys.SOURCE: {"file": os.path.basename(os.path.normpath(src_path)), "sha256": sha, "format": src.format,
                      "non_model_entries": src.extras, "dropped": dropped},
        Keys.ENCODER: {"name": "acqe-encoder", "version": __version__,
                       "settings": {k: v for k, v in asdict(st).items() if k not in ("threads",)}},
        Keys.SIZES: sizes or {},
    }
    if reasons:
        # reasons grouped so that thousands of EMA tensors make one line each, not one entry each
        by_reason: dict[str, list[str]] = {}
        for name, why in reasons.items():
            by_reason.setdefault(why or "not part of the model", []).append(name)
        meta[Keys.SOURCE]["dropped_reasons"] = [{"reason": why, "count": len(names), "examples": sorted(names)[:4]}
                                                for why, names in sorted(by_reason.items())]
    if lp is not None and lp.kept_unknown:
        meta[Keys.SOURCE]["kept_unknown"] = list(lp.kept_unknown)
    toks = _tokenizer_configs(assets or {})
    for tok, desc in toks.items():
        cfg.setdefault(tok, desc)
    if not toks and cfg and Component.TEXT_ENCODER in cfg and Component.TOKENIZER not in cfg:
        cfg[Component.TOKENIZER] = {Tokenizer.CLASS: "CLIPTokenizer", Tokenizer.FILES: None,
                                    Tokenizer.SOURCE: "SD v1 CLIP BPE (acqe_format.model.clip_bpe's shipped merges)"}
    return meta
