"""Instance ids over a whole mosaic, chunk by chunk, equal to one whole-scene pass.

The decoding rules of :mod:`geoseg.instances.decoding` are local except for one thing: a
seed component may span any number of chunks. So the decode runs in three phases over a
raster of blended footprint / boundary / contact maps (and class probabilities):

1. **Seeds** (a task per chunk): the seed mask of the chunk, its 4-connected components,
   their sizes and the global row-major index of their first pixel; the chunk's label
   array is kept on disk, its four border strips are returned.
2. **Union-find** (main process, small): components facing each other across a seam are
   joined (exact, integer; as dask-image's ``ndmeasure.label`` and geoseg's vectorizer do);
   a global component's size is the sum of its parts, its first pixel the minimum. Seeds
   below ``min_seed_px`` are dropped and the rest numbered 1, 2, ... in the order of their
   first pixel: the same ids a whole-scene pass gives (:func:`geoseg.instances.decode`).
3. **Growth** (a task per chunk): the chunk plus a halo of ``grow_px`` pixels, seeds
   relabelled with their global ids (from the neighbours' label arrays in the halo), grown
   for ``grow_px`` steps; the core is exact because growth reaches at most ``grow_px``.
   Per object: pixels, the sum of its footprint probability (the score) and of each
   class's probability (the class vote).

Peak memory is a few chunks plus the per-chunk summaries; nothing is whole-raster.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.instances.decoding import DecodeParams, grow, label_seeds, seed_mask
from geoseg.io.files import load_npy
from geoseg.io.grid import PixelWindow

#: Reads a window of maps: ``(maps (C, h, w), valid (h, w))``; channels 0-2 are the
#: footprint, boundary and contact probabilities, the rest class probabilities.
Reader = Callable[[PixelWindow], tuple[np.ndarray, np.ndarray]]


@dataclass
class ChunkSeeds:
    """Phase 1 result of one chunk (small: no pixel arrays but the border strips)."""

    index: tuple[int, int]
    sizes: np.ndarray  # pixels of local label k + 1
    first: np.ndarray  # global row-major index of its first pixel
    score_sum: np.ndarray  # sum of the footprint probability over its pixels
    class_sum: np.ndarray  # (labels, classes): sums of each class probability
    strips: dict[str, np.ndarray] = field(default_factory=dict)  # labels along each side


@dataclass
class SeedTable:
    """Per global object: seed pixels and sums over them (from phase 2), index = id - 1.

    The class of an object is voted by its seed pixels (its interior, away from the
    neighbours it touches); its score is the mean footprint probability there.
    """

    pixels: np.ndarray
    score_sum: np.ndarray
    class_sum: np.ndarray

    def __len__(self) -> int:
        return len(self.pixels)

    def classes(self, class_ids: Sequence[int], things: Sequence[int]) -> np.ndarray:
        """Class id of every object: the thing class with the largest summed probability."""
        ids = np.asarray(class_ids, np.int64)
        idx = [k for k, c in enumerate(class_ids) if c in set(things)] or list(range(len(ids)))
        if len(self) == 0:
            return np.zeros(0, np.int64)
        return ids[np.asarray(idx)[np.argmax(self.class_sum[:, idx], axis=1)]]

    def scores(self) -> np.ndarray:
        """Mean footprint probability over each object's seed."""
        return self.score_sum / np.maximum(self.pixels, 1)


@dataclass(frozen=True)
class ChunkGrid:
    """The chunks of a ``height`` x ``width`` raster (``size`` px squares, clipped)."""

    height: int
    width: int
    size: int

    @property
    def shape(self) -> tuple[int, int]:
        """(rows, cols) of chunks."""
        return math.ceil(self.height / self.size), math.ceil(self.width / self.size)

    def window(self, i: int, j: int, halo: int = 0) -> PixelWindow:
        """Chunk (i, j), grown by ``halo`` pixels and clipped to the raster."""
        r0, c0 = max(i * self.size - halo, 0), max(j * self.size - halo, 0)
        r1 = min((i + 1) * self.size + halo, self.height)
        c1 = min((j + 1) * self.size + halo, self.width)
        return PixelWindow(r0, c0, r1 - r0, c1 - c0)

    def chunks(self) -> Iterator[tuple[int, int]]:
        """Every chunk index, row-major."""
        rows, cols = self.shape
        for i in range(rows):
            for j in range(cols):
                yield i, j


def _label_path(store: str, index: tuple[int, int]) -> str:
    return os.path.join(store, f"seeds_{index[0]}_{index[1]}.npy")


