"""The remote protocol and server on in-process pipes with the fake engine (no model): frames,
hostile input, events in order, cancellation, dropped connections and server-side failures."""

from __future__ import annotations

import io
import json
import pickle
import struct
import threading
import time

import numpy as np
import pytest
from support.fake_engine import FakeEngine, make_analysis, make_image
from support.remote_util import PipeServer, assert_same_analysis, same_run, same_sweep

from flowtui.engine.analysis import Progress
from flowtui.engine.errors import (
    Cancelled,
    ConnectionLost,
    InputError,
    ModelLoadError,
    RemoteError,
)
from flowtui.remote.protocol import (
    MAGIC,
    Frame,
    FrameError,
    FrameReader,
    FrameWriter,
    Limits,
    ProtocolError,
    TruncatedFrame,
    decode_array,
    encode_array,
)


def frame_bytes(header: dict, parts: dict | None = None) -> bytes:
    buf = io.BytesIO()
    FrameWriter(buf).send(header, parts)
    return buf.getvalue()


def raw_frame(header: dict, blobs: list[bytes]) -> bytes:
    """A frame with parts given as raw bytes (which need not be .npy)."""
    body = json.dumps(header).encode()
    return (MAGIC + struct.pack(">II", len(body), len(blobs))
            + b"".join(struct.pack(">Q", len(b)) for b in blobs) + body + b"".join(blobs))


# --- frames and arrays ---------------------------------------------------------------------------
def test_frames_round_trip_arrays_exactly():
    arrays = {
        "f32": np.random.default_rng(0).standard_normal((3, 4, 5)).astype(np.float32),
        "nan": np.array([np.nan, -np.inf, 1.5], dtype=np.float32),
        "fortran": np.asfortranarray(np.arange(12, dtype=np.int64).reshape(3, 4)),
        "bool": np.array([True, False, True]),
        "u8": np.zeros((0, 7, 3), dtype=np.uint8),
        "scalar": np.array(3, dtype=np.int16),
    }
    header = {"type": "result", "id": 7, "result": {"text": "ünïcode ✓"}}
    reader = FrameReader(io.BytesIO(frame_bytes(header, arrays) * 2))
    for _ in range(2):
        frame = reader.read()
        assert frame.header["result"] == header["result"] and frame.id == 7
        for name, arr in arrays.items():
            got = frame.parts[name]
            assert got.dtype == arr.dtype and got.shape == arr.shape
            assert np.array_equal(got, arr, equal_nan=arr.dtype.kind == "f")
    assert reader.read() is None


def test_npy_parts_refuse_pickle_lies_and_odd_dtypes():
    obj = io.BytesIO()
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ProtocolError, match="pickled"):
        decode_array(obj.getvalue())
    with pytest.raises(ProtocolError, match="not a valid .npy"):
        decode_array(pickle.dumps(np.zeros(3)))
    # A header that claims 10^12 floats over 8 bytes of data: refused, nothing allocated.
    liar = encode_array(np.zeros(1)).replace(b"(1,)", b"(1000000000000,)")
    with pytest.raises(ProtocolError, match="truncated"):
        decode_array(liar)
    for bad in (np.array(["text"]), np.zeros(2, dtype=[("a", "f4")])):
        buf = io.BytesIO()
        np.save(buf, bad)
        with pytest.raises(ProtocolError, match="dtype"):
            decode_array(buf.getvalue())
    with pytest.raises(ValueError):
        encode_array(np.array([object()]))


def test_absurd_lengths_are_refused_unread_and_the_stream_resyncs():
    good = frame_bytes({"type": "cancel", "id": 1})
    huge_header = MAGIC + struct.pack(">II", 2**32 - 1, 0)
    huge_part = MAGIC + struct.pack(">II", 10, 1) + struct.pack(">Q", 2**62)
    too_many = MAGIC + struct.pack(">II", 10, 10**6)

    class NoBigReads(io.BytesIO):
        def read1(self, n=-1):  # a reader that trusted the length would ask for gigabytes
            assert n <= 1 << 20
            return super().read1(n)

    stream = NoBigReads(huge_header + good + huge_part + good + too_many + good)
    reader = FrameReader(stream)
    for message in ("header length", "over the limit", "parts"):
        with pytest.raises(FrameError, match=message):
            reader.read()
        assert reader.read().header == {"type": "cancel", "id": 1}
    assert reader.read() is None


