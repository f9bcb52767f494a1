"""Per-band normalization statistics from the training split's valid pixels."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from geoseg.errors import DataError
from geoseg.io.grid import Box, Grid


def iter_chunks(box: Box, grid: Grid, *, chunk: int = 1024) -> list[Box]:
    """Split ``box`` into boxes of at most ``chunk`` x ``chunk`` grid pixels."""
    rows, cols = grid.shape(box)
    out = []
    for r in range(0, rows, chunk):
        for c in range(0, cols, chunk):
            nr, nc = min(chunk, rows - r), min(chunk, cols - c)
            out.append(
                (
                    box[0] + c * grid.xres,
                    box[3] - (r + nr) * grid.yres,
                    box[0] + (c + nc) * grid.xres,
                    box[3] - r * grid.yres,
                )
            )
    return out


def band_statistics(
    read: Callable[..., tuple[np.ndarray, np.ndarray]],
    regions: Sequence[Box],
    grid: Grid,
    *,
    band_names: Sequence[str],
    max_pixels: int = 20_000_000,
) -> tuple[list[float], list[float]]:
    """Mean and standard deviation of every band over the valid pixels of ``regions``.

    Accumulates in float64 chunk by chunk (bounded memory). Above ``max_pixels`` the
    regions are subsampled on a regular lattice (one pixel per k x k cell, read
    decimated, so the cost follows ``max_pixels`` rather than the region size).

    Args:
        read: ``read(box)`` returns ``(values (C, H, W), valid (H, W))`` raw imagery of
            a box; ``read(box, grid=coarser_grid)`` the same on a coarsened grid.
        regions: the training regions (CRS boxes).
        grid: the working grid.
        band_names: band names for messages.
        max_pixels: pixel budget.

    Returns:
        ``(mean, std)`` lists, one value per band; a constant band gets std 1.

    Raises:
        DataError: no valid imagery pixel in the regions.
    """
    total = sum(grid.shape(b)[0] * grid.shape(b)[1] for b in regions)
    step = max(1, math.ceil(math.sqrt(total / max_pixels))) if max_pixels > 0 else 1
    n = len(band_names)
    s1 = np.zeros(n, dtype=np.float64)
    s2 = np.zeros(n, dtype=np.float64)
    count = 0
    # shift by the first valid pixel so sums of squares do not lose precision
    ref: np.ndarray | None = None
    rgrid = grid if step == 1 else grid.coarsen(step)
    for region in regions:
        for box in iter_chunks(region, rgrid):
            # on a coarsened grid the files are read decimated: one pixel per lattice cell
            values, valid = read(box) if step == 1 else read(box, grid=rgrid)
            px = values[:, valid].astype(np.float64)
            if px.size == 0:
                continue
            if ref is None:
                ref = px[:, 0].copy()
            d = px - ref[:, None]
            s1 += d.sum(axis=1)
            s2 += (d * d).sum(axis=1)
            count += px.shape[1]
    if count == 0 or ref is None:
        raise DataError(
            "data: the training region has no valid imagery pixel, so normalization "
            "statistics cannot be computed; check data.imagery.nodata and the split, or "
            "give data.normalization.mean and std"
        )
    mean = ref + s1 / count
    var = np.maximum(s2 / count - (s1 / count) ** 2, 0.0)
    std = np.sqrt(var)
    std[std == 0] = 1.0
    return [float(v) for v in mean], [float(v) for v in std]
