"""`acqe inspect FILE`: header, version, features, metadata summary, per-tensor table, honest totals.

Nothing is decoded: the reader validates the structure and lists what the directory says. Bits per
parameter in the totals are file bytes x 8 / parameters, so every byte of side information counts.
"""
from __future__ import annotations

import json
import unicodedata

import click


def escape(text: str) -> str:
    """Printable form of a string read from a file: control, format (bidi), surrogate and unassigned
    characters become \\uXXXX escapes, so a tensor name cannot move the cursor or reorder a line."""
    out = []
    for ch in text:
        if ch == "\\":
            out.append("\\\\")
        elif unicodedata.category(ch)[0] == "C":
            o = ord(ch)
            out.append(f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}" if o < 0x10000 else f"\\U{o:08x}")
        else:
            out.append(ch)
    return "".join(out)


def _components(meta: dict) -> dict[str, list[str]]:
    comps = meta.get("components")
    if not isinstance(comps, dict):
        return {}
    out = {}
    for name, prefix in comps.items():
        if isinstance(prefix, str):
            out[str(name)] = [prefix]
        elif isinstance(prefix, list) and all(isinstance(p, str) for p in prefix):
            out[str(name)] = list(prefix)
    return out


def summarize(r) -> dict:
    """Everything `inspect` shows, as plain JSON-able data."""
    from acqe_format import constants as C

    size = r.file_size
    tensors = r.tensors
    params = sum(t.numel for t in tensors)
    payload = sum(t.payload_length for t in tensors)
    h = r.header
    rows = []
    for t in tensors:
        rows.append({
            "name": t.name, "shape": list(t.shape), "codec": t.codec.name, "stored_dtype": t.stored_dtype,
            "decoded_dtype": t.decoded_dtype, "parameters": t.numel, "bytes": t.payload_length,
            "bits_per_param": round(t.payload_length * 8 / t.numel, 4) if t.numel else None,
            "share_of_file": round(t.payload_length / size, 6),
        })
    comps = []
    assigned = set()
    for cname, prefixes in _components(r.metadata).items():
        sel = [t for t in tensors if any(t.name.startswith(p) for p in prefixes) and t.name not in assigned]
        assigned.update(t.name for t in sel)
        n = sum(t.numel for t in sel)
        b = sum(t.payload_length for t in sel)
        comps.append({"component": cname, "prefixes": prefixes, "tensors": len(sel), "parameters": n,
                      "bytes": b, "bits_per_param": round(b * 8 / n, 4) if n else None})
    if comps:
        rest = [t for t in tensors if t.name not in assigned]
        if rest:
            n = sum(t.numel for t in rest)
            b = sum(t.payload_length for t in rest)
            comps.append({"component": "(other)", "prefixes": [], "tensors": len(rest), "parameters": n,
                          "bytes": b, "bits_per_param": round(b * 8 / n, 4) if n else None})
    codecs: dict[str, dict] = {}
    for t in tensors:
        c = codecs.setdefault(t.codec.name, {"tensors": 0, "parameters": 0, "bytes": 0})
        c["tensors"] += 1
        c["parameters"] += t.numel
        c["bytes"] += t.payload_length

    def feat(mask):
        return [C.FEATURE_NAMES.get(1 << b, f"bit{b}") for b in range(64) if mask >> b & 1]

    from acqe_format.errors import MetadataError

    model = None
    try:            # inspect shows a file whatever its model metadata says, and says what a loader would refuse
        model = _model_summary(r.model_info, r.metadata)
        problem = None
    except MetadataError as e:
        problem = str(e)
    return {
        "metadata_error": problem,
        "model": model,
        "file": r.path, "file_bytes": size, "version": f"{h.major}.{h.minor}", "alignment": h.alignment,
        "required_features": feat(h.required_features), "optional_features": feat(h.optional_features),
        "sections": [{"kind": C.SectionKind(s.kind).name if s.kind in C.SectionKind._value2member_map_
                      else f"unknown({s.kind})", "offset": s.offset, "length": s.length,
                      "required": bool(s.flags & 1), "compressed": s.compressed,
                      "raw_length": r.raw_length(s)} for s in r.sections],
        "metadata": r.metadata,
        "tensors": rows,
        "codecs": codecs,
        "components": comps,
        "totals": {
            "tensors": len(tensors), "parameters": params, "payload_bytes": payload,
            "side_bytes": size - payload,
            # embedded files (e.g. the tokenizer) are counted, but shown apart from the weights' framing
            "asset_bytes": sum(s.length for s in r.sections if s.kind == C.SectionKind.ASSETS),
            "bits_per_param": round(size * 8 / params, 4) if params else None,
            "payload_bits_per_param": round(payload * 8 / params, 4) if params else None,
        },
    }


