"""Reader edges: metadata depth measured without copies, a decoded-size limit against codec expansion, a
footer SHA mismatch that shows both digests, and output paths that fail early and name the user's path."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import tracemalloc

import numpy as np
import pytest

from acqe_cli.main import main
from acqe_format import AcqeReader, AcqeWriter, CodebookTensor
from acqe_format.decode_budget import DEFAULT_EXPANSION, DEFAULT_FLOOR, decoded_limit, default_limit
from acqe_format.errors import ChecksumMismatchError, DecodedSizeError, MetadataError
from acqe_format.metadata import parse_metadata

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_long_string_in_metadata_costs_no_more_than_a_few_copies():
    data = json.dumps({"x": "a" * 15_000_000, "y": "\\\"" * 1000}).encode()
    tracemalloc.start()
    try:
        parse_metadata(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5 * len(data), f"peak {peak / 1e6:.0f} MB for {len(data) / 1e6:.0f} MB of metadata"


@pytest.mark.parametrize("depth, ok", [(64, True), (65, False), (5000, False)])
def test_depth_limit_still_holds(depth, ok):
    text = '{"a":' + "[" * (depth - 1) + "]" * (depth - 1) + "}"
    if ok:
        parse_metadata(text.encode())
    else:
        with pytest.raises(MetadataError, match="nesting deeper than 64"):
            parse_metadata(text.encode())


def test_brackets_inside_strings_do_not_count():
    parse_metadata(json.dumps({"a": "[" * 200, "b": "{" * 200}).encode())


def _expanding_file(path, numel: int) -> None:
    """A codec-2 tensor of one repeated symbol: a few kB of payload, ``numel`` float64 values decoded."""
    ct = CodebookTensor((numel,), np.zeros(1, np.float32), np.zeros(numel, np.uint8), None, None, "float64")
    with AcqeWriter(path) as w:
        w.add_codebook("zeros", ct, codec="rans", chunk_size=1 << 20)


def test_decoded_size_limit_refuses_a_codec_bomb_before_decoding(tmp_path):
    path = tmp_path / "bomb.acqe"
    numel = (DEFAULT_FLOOR // 8) + (1 << 20)            # just over the 256 MiB floor in float64
    _expanding_file(path, numel)
    size = os.path.getsize(path)
    assert size < 64 << 10
    tracemalloc.start()
    try:
        with AcqeReader(path) as r:
            assert r.decoded_bytes == numel * 8 and r.expansion > 1000
            with pytest.raises(DecodedSizeError, match="decode to"):
                r.read("zeros")
            with pytest.raises(DecodedSizeError):
                r.verify()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20
    # the CLI: verify stops with one line that says how to allow it (exit 1: not verified, not invalid,
    # spec §10.4); inspect still lists the file
    assert main(["verify", str(path)]) == 1
    assert main(["inspect", str(path), "--json"]) == 0


def test_decoded_size_limit_can_be_raised(tmp_path, capsys):
    path = tmp_path / "small.acqe"
    _expanding_file(path, 1 << 16)
    with AcqeReader(path, max_decoded_bytes=1000) as r:
        with pytest.raises(DecodedSizeError):
            r.read("zeros")
    with decoded_limit(1000):
        with AcqeReader(path) as r:
            assert r.max_decoded_bytes == 1000
    with AcqeReader(path) as r:
        assert r.read("zeros").size == 1 << 16
    assert main(["verify", str(path), "--max-decoded-size", "1k"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--max-decoded-size 524288" in err[0]
    assert main(["verify", str(path), "--max-decoded-size", "1M"]) == 0
    assert "decoding to 524,288 bytes" in capsys.readouterr().out


def test_default_limit_rule():
    assert default_limit(2440) == DEFAULT_FLOOR
    assert default_limit(10 ** 9) == DEFAULT_EXPANSION * 10 ** 9


def test_footer_sha_mismatch_shows_where_the_digests_differ(tmp_path):
    path = tmp_path / "x.acqe"
    with AcqeWriter(path) as w:
        w.add_raw("x", np.arange(4, dtype=np.float32))
    data = bytearray(path.read_bytes())
    data[-48 + 31] ^= 1                                 # the last byte of the stored digest
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError) as e:
        AcqeReader(path).verify()
    got, want = [w.strip(",") for w in str(e.value).split() if len(w.strip(",")) == 64]
    assert got != want and got[:62] == want[:62]


def test_writer_in_a_missing_folder_names_the_target(tmp_path):
    target = tmp_path / "missing" / "out.acqe"
    with pytest.raises(FileNotFoundError) as e:
        AcqeWriter(target)
    assert e.value.filename == str(target)


def _safetensors_source(path) -> None:
    from safetensors.numpy import save_file

    save_file({"w": np.random.default_rng(0).standard_normal((64, 64)).astype(np.float32)}, str(path))


def test_convert_checks_the_output_folder_before_reading_anything(tmp_path, monkeypatch):
    from acqe_encoder import encode

    src = tmp_path / "m.safetensors"
    _safetensors_source(src)
    monkeypatch.setattr(encode, "open_source", lambda *a: pytest.fail("the source was opened"))
    target = tmp_path / "missing" / "out.acqe"
    with pytest.raises(FileNotFoundError) as e:
        encode.convert(str(src), str(target))
    assert e.value.filename == str(target)


def test_stale_temporary_of_a_killed_writer_is_removed_by_the_next_convert(tmp_path, capsys):
    """A writer killed with SIGKILL inside atomic_write leaves its temporary; the next convert to the same
    target removes it."""
    out = tmp_path / "out.acqe"
    child = ("import sys, time; from acqe_format.atomic import atomic_write\n"
             "with atomic_write(sys.argv[1]) as f:\n"
             "    f.write(b'x' * 4096); f.flush(); print('ready', flush=True); time.sleep(120)\n")
    p = subprocess.Popen([sys.executable, "-c", child, str(out)], stdout=subprocess.PIPE, text=True,
                         env=dict(os.environ, PYTHONPATH=ROOT))
    try:
        assert p.stdout.readline().strip() == "ready"
        stale = [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]
        assert len(stale) == 1 and f".{p.pid}." in stale[0]
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
    assert p.returncode == -signal.SIGKILL
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")] == stale      # left behind by the kill
    src = tmp_path / "m.safetensors"
    _safetensors_source(src)
    t0 = time.time()
    assert main(["convert", str(src), str(out), "--lossless", "--keep-unknown", "-q"]) == 0
    assert time.time() - t0 < 120
    assert [n for n in os.listdir(tmp_path) if n.endswith(".tmp")] == []
    assert AcqeReader(out).read("w").shape == (64, 64)


def test_number_leaves_are_skipped_but_nested_strings_and_depth_are_still_checked():
    inside = [1.0] * 1000 + ["\\ud800"] + [2] * 1000
    with pytest.raises(MetadataError, match="lone surrogate"):
        parse_metadata(('{"a":' + json.dumps(inside).replace('"\\\\ud800"', '"\\ud800"') + "}").encode())
    with pytest.raises(MetadataError, match="nesting deeper than 64"):
        parse_metadata(("{\"a\":" + "[1," * 64 + "1" + "]" * 64 + "}").encode())
    assert parse_metadata(b'{"a":[1,2.5,true,null,"x",[3]]}') == {"a": [1, 2.5, True, None, "x", [3]]}