def seed_chunk(
    reader: Reader, grid: ChunkGrid, index: tuple[int, int], params: DecodeParams, store: str
) -> ChunkSeeds:
    """Phase 1: seed components of one chunk (labels saved under ``store``)."""
    win = grid.window(*index)
    maps, valid = reader(win)
    _, seed = seed_mask(maps[:3], params, valid)
    labels, n = label_seeds(seed)
    score_sum, class_sum = _label_sums(labels, n, maps)
    dtype = np.int32 if n < 2**31 else np.int64
    np.save(_label_path(store, index), labels.astype(dtype))
    flat = labels.ravel()
    sizes = np.bincount(flat, minlength=n + 1)[1:]
    u, first_local = np.unique(flat, return_index=True)
    first = np.zeros(n, np.int64)
    rows, cols = np.divmod(first_local[u > 0], win.width)
    first[u[u > 0] - 1] = (rows + win.row) * grid.width + (cols + win.col)
    strips = {"top": labels[0], "bottom": labels[-1], "left": labels[:, 0], "right": labels[:, -1]}
    return ChunkSeeds(
        index,
        sizes,
        first,
        score_sum,
        class_sum,
        {k: v.astype(np.int64) for k, v in strips.items()},
    )


def _label_sums(labels: np.ndarray, n: int, maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sums of the footprint probability and of each class probability per label."""
    flat = labels.ravel()
    scale = 1.0 / 254.0 if maps.dtype == np.uint8 else 1.0

    def total(band: np.ndarray) -> np.ndarray:
        w = band.ravel().astype(np.float64) * scale
        return np.bincount(flat, weights=w, minlength=n + 1)[1:]

    n_classes = maps.shape[0] - 3
    classes = [total(maps[3 + k]) for k in range(n_classes)]
    class_sum = np.stack(classes, axis=1) if classes else np.zeros((n, 0))
    return total(maps[0]), class_sum


def resolve_seeds(
    seeds: dict[tuple[int, int], ChunkSeeds], grid: ChunkGrid, params: DecodeParams
) -> tuple[dict[tuple[int, int], np.ndarray], SeedTable]:
    """Phase 2: global ids of every chunk's local seed labels (0 = dropped), and the objects.

    Union-find over the pixel pairs facing each other across every seam, then seeds
    below ``min_seed_px`` are dropped and the rest numbered by their first pixel.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    keys = sorted(seeds)
    base, total = {}, 0
    for k in keys:
        base[k] = total
        total += len(seeds[k].sizes)
    n_classes = next(iter(seeds.values())).class_sum.shape[1] if seeds else 0
    if total == 0:
        empty = SeedTable(np.zeros(0, np.int64), np.zeros(0), np.zeros((0, n_classes)))
        return {k: np.zeros(1, np.int64) for k in keys}, empty
    pairs = []
    for i, j in keys:
        s = seeds[(i, j)]
        for di, dj, mine, theirs in ((0, 1, "right", "left"), (1, 0, "bottom", "top")):
            other = seeds.get((i + di, j + dj))
            if other is None:
                continue
            a, b = s.strips[mine], other.strips[theirs]
            ok = (a > 0) & (b > 0)
            pairs.append(np.stack([a[ok] - 1 + base[(i, j)], b[ok] - 1 + base[other.index]]))
    edges = np.concatenate(pairs, axis=1) if pairs else np.zeros((2, 0), np.int64)
    graph = coo_matrix((np.ones(edges.shape[1]), (edges[0], edges[1])), shape=(total, total))
    n_comp, comp = connected_components(graph, directed=False)
    sizes = np.concatenate([seeds[k].sizes for k in keys])
    first = np.concatenate([seeds[k].first for k in keys])
    comp_size = np.bincount(comp, weights=sizes, minlength=n_comp)
    comp_first = np.full(n_comp, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(comp_first, comp, first)
    kept = np.flatnonzero(comp_size >= params.min_seed_px)
    order = kept[np.argsort(comp_first[kept], kind="stable")]
    gid = np.zeros(n_comp, np.int64)
    gid[order] = np.arange(1, len(order) + 1)
    out = {}
    for k in keys:
        n = len(seeds[k].sizes)
        out[k] = np.concatenate([[0], gid[comp[base[k] : base[k] + n]]])
    # per object sums, indexed by id - 1
    obj = gid[comp] - 1
    sel = obj >= 0
    m = len(order)
    score = np.bincount(obj[sel], weights=np.concatenate([seeds[k].score_sum for k in keys])[sel],
                        minlength=m)  # fmt: skip
    cls_parts = np.concatenate([seeds[k].class_sum for k in keys])[sel]
    cls = np.zeros((m, n_classes))
    np.add.at(cls, obj[sel], cls_parts)
    table = SeedTable(comp_size[order].astype(np.int64), score, cls)
    return out, table


def grow_chunk(
    reader: Reader,
    grid: ChunkGrid,
    index: tuple[int, int],
    params: DecodeParams,
    store: str,
    mappings: dict[tuple[int, int], np.ndarray],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Phase 3: the final ids of one chunk's core, with the core's maps and valid mask."""
    halo = params.grow_px
    win = grid.window(*index, halo=halo)
    core = grid.window(*index)
    maps, valid = reader(win)
    fg, _ = seed_mask(maps[:3], params, valid)
    labels = np.zeros((win.height, win.width), np.int64)
    rows, cols = grid.shape
    for i in range(max(index[0] - 1, 0), min(index[0] + 2, rows)):
        for j in range(max(index[1] - 1, 0), min(index[1] + 2, cols)):
            other = grid.window(i, j)
            r0, r1 = max(other.row, win.row), min(other.row_stop, win.row_stop)
            c0, c1 = max(other.col, win.col), min(other.col_stop, win.col_stop)
            if r0 >= r1 or c0 >= c1:
                continue
            part = load_npy(_label_path(store, (i, j)), mmap=True)
            sub = part[r0 - other.row : r1 - other.row, c0 - other.col : c1 - other.col]
            labels[r0 - win.row : r1 - win.row, c0 - win.col : c1 - win.col] = mappings[(i, j)][sub]
    grown = grow(labels, fg, halo)
    sl = (slice(core.row - win.row, core.row_stop - win.row),
          slice(core.col - win.col, core.col_stop - win.col))  # fmt: skip
    return grown[sl].astype(np.uint32), maps[(slice(None), *sl)], valid[sl]


def decode_in_chunks(
    maps: np.ndarray,
    params: DecodeParams | None = None,
    *,
    chunk: int,
    valid: np.ndarray | None = None,
    store: str | Path,
) -> np.ndarray:
    """The three phases over an in-memory (C, H, W) array (tests, small rasters).

    Equal to :func:`geoseg.instances.decode` on the whole array for every ``chunk``.
    """
    p = params or DecodeParams()
    arr = np.asarray(maps)
    ok = np.ones(arr.shape[1:], bool) if valid is None else np.asarray(valid)

    def reader(w: PixelWindow) -> tuple[np.ndarray, np.ndarray]:
        sl = (slice(w.row, w.row_stop), slice(w.col, w.col_stop))
        return arr[(slice(None), *sl)], ok[sl]

    grid = ChunkGrid(arr.shape[1], arr.shape[2], chunk)
    seeds = {k: seed_chunk(reader, grid, k, p, str(store)) for k in grid.chunks()}
    mappings, _ = resolve_seeds(seeds, grid, p)
    out = np.zeros(arr.shape[1:], np.uint32)
    for k in grid.chunks():
        ids, _, _ = grow_chunk(reader, grid, k, p, str(store), mappings)
        w = grid.window(*k)
        out[w.row : w.row_stop, w.col : w.col_stop] = ids
    return out


class MapsRaster:
    """Reads windows of the intermediate maps GTiff (uint8, 255 = no-data) as a Reader."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __call__(self, window: PixelWindow) -> tuple[np.ndarray, np.ndarray]:
        """``(maps (C, h, w) uint8, valid (h, w))`` of ``window``."""
        from rasterio.windows import Window

        from geoseg.io.handles import use_file

        with use_file(self.path, what="instance maps") as ds:
            maps = ds.read(window=Window(window.col, window.row, window.width, window.height))
        return maps, maps[0] != 255


#: Runs ``fn(*args)`` for every args tuple (in parallel), yielding results as they finish.
TaskMap = Callable[[Callable[..., Any], list[tuple[Any, ...]]], Iterator[Any]]


def task_map(client: Any, scheduler: Any, workers: int | None) -> TaskMap:
    """A :data:`TaskMap` on the same executor as the prediction graph."""
    if client is not None:

        def run_distributed(fn: Callable[..., Any], items: list[tuple[Any, ...]]) -> Iterator[Any]:
            from distributed import as_completed

            todo = list(items)
            limit = 2 * max(1, len(client.scheduler_info().get("workers", {})))
            futures = [client.submit(fn, *todo.pop(0), pure=False)
                       for _ in range(min(limit, len(todo)))]  # fmt: skip
            ac = as_completed(futures, loop=client.loop)
            for fut in ac:
                result = fut.result()
                fut.release()
                if todo:
                    ac.add(client.submit(fn, *todo.pop(0), pure=False))
                yield result

        return run_distributed
    if scheduler == "synchronous":
        return lambda fn, items: (fn(*args) for args in items)

    def run_local(fn: Callable[..., Any], items: list[tuple[Any, ...]]) -> Iterator[Any]:
        from concurrent import futures

        pool_cls = (
            futures.ProcessPoolExecutor if scheduler == "processes" else futures.ThreadPoolExecutor
        )
        n = workers or os.cpu_count() or 1
        todo = list(items)
        with pool_cls(max_workers=n) as pool:
            # at most two tasks per worker in flight: results are consumed as they come,
            # so memory holds a few chunks, not the mosaic
            running = {pool.submit(fn, *todo.pop(0)) for _ in range(min(2 * n, len(todo)))}
            while running:
                done, running = futures.wait(running, return_when=futures.FIRST_COMPLETED)
                for job in done:
                    if todo:
                        running.add(pool.submit(fn, *todo.pop(0)))
                    yield job.result()

    return run_local


def _keyed(fn: Callable[..., Any], key: Any, *args: Any) -> tuple[Any, Any]:
    return key, fn(*args)


def decode_raster(
    reader: Reader,
    grid: ChunkGrid,
    params: DecodeParams,
    store: str,
    run: TaskMap,
) -> tuple[SeedTable, Iterator[tuple[PixelWindow, np.ndarray, np.ndarray, np.ndarray]]]:
    """Phases 1 and 2 now; phase 3 as an iterator of ``(chunk, ids, maps, valid)``."""
    seeds = dict(
        run(_keyed, [(seed_chunk, k, reader, grid, k, params, store) for k in grid.chunks()])
    )
    mappings, table = resolve_seeds(seeds, grid, params)
    jobs = [(grow_chunk, k, reader, grid, k, params, store, mappings) for k in grid.chunks()]

    def grown() -> Iterator[tuple[PixelWindow, np.ndarray, np.ndarray, np.ndarray]]:
        for k, (ids, maps, valid) in run(_keyed, jobs):
            yield grid.window(*k), ids, maps, valid

    return table, grown()


def decode_instances(
    decoder: Any,
    maps_path: Path,
    mosaic: Any,
    targets: dict[str, Path],
    *,
    work: str,
    run: TaskMap,
    progress: bool,
) -> int:
    """The decode pass of a prediction: the fused class map, instance ids and objects table.

    Args:
        decoder: the task's :class:`~geoseg.inference.products.InstanceDecoder`.
        maps_path: the intermediate maps raster the block tasks wrote (closed).
        mosaic: the prediction grid (crs, transform, height, width).
        targets: temporary paths of the outputs by product name (``classes`` always;
            ``instances`` and ``objects`` when asked for).
        work: a work folder (seed label arrays go there).
        run: how tasks run (:func:`task_map`).
        progress: show a progress bar.

    Returns:
        The number of objects.
    """
    from rasterio.crs import CRS
    from tqdm.auto import tqdm

    from geoseg.io.cog import BlockWriter

    grid = ChunkGrid(mosaic.height, mosaic.width, decoder.chunk)
    store = os.path.join(work, "seeds")
    os.makedirs(store, exist_ok=True)
    table, chunks = decode_raster(MapsRaster(str(maps_path)), grid, decoder.params, store, run)
    object_class = table.classes(decoder.classes.ids, decoder.classes.things)
    folder = os.path.join(work, "final")
    os.makedirs(folder, exist_ok=True)
    products = [p for p in decoder.final_products() if p.name in targets]
    writer = BlockWriter(
        folder,
        crs=CRS.from_wkt(mosaic.crs),
        transform=mosaic.transform,
        height=mosaic.height,
        width=mosaic.width,
        products=products,
    )
    pixels = np.zeros(len(table) + 1, np.int64)
    n_chunks = grid.shape[0] * grid.shape[1]
    try:
        for win, ids, maps, valid in tqdm(
            chunks, total=n_chunks, unit="chunk", desc="instances", disable=not progress
        ):
            writer.write_arrays(win, decoder.fuse(ids, maps, valid, object_class))
            pixels += np.bincount(ids.ravel(), minlength=len(pixels))
        writer.finish({p.name: targets[p.name] for p in products})
    finally:
        writer.close()
    if "objects" in targets:
        _write_objects(targets["objects"], table, object_class, pixels[1:], decoder.classes)
    return len(table)


def _write_objects(
    path: Path, table: SeedTable, object_class: np.ndarray, pixels: np.ndarray, classes: Any
) -> None:
    """The objects table as CSV: id, class, pixels, seed pixels and score."""
    import pandas as pd

    names = {c.id: c.name for c in classes}
    frame = pd.DataFrame(
        {
            "instance_id": np.arange(1, len(table) + 1, dtype=np.int64),
            "class_id": object_class,
            "class_name": [names.get(int(c), f"class_{int(c)}") for c in object_class],
            "pixels": pixels,
            "seed_pixels": table.pixels,
            "score": table.scores(),
        }
    )
    frame.to_csv(path, index=False, float_format="%.6f")
