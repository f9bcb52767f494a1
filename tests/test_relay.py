"""The read relay: reads shared by the threads that need them, oldest request first."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from geoseg.errors import InputFileError
from geoseg.io.grid import PixelWindow
from geoseg.io.mosaic import open_mosaic
from geoseg.io.relay import ReadRelay
from geoseg.testing import write_raster


def test_results_in_order_and_errors_to_their_owner():
    relay = ReadRelay()
    assert relay.run([lambda i=i: i * i for i in range(7)]) == [0, 1, 4, 9, 16, 25, 36]
    assert relay.run([]) == []

    def boom(msg):
        raise ValueError(msg)

    with pytest.raises(ValueError, match="second"):
        relay.run([lambda: 1, lambda: boom("second"), lambda: boom("third")])
    assert relay.run([lambda: "after"]) == ["after"]  # the relay is still usable


def test_the_oldest_request_is_read_first_by_every_waiting_thread():
    """Two requests of 4 slow pieces each: B's thread helps with A's pieces before its
    own, so A is done in about half the time it would take alone and B's pieces start
    only once every piece of A has started."""
    relay = ReadRelay()
    started: list[str] = []
    a_running = threading.Event()
    lock = threading.Lock()

    def piece(name: str, seconds: float = 0.1):
        def fn():
            with lock:
                started.append(name)
            a_running.set()
            time.sleep(seconds)
            return name

        return fn

    done: dict[str, float] = {}
    results: dict[str, list[str]] = {}

    def request(tag: str) -> None:
        results[tag] = relay.run([piece(f"{tag}{i}") for i in range(4)])
        done[tag] = time.perf_counter()

    t0 = time.perf_counter()
    ta = threading.Thread(target=request, args=("a",))
    ta.start()
    assert a_running.wait(5)
    tb = threading.Thread(target=request, args=("b",))
    tb.start()
    ta.join(10)
    tb.join(10)
    assert results == {"a": ["a0", "a1", "a2", "a3"], "b": ["b0", "b1", "b2", "b3"]}
    assert started[:4] == ["a0", "a1", "a2", "a3"]
    assert sorted(started[4:]) == ["b0", "b1", "b2", "b3"]
    # two threads on A's 4 pieces of 0.1 s: done well before 0.4 s (alone)
    assert done["a"] - t0 < 0.35
    assert done["a"] < done["b"]


def test_no_more_pieces_are_read_at_once_than_the_limit():
    """Eight threads with requests of three pieces each, limit 2: at most two pieces run
    at any moment, every result reaches its owner, and the first request is done after
    its own pieces' time (the readers are not shared with the seven others)."""
    relay = ReadRelay(limit=2)
    lock = threading.Lock()
    running = [0]
    peak = [0]

    def piece(value: int):
        def fn():
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
            time.sleep(0.02)
            with lock:
                running[0] -= 1
            return value

        return fn

    results: dict[int, list[int]] = {}
    first_done: list[float] = []
    go = threading.Barrier(8)

    def request(k: int) -> None:
        go.wait()
        results[k] = relay.run([piece(10 * k + i) for i in range(3)])
        first_done.append(time.perf_counter())

    threads = [threading.Thread(target=request, args=(k,)) for k in range(8)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert results == {k: [10 * k, 10 * k + 1, 10 * k + 2] for k in range(8)}
    assert peak[0] == 2
    # 24 pieces of 20 ms, two at a time: about 0.24 s in all; the first request is done
    # after its own 3 pieces (two readers: ~0.04 s), not near the end (without the limit
    # all 8 requests read at once and end together)
    first, last = min(first_done) - t0, max(first_done) - t0
    assert last > 0.2
    assert first < 0.5 * last
    assert ReadRelay().limit >= 1


def test_a_failing_piece_of_another_request_reaches_its_owner_only():
    relay = ReadRelay()
    gate = threading.Event()
    out: dict[str, object] = {}

    def slow_ok():
        gate.set()
        time.sleep(0.1)
        return "ok"

    def bad():
        raise InputFileError("cannot read input 'x.tif'")

    def owner():
        try:
            relay.run([slow_ok, bad])
        except InputFileError as exc:
            out["owner"] = exc

    t = threading.Thread(target=owner)
    t.start()
    assert gate.wait(5)
    # this thread reads the owner's failing piece (the head of the queue), then its own
    out["helper"] = relay.run([lambda: "mine"])
    t.join(5)
    assert out["helper"] == ["mine"]
    assert isinstance(out["owner"], InputFileError)


def _overlapping(tmp_path: Path) -> list[Path]:
    """Three single-band tiles on one grid: the first covers everything but has a
    no-data hole (so the second fills it), the third meets only the right edge."""
    rng = np.random.default_rng(3)
    specs = [(0, 0, 120, 100), (20, 10, 80, 60), (70, 90, 50, 40)]  # row, col, h, w
    paths = []
    for i, (r, c, h, w) in enumerate(specs):
        arr = rng.integers(1, 250, (3, h, w), dtype=np.uint8)
        if i == 0:
            arr[:, 30:50, 20:45] = 0  # the hole
        transform = from_origin(500000 + 10 * c, 4000000 - 10 * r, 10, 10)
        paths.append(write_raster(tmp_path / f"o{i}.tif", arr, crs="EPSG:32617",
                                  transform=transform, nodata=0))  # fmt: skip
    return paths


def test_read_many_equals_read_window_by_window(tmp_path):
    mosaic = open_mosaic(_overlapping(tmp_path), model_bands=["R", "G", "B"])
    windows = [
        PixelWindow(25, 15, 32, 40),  # inside the hole: the first tile covers, the second fills
        PixelWindow(0, 0, 16, 16),  # covered by the first tile alone
        PixelWindow(60, 80, 64, 64),  # past the grid edge, three tiles
        PixelWindow(-8, -8, 24, 24),  # before the grid origin
    ]
    many = mosaic.read_many(windows)
    for w, (data, valid) in zip(windows, many):
        ref_data, ref_valid = mosaic.read(w)
        assert np.array_equal(data, ref_data) and np.array_equal(valid, ref_valid)
    data, valid = many[0]
    assert valid.all()  # the hole filled from the second tile
    with rasterio.open(tmp_path / "o1.tif") as d:
        second = d.read(window=((5, 37), (5, 45))).astype(np.float32)
    assert np.array_equal(data[:, 5:25, 5:30], second[:, 5:25, 5:30])


def test_read_many_from_threads_equals_serial_reads(tmp_path):
    mosaic = open_mosaic(_overlapping(tmp_path), model_bands=["R", "G", "B"])
    jobs = [[PixelWindow(r, c, 40, 40) for c in range(-10, 100, 30)] for r in range(-10, 110, 20)]
    ref = [[mosaic.read(w) for w in ws] for ws in jobs]
    got: dict[int, list] = {}
    threads = [
        threading.Thread(target=lambda i=i: got.__setitem__(i, mosaic.read_many(jobs[i])))
        for i in range(len(jobs))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    for i, ws in enumerate(ref):
        for (d, v), (rd, rv) in zip(got[i], ws):
            assert np.array_equal(d, rd) and np.array_equal(v, rv)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork only")
def test_a_forked_child_gets_a_fresh_relay():
    """A child forked while the parent's relay was locked (a thread queueing pieces)
    reads through its own relay instead of waiting forever for the parent's lock."""
    from geoseg.io.relay import RELAY

    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with RELAY._cond:
            held.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    assert held.wait(5)
    pid = os.fork()
    if pid == 0:  # the child: the holding thread does not exist here
        code = 0 if RELAY.run([lambda: 41, lambda: 1]) == [41, 1] else 1
        os._exit(code)
    release.set()
    holder.join(5)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung on the parent's relay lock")
    assert os.waitstatus_to_exitcode(status) == 0
