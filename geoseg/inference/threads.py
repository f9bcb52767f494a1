"""The local threads scheduler's pool: the model on its own thread, the rest around it.

On a machine whose cores the model's own threads fill (ONNX Runtime and torch use every
core), any other thread that runs meanwhile preempts one of them, and each parallel
operator of the model then waits for its slowest thread. :class:`ModelPool` runs

* every model call on one **model thread** (:func:`on_model_thread`), as urgent as the
  thread that started the prediction; the model's own thread pool, built there,
  inherits that;
* Dask's tasks (reading, normalizing, blending) on **worker threads** that are less
  urgent: ``nice`` +10 (:data:`SAFE_NICENESS`) to begin with, and ``nice`` 19
  (:data:`QUIET_NICENESS`) once the pool has seen that no other process uses this
  process's cores (:class:`ForeignLoad`), so that they run in the moments the model
  leaves a core idle. Measured on 2 cores (256-file mosaic, 256 px windows): ~13.5 s at
  ``nice`` 19 against ~14.2 s at ``nice`` +10;
* a **rescue** when the machine gets busy: threads at ``nice`` 19 then get almost no CPU
  (the same run took 2.4x as long as at ``nice`` +10 under two busy loops). While quiet,
  the model thread adds up the time it waits for its next input and samples the other
  processes' load; once the wait exceeds :data:`STARVED_SECONDS` plus
  :data:`STARVED_FRACTION` of the quiet time, or others use :data:`BUSY_CORES` cores,
  the workers retire after their current task and new ones at ``nice`` +10 take every
  task for the rest of the run (an unprivileged thread cannot become more urgent again).

Priorities are per thread on Linux only; elsewhere every thread keeps its priority and
the pool behaves as a plain thread pool with one model thread. Written by hand because
neither Dask's nor the standard library's pools can prioritise one thread's work or
change their threads' priorities mid-run.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")

#: ``nice`` steps added to the worker threads to begin with (and to rescue threads).
SAFE_NICENESS = 10
#: ``nice`` steps added to the worker threads on a machine no other process uses
#: (capped at 19, the least urgent).
QUIET_NICENESS = 19
#: While quiet, the model may wait for input this long in total (seconds) plus
#: :data:`STARVED_FRACTION` of the quiet time before the rescue starts.
STARVED_SECONDS = 0.3
STARVED_FRACTION = 0.03
#: Other processes using at most this many of our cores let the workers go quiet...
QUIET_CORES = 0.25
#: ... and at least this many (while quiet) start the rescue.
BUSY_CORES = 0.5
#: Seconds between two samples of the other processes' load.
SAMPLE_SECONDS = 1.0


def lower_thread_priority(steps: int) -> None:
    """Make the calling thread ``steps`` nice values less urgent (Linux; at most 19).

    Elsewhere, or when not permitted, nothing changes.
    """
    if sys.platform != "linux":
        return
    with contextlib.suppress(OSError, AttributeError):
        tid = threading.get_native_id()
        nice = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, nice + steps))


class ForeignLoad:
    """CPU time other processes spend on this process's cores (Linux ``/proc/stat``).

    :meth:`sample` returns the average number of those cores that other processes kept
    busy since the previous sample, or None where it cannot be measured (then the pool
    never goes quiet).
    """

    def __init__(self) -> None:
        try:
            self._cpus: set[str] | None = {f"cpu{i}" for i in os.sched_getaffinity(0)}
            self._hz = os.sysconf("SC_CLK_TCK")
        except (AttributeError, ValueError, OSError):
            self._cpus = None
        self._last = self._read()

    def _read(self) -> tuple[float, float, float] | None:
        if self._cpus is None:
            return None
        try:
            with open("/proc/stat", "rb") as f:
                lines = f.read().decode("ascii", "replace").splitlines()
        except OSError:
            return None
        busy = 0
        for line in lines:
            name, _, rest = line.partition(" ")
            if name in self._cpus:
                v = [int(x) for x in rest.split()]
                busy += sum(v[:8]) - v[3] - v[4]  # all but idle and iowait
        t = os.times()
        return time.monotonic(), busy / self._hz, t.user + t.system

    def sample(self) -> float | None:
        """Cores used by other processes since the last sample (None: unknown)."""
        now, last = self._read(), self._last
        if now is None or last is None or now[0] <= last[0]:
            return None
        self._last = now
        return max(0.0, (now[1] - last[1]) - (now[2] - last[2])) / (now[0] - last[0])


@dataclass
class _Job:
    future: Future[Any]
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    #: preparation ahead of the model calls (loading it), not a model call
    prepare: bool = False

    def run(self) -> None:
        if not self.future.set_running_or_notify_cancel():
            return
        try:
            result = self.fn(*self.args, **self.kwargs)
        except BaseException as exc:  # handed to the waiting thread, as executors do
            self.future.set_exception(exc)
        else:
            self.future.set_result(result)


class ModelPool(Executor):
    """Dask's pool for a local threaded prediction (see the module docstring).

    Args:
        workers: threads for Dask's tasks.

    ``submit`` queues a Dask task; :meth:`call` runs a model call on the model thread.
    ``mode`` is ``"safe"``, ``"quiet"`` or ``"rescued"``.
    """

    def __init__(self, workers: int) -> None:
        self.workers = max(1, int(workers))
        # Dask keeps this many tasks in flight: more than the threads, so that tasks
        # stuck on starved quiet threads leave work for the rescue threads.
        self._max_workers = 2 * self.workers
        self._lock = threading.Lock()
        self._task_ready = threading.Condition(self._lock)
        self._call_ready = threading.Condition(self._lock)
        self._tasks: deque[_Job] = deque()
        self._calls: deque[_Job] = deque()
        self._closed = False
        self._model_stop = False
        self.mode = "safe"
        self._load = ForeignLoad()
        self._next_sample = time.monotonic() + SAMPLE_SECONDS / 2
        self._quiet_since = 0.0
        self._model_called = False  # the workers go quiet only once the model runs
        self.model_waited = 0.0  # seconds the model waited for input while quiet
        self._workers: list[threading.Thread] = []
        self.model = threading.Thread(target=self._model_loop, name="geoseg-model", daemon=True)
        self.model.start()  # from this thread: as urgent as the caller
        if not self._start_workers(rescue=False):
            raise RuntimeError("cannot start any worker thread")

    def _start_workers(self, *, rescue: bool) -> int:
        """Start :attr:`workers` worker (or rescue) threads; how many started."""
        name = "geoseg-rescue" if rescue else "geoseg-worker"
        started = 0
        for i in range(self.workers):
            t = threading.Thread(
                target=self._worker, args=(rescue,), name=f"{name}-{i}", daemon=True
            )
            try:
                t.start()
            except RuntimeError:  # out of threads: work with those there are
                break
            self._workers.append(t)
            started += 1
        return started

    @property
    def rescued(self) -> bool:
        """Rescue threads run the tasks (for the rest of the run)."""
        return self.mode == "rescued"

    # ------------------------------------------------------------------ Executor
    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Queue a task for the worker threads."""
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new tasks after shutdown")
            self._tasks.append(_Job(future, fn, args, kwargs))
            self._task_ready.notify()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop taking tasks; with ``wait``, return once every thread has finished."""
        with self._lock:
            self._closed = True
            if cancel_futures:
                for job in self._tasks:
                    job.future.cancel()
                self._tasks.clear()
            self._task_ready.notify_all()
        if not wait:
            return
        joined = 0  # workers first: a running task may still need the model thread
        while joined < len(self._workers):
            self._workers[joined].join()
            joined += 1
        with self._lock:
            self._model_stop = True
            self._call_ready.notify_all()
        self.model.join()

    # ------------------------------------------------------------------ model
    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on the model thread (directly when already there)."""
        if threading.get_ident() == self.model.ident:
            return fn(*args)
        return self._queue_call(_Job(Future(), fn, args, {})).result()

    def prepare(self, fn: Callable[..., T], *args: Any) -> Future[T]:
        """Queue ``fn(*args)`` on the model thread without waiting for it.

        For loading the model while the first batch is read: the first model call then
        finds it loaded. Not counted as a model call (the workers' quiet mode waits for
        one); an exception stays in the returned future (the model call that needs the
        model raises it again).
        """
        return self._queue_call(_Job(Future(), fn, args, {}, prepare=True))

    def _queue_call(self, job: _Job) -> Future[Any]:
        """Queue ``job`` for the model thread; its future."""
        with self._lock:
            self._calls.append(job)
            self._call_ready.notify()
        return job.future

    def _model_loop(self) -> None:
        while True:
            with self._lock:
                start = time.monotonic()
                while not self._calls and not self._model_stop:
                    self._call_ready.wait(SAMPLE_SECONDS / 4)
                    self._watch(time.monotonic() - start)
                if not self._calls:
                    return
                job = self._calls.popleft()
                self._model_called |= not job.prepare
                now = time.monotonic()
                self._watch(now - start)
                if self.mode == "quiet":  # (only the part of the wait spent quiet)
                    self.model_waited += min(now - start, now - self._quiet_since)
            job.run()

    def _watch(self, waiting: float) -> None:
        """Go quiet on an idle machine; rescue when quiet starves the model (lock held)."""
        if self.rescued or self._closed:
            return
        try:
            self._switch(waiting)
        except Exception:  # the model thread must never die of its watch
            pass

    def _switch(self, waiting: float) -> None:
        now = time.monotonic()
        load = None
        if now >= self._next_sample:
            self._next_sample = now + SAMPLE_SECONDS
            load = self._load.sample()
        if self.mode == "safe":
            # (before the first model call the wait is the first batch being read: going
            # quiet then would count it as starvation and rescue at once)
            if load is not None and load <= QUIET_CORES and self._model_called:
                self.mode, self._quiet_since = "quiet", now
            return
        # a wait that began before the workers went quiet counts from then on only
        quiet_for = now - self._quiet_since
        starved = self.model_waited + min(waiting, quiet_for) > (
            STARVED_SECONDS + STARVED_FRACTION * quiet_for
        )
        if starved or (load is not None and load >= BUSY_CORES):
            # started from the model thread, so as urgent as the model, then lowered;
            # they wait for this lock, so they first see the mode set below
            if self._start_workers(rescue=True):
                self.mode = "rescued"
                self._task_ready.notify_all()  # the quiet workers retire

    # ------------------------------------------------------------------ tasks
    def _worker(self, rescue: bool) -> None:
        lower_thread_priority(SAFE_NICENESS)
        quiet = False
        while True:
            with self._lock:
                while not self._closed and not self._tasks and rescue == self.rescued:
                    self._task_ready.wait()
                if rescue != self.rescued or not self._tasks:
                    return  # retired (rescue threads took over) or shut down
                job = self._tasks.popleft()
                go_quiet = self.mode == "quiet" and not quiet
            if go_quiet:
                lower_thread_priority(QUIET_NICENESS - SAFE_NICENESS)
                quiet = True
            job.run()


#: The pool of the current local threaded prediction, if any (see :func:`model_pool`).
_POOL: ModelPool | None = None


@contextlib.contextmanager
def model_pool(workers: int) -> Iterator[ModelPool]:
    """A :class:`ModelPool` for one prediction; model calls go to its model thread."""
    global _POOL
    pool = ModelPool(workers)
    previous, _POOL = _POOL, pool
    try:
        yield pool
    finally:
        _POOL = previous
        pool.shutdown(wait=True, cancel_futures=True)


def on_model_thread(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on the current prediction's model thread, or here when none."""
    pool = _POOL
    if pool is None:
        return fn(*args)
    return pool.call(fn, *args)