def test_garbage_and_truncation():
    good = frame_bytes({"type": "cancel", "id": 2})
    reader = FrameReader(io.BytesIO(b"Welcome to the GPU box!\n" + good + good[:-3]))
    with pytest.raises(FrameError, match="skipped 24 bytes"):
        reader.read()
    assert reader.read().id == 2
    with pytest.raises(TruncatedFrame):
        reader.read()
    # A header that is not JSON: the reader looks for the next frame inside what it read.
    bad_json = MAGIC + struct.pack(">II", 5, 0) + b"{nope"
    reader = FrameReader(io.BytesIO(bad_json + good))
    with pytest.raises(FrameError, match="JSON"):
        reader.read()
    assert reader.read().id == 2
    small = FrameReader(io.BytesIO(frame_bytes({"type": "x"}, {"a": np.zeros(100)}) + good),
                        Limits(frame=500))
    with pytest.raises(FrameError, match="limit"):
        small.read()
    assert small.read().id == 2


# --- the server, fed by hand ---------------------------------------------------------------------
@pytest.fixture
def raw_session():
    server = PipeServer(FakeEngine())
    client = server.raw()
    assert client.hello.type == "hello" and client.hello.header["protocol"] == 1
    client.greet()
    client.send({"type": "request", "id": 1, "method": "open", "params": {}})
    assert client.until(1)[-1].type == "result"
    yield server, client
    client.wfile.close()
    server.thread.join(5)


def image_request(rid: int, image=None, **params) -> tuple[dict, dict]:
    params = {"question": "Is there a red circle?", "max_new_tokens": 4, **params}
    return ({"type": "request", "id": rid, "method": "analyze", "params": params},
            {"image": make_image(32) if image is None else image})


def test_hostile_input_is_refused_with_error_frames_and_the_server_keeps_serving(raw_session):
    server, c = raw_session
    obj = io.BytesIO()
    np.save(obj, np.array([{"x": 1}], dtype=object), allow_pickle=True)
    cases = [
        # (what to send, error kind, words in the message)
        (frame_bytes({"type": "request", "id": 10, "method": "rm_rf", "params": {}}),
         "method", "unknown method"),
        (frame_bytes(*image_request(11, max_new_tokens="5")), "input", "max_new_tokens"),
        (frame_bytes(*image_request(12, question=3)), "input", "question"),
        (frame_bytes(*image_request(13, cam="yes")), "input", "cam"),
        (frame_bytes(*image_request(14, image=np.zeros((8, 8), np.float32))), "input", "image"),
        (frame_bytes({"type": "request", "id": 15, "method": "analyze", "params": []}),
         "input", "params"),
        (frame_bytes({"type": "request", "id": 16, "method": "truncate",
                      "params": {"key": "a999", "layer": 1}}), "unknown_analysis", "a999"),
        (frame_bytes({"type": "request", "id": 17, "method": "truncate",
                      "params": {"key": "a1", "layer": True}}), "input", "layer"),
        (frame_bytes({"type": "request", "id": 18, "method": "sweep",
                      "params": {"analysis": {"question": "x"}}},
                     {"image": make_image(8)}), "input", "bad analysis"),
        (raw_frame({"type": "request", "id": 19, "method": "analyze",
                    "params": {"question": "q"}, "parts": ["image"]}, [obj.getvalue()]),
         "protocol", "pickled"),
        (raw_frame({"type": "request", "id": 20, "method": "analyze",
                    "params": {"question": "q"}, "parts": ["image"]},
                   [pickle.dumps({"image": 1})]), "protocol", "not a valid .npy"),
        (raw_frame({"type": "request", "id": 21, "method": "analyze",
                    "params": {"question": "q"}, "parts": ["image"]},
                   [encode_array(make_image(8))[:-10]]), "protocol", "truncated"),
        (MAGIC + struct.pack(">II", 2**31, 0), "protocol", "header length"),
        (MAGIC + struct.pack(">II", 2, 1) + struct.pack(">Q", 2**63), "protocol", "limit"),
        (b"\x00\xffgarbage" * 10, "protocol", "not a flowtui frame"),
        (raw_frame([1, 2], []), "protocol", "JSON object"),
        (MAGIC + struct.pack(">II", 200_000, 0) + b"[" * 100_000 + b"]" * 100_000,
         "protocol", "not UTF-8 JSON"),
        (frame_bytes({"type": "launch", "id": 22}), "protocol", "unknown message type"),
        (frame_bytes({"type": "request", "method": "analyze"}), "protocol", "integer 'id'"),
    ]
    for i, (data, kind, words) in enumerate(cases):
        c.write(data)
        frame = c.read()
        assert frame.type == "error", (kind, frame.header)
        assert frame.header["kind"] == kind and words in frame.header["message"], frame.header
        assert "\n" not in frame.header["message"]
        # Still serving: a real request answers (after a bad length, its frame is where the
        # server finds its footing again).
        c.send(*image_request(100 + i))
        assert c.until(100 + i)[-1].type == "result"
    # A frame cut off by the end of the stream: one last error, then the session ends.
    c.write(frame_bytes(*image_request(31))[:-100])
    c.wfile.close()
    frame = c.read()
    assert frame.type == "error" and "ended inside a frame" in frame.header["message"]
    server.thread.join(5)
    assert not server.thread.is_alive()


