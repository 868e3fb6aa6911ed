"""Snapshots are untrusted input: every manifest field and array is checked on read and refused
in one line naming the field; zip members that would expand out of proportion are refused before
they are expanded; special files and files that are not snapshots are refused plainly."""

from __future__ import annotations

import io
import json
import os
import socket
import struct
import threading
import tracemalloc
import zipfile
import zlib

import numpy as np
import pytest
from PIL import Image
from support.fake_engine import make_analysis, save_version_1

import flowtui
from flowtui.engine import snapshot as snap
from flowtui.engine.errors import SnapshotError
from flowtui.remote.protocol import ProtocolError, analysis_from, analysis_to


@pytest.fixture
def good(tmp_path):
    a = make_analysis(num_layers=4, num_heads=2, grid=(3, 4))
    a.truncations.append(flowtui.engine.TruncationRun(1, "top", 2, None, "No", [7], -2.5, False))
    from flowtui.engine.analysis import Sweep, cliff_layer

    same = np.array([False, False, True, True, True])
    a.set_sweep(Sweep(np.linspace(-3, -0.1, 5).astype(np.float32), same,
                      ["No", "No", "Yes.", "Yes.", "Yes."], cliff_layer(same)))
    return a.save(tmp_path / "good.flowtui")


def _parts(path):
    with zipfile.ZipFile(path) as zf:
        m = json.loads(zf.read("manifest.json"))
        with np.load(io.BytesIO(zf.read("arrays.npz"))) as npz:
            arrays = {k: npz[k] for k in npz.files}
        return m, arrays, {n: zf.read(n) for n in zf.namelist()}


def _write(dst, m, arrays, members):
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    with zipfile.ZipFile(dst, "w") as zf:
        for name, data in members.items():
            if name == "manifest.json":
                data = json.dumps(m).encode()
            elif name == "arrays.npz":
                data = buf.getvalue()
            zf.writestr(name, data)
    return dst


def _set(path, value):
    """An edit setting manifest[path] ('a.b' for nested keys, 'a[0]' for list items)."""

    def edit(m, arrays):
        keys = path.replace("[", ".").replace("]", "").split(".")
        target = m
        for k in keys[:-1]:
            target = target[int(k)] if isinstance(target, list) else target[k]
        last = keys[-1]
        if isinstance(target, list):
            target[int(last)] = value
        else:
            target[last] = value

    return edit


def _array(name, change):
    def edit(m, arrays):
        arrays[name] = change(arrays[name].copy())

    return edit


def _drop(name):
    def edit(m, arrays):
        m.pop(name, None)
        arrays.pop(name, None)

    return edit


def _nan_at(i):
    def change(a):
        a.reshape(-1)[i] = np.nan
        return a

    return change


