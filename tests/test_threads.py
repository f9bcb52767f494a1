"""The threads scheduler's pool: model thread, quiet workers on an idle machine, rescue."""

from __future__ import annotations

import os
import sys
import threading
import time

import pytest

from geoseg.inference import threads
from geoseg.inference.threads import ModelPool, model_pool, on_model_thread

linux = pytest.mark.skipif(
    sys.platform != "linux", reason="thread priorities are per thread on Linux"
)


def _nice() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def _where() -> tuple[str, int]:
    return threading.current_thread().name, _nice()


@pytest.fixture
def fast(monkeypatch):
    """Sample the foreign load every 20 ms; ``load`` sets what the samples say."""
    load = {"cores": 0.0}
    monkeypatch.setattr(threads, "SAMPLE_SECONDS", 0.02)
    monkeypatch.setattr(threads.ForeignLoad, "sample", lambda self: load["cores"])
    return load


def _wait_for(pool: ModelPool, mode: str, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while pool.mode != mode and time.monotonic() < end:
        time.sleep(0.01)
    assert pool.mode == mode


def test_model_calls_run_on_the_model_thread_and_errors_come_back():
    base = _nice()
    with model_pool(2) as pool:
        name, nice = pool.submit(on_model_thread, _where).result()
        assert name == "geoseg-model" and nice == base
        # a task's own work runs on a worker, less urgent than the model
        wname, wnice = pool.submit(_where).result()
        assert wname.startswith("geoseg-worker")
        if sys.platform == "linux":
            assert wnice >= min(19, base + threads.SAFE_NICENESS)
        # on the model thread itself a call runs directly (no deadlock)
        assert pool.submit(on_model_thread, on_model_thread, lambda: 7).result() == 7
        with pytest.raises(ZeroDivisionError):
            pool.submit(on_model_thread, lambda: 1 / 0).result()
        with pytest.raises(KeyError):
            pool.submit(lambda: {}["x"]).result()
    assert not pool.model.is_alive()
    assert on_model_thread(_where)[0] == threading.current_thread().name  # no pool: here
    with pytest.raises(RuntimeError, match="shutdown"):
        pool.submit(_where)


@linux
def test_idle_machine_makes_workers_quiet_then_starving_model_rescues(fast):
    base = _nice()
    with model_pool(2) as pool:
        # before the model's first call the workers read its first input: they stay +10
        time.sleep(threads.STARVED_SECONDS + 0.2)
        assert pool.mode == "safe"
        pool.submit(on_model_thread, _where).result()
        _wait_for(pool, "quiet")  # no other load: workers go to nice 19 at their next task
        name, nice = pool.submit(_where).result()
        assert name.startswith("geoseg-worker") and nice == 19
        # the model waits for input longer than allowed -> rescue threads at nice +10
        time.sleep(threads.STARVED_SECONDS + 0.2)
        _wait_for(pool, "rescued")
        names = {pool.submit(_where).result() for _ in range(6)}
        assert {n.rsplit("-", 1)[0] for n, _ in names} == {"geoseg-rescue"}
        assert {p for _, p in names} == {min(19, base + threads.SAFE_NICENESS)}
        assert pool.submit(on_model_thread, _where).result() == ("geoseg-model", base)
    assert not any(t.is_alive() for t in pool._workers)


@linux
def test_busy_machine_keeps_workers_at_plus_ten(fast):
    fast["cores"] = 1.5  # other processes keep 1.5 of our cores busy
    base = _nice()
    with model_pool(2) as pool:
        time.sleep(0.2)
        assert pool.mode == "safe"
        _, nice = pool.submit(_where).result()
        assert nice == min(19, base + threads.SAFE_NICENESS)


@linux
def test_load_arriving_while_quiet_rescues(fast):
    with model_pool(1) as pool:
        pool.call(time.sleep, 0.01)  # the model has started
        _wait_for(pool, "quiet")
        fast["cores"] = 1.0
        # keep the model fed, so that only the load can trigger the rescue
        end = time.monotonic() + 5
        while pool.mode != "rescued" and time.monotonic() < end:
            pool.call(time.sleep, 0.01)
        assert pool.mode == "rescued"


def test_shutdown_cancels_queued_tasks_and_waits_for_running_ones():
    started, release = threading.Event(), threading.Event()
    done: list[int] = []

    def slow() -> None:
        started.set()
        release.wait(5)
        done.append(1)

    pool = ModelPool(1)
    running = pool.submit(slow)
    started.wait(5)
    queued = pool.submit(done.append, 2)
    threading.Timer(0.1, release.set).start()
    pool.shutdown(wait=True, cancel_futures=True)
    assert running.done() and not running.cancelled()
    assert queued.cancelled() and done == [1]


def test_foreign_load_sample_is_a_core_count():
    load = threads.ForeignLoad()
    busy_until = time.monotonic() + 0.3
    while time.monotonic() < busy_until:  # our own work is not foreign load
        pass
    value = load.sample()
    if sys.platform == "linux":
        assert value is not None and 0.0 <= value <= len(os.sched_getaffinity(0))


def test_a_failing_load_probe_never_stops_the_model_thread(monkeypatch):
    def broken(self):
        raise ValueError("unreadable /proc/stat")

    monkeypatch.setattr(threads, "SAMPLE_SECONDS", 0.01)
    monkeypatch.setattr(threads.ForeignLoad, "sample", broken)
    with model_pool(1) as pool:
        for _ in range(5):
            time.sleep(0.02)
            assert pool.submit(on_model_thread, _where).result(timeout=5)[0] == "geoseg-model"
        assert pool.mode == "safe" and pool.model.is_alive()


def test_prepare_runs_on_the_model_thread_and_is_not_a_model_call(fast):
    fast["cores"] = 0.0  # an idle machine: the workers would go quiet after a model call
    with model_pool(2) as pool:
        started = threading.Event()
        release = threading.Event()

        def load():
            started.set()
            release.wait(5)
            return threading.current_thread().name

        future = pool.prepare(load)
        assert started.wait(5)
        time.sleep(0.1)
        assert pool.mode == "safe"  # preparing is not a model call: nobody goes quiet
        assert not future.done()
        release.set()
        assert future.result(5) == "geoseg-model"
        # a failing preparation stays in its future; the model thread keeps working
        bad = pool.prepare(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            bad.result(5)
        assert pool.call(lambda: threading.current_thread().name) == "geoseg-model"


def test_predict_loads_the_model_while_the_first_batch_is_read(tmp_path, monkeypatch):
    """The runner is built on the model thread, started before the first batch's reads
    are done (so a model's load, a GPU's start-up, overlaps the reading)."""
    from _inference_helpers import RGB, tiny_checkpoint

    from geoseg.inference import backends, predict
    from geoseg.io.mosaic import Mosaic

    events: list[tuple[str, float, str]] = []
    init, read_many = backends.Runner.__init__, Mosaic.read_many

    def runner_init(self, spec):
        events.append(("load", time.perf_counter(), threading.current_thread().name))
        time.sleep(0.3)  # a slow model load
        init(self, spec)

    def reads(self, strips):
        out = read_many(self, strips)
        events.append(("read", time.perf_counter(), threading.current_thread().name))
        return out

    monkeypatch.setattr(backends.Runner, "__init__", runner_init)
    monkeypatch.setattr(Mosaic, "read_many", reads)
    ckpt = tiny_checkpoint(tmp_path / "fresh.safetensors", seed=11)  # a runner not cached
    predict(ckpt, RGB, tmp_path / "o.tif", backend="torch", progress=False, tile_size=64,
            scheduler="threads")  # fmt: skip
    loads = [e for e in events if e[0] == "load"]
    first_read = min(t for kind, t, _ in events if kind == "read")
    assert len(loads) == 1 and loads[0][2] == "geoseg-model"
    assert loads[0][1] < first_read


def test_preparing_the_runner_while_a_batch_asks_for_it_does_not_deadlock(monkeypatch):
    """A batch asks for the runner while the model thread is about to prepare it: one
    runner is built, no thread waits for another that waits for it (found by CI)."""
    from geoseg.inference import backends

    built = []

    class FakeRunner:
        def __init__(self, spec):
            built.append(threading.current_thread().name)

    monkeypatch.setattr(backends, "Runner", FakeRunner)
    spec = backends.RunnerSpec("deadlock-test", "torch", "fp32", "cpu", 64)
    monkeypatch.setattr(backends, "_RUNNERS", {})  # no runner of another test
    busy = threading.Event()
    pool = ModelPool(2)
    monkeypatch.setattr(threads, "_POOL", pool)  # as model_pool() does
    try:
        pool.prepare(lambda: busy.wait(5) and time.sleep(0.2))  # the model thread is busy
        pool.prepare(backends.get_runner, spec)  # ... then prepares the runner
        batch = pool.submit(backends.get_runner, spec)  # a batch asks for it meanwhile
        time.sleep(0.1)
        busy.set()
        runner = batch.result(timeout=10)  # (a deadlock: TimeoutError, not a hang)
    finally:
        pool.shutdown(wait=False)
    assert isinstance(runner, FakeRunner)
    assert built == ["geoseg-model"]
    backends._RUNNERS.pop(spec, None)
