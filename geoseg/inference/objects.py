"""Prediction with object-list models: claim, paint, then number the objects.

Block tasks (:func:`geoseg.inference.graph.finalize_block`) hand the object lists of
every window overlapping their block to :meth:`ObjectDecoder.decode_objects`, which keeps
the objects each window claims and paints them (:mod:`geoseg.instances.objects`: the
claim rule and the highest-score-wins painting, both independent of blocks and
workers). A block writes four uint32 bands into an intermediate raster:

1. the object's provisional key (0 = no object),
2. its class index + 1,
3. its score (the float32 bits),
4. the stuff class index + 1 of the pixel (0 = no-data).

One chunked pass (:func:`number_objects`) then gives the final ids, 1, 2, ... in the
row-major order of each object's first pixel (as the per-pixel method numbers them), and
writes the instance-id COG (id, class id), the class map fused from objects and stuff,
and the objects table. Peak memory is a few chunks plus one row per object.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.classes import ClassTable
from geoseg.inference.device import argmax0
from geoseg.inference.instances import ChunkGrid, TaskMap
from geoseg.inference.products import PROB_NODATA, SemanticDecoder, instance_products
from geoseg.instances.objects import ObjectList, claimed, object_key, paint_one
from geoseg.io.cog import RasterProduct
from geoseg.io.grid import PixelWindow

#: Bands of the intermediate objects raster.
OBJECT_BANDS = ("key", "object_class", "score_bits", "stuff_class")


@dataclass(frozen=True)
class WindowObjects:
    """One window's object list with what the claim rule needs.

    Attributes:
        window: the window in mosaic pixels.
        index: the window's row-major index (part of its objects' keys).
        core: ``row0, row1, col0, col1`` of the window's core.
        objects: its objects (window coordinates).
    """

    window: PixelWindow
    index: int
    core: tuple[int, int, int, int]
    objects: ObjectList


@dataclass(frozen=True)
class ObjectDecoder:
    """Instance ids and the fused class map from the object lists of an object model.

    Attributes:
        classes: the class table.
        max_objects: objects per window at most (the key stride).
        probabilities: also write the blended class probabilities (models with a
            ``classes`` output only).
        chunk: side of the numbering chunks in pixels (any value gives the same result).
    """

    classes: ClassTable
    max_objects: int
    probabilities: bool = False
    chunk: int = 1024

    @classmethod
    def for_checkpoint(
        cls, meta: Any, *, probabilities: bool = False, chunk: int = 1024
    ) -> ObjectDecoder:
        """The decoder of an object model's checkpoint."""
        max_objects = int(meta.model_kwargs.get("max_objects", 100))
        return cls(meta.classes, max_objects, probabilities, chunk)

    def products(self) -> list[RasterProduct]:
        """Block products: the intermediate objects raster (and the probabilities)."""
        out = [RasterProduct("objects", len(OBJECT_BANDS), "uint32", 0, "nearest",
                             band_names=OBJECT_BANDS, interleave="band")]  # fmt: skip
        if self.probabilities:
            out.append(SemanticDecoder(self.classes, True).products()[1])
        return out

    def final_products(self) -> list[RasterProduct]:
        """The fused class map and the instance ids (as the per-pixel method writes)."""
        return instance_products(self.classes)

    def stuff_indices(self) -> list[int]:
        """Class indices of the stuff classes (the background of an instance task)."""
        return [k for k, c in enumerate(self.classes) if not c.thing] or [0]

    def decode_objects(
        self,
        block: PixelWindow,
        maps: Mapping[str, np.ndarray],
        valid: np.ndarray,
        windows: Sequence[WindowObjects],
    ) -> dict[str, np.ndarray]:
        """Claim and paint the objects of ``windows`` over ``block``."""
        shape = (block.height, block.width)
        keys = np.zeros(shape, np.uint32)
        best = np.full(shape, -1.0, np.float32)
        cls = np.full(shape, -1, np.int64)
        for w in windows:
            offset = (w.window.row - block.row, w.window.col - block.col)
            for k in claimed(w.objects, (w.window.row, w.window.col), w.core):
                key = object_key(w.index, int(k), self.max_objects)
                paint_one(keys, best, cls, w.objects, int(k), key, offset)
        stuff = self.stuff_indices()
        if "classes" in maps:
            p = maps["classes"]
            stuff_cls = np.asarray(stuff)[argmax0(p[stuff])]
        else:
            stuff_cls = np.full(shape, stuff[0], np.int64)
        keys[~valid] = 0
        out = np.stack(
            [
                keys,
                np.where(keys > 0, cls + 1, 0).astype(np.uint32),
                np.where(keys > 0, best, np.float32(0)).astype(np.float32).view(np.uint32),
                np.where(valid, stuff_cls + 1, 0).astype(np.uint32),
            ]
        )
        arrays = {"objects": out}
        if self.probabilities and "classes" in maps:
            q = np.rint(np.clip(maps["classes"], 0.0, 1.0) * 254.0).astype(np.uint8)
            q[:, ~valid] = PROB_NODATA
            arrays["probabilities"] = q
        return arrays


