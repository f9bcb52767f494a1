"""The Dask graph of a prediction: batch tasks feed block tasks.

Why an explicit block graph and not ``dask.array.map_overlap``: ``map_overlap`` would
run the model on each chunk plus its halo, so the model windows (and the result) would
depend on the chunking, every halo would be computed twice, and blending across chunk
borders would not be the ``sum(w*p)/sum(w)`` form. Here the model windows are a
property of the mosaic alone (:func:`geoseg.inference.tiling.tile_windows`) and
batches are fixed groups of consecutive windows in row-major order, so

* each window runs exactly once (no halo recomputation);
* a **batch task** reads its windows, skips windows with no valid pixel, normalizes
  and runs the per-process model (:func:`run_batch`);
* a **block task** (one non-overlapping output block) depends on the batches holding
  the windows that intersect it, accumulates ``sum(w*p)`` and ``sum(w)`` in global
  window order, divides, takes the argmax and writes its block to a small file
  (:func:`finalize_block`);
* the per-pixel arithmetic is therefore identical whatever the block size or the
  scheduler (threads, processes, distributed): results are bit-for-bit equal.

Memory: a batch result lives until the blocks using it are done. Block tasks blend
strips at most about half a tile high (:func:`block_rows`), each touching at most two
window rows, so Dask's ordering keeps about two rows of window results across the
mosaic plus the tasks in flight: peak memory depends on tile size, batch size, workers
and mosaic *width*, never on area.

Other outputs: :func:`run_batch` returns, per window, the runner's named outputs. Per-pixel
outputs are blended; an object-list output (Mask R-CNN) is merged by the claim rule
(:mod:`geoseg.instances.objects`): the block task hands the object lists of its windows
to the decoder, which keeps what each window claims and paints it, again independently
of the blocks (:mod:`geoseg.inference.objects`).
"""

from __future__ import annotations

import bisect
import itertools
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.inference.backends import RunnerSpec, get_runner
from geoseg.inference.device import blend_block_device, is_device_array, to_host
from geoseg.inference.objects import ObjectLayout, window_objects
from geoseg.inference.tiling import PixelWindow, axis_starts
from geoseg.io.mosaic import Mosaic

#: A batch result: per window, (named activated outputs, each (C, T, T), or None if the
#: window was skipped; valid mask). The outputs are numpy arrays, or torch tensors left
#: on the model's GPU (:mod:`geoseg.inference.device`).
BatchResult = list[tuple[dict[str, np.ndarray] | None, np.ndarray]]


@dataclass(frozen=True)
class BlockSpec:
    """How a block task merges window outputs and turns them into product arrays.

    Attributes:
        blend: names of the per-pixel outputs blended as ``sum(w*p) / sum(w)``.
        decoder: the task's decoder (:mod:`geoseg.inference.products`): blended maps
            and the valid mask -> arrays of the raster products.
        out_dir: folder of the finished blocks (``.npz``).
        claim: name of an object-list output merged by the claim rule (object models),
            handed with ``layout`` to the decoder's ``decode_objects``.
        layout: the window grid of the claim rule
            (:class:`geoseg.inference.objects.ObjectLayout`).
    """

    blend: tuple[str, ...]
    decoder: Any
    out_dir: str
    claim: str | None = None
    layout: Any = None