# (edit, what the one-line message must name)
FIELD_CASES = {
    "num_layers not an int": (_set("model.num_layers", "4"), "'model.num_layers'"),
    "num_layers zero": (_set("model.num_layers", 0), "'model.num_layers'"),
    "layers disagree": (_set("model.num_layers", 5), "array 'shares' has shape [4, 4], "
                                                      "expected [L=5, 4]"),
    "heads disagree": (_set("model.num_heads", 3), "'head_shares'"),
    "model not an object": (_set("model", "llava"), "'model'"),
    "model name missing": (lambda m, a: m["model"].pop("name"), "'model.name'"),
    "question not text": (_set("question", ["q"]), "'question'"),
    "answer missing": (_drop("answer"), "'answer' is missing"),
    "no answer tokens": (_set("answer_token_ids", []), "'answer_token_ids'"),
    "answer id negative": (_set("answer_token_ids[0]", -1), "'answer_token_ids[0]'"),
    "answer id a bool": (_set("answer_token_ids[0]", True), "'answer_token_ids[0]'"),
    "a token not text": (_set("tokens[3]", 12), "'tokens[3]'"),
    "a token dropped": (lambda m, a: m["tokens"].pop(), "'groups.output[0]'"),
    "unknown group": (_set("groups.extra", [[0, 1]]), "'groups'"),
    "group missing": (lambda m, a: m["groups"].pop("user"), "'groups.user'"),
    "span past the end": (_set("groups.output[0]", [30, 999]), "'groups.output[0]'"),
    "span reversed": (_set("groups.system[0]", [5, 0]), "'groups.system[0]'"),
    "span not a pair": (_set("groups.system[0]", [0, 1, 2]), "'groups.system[0]'"),
    "spans overlap": (_set("groups.system[0]", [0, 6]), "more than one group"),
    "spans leave a gap": (_set("groups.system[0]", [0, 4]), "token 4 is in no group"),
    "no image": (_set("groups.image", []), "'groups.image'"),
    "answer group elsewhere": (lambda m, a: m["groups"].update(
        user=[[17, 29]], output=[[26, 28]]), "group"),
    "shares NaN": (_array("shares", _nan_at(3)), "array 'shares' holds NaN"),
    "shares inf": (_array("shares", lambda x: x * np.inf), "array 'shares' holds NaN or inf"),
    "share above 1": (_array("shares", lambda x: x + 2), "array 'shares' has values outside"),
    "head shares negative": (_array("head_shares", lambda x: -x), "'head_shares' has values"),
    "logprobs wrong length": (_array("answer_logprobs", lambda x: x[:1]),
                              "array 'answer_logprobs' has shape [1], expected [T=2]"),
    "logprobs NaN": (_array("answer_logprobs", _nan_at(0)), "'answer_logprobs' holds NaN"),
    "cam text": (_array("cam_tokens", lambda x: x.astype("U3")), "'cam_tokens'"),
    "cam above 1": (_array("cam_tokens", lambda x: x * 3), "'cam_tokens' has values outside"),
    "cam NaN": (_array("cam_tokens", _nan_at(5)), "'cam_tokens' holds NaN"),
    "cam no tokens": (_array("cam_tokens", lambda x: x[:, :0]), "'cam_tokens' has shape"),
    "regions half NaN": (_array("token_regions", _nan_at(1)), "'token_regions'"),
    "regions inside out": (_array("token_regions", lambda x: x[:, [2, 3, 0, 1]]),
                           "'token_regions' has regions with x1 < x0"),
    "regions too few": (_array("token_regions", lambda x: x[:-1]), "'token_regions' has shape"),
    "views out of range": (_array("token_views", lambda x: x + 1), "'token_views' must index"),
    "views floats": (_array("token_views", lambda x: x.astype(np.float32)),
                     "'token_views' has dtype float32"),
    "view names not text": (_set("views", [3]), "'views[0]'"),
    "features outside the image": (_array("feature_positions", lambda x: x - 1),
                                   "'feature_positions' must be increasing positions inside"),
    "features repeated": (_array("feature_positions", lambda x: np.sort(np.r_[x[:-1], x[0]])),
                          "'feature_positions'"),
    "features too many": (_array("feature_positions", lambda x: np.r_[x, x[-1] + 1]),
                          "'feature_positions' has shape"),
    "grid wrong": (_set("image_grid", [5, 5]), "'image_grid'"),
    "grid text": (_set("image_grid", "3x4"), "'image_grid'"),
    "attention NaN": (_array("attention_tokens", _nan_at(0)), "'attention_tokens' holds NaN"),
    "ranking wrong shape": (_array("image_attention", lambda x: x[:2]), "'image_attention'"),
    "run past the last layer": (_set("truncations[0].layer", 5), "'truncations[0].layer'"),
    "run strategy unknown": (_set("truncations[0].strategy", "evil"),
                             "'truncations[0].strategy'"),
    "run keep past the tokens": (_set("truncations[0].keep", 13), "'truncations[0].keep'"),
    "run top without keep": (_set("truncations[0].keep", None), "'truncations[0].keep'"),
    "run log-prob NaN": (_set("truncations[0].baseline_logprob", float("nan")),
                         "'truncations[0].baseline_logprob'"),
    "run same a string": (_set("truncations[0].same", "yes"), "'truncations[0].same'"),
    "run not an object": (_set("truncations[0]", 3), "'truncations[0]'"),
    "runs not a list": (_set("truncations", {}), "'truncations'"),
    "sweep short": (_array("sweep_same", lambda x: x[:-1]), "'sweep_same' has shape"),
    "sweep not bool": (_array("sweep_same", lambda x: x.astype(np.int8)), "'sweep_same'"),
    "sweep half": (lambda m, a: a.pop("sweep_same"), "come together"),
    "sweep log-prob inf": (_array("sweep_logprob", lambda x: x - np.inf), "'sweep_logprob'"),
    "sweep answers short": (_set("sweep_answers", ["No"]), "'sweep_answers'"),
    "cliff not the sweep's": (_set("cliff_layer", 1), "'cliff_layer'"),
    "cliff past the layers": (_set("cliff_layer", 9), "'cliff_layer'"),
    "threshold above 1": (_set("cam.threshold", 7), "'cam.threshold'"),
    "threshold NaN": (_set("cam.threshold", float("nan")), "'cam.threshold'"),
    "budget zero": (_set("max_new_tokens", 0), "'max_new_tokens'"),
    "eos a number": (_set("ended_with_eos", 1), "'ended_with_eos'"),
    "notes not a list": (_set("notes", "hi"), "'notes'"),
    "created a number": (_set("created", 5), "'created'"),
}