def test_hello_first_and_versions_checked():
    server = PipeServer(FakeEngine())
    c = server.raw()
    c.send({"type": "request", "id": 1, "method": "open", "params": {}})
    assert c.read().header["message"] == "the first message must be hello"
    c.greet(protocol=999)
    err = c.read()
    assert err.header["kind"] == "version"
    assert "protocol 999" in err.header["message"] and "0.1.0" in err.header["message"]
    server.thread.join(5)
    assert not server.thread.is_alive()  # a mismatch ends the session


# --- the client over pipes -----------------------------------------------------------------------
def test_remote_fake_engine_matches_local_with_events_in_order():
    local, served = FakeEngine(), FakeEngine()
    engine = PipeServer(served).engine()
    assert engine.info == served.info and engine.location == "pipe"
    events: dict[str, list] = {"local": [], "remote": []}
    results = {}
    for name, e in (("local", local), ("remote", engine)):
        log = events[name]
        a = e.analyze(make_image(96), "Is there a red circle?", progress=log.append)
        run = e.truncate(a, 1, on_token=lambda t, log=log: log.append(("token", t)),
                         progress=log.append)
        sweep = e.sweep(a, progress=log.append)
        results[name] = (a, run, sweep)
    assert events["remote"] == events["local"]
    assert [p.done for p in events["remote"] if isinstance(p, Progress) and p.stage == "sweep"] \
        == list(range(10))
    (a, run, sweep), (b, run2, sweep2) = results["local"], results["remote"]
    assert_same_analysis(a, b)
    assert same_run(run) == same_run(run2) and same_sweep(sweep) == same_sweep(sweep2)
    assert b.cliff_layer == 3 and b.truncations[-1].answer == "No."


def test_cancel_stops_the_server_side_work():
    served = FakeEngine(num_layers=60, delay=0.05)
    server = PipeServer(served)
    engine = server.engine()
    a = engine.analyze(make_image(), "q")
    seen: list[Progress] = []
    start = time.perf_counter()
    with pytest.raises(Cancelled):
        engine.sweep(a, progress=seen.append, cancel=lambda: len(seen) >= 3)
    assert time.perf_counter() - start < 2.5  # 61 steps would take 3 s
    deadline = time.time() + 3
    while server.session.running and time.time() < deadline:
        time.sleep(0.02)
    assert not server.session.running  # the server stopped the sweep
    assert a.sweep_same is None  # a cancelled sweep leaves the analysis as it was
    # A callback that raises cancels too, and that exception is what the caller gets.
    class Stop(Exception):
        pass

    def on_token(text):
        raise Stop(text)

    with pytest.raises(Stop):
        engine.truncate(a, 0, on_token=on_token)
    run = engine.truncate(a, 5)  # the connection is fine afterwards
    assert run.answer == "Yes." and len(a.truncations) == 1