def run_batch(
    mosaic: Mosaic,
    spec: RunnerSpec,
    windows: list[PixelWindow],
    mean: np.ndarray,
    std: np.ndarray,
) -> BatchResult:
    """Read, normalize and predict a batch of windows (all-no-data windows skipped).

    No-data pixels are fed to the model as 0 after normalization.
    """
    idx: list[int] = []
    valids: list[np.ndarray] = []
    # The model input is filled in place (no per-window temporaries, no stack copy).
    x: np.ndarray | None = None
    m, s = mean[:, None, None], std[:, None, None]
    # One read per window row of the batch: consecutive windows of a row overlap, so
    # their union is a strip whose shared pixels are read (and decoded) once. All strips
    # go to the read relay at once: the threads reading meanwhile finish the oldest
    # batch first, so the model's first call need not wait for every batch's reads.
    groups = [list(g) for _, g in itertools.groupby(windows, key=lambda w: w.row)]
    strips = [_union(g) for g in groups]
    reads: list[Any] = mosaic.read_many(strips)
    for k, (group, strip) in enumerate(zip(groups, strips)):
        (data_all, valid_all), reads[k] = reads[k], None  # freed once copied into x
        top, left = strip.row, strip.col
        for w in group:
            sl = (slice(w.row - top, w.row_stop - top), slice(w.col - left, w.col_stop - left))
            valid = valid_all[sl]
            valids.append(valid)
            if valid.any():
                if x is None:
                    shape = (len(windows), data_all.shape[0], w.height, w.width)
                    x = np.empty(shape, dtype=np.float32)
                xi = x[len(idx)]
                np.subtract(data_all[(slice(None), *sl)], m, out=xi)
                np.divide(xi, s, out=xi)
                if not valid.all():
                    np.copyto(xi, np.float32(0.0), where=~valid)
                idx.append(len(valids) - 1)
    out: BatchResult = [(None, v) for v in valids]
    if x is not None:
        outputs = get_runner(spec)(x[: len(idx)])
        for j, i in enumerate(idx):
            out[i] = ({name: v[j] for name, v in outputs.items()}, valids[i])
    return out


def _union(row: list[PixelWindow]) -> PixelWindow:
    """The strip covering ``row``, windows of one window row."""
    left = min(w.col for w in row)
    return PixelWindow(row[0].row, left, row[0].height, max(w.col_stop for w in row) - left)


def finalize_block(
    block: PixelWindow,
    batches: list[BatchResult],
    members: list[tuple[PixelWindow, int, int]],
    weight: np.ndarray,
    spec: BlockSpec,
) -> tuple[PixelWindow, str | None]:
    """Blend every window overlapping ``block`` and save the block's outputs.

    Args:
        block: the output block.
        batches: results of the batch tasks this block depends on.
        members: (window, position in ``batches``, position in that batch), in global
            window order, which fixes the summation order.
        weight: the blend window.
        spec: output conventions.

    Returns:
        ``(block, path)`` of an ``.npz`` holding the decoder's product arrays, or
        ``(block, None)`` when the whole block is no-data.
    """
    if _on_device(batches, spec.blend):
        maps, valid = blend_block_device(block, batches, members, weight, spec.blend)
        if maps is not None and not getattr(spec.decoder, "device_maps", False):
            maps = to_host(maps)
    else:
        maps, valid = blend_block(block, batches, members, weight, spec.blend)
    if spec.claim is not None:
        found = window_objects(batches, members, spec.claim, spec.layout)
        if not found or not valid.any():
            return block, None
        arrays = spec.decoder.decode_objects(block, maps or {}, valid, found)
    elif maps is None or not valid.any():
        return block, None
    else:
        arrays = spec.decoder.decode(maps, valid)
    name = f"block_{block.row}_{block.col}.npz"
    final = os.path.join(spec.out_dir, name)
    fd, tmp = tempfile.mkstemp(prefix=".", suffix=".npz", dir=spec.out_dir)
    with os.fdopen(fd, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, final)  # atomic: a retried task after a killed worker is harmless
    return block, final


def _on_device(batches: list[BatchResult], names: tuple[str, ...]) -> bool:
    """True when the batches' outputs were left on the model's device (torch tensors)."""
    for batch in batches:
        for outputs, _ in batch:
            if outputs is not None:
                return bool(names) and is_device_array(outputs[names[0]])
    return False


def blend_block(
    block: PixelWindow,
    batches: list[BatchResult],
    members: list[tuple[PixelWindow, int, int]],
    weight: np.ndarray,
    names: tuple[str, ...],
) -> tuple[dict[str, np.ndarray] | None, np.ndarray]:
    """The ``sum(w*p) / sum(w)`` blend of the outputs ``names`` over ``block``.

    Returns:
        ``(maps, valid)``: blended (C, h, w) float32 maps by name (None when no window
        of the block was run) and the block's valid mask.
    """
    acc: dict[str, np.ndarray] = {}
    scratch: dict[str, np.ndarray] = {}
    wsum = np.zeros((block.height, block.width), dtype=np.float32)
    valid = np.zeros((block.height, block.width), dtype=bool)
    for win, b, k in members:
        outputs, vmask = batches[b][k]
        dst, src = block.overlap_slices(win)
        valid[dst] |= vmask[src]
        if outputs is None:
            continue
        w = weight[src]
        for name in names:
            probs = outputs[name]
            if name not in acc:
                acc[name] = np.zeros((probs.shape[0], block.height, block.width), np.float32)
                scratch[name] = np.empty_like(acc[name])
            prod = scratch[name][:, : w.shape[0], : w.shape[1]]
            np.multiply(probs[(slice(None), *src)], w, out=prod)
            acc[name][(slice(None), *dst)] += prod
        wsum[dst] += w
    if not acc:
        return None, valid
    denom = np.maximum(wsum, np.float32(1e-30))
    for a in acc.values():
        np.divide(a, denom, out=a)
    return acc, valid