@pytest.mark.parametrize("case", list(FIELD_CASES))
def test_every_field_is_checked_and_named(good, tmp_path, case):
    edit, named = FIELD_CASES[case]
    m, arrays, members = _parts(good)
    edit(m, arrays)
    bad = _write(tmp_path / "bad.flowtui", m, arrays, members)
    with pytest.raises(SnapshotError) as exc:
        flowtui.load_snapshot(bad)
    message = str(exc.value)
    assert named in message and "\n" not in message, message
    assert message.startswith(str(bad))


def test_the_unchanged_rewrite_opens(good, tmp_path):
    """The cases above fail for their edit alone: the same rewrite without an edit opens."""
    m, arrays, members = _parts(good)
    a = flowtui.load_snapshot(_write(tmp_path / "same.flowtui", m, arrays, members))
    assert a.cliff_layer == 2 and a.truncations[0].keep == 2 and a.num_heads == 2


def test_the_remote_protocol_decodes_with_the_same_checks(good):
    a = flowtui.load_snapshot(good)
    manifest, arrays = analysis_to(a, with_image=True)
    assert analysis_from(manifest, arrays, arrays["image"]).answer == a.answer
    manifest["groups"]["system"] = [[0, 99]]
    with pytest.raises(ProtocolError, match=r"bad analysis: manifest field 'groups.system\[0\]'"):
        analysis_from(manifest, arrays, arrays["image"])
    manifest, arrays = analysis_to(a, with_image=True)
    arrays["head_shares"] = arrays["head_shares"][:, :1]
    with pytest.raises(ProtocolError, match="array 'head_shares' has shape"):
        analysis_from(manifest, arrays, arrays["image"])


def test_version_1_fields_are_checked_too(tmp_path):
    a = make_analysis(num_layers=3, grid=(2, 2))
    save_version_1(a, tmp_path / "v1.flowtui")
    m, arrays, members = _parts(tmp_path / "v1.flowtui")
    assert flowtui.load_snapshot(tmp_path / "v1.flowtui").image_grid == (2, 2)
    for edit, named in [(_set("image_box", [0, 0, 999, 10]), "'image_box'"),
                        (_array("cam", lambda x: x[:2]), "'cam'"),
                        (_array("cam", _nan_at(0)), "'cam' holds NaN"),
                        (lambda m, a: a.pop("cam"), "'cam' is missing")]:
        mm, aa = json.loads(json.dumps(m)), dict(arrays)
        edit(mm, aa)
        with pytest.raises(SnapshotError, match=named):
            flowtui.load_snapshot(_write(tmp_path / "bad.flowtui", mm, aa, members))


def test_deeply_nested_json_is_refused(good, tmp_path):
    _, _, members = _parts(good)
    with zipfile.ZipFile(tmp_path / "deep.flowtui", "w") as zf:
        for name, data in members.items():
            zf.writestr(name, b"[" * 200_000 + b"]" * 200_000 if name == "manifest.json" else data)
    with pytest.raises(SnapshotError, match="nested too deeply|corrupt"):
        flowtui.load_snapshot(tmp_path / "deep.flowtui")


