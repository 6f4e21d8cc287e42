"""A re-sealing fuzzer: damage what the checksums cannot protect (metadata, configs, tokenizer assets, ReCaT
blocks, which tensors sit under a component), re-seal the file with valid checksums, and load it the way
users do: ``load_pipeline``, ``acqe inspect``, ``acqe generate``.

Every case must end in success or an ``AcqeError`` (for the CLI: exit 0, or a one-line ``Error:`` and a
non-zero exit), within a time limit and a memory bound; a pipeline that loads must hold exactly the stored
weights. `tests/test_fuzz_reseal.py` runs a few hundred cases; `bench/fuzz_reseal.py` runs 10,000+.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import random
import signal
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from acqe_format import AcqeReader, AcqeWriter, CodebookTensor
from acqe_format.errors import AcqeError

# values that have broken readers: extremes, wrong JSON types, deep and long structures
WEIRD = [0, -1, 1, 2, 7, 100000, 2 ** 31, 2 ** 63 - 1, 300000000, 10 ** 12, 1e5, 1e308, -1e308, 0.5, 1e-300,
         "", "x", "UNet2DConditionModel", "CLIPTextModel", "a" * 5000, "\u202e\u0000", True, False, None,
         [], [1], [0] * 300, [[1, 2], [3]], {}, {"a": 1}, {"_class_name": "AutoencoderKL"}]
TOKENIZER_CONFIG_WEIRD = [{"model_max_length": 10 ** 12}, {"model_max_length": 0}, {"model_max_length": "77"},
                          {"pad_token": "<|nonexistent|>"}, {"bos_token": 12}, {"unk_token": {"content": "x" * 300}},
                          {"do_lower_case": "yes"}, {"surprise": 1}, {"model_max_length": 78}]


def tiny_base(path: str) -> dict:
    """Writes the tiny pipeline file with a valid ReCaT block (steps 4, budget 2, a correction) and returns
    what the fuzzer needs to know about it."""
    import torch

    from recat_runtime.cache.branch import branch_plan
    from recat_runtime.testing import tiny_pipeline
    from runtime_fixtures import write_tiny_acqe

    pipe = tiny_pipeline()
    write_tiny_acqe(path, pipe)
    channels = branch_plan(pipe.unet, 0).feature_channels
    steps = 4
    recat = {"format": 1, "profiles": [{
        "sampler": "ddim", "steps": steps, "guidance": 7.5, "branch": 0, "height": 16, "width": 16,
        "similarity": np.eye(steps).tolist(),
        "schedules": [{"budget": 2, "full_steps": [0, 2], "cost": 0.1,
                       "correction": {"scale": [[1.0] * channels] * steps, "shift": [[0.0] * channels] * steps}}]}]}
    with AcqeReader(path) as r:
        meta = copy.deepcopy(r.metadata)
    meta["recat"] = recat
    meta["inference"] = {"guidance": 7.5}
    from acqe_format import replace_metadata

    replace_metadata(path, meta)
    del pipe, torch
    return {"steps": steps, "channels": channels}


# --- mutations -----------------------------------------------------------------------------------------
def _paths(obj, prefix=()):
    """Every (path, value) in a JSON tree (paths as tuples of keys / indices)."""
    out = [(prefix, obj)]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:8]):
            out += _paths(v, prefix + (i,))
    return out


def _set(obj, path, value):
    for k in path[:-1]:
        obj = obj[k]
    if value is _DELETE:
        if isinstance(obj, dict):
            del obj[path[-1]]
        else:
            obj.pop(path[-1])
    else:
        obj[path[-1]] = value


_DELETE = object()


def _weird(rng: random.Random, old):
    r = rng.random()
    if r < 0.15 and isinstance(old, (int, float)) and not isinstance(old, bool):
        return type(old)(old * rng.choice([10, 1000, 10 ** 6, -1]))
    if r < 0.25 and isinstance(old, list) and old:
        return old[: rng.randrange(len(old))] if rng.random() < 0.5 else old + old
    if r < 0.3:
        depth = rng.choice([10, 63, 64, 200])
        v = 1
        for _ in range(depth):
            v = [v]
        return v
    return copy.deepcopy(rng.choice(WEIRD))


@dataclass
class Case:
    seed: int
    kind: str
    what: str
    metadata: dict
    assets: dict
    extra_tensors: dict = field(default_factory=dict)   # name -> ("zeros", numel) | ("int64", array)
    drop_tensors: tuple = ()


def mutate(meta: dict, assets: dict, seed: int, info: dict) -> Case:
    """One random mutation of a base file's metadata / assets / tensors."""
    rng = random.Random(seed)
    meta, assets = copy.deepcopy(meta), dict(assets)
    kind = rng.choices(["metadata", "config", "tokenizer", "recat", "tensors"], [2, 5, 2, 3, 1])[0]
    if kind == "tensors":
        unet, vae = "model.diffusion_model.", "first_stage_model."
        op = rng.choice(["extra_big", "extra_small", "int_in_float", "drop"])
        if op == "extra_big":
            return Case(seed, kind, "a 2^22-value zero tensor under the UNet's prefix", meta, assets,
                        {unet + "surprise.weight": ("zeros", 1 << 22)})
        if op == "extra_small":
            return Case(seed, kind, "an extra tensor under the VAE's prefix", meta, assets,
                        {vae + "encoder.extra": ("float", np.ones((3, 3), np.float32))})
        if op == "int_in_float":
            return Case(seed, kind, "int64 in a float parameter slot", meta, assets,
                        {unet + "out.2.bias": ("int64", None)})
        return Case(seed, kind, "a UNet tensor missing", meta, assets, drop_tensors=(unet + "out.2.bias",))
    if kind == "tokenizer":
        names = sorted(n for n in assets if n.startswith("tokenizer/"))
        op = rng.choice(["config", "config_json", "merges", "vocab", "drop", "description"])
        if op == "config":
            cfg = json.loads(assets.get("tokenizer/tokenizer_config.json", b"{}"))
            cfg.update(rng.choice(TOKENIZER_CONFIG_WEIRD))
            assets["tokenizer/tokenizer_config.json"] = json.dumps(cfg).encode()
            return Case(seed, kind, f"tokenizer_config.json {sorted(cfg)}", meta, assets)
        if op == "config_json":
            assets["tokenizer/tokenizer_config.json"] = rng.choice([b"[" * 5000, b"{", b"\xff\xfe", b"[]", b"{}"])
            return Case(seed, kind, "tokenizer_config.json not a config", meta, assets)
        if op == "merges":
            data = assets.get("tokenizer/merges.txt.xz", b"")
            choice = rng.choice(["truncate", "garbage", "single", "empty"])
            import lzma

            assets["tokenizer/merges.txt.xz"] = {
                "truncate": data[: len(data) // 2], "garbage": bytes(rng.randrange(256) for _ in range(64)),
                "single": lzma.compress(b"#version: 0.2\na\n" * 3), "empty": lzma.compress(b"")}[choice]
            return Case(seed, kind, f"merges.txt.xz {choice}", meta, assets)
        if op == "vocab":
            assets["tokenizer/vocab.json"] = json.dumps({"a": rng.choice([10 ** 6, -1, 49408, "x"])}).encode()
            assets["tokenizer/merges.txt"] = b"#version: 0.2\na b\n"
            assets.pop("tokenizer/merges.txt.xz", None)
            return Case(seed, kind, "vocab.json with an odd id", meta, assets)
        if op == "drop" and names:
            assets.pop(rng.choice(names))
            return Case(seed, kind, "a tokenizer file missing", meta, assets)
        target = meta.setdefault("configs", {}).setdefault("tokenizer", {})
        paths = _paths(target, ("configs", "tokenizer"))
        path, old = rng.choice(paths[1:] or paths)
        _set(meta, path, _weird(rng, old) if path[-1] != "tokenizer" else rng.choice(WEIRD))
        return Case(seed, kind, f"configs.tokenizer {path[2:]}", meta, assets)
    root = {"metadata": (), "config": ("configs",), "recat": ("recat",)}[kind]
    sub = meta
    for k in root:
        sub = sub[k]
    candidates = [(root + p, v) for p, v in _paths(sub)]
    if kind == "config":
        candidates = [c for c in candidates if len(c[0]) >= 3] or candidates
    path, old = rng.choice(candidates)
    op = rng.random()
    if op < 0.15 and path:
        _set(meta, path, _DELETE)
        what = f"deleted {'.'.join(map(str, path))}"
    elif op < 0.25 and isinstance(old, dict):
        old[rng.choice(["surprise", "layers_per_blok", "_x", "budget"])] = _weird(rng, None)
        what = f"added a key under {'.'.join(map(str, path))}"
    elif kind == "recat" and op < 0.45:
        corr = meta["recat"]["profiles"][0]["schedules"][0]["correction"]
        c = info["channels"] + rng.choice([-1, 1, 5])
        corr["scale"] = [[1.0] * c] * info["steps"]
        corr["shift"] = [[0.0] * c] * info["steps"]
        what = f"correction with {c} channels"
    elif path:
        new = _weird(rng, old)
        _set(meta, path, new)
        what = f"{'.'.join(map(str, path))} = {str(new)[:40]}"
    else:
        meta = {"x": _weird(rng, None)}
        what = "metadata replaced"
    return Case(seed, kind, what, meta, assets)


def reseal(src: str, dst: str, case: Case) -> None:
    """``src``'s tensors (payloads copied) with ``case``'s metadata, assets and tensor changes, in a file
    with valid checksums."""
    with AcqeReader(src) as r:
        with AcqeWriter(dst, alignment=r.header.alignment, compress_sections=r.compressed) as w:
            w.set_metadata(case.metadata)
            for name, data in case.assets.items():
                w.add_asset(name, data)
            for info in r.tensors:
                if info.name in case.drop_tensors:
                    continue
                if info.name in case.extra_tensors and case.extra_tensors[info.name][0] == "int64":
                    w.add_raw(info.name, np.zeros(info.shape, np.int64))
                    continue
                w.add_stored(info, r.stored_payload(info.name))
            for name, (kind, value) in case.extra_tensors.items():
                if name in r:
                    continue
                if kind == "zeros":
                    ct = CodebookTensor((value,), np.zeros(1, np.float32), np.zeros(value, np.uint8), None, None)
                    w.add_codebook(name, ct, codec="rans", chunk_size=1 << 20)
                else:
                    w.add_raw(name, value)


# --- running one case ------------------------------------------------------------------------------------
class Timeout(BaseException):
    """Raised in the main thread when a case runs past its limit (a hang)."""


@contextlib.contextmanager
def time_limit(seconds: float):
    def on_alarm(signum, frame):
        raise Timeout()

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRss:
    """Highest resident set size while the block runs, sampled every 5 ms."""

    def __enter__(self):
        self.start = self.peak = _rss()
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss())

    @property
    def growth(self) -> int:
        return self.peak - self.start


