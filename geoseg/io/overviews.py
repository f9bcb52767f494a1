"""Class-map overviews built block by block while a prediction runs.

GDAL builds a COG's overviews after the last block is written: for a class map it took
0.28 s of a 2.1 s prediction on an H200 with 16 cores (the largest serial piece left).
Here each overview level of a categorical product is computed from the block just
written (:class:`ModeLevels`), so at the end only the levels that no block could make
(blocks not aligned to the level's factor, levels coarser than a block) remain, and
those are made in strips from the level below.

Why by hand: GDAL computes overviews of a whole dataset, never of one block (its
partial refresh is not reachable from rasterio). The rule is GDAL's ``mode`` for bytes
on windows of 2 x 2 pixels of the level below, no-data skipped, ties to the value that
first reaches the top count in row order; the windows are aligned to the level's grid,
so a level is the same whatever the blocks. Where the size is divisible by the factor
this equals GDAL's output bit for bit (tested); elsewhere GDAL's windows drift to 3
pixels wide and overlap, and the two differ at ties.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

#: Rows of the level below read at a time when a level is made in strips (even).
STRIP_ROWS = 2048


def overview_factors(height: int, width: int, blocksize: int) -> list[int]:
    """The overview factors (2, 4, ...) of a ``height`` x ``width`` COG with ``blocksize`` tiles."""
    factors, f = [], 2
    while max(height, width) / (f // 2) > blocksize:
        factors.append(f)
        f *= 2
    return factors


def mode_2x2(a: np.ndarray, nodata: float) -> np.ndarray:
    """The next level of ``a``: the mode of each 2 x 2 window (edges: the pixels there).

    No-data pixels do not vote; a window of no-data only is no-data. Ties go to the
    value that first reaches the top count in row order (GDAL's rule for bytes).
    """
    h, w = a.shape
    if h % 2 or w % 2:
        padded = np.full((h + h % 2, w + w % 2), nodata, dtype=a.dtype)
        padded[:h, :w] = a
        a = padded
    p = (a[0::2, 0::2], a[0::2, 1::2], a[1::2, 0::2], a[1::2, 1::2])
    ok = [x != nodata for x in p]
    eq = {(i, j): ok[i] & ok[j] & (p[i] == p[j]) for i in range(4) for j in range(i + 1, 4)}
    one = np.int8(1)
    # count of each position's value over the window, and up to that position
    total = [
        ok[i] * (one + sum((eq[min(i, j), max(i, j)] for j in range(4) if j != i), np.int8(0)))
        for i in range(4)
    ]
    top = np.maximum(np.maximum(total[0], total[1]), np.maximum(total[2], total[3]))
    out = np.full(p[0].shape, nodata, dtype=a.dtype)
    for i in (3, 2, 1, 0):  # the earliest position reaching the top count wins
        upto = ok[i] * (one + sum((eq[j, i] for j in range(i)), np.int8(0)))
        np.copyto(out, p[i], where=(upto == top) & (top > 0))
    return out


class ModeLevels:
    """Mode overview levels of one categorical raster, filled block by block.

    Args:
        open_level: ``(factor) -> writable rasterio dataset`` of that level's grid.
        height, width: the full-resolution grid.
        factors: the overview factors (2, 4, ...).
        nodata: the raster's no-data value.
    """

    def __init__(
        self,
        open_level: Callable[[int], Any],
        height: int,
        width: int,
        factors: list[int],
        nodata: float,
    ) -> None:
        self.height, self.width, self.nodata = height, width, nodata
        self.factors = factors
        self.levels = [open_level(f) for f in factors]
        #: levels every block so far has written (the rest is made at the end)
        self.complete = len(factors)

    def _aligned(self, row: int, col: int, h: int, w: int) -> int:
        """How many levels a block at (row, col) of h x w can make on its own."""
        n = 0
        for f in self.factors:
            ends = (h % f == 0 or row + h == self.height) and (w % f == 0 or col + w == self.width)
            if row % f or col % f or not ends:
                break
            n += 1
        return n

    def write(self, row: int, col: int, a: np.ndarray) -> None:
        """Add the levels of the block ``a`` (2-D) whose top-left pixel is (row, col)."""
        from rasterio.windows import Window

        n = min(self._aligned(row, col, *a.shape), self.complete)
        self.complete = n
        for f, ds in zip(self.factors[:n], self.levels):
            a = mode_2x2(a, self.nodata)
            ds.write(a[None], window=Window(col // f, row // f, a.shape[1], a.shape[0]))

    def finish(self, read_full: Callable[[int, int], np.ndarray]) -> None:
        """Make the levels no block could, in strips from the level below; close all.

        ``read_full(row0, row1)`` reads rows of the full-resolution raster (needed only
        when no level came from the blocks).
        """
        from rasterio.windows import Window

        for k in range(self.complete, len(self.factors)):
            below = self.levels[k - 1] if k else None
            dst = self.levels[k]
            h = below.height if below is not None else self.height
            for r0 in range(0, h, STRIP_ROWS):
                r1 = min(h, r0 + STRIP_ROWS)
                if below is not None:
                    src = below.read(1, window=Window(0, r0, below.width, r1 - r0))
                else:
                    src = read_full(r0, r1)
                lvl = mode_2x2(src, self.nodata)
                dst.write(lvl[None], window=Window(0, r0 // 2, lvl.shape[1], lvl.shape[0]))
        self.close()

    def close(self) -> None:
        """Close the level files (again: a no-op)."""
        for ds in self.levels:
            ds.close()


def vrt_with_overviews(src: Path, levels: list[Path], dst: Path) -> Path:
    """A VRT of ``src`` whose bands' overviews are the files ``levels``.

    GDAL writes the VRT (so it carries all of ``src``'s metadata); each band gets the
    level files as its overviews, for the COG driver's ``OVERVIEWS=FORCE_USE_EXISTING``.
    """
    import xml.etree.ElementTree as ET

    from rasterio.shutil import copy

    copy(src, dst, driver="VRT")
    tree = ET.parse(dst)
    for band in tree.getroot().iter("VRTRasterBand"):
        n = band.get("band")
        for path in levels:
            ov = ET.SubElement(band, "Overview")
            name = ET.SubElement(ov, "SourceFilename", relativeToVRT="0")
            name.text = str(Path(path).resolve())
            ET.SubElement(ov, "SourceBand").text = n
    tree.write(dst)
    return dst