def window_objects(
    batches: list[Any],
    members: list[tuple[PixelWindow, int, int]],
    name: str,
    layout: ObjectLayout,
) -> list[WindowObjects]:
    """The object lists of a block's member windows, with their index and core."""
    out = []
    for win, b, k in members:
        outputs, _ = batches[b][k]
        if outputs is None:
            continue
        ri, ci = layout.position(win)
        out.append(WindowObjects(win, ri * len(layout.cols) + ci, layout.core(ri, ci),
                                 outputs[name]))  # fmt: skip
    return out


@dataclass(frozen=True)
class ObjectLayout:
    """The window grid as the claim rule sees it (small, picklable).

    Attributes:
        rows, cols: window start offsets along each axis.
        row_cuts, col_cuts: core cut points along each axis (:func:`core_cuts`).
    """

    rows: tuple[int, ...]
    cols: tuple[int, ...]
    row_cuts: tuple[int, ...]
    col_cuts: tuple[int, ...]

    @classmethod
    def of(cls, rows: Sequence[int], cols: Sequence[int], tile: int) -> ObjectLayout:
        """The layout of windows starting at ``rows`` x ``cols``, ``tile`` px square."""
        from geoseg.instances.objects import core_cuts

        return cls(tuple(rows), tuple(cols), tuple(core_cuts(rows, tile)),
                   tuple(core_cuts(cols, tile)))  # fmt: skip

    def position(self, win: PixelWindow) -> tuple[int, int]:
        """(row, col) index of a window of the grid."""
        return self.rows.index(win.row), self.cols.index(win.col)

    def core(self, ri: int, ci: int) -> tuple[int, int, int, int]:
        """``row0, row1, col0, col1`` of window (ri, ci)'s core."""
        return (self.row_cuts[ri], self.row_cuts[ri + 1], self.col_cuts[ci],
                self.col_cuts[ci + 1])  # fmt: skip


# -- numbering ------------------------------------------------------------------------------
@dataclass
class KeyTable:
    """Per provisional key of one chunk (or of the mosaic, once merged)."""

    keys: np.ndarray  # sorted, unique
    first: np.ndarray  # global row-major index of the first pixel
    pixels: np.ndarray
    classes: np.ndarray  # class index
    scores: np.ndarray


def _read(path: str, win: PixelWindow) -> np.ndarray:
    from rasterio.windows import Window

    from geoseg.io.handles import use_file

    with use_file(path, what="object keys") as ds:
        return ds.read(window=Window(win.col, win.row, win.width, win.height))


def scan_chunk(path: str, grid: ChunkGrid, index: tuple[int, int]) -> KeyTable:
    """Phase 1: the keys of one chunk with their first pixel, pixel count, class, score."""
    win = grid.window(*index)
    bands = _read(path, win)
    flat = bands[0].ravel()
    keys, first_local, counts = np.unique(flat, return_index=True, return_counts=True)
    sel = keys > 0
    keys, first_local, counts = keys[sel], first_local[sel], counts[sel]
    rows, cols = np.divmod(first_local, win.width)
    first = (rows + win.row).astype(np.int64) * grid.width + (cols + win.col)
    cls = bands[1].ravel()[first_local].astype(np.int64) - 1
    score = bands[2].ravel()[first_local].view(np.float32)
    return KeyTable(keys.astype(np.int64), first, counts.astype(np.int64), cls, score)


def merge_keys(tables: Sequence[KeyTable]) -> KeyTable:
    """Phase 2: one table over all chunks, ordered by first pixel (index = final id - 1)."""
    if not tables:
        z = np.zeros(0, np.int64)
        return KeyTable(z, z, z, z, np.zeros(0, np.float32))
    keys = np.concatenate([t.keys for t in tables])
    first = np.concatenate([t.first for t in tables])
    pixels = np.concatenate([t.pixels for t in tables])
    cls = np.concatenate([t.classes for t in tables])
    score = np.concatenate([t.scores for t in tables])
    uniq, inverse = np.unique(keys, return_inverse=True)
    n = len(uniq)
    f = np.full(n, np.iinfo(np.int64).max, np.int64)
    np.minimum.at(f, inverse, first)
    px = np.bincount(inverse, weights=pixels, minlength=n).astype(np.int64)
    c = np.zeros(n, np.int64)
    s = np.zeros(n, np.float32)
    c[inverse], s[inverse] = cls, score  # an object's class and score are the same everywhere
    order = np.argsort(f, kind="stable")
    return KeyTable(uniq[order], f[order], px[order], c[order], s[order])