# --- sizes: refused before they are expanded ------------------------------------------------------
def _raw_zip(members: list[tuple[str, bytes, int, int, int]]) -> bytes:
    """A zip written by hand, so that sizes and streams may lie: (name, stored bytes, method,
    crc, declared expanded size) per member."""
    out, central = bytearray(), bytearray()
    for name, data, method, crc, size in members:
        n = name.encode()
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 0, crc, len(data), size,
                           len(n), 0) + n + data
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, method, 0, 0, crc,
                               len(data), size, len(n), 0, 0, 0, 0, 0, offset) + n
    start = len(out)
    out += central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members),
                                 len(central), start, 0)
    return bytes(out)


def _zeros_deflated(total: int, chunk: int = 16 << 20) -> bytes:
    """A raw deflate stream of `total` zero bytes, built from one compressed chunk repeated
    (a full flush makes every chunk compress the same): a real bomb in a moment."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(b"\0" * chunk) + c.flush(zlib.Z_FULL_FLUSH)
    return block * (total // chunk) + c.flush(zlib.Z_FINISH)


def _stored(name, data):
    return (name, data, 0, zlib.crc32(data), len(data))


def _with(good, replace: dict[str, tuple]) -> bytes:
    _, _, members = _parts(good)
    return _raw_zip([replace.get(n) or _stored(n, d) for n, d in members.items()])


def _peak_while(fn) -> int:
    tracemalloc.start()
    try:
        fn()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


GIB = 1 << 30


def test_the_bomb_stream_really_expands():
    stream = _zeros_deflated(64 << 20)
    assert len(stream) < 200_000
    assert zlib.decompressobj(-15).decompress(stream, 1 << 20) == b"\0" * (1 << 20)


@pytest.mark.parametrize("member", ["manifest.json", "arrays.npz", "image.png"])
def test_members_declaring_gigabytes_are_refused_unexpanded(good, tmp_path, member):
    stream = _zeros_deflated(GIB)
    bad = tmp_path / "bomb.flowtui"
    bad.write_bytes(_with(good, {member: (member, stream, 8, 0, GIB)}))
    assert bad.stat().st_size < 8 << 20

    def load():
        with pytest.raises(SnapshotError, match="out of proportion|more than a snapshot"):
            flowtui.load_snapshot(bad)

    assert _peak_while(load) < 64 << 20


def test_a_member_that_expands_past_its_declared_size_is_cut_off(good, tmp_path):
    """The declared size is small, the stream is a gigabyte: reading stops at the declared size."""
    bad = tmp_path / "liar.flowtui"
    bad.write_bytes(_with(good, {"arrays.npz": ("arrays.npz", _zeros_deflated(GIB), 8, 0, 4096)}))

    def load():
        with pytest.raises(SnapshotError):
            flowtui.load_snapshot(bad)

    assert _peak_while(load) < 64 << 20


def test_a_bomb_inside_the_npz_is_refused_unexpanded(good, tmp_path):
    """arrays.npz is itself a zip: its members get the same checks."""
    inner = _raw_zip([("shares.npy", _zeros_deflated(GIB), 8, 0, GIB)])
    bad = tmp_path / "npz.flowtui"
    bad.write_bytes(_with(good, {"arrays.npz": _stored("arrays.npz", inner)}))

    def load():
        with pytest.raises(SnapshotError, match="shares.npy would expand to 1,073,741,824 bytes"):
            flowtui.load_snapshot(bad)

    assert _peak_while(load) < 64 << 20


def test_an_npy_header_declaring_a_huge_shape_is_not_allocated(good, tmp_path):
    m, arrays, members = _parts(good)
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False,
                                               "shape": (1 << 40,)})
    inner = io.BytesIO()
    with zipfile.ZipFile(inner, "w") as zf:
        zf.writestr("shares.npy", buf.getvalue() + b"\0" * 16)
    members["arrays.npz"] = inner.getvalue()
    with zipfile.ZipFile(tmp_path / "hdr.flowtui", "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with pytest.raises(SnapshotError, match="'shares' is truncated or padded"):
        flowtui.load_snapshot(tmp_path / "hdr.flowtui")


def _png_declaring(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("side, named", [(100_000, "declares 10,000 megapixels"),
                                         (12_000, "out of proportion")])
def test_an_image_png_declaring_a_bomb_is_refused(good, tmp_path, side, named):
    bad = tmp_path / "img.flowtui"
    bad.write_bytes(_with(good, {"image.png": _stored("image.png", _png_declaring(side, side))}))

    def load():
        with pytest.raises(SnapshotError, match=named):
            flowtui.load_snapshot(bad)

    assert _peak_while(load) < 64 << 20


def test_members_past_the_caps_or_of_other_kinds(good, tmp_path):
    m, arrays, members = _parts(good)
    members["image.png"] = members["image.png"][:40]
    with pytest.raises(SnapshotError, match="corrupt"):
        flowtui.load_snapshot(_write(tmp_path / "cut.flowtui", m, arrays, members))
    _, _, members = _parts(good)
    buf = io.BytesIO()
    Image.new("RGB", (4, 4)).save(buf, format="JPEG")
    members["image.png"] = buf.getvalue()
    with pytest.raises(SnapshotError, match="image.png is not a PNG image"):
        flowtui.load_snapshot(_write(tmp_path / "jpeg.flowtui", m, arrays, members))
    npy = tmp_path / "npy.flowtui"
    npy.write_bytes(_with(good, {"arrays.npz": _stored("arrays.npz", b"\x93NUMPY not an npz")}))
    with pytest.raises(SnapshotError, match="arrays.npz is not an .npz archive"):
        flowtui.load_snapshot(npy)


# --- files that are not snapshots -----------------------------------------------------------------
def _refused_quickly(path, match):
    result = {}

    def load():
        try:
            flowtui.load_snapshot(path)
        except SnapshotError as exc:
            result["error"] = str(exc)

    t = threading.Thread(target=load, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), f"loading {path} hangs"
    assert match in result.get("error", ""), result


def test_special_files_are_refused_without_hanging(tmp_path):
    fifo = tmp_path / "pipe.flowtui"
    os.mkfifo(fifo)
    _refused_quickly(fifo, "is a FIFO, not a snapshot")
    _refused_quickly("/dev/zero", "is a device, not a snapshot")
    sock_path = tmp_path / "s.flowtui"
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(sock_path))
        _refused_quickly(sock_path, "is a socket, not a snapshot")


def test_files_that_are_not_snapshots_say_what_they_are(tmp_path):
    cases = {
        "photo.png": (lambda p: Image.new("RGB", (8, 8)).save(p),
                      "is not a flowtui snapshot (it is a PNG image; to analyse an image"),
        "photo.jpg": (lambda p: Image.new("RGB", (8, 8)).save(p), "(it is a JPEG image"),
        "notes.txt": (lambda p: p.write_text("héllo, wörld\n" * 100), "(it is a text file)"),
        "empty.flowtui": (lambda p: p.write_bytes(b""), "(it is empty)"),
        "noise.bin": (lambda p: p.write_bytes(bytes(range(256)) * 4), "(it is not a zip file)"),
        "other.zip": (lambda p: zipfile.ZipFile(p, "w").writestr("a.txt", "x"),
                      "is not a flowtui snapshot (missing arrays.npz)"),
    }
    for name, (make, match) in cases.items():
        make(tmp_path / name)
        with pytest.raises(SnapshotError) as exc:
            flowtui.load_snapshot(tmp_path / name)
        assert match in str(exc.value) and "corrupt" not in str(exc.value), str(exc.value)


def test_is_snapshot_reads_only_the_manifest(good, tmp_path):
    assert snap.is_snapshot(good)
    (tmp_path / "t.txt").write_text("x")
    assert not snap.is_snapshot(tmp_path / "t.txt")
    assert not snap.is_snapshot(tmp_path / "missing")
    assert not snap.is_snapshot(tmp_path)
    bomb = tmp_path / "bomb.flowtui"
    bomb.write_bytes(_with(good, {"manifest.json": ("manifest.json", _zeros_deflated(GIB), 8, 0,
                                                    GIB)}))
    assert _peak_while(lambda: snap.is_snapshot(bomb)) < 64 << 20
    assert not snap.is_snapshot(bomb)