def _model_summary(info, meta: dict) -> dict:
    """The architecture, the pipeline that runs it, its components and tokenizers, and what the
    conversion left out on purpose or kept without a known meaning."""
    from acqe_format.model import Component, architectures

    spec = architectures.get(info.architecture)
    src = meta.get("source") if isinstance(meta.get("source"), dict) else {}
    return {"architecture": info.architecture, "registered": spec is not None,
            "description": spec.description if spec else None,
            "pipeline": spec.pipeline if spec else None, "naming": info.naming,
            # the components the file names (else its architecture's defaults, which a loader uses)
            "components": ({c: p for c, p in info.components.items() if c in (meta.get("components") or info.components)}
                           if info.loadable else {}),
            "tokenizers": [t for t in Component.TOKENIZERS if isinstance(info.configs.get(t), dict)],
            "dropped": src.get("dropped_reasons") or [], "kept_unknown": src.get("kept_unknown") or []}


def _model_line(m: dict) -> str:
    comps = ", ".join(f"{c} ({p}*)" for c, p in m["components"].items()) or "none"
    line = (f"model: {m['architecture']}" + (f" — {m['description']}" if m["description"] else " (not a registered "
            "architecture)") + (f"; pipeline {m['pipeline']}" if m["pipeline"] else "")
            + f"; components {comps}; tokenizers {', '.join(m['tokenizers']) or 'none'}")
    for d in m["dropped"]:
        if isinstance(d, dict):
            line += f"; dropped {d.get('count')} tensor(s): {d.get('reason')}"
    if m["kept_unknown"]:
        line += f"; kept without a known meaning: {', '.join(map(str, m['kept_unknown']))}"
    return escape(line)


def _meta_lines(meta: dict) -> list[tuple[str, str]]:
    def short(v, n=72):
        s = json.dumps(v, ensure_ascii=False, separators=(",", ":")) if not isinstance(v, str) else v
        return escape(s if len(s) <= n else s[:n - 1] + "…")

    out = []
    for k, v in meta.items():
        if k == "recat" and isinstance(v, dict) and isinstance(v.get("profiles"), list):
            out += _recat_lines(v)
        elif isinstance(v, dict) and len(json.dumps(v)) > 72:
            out.append((escape(k), "{" + ", ".join(escape(str(x)) for x in list(v)[:12])
                        + (", …" if len(v) > 12 else "") + "}"))
        else:
            out.append((escape(k), short(v)))
    return out


def _recat_lines(block: dict) -> list[tuple[str, str]]:
    """One line per profile's schedule model (what `generate` derives any setting from: `convert
    --profile-cache` stores only that), and one per stored ReCaT schedule: its full steps and, when it was
    chosen by validation, the winning weighting with its validation PSNR and uniform's."""
    out = []
    for p in block["profiles"]:
        if not isinstance(p, dict):
            continue
        head = f"{p.get('sampler')} {p.get('steps')} steps guidance {p.get('guidance')} branch {p.get('branch')}"
        cont = p.get("continuous")
        if isinstance(cont, dict):
            corr = cont.get("correction") if cont.get("moments") is not None else "no"
            out.append(("recat", escape(f"{head}: schedule model for any sampler, step count and budget "
                                        f"(weighting {cont.get('weighting')}, {corr} correction)")))
        for s in p.get("schedules") or []:
            if not isinstance(s, dict):
                continue
            line = f"{head}: B={s.get('budget')} {s.get('full_steps')}"
            if s.get("weighting"):
                line += f" ({s['weighting']}"
                sel = s.get("selection")
                if isinstance(sel, dict) and isinstance(sel.get("psnr"), (int, float)) \
                        and isinstance(sel.get("uniform_psnr"), (int, float)):
                    line += (f"; validation PSNR {sel['psnr']:.2f} dB, uniform {sel['uniform_psnr']:.2f} dB, "
                             f"{sel.get('validation_samples')} samples")
                line += ")"
            out.append(("recat", escape(line)))
    return out or [("recat", "no profiles")]