def test_dropped_connection_mid_sweep_keeps_the_analysis_and_a_new_one_reruns():
    server = PipeServer(FakeEngine(num_layers=30, delay=0.05))
    engine = server.engine()
    a = engine.analyze(make_image(), "q")
    engine.truncate(a, 1)

    def drop(p):
        if p.stage == "sweep" and p.done == 2:
            server._server_out.close()  # the link goes down

    with pytest.raises(ConnectionLost, match="connection to pipe lost"):
        engine.sweep(a, progress=drop)
    assert a.sweep_same is None and len(a.truncations) == 1
    with pytest.raises(ConnectionLost):
        engine.truncate(a, 2)
    again = PipeServer(FakeEngine(num_layers=30)).engine()  # reconnect: the analysis is sent
    run = again.truncate(a, 2)
    assert run.layer == 2 and len(a.truncations) == 2


def test_server_side_failures_are_one_line_errors_and_the_session_goes_on():
    failures: list[BaseException] = [MemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
                                      RuntimeError("boom\nsecond line"),
                                      InputError("the question is empty")]

    class Failing(FakeEngine):
        def analyze(self, *args, **kwargs):
            raise failures.pop(0)

    def load(model=None, **_kw):
        if model == "missing":
            raise ModelLoadError("model 'missing' not found in the Hugging Face cache")
        return Failing()

    with pytest.raises(ModelLoadError, match=r"^model 'missing' not found.*\(on pipe\)$"):
        PipeServer(load=load).engine("missing")
    raw = PipeServer(load=load).raw()  # a failed load leaves the session open for another
    raw.greet()
    raw.send({"type": "request", "id": 1, "method": "open", "params": {"model": "missing"}})
    assert raw.until(1)[-1].header["kind"] == "model"
    raw.send({"type": "request", "id": 2, "method": "open", "params": {}})
    assert raw.until(2)[-1].type == "result"

    engine = PipeServer(load=load).engine()
    with pytest.raises(RemoteError, match="out of memory on the server") as exc:
        engine.analyze(make_image(), "q")
    assert exc.value.kind == "oom"
    with pytest.raises(RemoteError, match=r"^RuntimeError: boom \(on pipe\)$"):
        engine.analyze(make_image(), "q")
    with pytest.raises(InputError, match="^the question is empty$"):
        engine.analyze(make_image(), "q")
    assert engine.truncate(make_analysis(), 3).same  # and the session goes on


def test_results_are_exact_for_a_large_analysis():
    """A LLaVA-7B-sized analysis crosses the pipe bit for bit (the bench times this)."""
    big = make_analysis(num_layers=32, num_heads=32, grid=(24, 24), image_size=336)

    class Big(FakeEngine):
        def analyze(self, image, question, max_new_tokens=32, progress=None, cam=True,
                    self_check=True, per_token=False):
            return big

    engine = PipeServer(Big()).engine()
    got = engine.analyze(big.image, big.question)
    assert_same_analysis(big, got)
    # Several views, regions with NaN (a row-newline token), no single grid: exact too, and
    # sent back in full for a rerun.
    big = make_analysis(layout="tiles")
    got = engine.analyze(big.image, big.question)
    assert_same_analysis(big, got)
    assert np.isnan(got.token_regions).any() and len(got.views) > 1 and got.image_grid is None
    assert engine.truncate(make_analysis(layout="tiles"), 5).same


def test_frames_from_many_threads_do_not_interleave():
    buf = io.BytesIO()
    writer = FrameWriter(buf)
    threads = [threading.Thread(target=lambda i=i: [writer.send({"type": "token", "id": i},
                                                                {"x": np.full(5000, i)})
                                                    for _ in range(20)]) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    reader = FrameReader(io.BytesIO(buf.getvalue()))
    frames: list[Frame] = []
    while (f := reader.read()) is not None:
        frames.append(f)
    assert len(frames) == 80 and all((f.parts["x"] == f.id).all() for f in frames)
