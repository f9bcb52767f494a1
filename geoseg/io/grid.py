"""Pixel grids, the one CRS-equivalence rule and the one model of ground areas.

* :class:`PixelWindow`: a rectangle of a raster in integer pixels.
* :class:`Grid`: a working pixel lattice (CRS, pixel size, origin) that files are placed on.
* :func:`crs_equivalent` / :func:`same_grid`: **one rule, used everywhere** (training,
  prediction, vectorization, statistics): two CRSs whose coordinates agree to within
  :data:`CRS_TOLERANCE_PX` of a pixel over a raster's footprint are the same grid, and a
  file on the same grid is read directly, never resampled. ``EPSG:3358`` and
  ``EPSG:32119`` (the North Carolina sample's label and imagery tags) are one grid.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from affine import Affine
from pyproj import Transformer
from rasterio.crs import CRS

Box = tuple[float, float, float, float]  # (minx, miny, maxx, maxy) in CRS units

#: Two CRSs whose coordinates agree to within this fraction of a pixel over a raster's
#: footprint are treated as the same grid (no resampling, no warning).
CRS_TOLERANCE_PX = 0.1

#: A file is on the working grid when its pixel size and origin agree to this fraction.
ALIGN_TOLERANCE_PX = 0.01


@dataclass(frozen=True, order=True)
class PixelWindow:
    """A rectangle of the output grid in pixels: rows ``[row, row+height)``, cols likewise.

    Windows may extend past the grid's right/bottom edge when the mosaic is smaller
    than one tile; the part outside is read as no-data.
    """

    row: int
    col: int
    height: int
    width: int

    @property
    def row_stop(self) -> int:
        """One past the last row."""
        return self.row + self.height

    @property
    def col_stop(self) -> int:
        """One past the last column."""
        return self.col + self.width

    def intersects(self, other: PixelWindow) -> bool:
        """True when the two windows share at least one pixel."""
        return (
            self.row < other.row_stop
            and other.row < self.row_stop
            and self.col < other.col_stop
            and other.col < self.col_stop
        )


@dataclass(frozen=True)
class Grid:
    """A pixel grid: CRS, pixel size (positive, CRS units) and an origin to align to."""

    crs: CRS
    xres: float
    yres: float
    x0: float
    y0: float

    def coarsen(self, factor: int) -> Grid:
        """The same grid with pixels ``factor`` times larger (same origin)."""
        return Grid(self.crs, self.xres * factor, self.yres * factor, self.x0, self.y0)

    def shape(self, box: Box) -> tuple[int, int]:
        """(rows, cols) of ``box`` on this grid."""
        minx, miny, maxx, maxy = box
        return (
            max(round((maxy - miny) / self.yres), 0),
            max(round((maxx - minx) / self.xres), 0),
        )

    def transform(self, box: Box) -> Affine:
        """Pixel-to-CRS transform of an array covering ``box``."""
        return Affine(self.xres, 0.0, box[0], 0.0, -self.yres, box[3])

    def snap(self, box: Box) -> Box:
        """``box`` grown outwards to whole pixels of this grid."""
        minx, miny, maxx, maxy = box
        c0 = math.floor((minx - self.x0) / self.xres + 1e-6)
        c1 = math.ceil((maxx - self.x0) / self.xres - 1e-6)
        r0 = math.floor((self.y0 - maxy) / self.yres + 1e-6)
        r1 = math.ceil((self.y0 - miny) / self.yres - 1e-6)
        return (
            self.x0 + c0 * self.xres,
            self.y0 - r1 * self.yres,
            self.x0 + c1 * self.xres,
            self.y0 - r0 * self.yres,
        )


def crs_equivalent(a: CRS, b: CRS, bounds: Box, *, tolerance: float) -> bool:
    """Whether coordinates in CRS ``a`` over ``bounds`` are the same numbers in CRS ``b``.

    ``EPSG:3358`` (NAD83(HARN) / North Carolina) and ``EPSG:32119`` (NAD83 / North
    Carolina) compare unequal as CRS objects, yet a grid tagged with one is the same grid
    in the other to well under a pixel. Comparing transformed corner coordinates (rather
    than CRS names) decides this from the geometry itself.

    Args:
        a: the file's CRS.
        b: the working CRS.
        bounds: the file's bounds in ``a``.
        tolerance: largest coordinate difference accepted, in units of ``b``.
    """
    if a == b:
        return True
    try:
        tr = Transformer.from_crs(a, b, always_xy=True)
        minx, miny, maxx, maxy = bounds
        xs = np.array([minx, maxx, minx, maxx, (minx + maxx) / 2])
        ys = np.array([miny, miny, maxy, maxy, (miny + maxy) / 2])
        tx, ty = tr.transform(xs, ys)
    except Exception:  # pyproj raises several types for impossible transformations
        return False
    err = np.nanmax(np.hypot(np.asarray(tx) - xs, np.asarray(ty) - ys))
    return bool(np.isfinite(err) and err <= tolerance)


def same_grid_crs(a: CRS, b: CRS, bounds: Box, pixel_size: float) -> bool:
    """The one rule: ``a`` and ``b`` are the same grid over ``bounds`` (CRS ``a``).

    True when coordinates differ by at most :data:`CRS_TOLERANCE_PX` of ``pixel_size``
    (in units of ``b``) over the footprint; the file is then read without resampling.
    """
    return crs_equivalent(a, b, bounds, tolerance=CRS_TOLERANCE_PX * pixel_size)


def union_bounds(boxes: Iterable[Box]) -> Box:
    """The bounding box of ``boxes``."""
    arr = np.array(list(boxes), dtype=float)
    return (
        float(arr[:, 0].min()),
        float(arr[:, 1].min()),
        float(arr[:, 2].max()),
        float(arr[:, 3].max()),
    )


def intersect(a: Box, b: Box) -> Box | None:
    """The intersection of two boxes, or None when it has no area."""
    minx, miny = max(a[0], b[0]), max(a[1], b[1])
    maxx, maxy = min(a[2], b[2]), min(a[3], b[3])
    if maxx <= minx or maxy <= miny:
        return None
    return (minx, miny, maxx, maxy)