def relabel_chunk(
    path: str, grid: ChunkGrid, index: tuple[int, int], sorted_keys: np.ndarray,
    ids_of_sorted: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Phase 3: final ids of one chunk and its object / stuff class indices."""
    bands = _read(path, grid.window(*index))
    keys = bands[0].astype(np.int64)
    ids = np.zeros(keys.shape, np.uint32)
    obj = keys > 0
    if obj.any():
        pos = np.searchsorted(sorted_keys, keys[obj])
        ids[obj] = ids_of_sorted[pos]
    return ids, bands[1:]


def number_objects(
    decoder: ObjectDecoder,
    objects_path: Path,
    mosaic: Any,
    targets: dict[str, Path],
    *,
    work: str,
    run: TaskMap,
    progress: bool,
) -> int:
    """The numbering pass: fused class map, instance-id COG and objects table.

    Returns:
        The number of objects.
    """
    from rasterio.crs import CRS
    from tqdm.auto import tqdm

    from geoseg.io.cog import BlockWriter

    grid = ChunkGrid(mosaic.height, mosaic.width, decoder.chunk)
    path = str(objects_path)
    table = merge_keys([t for _, t in run(_keyed, [(k, path, grid, k) for k in grid.chunks()])])
    by_key = np.argsort(table.keys)
    sorted_keys = table.keys[by_key]
    ids_of_sorted = (by_key + 1).astype(np.uint32)
    lut = np.asarray(decoder.classes.ids, np.int64)
    object_class = lut[table.classes] if len(table.keys) else np.zeros(0, np.int64)
    folder = os.path.join(work, "final")
    os.makedirs(folder, exist_ok=True)
    products = [p for p in decoder.final_products() if p.name in targets]
    writer = BlockWriter(folder, crs=CRS.from_wkt(mosaic.crs), transform=mosaic.transform,
                         height=mosaic.height, width=mosaic.width, products=products)  # fmt: skip
    nodata = decoder.classes.nodata_value()
    dtype = decoder.classes.dtype()
    jobs = [(relabel_chunk, k, path, grid, k, sorted_keys, ids_of_sorted) for k in grid.chunks()]
    n_chunks = len(jobs)
    try:
        for k, (ids, bands) in tqdm(run(_keyed_fn, jobs), total=n_chunks, unit="chunk",
                                    desc="objects", disable=not progress):  # fmt: skip
            obj = ids > 0
            cls_id = np.where(obj, lut[np.maximum(bands[0].astype(np.int64) - 1, 0)],
                              lut[np.maximum(bands[2].astype(np.int64) - 1, 0)])  # fmt: skip
            classes = cls_id.astype(dtype)
            classes[bands[2] == 0] = nodata
            inst = np.stack([ids, np.where(obj, cls_id, 0).astype(np.uint32)])
            writer.write_arrays(grid.window(*k), {"classes": classes, "instances": inst})
        writer.finish({p.name: targets[p.name] for p in products})
    finally:
        writer.close()
    if "objects" in targets:
        _write_table(targets["objects"], table, object_class, decoder.classes)
    return len(table.keys)


def _keyed(key: Any, path: str, grid: ChunkGrid, index: tuple[int, int]) -> tuple[Any, KeyTable]:
    return key, scan_chunk(path, grid, index)


def _keyed_fn(fn: Any, key: Any, *args: Any) -> tuple[Any, Any]:
    return key, fn(*args)


def _write_table(path: Path, table: KeyTable, object_class: np.ndarray, classes: Any) -> None:
    """The objects table as CSV: id, class, pixels, score (the model's detection score)."""
    import pandas as pd

    names = {c.id: c.name for c in classes}
    frame = pd.DataFrame(
        {
            "instance_id": np.arange(1, len(table.keys) + 1, dtype=np.int64),
            "class_id": object_class,
            "class_name": [names.get(int(c), f"class_{int(c)}") for c in object_class],
            "pixels": table.pixels,
            "score": table.scores.astype(np.float64),
        }
    )
    frame.to_csv(path, index=False, float_format="%.6f")
