"""Reads shared by the threads that need them, oldest request first.

Every batch task of a prediction reads its windows (one GDAL read per source file piece)
before its model call. Run the usual way, each task reads its own pieces alone: the
tasks that start together (all of them, on a mosaic of a few batches) finish reading
together, and the model waits for all of them before its first call. On an H200 with 16
cores a 2.3 s run of 31.2 Mpx started ten batches together, whose reads took 5.7
thread-seconds: the GPU idled for about 0.6 s before its first call (by those counts).

:class:`ReadRelay` keeps one first-in-first-out queue of pieces per process. A task
hands it all the pieces of its batch at once and then reads pieces from the head of the
queue, whoever's they are, until its own are done: every task that is reading works on
the oldest batch first, so that batch is ready after a fraction of the time, the next
one after it, and the model starts early and keeps going while the later batches are
read. The threads are the caller's own (the Dask workers, with the priorities the
worker pool gives them): no thread is added and none waits for a thread that may never
come, since a task waits only for pieces another thread is already reading.

At most as many pieces are read at once as the process has cores (:attr:`ReadRelay.limit`):
the other requesting threads wait. With more reading threads than cores (``--workers``
above the cores, or many threads per distributed worker), every thread would otherwise
read, time-sliced: the oldest batch's pieces each got a fraction of a core and that
batch took as long as everything in flight. Measured on 2 cores
(``benchmarks/relay_limit.py``, alternating in one process, 31.2 Mpx in batches of 16,
``benchmarks/results/relay_limit.log``): with 17 threads and a stand-in model that waits
like a GPU, the model's first call came after 0.34-0.39 s instead of 0.64-0.69 s and runs
took 3.58 s instead of 3.81 (medians of 6); with the default 3 threads, or the real model
on the CPU, nothing changed (3.40 / 3.38 s; 10.95 / 10.91 s). The bits read are the same.

Written by hand: ``concurrent.futures`` executors run work on their own threads (here
that would bypass the pool's priorities, and a worker waiting on them could wait for a
piece queued behind others' work); Dask's scheduler knows no order inside a task.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class _Piece(Generic[T]):
    __slots__ = ("done", "error", "fn", "result")

    def __init__(self, fn: Callable[[], T]) -> None:
        self.fn = fn
        self.done = False
        self.result: T | None = None
        self.error: BaseException | None = None


class ReadRelay:
    """A process-wide queue of reads, each run by whichever requesting thread is free."""

    def __init__(self, limit: int | None = None) -> None:
        #: most pieces read at once (default: the cores this process may use)
        self.limit = limit or _usable_cores()
        self._reset()

    def _reset(self) -> None:
        # (also in a forked child: the parent's other threads, and their pieces, are gone)
        self._cond = threading.Condition()
        self._queue: deque[_Piece[Any]] = deque()
        self._reading = 0

    def run(self, fns: Sequence[Callable[[], T]]) -> list[T]:
        """Results of ``fns`` in order, read by this thread and others waiting here.

        The first exception of ``fns`` (in their order) is raised once all of them are
        done; a piece of another thread that fails is handed to that thread.
        """
        pieces = [_Piece(fn) for fn in fns]
        cond = self._cond
        with cond:
            self._queue.extend(pieces)
        while True:
            with cond:
                if all(p.done for p in pieces):
                    break
                if not self._queue or self._reading >= self.limit:
                    cond.wait()  # own pieces are being read, or enough threads read
                    continue
                piece = self._queue.popleft()
                self._reading += 1
            try:
                piece.result = piece.fn()
            except BaseException as exc:  # handed to the owner (also KeyboardInterrupt)
                piece.error = exc
            finally:
                with cond:
                    piece.done = True
                    self._reading -= 1
                    cond.notify_all()
        for p in pieces:
            if p.error is not None:
                raise p.error
        return [p.result for p in pieces]  # type: ignore[misc]


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


#: The process's relay (threads of one process share it; each process has its own).
RELAY = ReadRelay()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=RELAY._reset)
