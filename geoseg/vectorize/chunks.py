"""Chunk tasks (run in Dask workers) and how they are scheduled."""

from __future__ import annotations

import ctypes
import logging
import os
import sys
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np
import rasterio
import shapely
from rasterio.windows import Window
from shapely import GeometryType

from geoseg.arguments import check_int
from geoseg.errors import ConfigError, ResourceError
from geoseg.io.grid import RasterGrid
from geoseg.io.handles import gdal_cache_env
from geoseg.vectorize.clean import attributes, clean
from geoseg.vectorize.label import label_regions, sieve_classes
from geoseg.vectorize.pieces import ChunkResult, Options, PackedPieces, Pieces
from geoseg.vectorize.polygonize import (
    border_strips,
    canonicalize,
    dissolve_by,
    narrow_ids,
    polygons_from_shapes,
    shapes_ragged,
)


def read_chunk(opts: Options, r0: int, c0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Class ids and valid mask of a chunk (sieved with a halo when asked)."""
    g = opts.grid
    if opts.sieve <= 1:
        return opts.source.read(Window(c0, r0, w, h))  # type: ignore[no-any-return,unused-ignore]
    halo = opts.sieve + 1
    R0, C0 = max(r0 - halo, 0), max(c0 - halo, 0)
    R1, C1 = min(r0 + h + halo, g.height), min(c0 + w + halo, g.width)
    vals, valid = opts.source.read(Window(C0, R0, C1 - C0, R1 - R0))
    vals = sieve_classes(vals, valid, opts.sieve, opts.connectivity)
    core = (slice(r0 - R0, r0 - R0 + h), slice(c0 - C0, c0 - C0 + w))
    return vals[core], valid[core]


def label_chunk(
    opts: Options,
    vals: np.ndarray,
    keep: np.ndarray,
    box: tuple[int, int, int, int],
    sides: Sequence[str],
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, np.ndarray], bool]:
    """Regions through a label image (8-connectivity, probabilities, very large class ids).

    Returns (geometry, class id, pixels, probability sum and count per region, the region
    index of every pixel along each inner side or -1, whether geometries need collinear
    vertex removal).
    """
    r0, c0, h, w = box
    lab, cls = label_regions(vals, keep, opts.connectivity)
    n = len(cls) - 1
    pixels = np.bincount(lab.ravel(), minlength=n + 1)
    psum: np.ndarray = np.zeros(n + 1)
    pcount: np.ndarray = np.zeros(n + 1, np.int64)
    if opts.prob_path is not None and n:
        with rasterio.open(opts.prob_path) as ps:
            prob = ps.read(window=Window(c0, r0, w, h))
        lut = dict(opts.prob_index)
        band_of_label = np.array([lut.get(int(c), 0) for c in cls], np.int64)
        band = band_of_label[lab]
        v = np.take_along_axis(prob, band[None], 0)[0]
        ok = (lab > 0) & (v != 255)
        psum = np.bincount(lab[ok], weights=v[ok].astype(np.float64), minlength=n + 1)
        pcount = np.bincount(lab[ok], minlength=n + 1)
    geoms, keys = polygons_from_shapes(lab, lab > 0, (r0, c0))
    if len(geoms) == n:  # one polygon per label (always true for 4-connectivity)
        by_label = np.empty(n + 1, object)
        by_label[keys] = geoms
    else:
        by_label = dissolve_by(geoms, keys, n)
    rows = {"top": lab[0], "bottom": lab[-1], "left": lab[:, 0], "right": lab[:, -1]}
    strips = {name: rows[name].astype(np.int64) - 1 for name in sides}
    return (by_label[1:], cls[1:], pixels[1:], psum[1:], pcount[1:], strips,
            len(geoms) != n)  # fmt: skip


def chunk_task(opts: Options, index: tuple[int, int], r0: int, c0: int, h: int, w: int) -> Any:
    """Polygonize one chunk; split its regions into final ones and border pieces.

    Memory stays that of one chunk however many chunks a worker runs: reads go through a
    small GDAL block cache (GDAL's default, 5 % of RAM, kept every block the worker ever
    read: a worker's memory grew with the map), and the heap the chunk used is handed back
    to the system afterwards (:func:`trim_heap`).
    """
    with gdal_cache_env():
        res = polygonize_chunk(opts, index, r0, c0, h, w)
    trim_heap()
    return res


def polygonize_chunk(
    opts: Options, index: tuple[int, int], r0: int, c0: int, h: int, w: int
) -> ChunkResult:
    """The work of :func:`chunk_task`."""
    g = opts.grid
    vals, valid = read_chunk(opts, r0, c0, h, w)
    keep = valid if opts.keep is None else valid & np.isin(vals, opts.keep)
    sides = [
        name
        for name, inner in (
            ("top", r0 > 0),
            ("bottom", r0 + h < g.height),
            ("left", c0 > 0),
            ("right", c0 + w < g.width),
        )
        if inner
    ]
    narrow = None
    if opts.connectivity == 4 and opts.prob_path is None:
        narrow = narrow_ids(np.where(keep, vals, 0))
    if narrow is not None:
        # Fast path: GDAL polygonizes the class ids directly (one polygon per 4-connected
        # region); pixel counts are the exact areas of integer polygons and the border
        # strips come from the polygon edges on the chunk outline: no label image.
        xy, ring_off, poly_off, cls = shapes_ragged(narrow, keep, (r0, c0))
        geoms = (
            np.asarray(shapely.from_ragged_array(GeometryType.POLYGON, xy, (ring_off, poly_off)))
            if len(cls)
            else np.empty(0, object)
        )
        pixels = np.rint(shapely.area(geoms)).astype(np.int64)
        psum: np.ndarray = np.zeros(len(cls))
        pcount: np.ndarray = np.zeros(len(cls), np.int64)
        strips_idx = border_strips(xy, ring_off, poly_off, (r0, c0, h, w), sides)
        collinear = False
    else:
        geoms, cls, pixels, psum, pcount, strips_idx, collinear = label_chunk(
            opts, vals, keep, (r0, c0, h, w), sides
        )
    n = len(geoms)
    is_border = np.zeros(n + 1, bool)  # last slot collects the -1 (no region) entries
    for s in strips_idx.values():
        is_border[s] = True
    is_border = is_border[:n]
    border_ids = np.flatnonzero(is_border)
    final_ids = np.flatnonzero(~is_border)
    pos = np.full(n + 1, -1, np.int64)
    pos[border_ids] = np.arange(len(border_ids))
    strips = {k: pos[s] for k, s in strips_idx.items()}
    border = PackedPieces.pack(Pieces(geoms[border_ids], cls[border_ids], pixels[border_ids],
                                      psum[border_ids], pcount[border_ids]))  # fmt: skip
    final = Pieces(
        canonicalize(geoms[final_ids], collinear=collinear),
        cls[final_ids],
        pixels[final_ids],
        psum[final_ids],
        pcount[final_ids],
    )
    pairs = object_classes(opts, vals, keep, (r0, c0, h, w))
    seen = np.unique(np.asarray(cls, np.int64)) if opts.keep is not None else np.zeros(0, np.int64)
    if opts.collect:
        return ChunkResult(index, final, border, strips, id_classes=pairs, classes=seen)
    final, _ = clean(final, opts)
    return ChunkResult(index, attributes(final, g), border, strips, id_classes=pairs,
                       classes=seen)  # fmt: skip


def trim_heap() -> None:
    """Return the free memory of glibc's heaps to the system (no-op elsewhere).

    After a chunk (or a merge round) the memory its arrays and geometries used is free but
    stays in the process: glibc returns only the top of a heap, and a forked Dask worker
    keeps the parent's allocator settings (Dask's MALLOC_TRIM_THRESHOLD_ only reaches
    spawned workers). Without this, peak memory crept up chunk after chunk (fragmentation).
    """
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def forked_worker_heap(trim_threshold: Any) -> None:
    """Apply Dask's ``MALLOC_TRIM_THRESHOLD_`` in a forked worker (runs in the worker).

    Dask sets it in the environment of the workers it spawns (``distributed.nanny.
    pre-spawn-environ``); glibc reads it at start-up, so a forked worker keeps the parent's
    dynamic thresholds instead: arrays up to 32 MiB come from the heap and a chunk's free
    heap lingers. Setting it also fixes the mmap threshold, so large arrays are returned to
    the system when freed.
    """
    if _LIBC is not None and trim_threshold is not None:
        _LIBC.mallopt(_M_TRIM_THRESHOLD, int(trim_threshold))


_M_TRIM_THRESHOLD = -1  # glibc malloc.h


def _load_libc() -> Any:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # pragma: no cover - not glibc (musl)
        return None


_LIBC = _load_libc()


def object_classes(
    opts: Options, ids: np.ndarray, keep: np.ndarray, box: tuple[int, int, int, int]
) -> np.ndarray | None:
    """Instance maps: the (object id, class id) pairs of a chunk (None for class maps)."""
    if opts.class_source is None:
        return None
    r0, c0, h, w = box
    cls, ok = opts.class_source.read(Window(c0, r0, w, h))
    sel = keep & ok
    if not sel.any():
        return np.zeros((0, 2), np.int64)
    return np.unique(np.stack([ids[sel], cls[sel]], axis=1), axis=0)


def chunk_windows(
    grid: RasterGrid, chunk_size: int
) -> list[tuple[tuple[int, int], int, int, int, int]]:
    """``((i, j), row, col, height, width)`` of every chunk, row-major."""
    out = []
    for i, r0 in enumerate(range(0, grid.height, chunk_size)):
        for j, c0 in enumerate(range(0, grid.width, chunk_size)):
            h = min(chunk_size, grid.height - r0)
            w = min(chunk_size, grid.width - c0)
            out.append(((i, j), r0, c0, h, w))
    return out


def run_tasks(
    opts: Options,
    windows: list[tuple[tuple[int, int], int, int, int, int]],
    workers: int,
    client: Any,
    progress: bool,
) -> Generator[ChunkResult, None, None]:
    """Run the chunk tasks; serially, on a given Dask client, or on a local Dask cluster.

    At most ``2 * workers`` chunks are in flight, so memory stays bounded.
    """
    from tqdm.auto import tqdm

    bar = tqdm(total=len(windows), desc="vectorize", unit="chunk", disable=not progress)
    try:
        if client is None and (workers <= 1 or len(windows) == 1):
            for w in windows:
                yield chunk_task(opts, *w)
                bar.update()
            return
        from distributed import as_completed

        own = client is None
        cluster = None
        try:
            if own:
                cluster, client = local_cluster(workers)
            opts_f = client.scatter(opts, broadcast=True)
            todo = list(windows)
            limit = 2 * max(workers, len(client.scheduler_info().get("workers", {})) or 1)
            futures = [client.submit(chunk_task, opts_f, *todo.pop(0), pure=False)
                       for _ in range(min(limit, len(todo)))]  # fmt: skip
            ac = as_completed(futures)
            for fut in ac:
                res = fut.result()
                fut.release()
                if todo:
                    ac.add(client.submit(chunk_task, opts_f, *todo.pop(0), pure=False))
                bar.update()
                yield res
        finally:
            if own:
                if client is not None:
                    client.close()
                if cluster is not None:
                    cluster.close()
    finally:
        bar.close()


def local_cluster(workers: int) -> tuple[Any, Any]:
    """A local Dask cluster of ``workers`` processes and its client.

    The worker processes never see Ctrl-C or SIGTERM: they are started with both signals
    blocked (a Ctrl-C in a terminal reaches every process of the group, and each worker
    printed its own traceback). This process handles the interrupt, and closing the
    cluster stops them.
    """
    import dask
    from distributed import Client, LocalCluster

    from geoseg.io.outputs import interrupts_deferred

    # Forked workers start in ~1 s; spawned ones re-import GDAL, shapely, geopandas
    # (~10 s on a busy machine). Nothing holds a GDAL lock in this process while it
    # forks. A non-default method set in the Dask config wins.
    key = "distributed.worker.multiprocessing-method"
    method = dask.config.get(key, "spawn")
    if method == "spawn" and sys.platform.startswith("linux"):
        method = "fork"
    # the loop thread made here starts the workers: they inherit its blocked signals
    # (an interrupt meanwhile is delivered to this thread when the block ends)
    with interrupts_deferred(), dask.config.set({key: method}):
        cluster = LocalCluster(
            n_workers=0 if method == "fork" else workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            # the workers' own log lines are not the user's: a task that fails comes back
            # as its exception, and closing the cluster raced their heartbeats ("Failed to
            # communicate with scheduler during heartbeat", with a traceback)
            silence_logs=logging.CRITICAL,
        )
        try:
            client = Client(cluster)
            if method == "fork":
                start_one_by_one(cluster, client, workers)
                environ = dask.config.get("distributed.nanny.pre-spawn-environ", {}) or {}
                client.run(forked_worker_heap, environ.get("MALLOC_TRIM_THRESHOLD_"))
        except BaseException:
            cluster.close()
            raise
    return cluster, client


def start_one_by_one(cluster: Any, client: Any, workers: int) -> None:
    """Start ``workers`` worker processes of an empty cluster, one fork at a time.

    Dask starts its workers from several threads at once, and recent filelock (4.2, 4.3;
    imported with torch) refuses, on Python 3.12+, a fork while another thread forks
    ("Nanny failed to start" for 2 of 5 runs with 8 workers). One by one costs ~0.05 s
    each; a worker that does not start is a ResourceError, not a hang.
    """
    for k in range(1, workers + 1):
        cluster.scale(k)
        try:
            client.wait_for_workers(k, timeout=WORKER_START_TIMEOUT)
        except TimeoutError as exc:
            raise ResourceError(
                f"vectorize: worker process {k} of {workers} did not start within "
                f"{WORKER_START_TIMEOUT:.0f} s (memory or process limits?); use fewer "
                "workers (--workers / workers=), or 1 for no processes"
            ) from exc


#: Seconds a vectorize worker process may take to start (a fork takes well under one).
WORKER_START_TIMEOUT = 60.0


def default_workers(workers: int | None) -> int:
    """``workers`` checked, or the CPU cores this process may use."""
    if workers is not None:
        if check_int(workers, "workers") < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        return int(workers)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1
