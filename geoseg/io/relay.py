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

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        # (also in a forked child: the parent's other threads, and their pieces, are gone)
        self._cond = threading.Condition()
        self._queue: deque[_Piece[Any]] = deque()

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
                if not self._queue:  # own pieces are being read by other threads
                    cond.wait()
                    continue
                piece = self._queue.popleft()
            try:
                piece.result = piece.fn()
            except BaseException as exc:  # handed to the owner (also KeyboardInterrupt)
                piece.error = exc
            finally:
                with cond:
                    piece.done = True
                    cond.notify_all()
        for p in pieces:
            if p.error is not None:
                raise p.error
        return [p.result for p in pieces]  # type: ignore[misc]


#: The process's relay (threads of one process share it; each process has its own).
RELAY = ReadRelay()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=RELAY._reset)
