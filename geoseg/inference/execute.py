r"""Running a prediction graph: local Dask schedulers or a distributed cluster.

Blocks are written by the caller's process as soon as they finish (a Dask callback or
``as_completed``), so a block's file is short-lived and memory does not build up.
Failures of the executor are turned into clear :class:`~geoseg.errors.SchedulerError`\ s.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

from geoseg.errors import GeosegError, SchedulerError
from geoseg.inference.checks import check_not_empty
from geoseg.inference.resume import ResumeStore
from geoseg.inference.threads import model_pool
from geoseg.io.cog import BlockWriter


def execute_graph(
    dsk: dict[Any, Any],
    keys: list[Any],
    *,
    writer: BlockWriter,
    client: Any,
    scheduler: Any,
    workers: int | None,
    progress: bool,
    store: ResumeStore | None = None,
    valid_before: int = 0,
    prepare: Callable[[], Any] | None = None,
) -> None:
    """Run the graph, writing each block as soon as it is done.

    With a resume ``store``, finished blocks stay in its folder (``valid_before``: valid
    blocks already written from it). ``prepare`` (loading the model) runs on the model
    thread of the threads scheduler while the first batch is read.
    """
    from tqdm.auto import tqdm

    bar = tqdm(total=len(keys), unit="block", disable=not progress, desc="geoseg predict")
    t0 = time.perf_counter()
    npx = 0

    valid_blocks = valid_before

    def done(result: tuple[Any, str | None]) -> None:
        nonlocal npx, valid_blocks
        block, path = result
        valid_blocks += path is not None
        writer.write(block, path, keep=store is not None)
        if store is not None and path is None:
            store.record_empty(block)
        npx += block.height * block.width
        bar.update(1)
        dt = time.perf_counter() - t0
        if dt > 0:
            bar.set_postfix_str(f"{npx / dt / 1e6:.2f} Mpx/s", refresh=False)

    try:
        if client is not None:
            run_distributed(dsk, keys, client, done)
        else:
            run_local(dsk, keys, scheduler, workers, done, prepare)
    finally:
        bar.close()
    check_not_empty(valid_blocks)


def run_local(
    dsk: dict[Any, Any],
    keys: list[Any],
    scheduler: str,
    workers: int | None,
    done: Callable[[Any], None],
    prepare: Callable[[], Any] | None = None,
) -> None:
    """Compute ``keys`` of ``dsk`` with a local scheduler, calling ``done`` per key."""
    import dask

    wanted = set(keys)

    def posttask(key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if key in wanted:
            done(result)

    import dask.multiprocessing
    import dask.threaded

    get: Callable[..., Any] = dask.get
    kwargs: dict[str, Any] = {"callbacks": [(None, None, None, posttask, None)]}
    pool: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
    if scheduler == "threads":
        get = dask.threaded.get
        # Our own pool, shut down with wait: when a block fails (or writing one does),
        # dask raises at once while other threads are still writing their blocks; with
        # dask's shared default pool those files would land after the work folder is
        # removed. Model calls run on its model thread, reading and blending around them
        # (geoseg.inference.threads).
        pool = model_pool(workers or os.cpu_count() or 1)
    elif scheduler == "processes":
        get = dask.multiprocessing.get  # its own pool, shut down with wait
        kwargs["num_workers"] = workers
    from concurrent.futures.process import BrokenProcessPool

    try:
        with pool as executor:
            if executor is not None:
                kwargs["pool"] = executor
                if prepare is not None and keys:
                    executor.prepare(prepare)  # the model loads while batches are read
            get(dsk, keys, **kwargs)
    except BrokenProcessPool as exc:
        raise SchedulerError(
            "a worker process of the 'processes' scheduler died (killed, or out of memory); "
            "no output was written. Run again, with a smaller batch_size or block_size if "
            "memory is short, or with scheduler='threads'"
        ) from exc


def run_distributed(
    dsk: dict[Any, Any], keys: list[Any], client: Any, done: Callable[[Any], None]
) -> None:
    """Compute ``keys`` of ``dsk`` on a distributed cluster, calling ``done`` per key."""
    from distributed import as_completed

    futures = client.get(dsk, keys, sync=False, retries=2)
    try:
        # loop=: a Client made from an address is not the default client, and
        # as_completed otherwise looks for one ("No clients found").
        for fut in as_completed(futures, loop=client.loop):
            try:
                result = fut.result()
            except GeosegError:
                raise
            except Exception as exc:
                name = type(exc).__name__
                raise SchedulerError(
                    f"the distributed run failed ({name}: {str(exc)[:300]}); no output was "
                    "written. Workers that keep dying usually ran out of memory: lower "
                    "batch_size or block_size"
                ) from exc
            done(result)
            fut.release()
    finally:
        for f in futures:
            f.cancel()