def _cli(args: list[str]) -> tuple[int, str]:
    """Runs the CLI in-process: (exit code, stderr). An exception escaping main() is a traceback."""
    from acqe_cli.main import main

    err, out = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        code = main(args)
    return code, err.getvalue()


def run_case(path: str, case: Case, base_weights: dict, tmp: str, *, generate: bool, limit_s: float = 120.0) -> dict:
    """Loads the re-sealed ``path`` every way; returns {"outcome": ..., "problems": [...], "rss_growth": ...}."""
    from recat_runtime.loading import load_pipeline

    problems: list[str] = []
    outcome = {}
    size = os.path.getsize(path)
    with PeakRss() as rss:
        try:
            with time_limit(limit_s):
                try:
                    pipe = load_pipeline(path, device="cpu")
                    outcome["load"] = "ok"
                    for comp in ("unet", "vae", "text_encoder"):
                        for k, v in getattr(pipe, comp).state_dict().items():
                            ref = base_weights[comp].get(k)
                            if ref is not None and not (ref.shape == v.shape and bool((ref == v).all())):
                                problems.append(f"silently wrong value: {comp}.{k}")
                    del pipe
                except AcqeError as e:
                    outcome["load"] = type(e).__name__
                except Exception as e:  # noqa: BLE001 - the fuzzer's finding
                    problems.append(f"load_pipeline raised {type(e).__name__}: {str(e)[:200]}")
                code, err = _cli(["inspect", path, "--json"])
                outcome["inspect"] = code
                if code != 0 and not (len(err.strip().splitlines()) == 1 and err.startswith("Error: ")):
                    problems.append(f"inspect exit {code}: {err[-300:]}")
                if generate:
                    args = ["generate", path, "--prompt", "a red circle", "--steps", "4", "--threads", "1",
                            "--out", os.path.join(tmp, "g.png")]
                    if case.kind == "recat":
                        args += ["--cache", "recat", "--full-steps", "2"]
                    code, err = _cli(args)
                    outcome["generate"] = code
                    if code != 0 and not (len(err.strip().splitlines()) == 1 and err.startswith("Error: ")):
                        problems.append(f"generate exit {code}: {err[-300:]}")
        except Timeout:
            problems.append(f"hang: more than {limit_s} s")
        except Exception as e:  # noqa: BLE001 - a traceback of the CLI itself
            problems.append(f"traceback: {type(e).__name__}: {str(e)[:200]}")
    return {"seed": case.seed, "kind": case.kind, "what": case.what, "outcome": outcome, "problems": problems,
            "rss_growth": rss.growth, "file_bytes": size}


