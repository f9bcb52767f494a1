"""Pixel grids, the one CRS-equivalence rule and the one model of ground areas.

* :class:`PixelWindow`: a rectangle of a raster in integer pixels.
* :class:`Grid`: a working pixel lattice (CRS, pixel size, origin) that files are placed on.
* :class:`RasterGrid` / :func:`pixel_areas`: **one area model** for class statistics and
  polygon areas (m², never degrees; see :class:`RasterGrid`).
* :func:`crs_equivalent` / :func:`same_grid_crs`: **one rule, used everywhere** (training,
  prediction, vectorization, statistics): two CRSs whose coordinates agree to within
  :data:`CRS_TOLERANCE_PX` of a pixel over a raster's footprint are the same grid, and a
  file on the same grid is read directly, never resampled. ``EPSG:3358`` and
  ``EPSG:32119`` (the North Carolina sample's label and imagery tags) are one grid.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS as ProjCRS
from pyproj import Transformer
from rasterio.crs import CRS

from geoseg.errors import ConfigError, DataError

Box = tuple[float, float, float, float]  # (minx, miny, maxx, maxy) in CRS units

#: Two CRSs whose coordinates agree to within this fraction of a pixel over a raster's
#: footprint are treated as the same grid (no resampling, no warning).
CRS_TOLERANCE_PX = 0.1

#: Largest raster (pixels) any command reads or writes; ``GEOSEG_MAX_PIXELS`` raises it.
MAX_PIXELS = 20_000_000_000


def max_pixels() -> int:
    """:data:`MAX_PIXELS`, or the ``GEOSEG_MAX_PIXELS`` environment variable when set."""
    raw = os.environ.get("GEOSEG_MAX_PIXELS")
    if raw is None or not raw.strip():
        return MAX_PIXELS
    try:
        value = int(float(raw)) if raw.strip().lower() not in ("nan", "inf", "-inf") else -1
    except ValueError:
        value = -1
    if value < 1:
        raise ConfigError(
            f"GEOSEG_MAX_PIXELS={raw!r} is not a positive number of pixels (e.g. 40000000000)"
        )
    return value


def check_size(width: int, height: int, what: str, hint: str) -> None:
    """DataError ``"{what} W x H px (...): {hint}"`` beyond :func:`max_pixels` pixels."""
    limit = max_pixels()
    if width * height > limit:
        raise DataError(
            f"{what} {width} x {height} px ({_gpx(width * height)}, more than "
            f"{_gpx(limit)}): {hint} (set GEOSEG_MAX_PIXELS to allow a raster this large)"
        )


def _gpx(n: int) -> str:
    if n >= 10**300:
        return "more than 1e300 px"
    return f"{n / 1e9:.1f} Gpx" if n >= 10**9 else f"{n / 1e6:.2f} Mpx"


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

    def overlap_slices(self, other: PixelWindow) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
        """Where ``self`` and ``other`` share pixels, as (rows, cols) slices.

        The first pair indexes an array of ``self``, the second one of ``other`` (empty
        slices when the two do not meet).
        """
        r0, r1 = max(self.row, other.row), min(self.row_stop, other.row_stop)
        c0, c1 = max(self.col, other.col), min(self.col_stop, other.col_stop)
        return (
            (slice(r0 - self.row, r1 - self.row), slice(c0 - self.col, c1 - self.col)),
            (slice(r0 - other.row, r1 - other.row), slice(c0 - other.col, c1 - other.col)),
        )

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


@dataclass(frozen=True)
class RasterGrid:
    """A raster grid and how to measure on it in metres.

    Geometries are built in integer pixel coordinates (column, row) and moved to the CRS
    with ``transform``. Areas and lengths are computed in metres: directly for a projected
    CRS (times its unit factor), and in a Lambert azimuthal equal-area projection centred
    on the raster for a geographic CRS (areas exact, lengths to local scale), never in
    degrees.
    """

    height: int
    width: int
    transform: Affine
    crs_wkt: str
    #: EPSG code GDAL identifies for the raster's CRS (None if it finds none).
    epsg: int | None = None

    @property
    def crs(self) -> ProjCRS:
        """The grid's CRS as a pyproj CRS."""
        return ProjCRS.from_wkt(self.crs_wkt)

    @property
    def output_crs(self) -> ProjCRS:
        """The CRS written to vector outputs.

        The EPSG definition when GDAL identifies the raster's CRS as one: GeoTIFF keys
        often come back as an 'unnamed' WKT that GIS software shows as an unknown CRS.
        Otherwise the raster's own WKT.
        """
        return ProjCRS.from_epsg(self.epsg) if self.epsg is not None else self.crs

    @property
    def is_geographic(self) -> bool:
        """True for a lon/lat CRS (areas must be computed in a projected CRS)."""
        return bool(self.crs.is_geographic)

    @property
    def unit_factor(self) -> float:
        """Metres per CRS unit for a projected CRS."""
        axis = self.crs.axis_info[0] if self.crs.axis_info else None
        factor = getattr(axis, "unit_conversion_factor", None)
        return float(factor) if factor else 1.0

    def metric_crs(self) -> ProjCRS:
        """The CRS used to measure in metres (the CRS itself, or a local equal-area one)."""
        if not self.is_geographic:
            return self.crs
        cx, cy = self.transform @ (self.width / 2.0, self.height / 2.0)
        ellps = self.crs.ellipsoid
        a, rf = (ellps.semi_major_metre, ellps.inverse_flattening) if ellps else (6378137.0, 0)
        shape = f"+a={a} +rf={rf}" if rf else f"+R={a}"
        lat_ts = max(min(cy, 89.0), -89.0)
        return ProjCRS.from_proj4(
            f"+proj=cea +lat_ts={lat_ts} +lon_0={cx} {shape} +units=m +no_defs"
        )

    def to_crs(self, geoms: np.ndarray) -> np.ndarray:
        """Pixel-coordinate geometries -> CRS coordinates (exact affine)."""
        if len(geoms) == 0:
            return geoms
        t = self.transform

        def apply(xy: np.ndarray) -> np.ndarray:
            x, y = xy[:, 0], xy[:, 1]
            return np.column_stack([t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f])

        return np.asarray(shapely.transform(geoms, apply))

    def to_metric(self, geoms_crs: np.ndarray) -> np.ndarray:
        """CRS-coordinate geometries -> metre coordinates for measuring."""
        if len(geoms_crs) == 0:
            return geoms_crs
        if not self.is_geographic:
            f = self.unit_factor
            if f == 1.0:
                return geoms_crs
            return np.asarray(shapely.transform(geoms_crs, lambda xy: xy * f))
        tr = Transformer.from_crs(self.crs, self.metric_crs(), always_xy=True)

        def project(xy: np.ndarray) -> np.ndarray:
            x, y = tr.transform(xy[:, 0], xy[:, 1])
            return np.column_stack([x, y])

        return np.asarray(shapely.transform(geoms_crs, project))

    def metric_area(self, geoms_px: np.ndarray) -> np.ndarray:
        """Areas in m² of pixel-coordinate geometries."""
        if len(geoms_px) == 0:
            return np.zeros(0)
        if not self.is_geographic:
            t = self.transform
            return shapely.area(geoms_px) * abs(t.a * t.e - t.b * t.d) * self.unit_factor**2
        return shapely.area(self.to_metric(self.to_crs(geoms_px)))

    def pixel_size_m(self) -> float:
        """Side of a square with the area of one pixel at the raster centre, in metres."""
        r, c = self.height // 2, self.width // 2
        pix = shapely.box(c, r, c + 1, r + 1)
        return float(math.sqrt(self.metric_area(np.array([pix]))[0]))


def pixel_areas(grid: RasterGrid) -> np.ndarray:
    """Ground area in m² of one pixel in each row (constant for a projected CRS).

    For a geographic CRS, a row's pixel is the quadrangle between two meridians and two
    parallels; its area is measured in :meth:`RasterGrid.metric_crs`, where that
    quadrangle is a rectangle: exact on the ellipsoid, and the same model as polygon areas.
    """
    t = grid.transform
    if not grid.is_geographic:
        return np.full(grid.height, abs(t.a * t.e - t.b * t.d) * grid.unit_factor**2)
    if t.b != 0 or t.d != 0:
        raise DataError(
            "a rotated geographic grid is not supported for area statistics; warp it to a "
            "north-up grid first (gdalwarp)"
        )
    tr = Transformer.from_crs(grid.crs, grid.metric_crs(), always_xy=True)
    lats = np.clip(t.f + np.arange(grid.height + 1) * t.e, -90.0, 90.0)
    _, ys = tr.transform(np.full(len(lats), t.c), lats)
    xs, _ = tr.transform(np.array([t.c, t.c + t.a]), np.array([lats[0], lats[0]]))
    return np.abs(np.diff(np.asarray(ys))) * abs(float(xs[1] - xs[0]))