@click.command("inspect")
@click.argument("file", type=click.Path(dir_okay=False, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="machine-readable JSON on stdout")
@click.option("--tensors/--no-tensors", default=True, help="show the per-tensor table (default: yes)")
def command(file, as_json, tensors):
    """Show FILE's header, version, features, metadata and tensors (nothing is decoded).

    Bits per parameter in the totals are file bytes x 8 / parameters: side information included.
    """
    from acqe_cli._errors import format_error
    from acqe_format import AcqeError, AcqeReader

    try:
        with AcqeReader(file) as r:
            info = summarize(r)
    except AcqeError as exc:
        # raised here as a ClickException: click would turn TruncatedFileError (an EOFError) into "Aborted!"
        raise click.ClickException(format_error(exc)) from None
    if as_json:
        click.echo(json.dumps(info, indent=1, ensure_ascii=True))
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    import sys
    # Piped or redirected output is read by tools and people grepping names: never squeeze it to 80 columns.
    con = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 240)
    T = info["totals"]
    con.print(Text(f"{escape(file)}: ACQE {info['version']}, {info['file_bytes']:,} bytes, "
                   f"alignment {info['alignment']}"))
    con.print(Text(f"features: required {', '.join(info['required_features']) or 'none'}; "
                   f"optional {', '.join(info['optional_features']) or 'none'}"))
    con.print(Text("sections: " + ", ".join(
        f"{s['kind']} @{s['offset']} ({s['length']:,} B" + (f", zlib of {s['raw_length']:,} B)" if s["compressed"] else ")")
        for s in info["sections"])))
    if info["metadata_error"]:
        con.print(Text(f"model metadata problem (loading will refuse the file): {escape(info['metadata_error'])}",
                       style="bold red"))
    if info.get("model"):
        con.print(Text(_model_line(info["model"]), style="bold"))
    if info["metadata"]:
        mt = Table(title="metadata", show_header=False, box=None, pad_edge=False)
        for k, v in _meta_lines(info["metadata"]):
            mt.add_row(Text(k, style="bold"), Text(v))
        con.print(mt)
    if tensors and info["tensors"]:
        t = Table(title="tensors")
        for col, just in [("name", "left"), ("shape", "left"), ("codec", "left"), ("dtype", "left"),
                          ("bits/param", "right"), ("bytes", "right"), ("share", "right")]:
            # names are what users look for: fold long ones instead of truncating them with an ellipsis
            t.add_column(col, justify=just, overflow="fold" if col == "name" else "ellipsis",
                         no_wrap=col != "name", min_width=24 if col == "name" else len(col))
        for row in info["tensors"]:
            dt = row["decoded_dtype"] if row["stored_dtype"] == row["decoded_dtype"] else \
                f"{row['stored_dtype']}→{row['decoded_dtype']}"
            bpp = "-" if row["bits_per_param"] is None else f"{row['bits_per_param']:.3f}"
            t.add_row(Text(escape(row["name"])), Text("×".join(map(str, row["shape"])) or "scalar"),
                      row["codec"], dt, bpp, f"{row['bytes']:,}", f"{100 * row['share_of_file']:.2f}%")
        con.print(t)
    if info["components"]:
        ct = Table(title="components (payload bytes)")
        for col in ("component", "tensors", "parameters", "bytes", "bits/param"):
            ct.add_column(col, justify="left" if col == "component" else "right")
        for c in info["components"]:
            ct.add_row(Text(escape(c["component"])), str(c["tensors"]), f"{c['parameters']:,}", f"{c['bytes']:,}",
                       "-" if c["bits_per_param"] is None else f"{c['bits_per_param']:.3f}")
        con.print(ct)
    codecs = ", ".join(f"{k} {v['tensors']} tensors / {v['parameters']:,} params" for k, v in info["codecs"].items())
    con.print(Text(f"codecs: {codecs or 'none'}"))
    bpp = "n/a (no parameters)" if T["bits_per_param"] is None else f"{T['bits_per_param']:.4f}"
    con.print(Text(f"total: {T['tensors']} tensors, {T['parameters']:,} parameters, {info['file_bytes']:,} file "
                   f"bytes ({T['payload_bytes']:,} payload + {T['asset_bytes']:,} embedded assets + "
                   f"{T['side_bytes'] - T['asset_bytes']:,} directory, metadata and framing) → "
                   f"{bpp} bits/param (file bytes × 8 / parameters)", style="bold"))