def base_weights(path: str) -> dict:
    from recat_runtime.loading import load_pipeline

    pipe = load_pipeline(path, device="cpu")
    return {c: {k: v.clone() for k, v in getattr(pipe, c).state_dict().items()} for c in ("unet", "vae", "text_encoder")}


def base_parts(path: str) -> tuple[dict, dict]:
    with AcqeReader(path) as r:
        return copy.deepcopy(r.metadata), dict(r.assets)


def run(n: int, workdir: str, *, seed0: int = 0, generate_every: int = 10, log=None, limit_s: float = 120.0,
        rss_bound=lambda size: (256 << 20) + 64 * size) -> dict:
    """``n`` cases from seed ``seed0``; returns the counts and every problem (hangs, tracebacks, wrong values,
    memory beyond ``rss_bound(file size)``)."""
    base = os.path.join(workdir, "base.acqe")
    info = tiny_base(base)
    weights = base_weights(base)
    meta, assets = base_parts(base)
    counts: dict = {"cases": 0, "loaded": 0, "refused": 0, "problems": 0, "max_rss_growth": 0, "by_kind": {}}
    problems = []
    t0 = time.time()
    for i in range(seed0, seed0 + n):
        case = mutate(meta, assets, i, info)
        dst = os.path.join(workdir, "case.acqe")
        try:
            reseal(base, dst, case)
        except (AcqeError, ValueError, TypeError) as e:
            # the writer refuses what no reader may see (e.g. metadata that is not strict JSON): fine
            counts["unwritable"] = counts.get("unwritable", 0) + 1
            continue
        res = run_case(dst, case, weights, workdir, generate=(i % generate_every == 0), limit_s=limit_s)
        counts["cases"] += 1
        counts["by_kind"][case.kind] = counts["by_kind"].get(case.kind, 0) + 1
        counts["loaded" if res["outcome"].get("load") == "ok" else "refused"] += 1
        counts["max_rss_growth"] = max(counts["max_rss_growth"], res["rss_growth"])
        if res["rss_growth"] > rss_bound(res["file_bytes"]):
            res["problems"].append(f"memory: RSS grew {res['rss_growth'] / 1e6:.0f} MB for a "
                                   f"{res['file_bytes'] / 1e6:.1f} MB file")
        if res["problems"]:
            counts["problems"] += 1
            problems.append(res)
        if log and (i - seed0 + 1) % 100 == 0:
            log(f"{i - seed0 + 1}/{n} cases, {counts['problems']} with problems, {time.time() - t0:.0f} s")
    counts["seconds"] = round(time.time() - t0, 1)
    return {"counts": counts, "problems": problems}