#: Height (pixels) of the output strips blended by one block task: at most
#: ``block_size``, at least this many pixels.
MIN_BLOCK_ROWS = 256


def block_rows(block_size: int, tile_size: int) -> int:
    """Height of one block task's strip: ``block_size`` capped near half a tile.

    A window row's probabilities are freed once every block touching it is done. A
    strip at most about half a tile high touches at most two window rows, so only about
    two rows of window results (times the mosaic width) are held; with square 1024 px
    blocks and 512 px tiles about four rows were (peak memory grew with the width).
    Results do not depend on block shapes, so this changes memory only.
    """
    return min(block_size, max(MIN_BLOCK_ROWS, tile_size // 2))


def build_graph(
    mosaic: Mosaic,
    spec: RunnerSpec,
    *,
    tile_size: int,
    overlap: int,
    batch_size: int,
    block_size: int,
    weight: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    block_spec: BlockSpec,
    token: str,
    align: int = 1,
) -> tuple[dict[Any, Any], list[Any], int]:
    """Build the task graph.

    Returns:
        ``(graph, block_keys, n_windows)``.
    """
    rows = axis_starts(mosaic.height, tile_size, overlap, align=align)
    cols = axis_starts(mosaic.width, tile_size, overlap, align=align)
    if block_spec.claim is not None and block_spec.layout is None:
        block_spec = replace(block_spec, layout=ObjectLayout.of(rows, cols, tile_size))
    dsk: dict[Any, Any] = {}
    bname, fname = f"geoseg-batch-{token}", f"geoseg-block-{token}"
    # Batches: consecutive windows in row-major order (full batches, whatever the
    # mosaic width, so peak memory does not depend on it). Fixed by the mosaic alone.
    where: dict[tuple[int, int], tuple[int, int]] = {}
    order = [(ri, ci) for ri in range(len(rows)) for ci in range(len(cols))]
    nb = 0
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        wins = [PixelWindow(rows[ri], cols[ci], tile_size, tile_size) for ri, ci in chunk]
        dsk[(bname, nb)] = (run_batch, mosaic, spec, wins, mean, std)
        for k, rc in enumerate(chunk):
            where[rc] = (nb, k)
        nb += 1
    keys = []
    bh = block_rows(block_size, tile_size)
    for r in range(0, mosaic.height, bh):
        for c in range(0, mosaic.width, block_size):
            block = PixelWindow(r, c, min(bh, mosaic.height - r), min(block_size, mosaic.width - c))
            ri0 = bisect.bisect_right(rows, block.row - tile_size)
            ri1 = bisect.bisect_left(rows, block.row_stop)
            ci0 = bisect.bisect_right(cols, block.col - tile_size)
            ci1 = bisect.bisect_left(cols, block.col_stop)
            deps: list[int] = []
            members = []
            for ri in range(ri0, ri1):
                for ci in range(ci0, ci1):
                    b, k = where[(ri, ci)]
                    if b not in deps:
                        deps.append(b)
                    win = PixelWindow(rows[ri], cols[ci], tile_size, tile_size)
                    members.append((win, deps.index(b), k))
            key = (fname, r // bh, c // block_size)
            dsk[key] = (
                finalize_block,
                block,
                [(bname, b) for b in deps],
                members,
                weight,
                block_spec,
            )
            keys.append(key)
    return dsk, keys, len(rows) * len(cols)


def block_path_is_done(path: str | None) -> bool:
    """True when a block result exists on disk (or the block is all no-data)."""
    return path is None or Path(path).is_file()
