"""Class raster -> polygons: chunked, parallel, with regions merged exactly across seams.

The raster is never read whole. It is cut into chunks; each chunk (a Dask task) labels its
connected regions, polygonizes them with GDAL (``rasterio.features.shapes``) in *integer
pixel coordinates* and returns:

* regions that do not touch an internal chunk border: final, cleaned and measured in the
  worker (they can be streamed straight to the output file);
* regions that touch an internal border ("pieces") with the region label of every border
  pixel.

The main process joins pieces with union-find over the pixel adjacency across each seam
(exact, integer, no geometry operation decides what belongs together), then builds each
merged region with ``shapely.coverage_union_all``. GEOS's coverage union needs the pieces to
share vertices along their common edges; seam edges are cut at every pixel corner
(``shapely.segmentize`` with a 1-pixel step, exact in integer pixel coordinates) so they do.
Every geometry is then put in canonical form (collinear vertices removed, normalized) before
the affine transform is applied, so a region's geometry does not depend on how the raster
was chunked: chunked == single pass, vertex for vertex.

Connectivity: ``connectivity=4`` (the default, as GDAL/rasterio) makes one feature per
4-connected region of equal class; ``connectivity=8`` makes one feature per 8-connected
region (pixels touching at a corner belong together). An 8-connected region whose parts
touch only at corners is a valid MultiPolygon (an OGC polygon ring may not touch itself).

Memory is proportional to ``workers x chunk_size**2`` for the chunks in flight, plus the
pieces of regions that cross chunk borders and are still open (a region is merged and
written as soon as no pending chunk can extend it, so this is the frontier of about one
chunk row plus the regions that span many chunks), plus the output when it is returned as
a GeoDataFrame (use :func:`vectorize_to_file` to stream). Simplification and hole filling
need the whole coverage, so they keep all polygons.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from affine import Affine
from pyproj import CRS as ProjCRS
from pyproj import Transformer
from rasterio.features import shapes as _gdal_shapes
from rasterio.windows import Window
from scipy import ndimage
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from shapely import GeometryType

from geoseg.classes import DEFAULT_COLORS, ClassInfo, ClassTable, read_class_table
from geoseg.errors import ConfigError, DataError, InputFileError

__all__ = [
    "CONNECTIVITY",
    "DEFAULT_CHUNK_SIZE",
    "VECTOR_COLUMNS",
    "RasterGrid",
    "canonicalize",
    "class_table_for",
    "coverage_gaps_overlaps",
    "drop_collinear",
    "merge_pixel_polygons",
    "parse_classes",
    "vectorize",
    "vectorize_to_file",
]

#: Valid values of ``connectivity``: 4 (edge neighbours, GDAL's default) or 8 (also corners).
CONNECTIVITY = (4, 8)

#: Default chunk edge in pixels (a 2048 x 2048 chunk is 4 Mpx: ~32 MiB of int64 values).
DEFAULT_CHUNK_SIZE = 2048

#: Attribute columns of every polygon layer, in order (``confidence`` only with probabilities).
VECTOR_COLUMNS = ("class_id", "class_name", "pixels", "area_m2", "perimeter_m")

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------
# Grid geometry: pixel space -> CRS -> metres
# ------------------------------------------------------------------------------------------
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
        """The CRS used to measure in metres (the CRS itself, or a local LAEA)."""
        if not self.is_geographic:
            return self.crs
        cx, cy = self.transform @ (self.width / 2.0, self.height / 2.0)
        ellps = self.crs.ellipsoid
        a, rf = (ellps.semi_major_metre, ellps.inverse_flattening) if ellps else (6378137.0, 0)
        shape = f"+a={a} +rf={rf}" if rf else f"+R={a}"
        return ProjCRS.from_proj4(f"+proj=laea +lat_0={cy} +lon_0={cx} {shape} +units=m +no_defs")

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


# ------------------------------------------------------------------------------------------
# Sources: picklable readers of class ids (a raster, or a computed raster such as change)
# ------------------------------------------------------------------------------------------
def _ensure_integers(values: np.ndarray, valid: np.ndarray, where: str) -> np.ndarray:
    """Class ids as int64; a float raster must hold whole numbers."""
    if values.dtype.kind == "f":
        v = values[valid]
        bad = ~np.isfinite(v) | (v != np.floor(v))
        if bad.any():
            example = v[bad][0]
            raise DataError(
                f"{where}: class values must be whole numbers, found {example!r}; this looks "
                "like a continuous raster (probabilities or imagery), not a class map. Convert "
                "it first, e.g. `gdal_translate -ot UInt8 in.tif out.tif` after rounding, or "
                "`np.rint(a).astype('uint8')`, and set its nodata value"
            )
        values = np.where(valid, values, 0)
    return values.astype(np.int64, copy=False)


@dataclass(frozen=True)
class RasterSource:
    """Reads one band of class ids from a GeoTIFF, window by window.

    Args:
        path: the raster file.
        band: the band holding class ids (1-based).
        nodata: overrides the file's nodata value (e.g. ``-1`` for Sen1Floods11 labels).
    """

    path: str
    band: int = 1
    nodata: float | None = None
    #: (crs wkt, transform, width, height): read through a nearest-neighbour WarpedVRT
    warp: tuple[str, tuple[float, ...], int, int] | None = None

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Return (class ids as int64, valid mask) for ``window``."""
        with rasterio.open(self.path) as src:
            if self.warp is None:
                return self._read(src, window)
            from rasterio.vrt import WarpedVRT
            from rasterio.warp import Resampling

            crs, transform, width, height = self.warp
            with WarpedVRT(
                src,
                crs=crs,
                transform=Affine(*transform[:6]),
                width=width,
                height=height,
                resampling=Resampling.nearest,
            ) as vrt:
                return self._read(vrt, window)

    def _read(self, src: Any, window: Window) -> tuple[np.ndarray, np.ndarray]:
        a = src.read(self.band, window=window)
        nodata = self.nodata if self.nodata is not None else src.nodata
        valid = src.read_masks(self.band, window=window) > 0
        if nodata is not None:
            valid &= ~(np.isnan(a) if np.isnan(nodata) else (a == nodata))
        if a.dtype.kind == "f":
            valid &= ~np.isnan(a)
        return _ensure_integers(a, valid, f"{self.path} band {self.band}"), valid


def open_grid(path: str | Path, *, band: int = 1, what: str = "class map") -> RasterGrid:
    """Open ``path`` and return its grid; clear errors for missing files, bands and CRS."""
    p = str(path)
    if not Path(p).exists():
        raise InputFileError(f"{what} {p!r} does not exist")
    try:
        with rasterio.open(p) as src:
            if band < 1 or band > src.count:
                raise DataError(f"{what} {p!r} has {src.count} band(s); band {band} is invalid")
            if src.crs is None:
                raise DataError(
                    f"{what} {p!r} has no CRS, so polygons and areas cannot be georeferenced; "
                    "assign one, e.g. `gdal_edit.py -a_srs EPSG:32633 FILE` or "
                    "`rio edit-info --crs EPSG:32633 FILE`"
                )
            return RasterGrid(
                src.height,
                src.width,
                Affine(*src.transform[:6]),
                src.crs.to_wkt(),
                src.crs.to_epsg(),
            )
    except rasterio.errors.RasterioIOError as exc:
        raise InputFileError(f"{what} {p!r} cannot be read as a raster: {exc}") from None


def _path_of(labels: Any) -> str:
    """A raster argument (path or open rasterio dataset) as a path."""
    if isinstance(labels, str | Path):
        return str(labels)
    name = getattr(labels, "name", None)
    if isinstance(name, str):
        return name
    raise ConfigError(f"expected a raster path or an open rasterio dataset, got {type(labels)}")


# ------------------------------------------------------------------------------------------
# Class tables and the --classes option
# ------------------------------------------------------------------------------------------
def parse_classes(value: Any) -> tuple[list[int] | None, dict[int, str]]:
    """Parse a ``classes`` option into (ids to keep or None for all, names by id).

    Accepts None, a ClassTable, a sequence of ids, a mapping ``{id: name}``, or a string
    ``"1,5,6"`` / ``"1=developed,5=forest"`` / ``"developed,forest"`` (names are matched
    against the class table later).
    """
    if value is None:
        return None, {}
    if isinstance(value, ClassTable):
        return value.ids, {c.id: c.name for c in value}
    if isinstance(value, Mapping):
        names = {int(k): str(v) for k, v in value.items()}
        return sorted(names), names
    if isinstance(value, str):
        items = [s.strip() for s in value.split(",") if s.strip()]
        keep: list[int] = []
        names = {}
        for item in items:
            key, _, name = item.partition("=")
            try:
                cid = int(key)
            except ValueError:
                raise ConfigError(
                    f"classes: {item!r} is not a class id or 'id=name' (example: '1=developed,5')"
                ) from None
            keep.append(cid)
            if name:
                names[cid] = name.strip()
        return keep, names
    if isinstance(value, Iterable):
        return [int(v) for v in value], {}
    raise ConfigError(f"classes: expected ids, a mapping id->name or a string, got {value!r}")


def class_table_for(path: str | Path, *, band: int = 1) -> ClassTable | None:
    """The class table of a class map: the GEOSEG_CLASSES tag, else its colour table."""
    with rasterio.open(path) as src:
        table = read_class_table(src, band)
        if table is not None:
            return table
        try:
            cmap = src.colormap(band)
        except ValueError:
            return None
        nodata = src.nodata
        infos = [
            ClassInfo(int(k), f"class_{k}", "#{:02x}{:02x}{:02x}".format(*rgba[:3]))
            for k, rgba in sorted(cmap.items())
            if rgba[3] > 0 and (nodata is None or k != nodata) and any(rgba[:3])
        ]
        return ClassTable(infos) if 0 < len(infos) <= 64 else None


def _names_for(table: ClassTable | None, overrides: Mapping[int, str]) -> Callable[[int], str]:
    names = {c.id: c.name for c in table} if table is not None else {}
    names.update(overrides)
    return lambda cid: names.get(int(cid), f"class_{int(cid)}")


def class_color(table: ClassTable | None, cid: int, k: int) -> str:
    """The colour of class ``cid`` (table colour, else the default palette by position)."""
    if table is not None and cid in table.ids:
        return table.by_id(cid).color
    return DEFAULT_COLORS[k % len(DEFAULT_COLORS)]


# ------------------------------------------------------------------------------------------
# Chunk-local algorithms (run inside Dask workers)
# ------------------------------------------------------------------------------------------
def _structure(connectivity: int) -> np.ndarray:
    return ndimage.generate_binary_structure(2, 1 if connectivity == 4 else 2)


def label_regions(
    values: np.ndarray, keep: np.ndarray, connectivity: int
) -> tuple[np.ndarray, np.ndarray]:
    """Label connected regions of equal value.

    Returns:
        (labels int32 with 0 outside ``keep``, class id of each label; index 0 unused).
    """
    out = np.zeros(values.shape, np.int32)
    classes = [0]
    n = 0
    structure = _structure(connectivity)
    for c in np.unique(values[keep]):
        m = keep & (values == c)
        lab, k = ndimage.label(m, structure)
        out[m] = lab[m] + n
        classes.extend([int(c)] * k)
        n += k
    return out, np.asarray(classes, np.int64)


def sieve_classes(
    values: np.ndarray, valid: np.ndarray, size: int, connectivity: int
) -> np.ndarray:
    """Replace regions smaller than ``size`` pixels by their most common neighbouring class.

    One pass over the original values (ties go to the smallest class id; regions with no
    valid neighbour stay). Unlike GDAL's iterative sieve (``rasterio.features.sieve``), every
    decision depends only on pixels within ``size + 1`` of the region, so a chunk read with
    that halo sieves exactly as the whole raster would: this is why it is written here.
    """
    lab, cls = label_regions(values, valid, connectivity)
    sizes = np.bincount(lab.ravel(), minlength=len(cls))
    small = sizes < size
    small[0] = False
    if not small[lab].any():
        return values
    keys: list[np.ndarray] = []
    h, w = values.shape
    offsets = [(0, 1), (1, 0), (0, -1), (-1, 0)]
    if connectivity == 8:
        offsets += [(1, 1), (1, -1), (-1, 1), (-1, -1)]
    for dr, dc in offsets:
        rs = slice(max(dr, 0), h + min(dr, 0))
        rd = slice(max(-dr, 0), h + min(-dr, 0))
        cs = slice(max(dc, 0), w + min(dc, 0))
        cd = slice(max(-dc, 0), w + min(-dc, 0))
        a = lab[rd, cd]  # the pixel
        b = lab[rs, cs]  # its neighbour
        sel = small[a] & (b > 0) & (b != a)
        keys.append(np.column_stack([a[sel], values[rs, cs][sel]]))
    pairs = np.concatenate(keys)
    if len(pairs) == 0:
        return values
    uniq, counts = np.unique(pairs, axis=0, return_counts=True)
    # best neighbour per region: max count, then smallest class id
    order = np.lexsort((uniq[:, 1], -counts, uniq[:, 0]))
    uniq = uniq[order]
    first = np.ones(len(uniq), bool)
    first[1:] = uniq[1:, 0] != uniq[:-1, 0]
    new_class = np.arange(len(cls), dtype=np.int64)  # placeholder mapping label -> class
    replace = np.zeros(len(cls), bool)
    new_class[uniq[first, 0]] = uniq[first, 1]
    replace[uniq[first, 0]] = True
    out = values.copy()
    px = replace[lab]
    out[px] = new_class[lab[px]]
    return out


def _shapes_ragged(
    values: np.ndarray, mask: np.ndarray, offset: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """GDAL-polygonize (4-connected) into ragged arrays.

    Returns (xy, ring offsets, polygon offsets, value of each polygon), in integer pixel
    coordinates shifted by ``offset`` (row, col).

    ``rasterio.features.shapes`` yields GeoJSON-like dicts; their coordinates are gathered
    in flat lists and converted once (``np.fromiter``), never one object per vertex.
    """
    transform = Affine.translation(offset[1], offset[0])
    coords: list[tuple[float, float]] = []
    ring_sizes: list[int] = []
    poly_sizes: list[int] = []
    values_out: list[float] = []
    for geom, value in _gdal_shapes(values, mask=mask, connectivity=4, transform=transform):
        rings = geom["coordinates"]
        poly_sizes.append(len(rings))
        values_out.append(value)
        for ring in rings:
            ring_sizes.append(len(ring))
            coords.extend(ring)
    xy = np.fromiter(itertools.chain.from_iterable(coords), np.float64, 2 * len(coords))
    ring_off = np.zeros(len(ring_sizes) + 1, np.int64)
    np.cumsum(ring_sizes, out=ring_off[1:])
    poly_off = np.zeros(len(poly_sizes) + 1, np.int64)
    np.cumsum(poly_sizes, out=poly_off[1:])
    return xy.reshape(-1, 2), ring_off, poly_off, np.asarray(values_out, np.int64)


def _polygons_from_shapes(labels: np.ndarray, mask: np.ndarray, offset: tuple[int, int]) -> tuple:
    """GDAL-polygonize a label image (4-connected) into shapely polygons, in pixel coords.

    The polygons are built in one vectorized ``from_ragged_array`` call instead of one
    ``shape()`` per feature (about half the cost of the naive path).
    """
    xy, ring_off, poly_off, values = _shapes_ragged(labels, mask, offset)
    if len(values) == 0:
        return np.empty(0, object), np.empty(0, np.int64)
    geoms = shapely.from_ragged_array(GeometryType.POLYGON, xy, (ring_off, poly_off))
    return geoms, values


def _border_strips(
    xy: np.ndarray,
    ring_off: np.ndarray,
    poly_off: np.ndarray,
    box: tuple[int, int, int, int],
    sides: Sequence[str],
) -> dict[str, np.ndarray]:
    """The polygon (index) of every pixel along the chunk's sides, -1 where there is none.

    ``box`` is (r0, c0, h, w). A pixel on the chunk's top row belongs to polygon P exactly
    when P's boundary holds the pixel's top edge (nothing lies beyond the chunk), so the
    strips are painted from the polygon edges lying on the chunk outline: no label image
    is needed.
    """
    r0, c0, h, w = box
    x, y = xy[:, 0], xy[:, 1]
    online = (x == c0) | (x == c0 + w) | (y == r0) | (y == r0 + h)
    i = np.flatnonzero(online[:-1] & online[1:])  # edges from point i to i + 1 ...
    ring_start = np.zeros(len(xy) + 1, bool)
    ring_start[ring_off[:-1]] = True
    i = i[~ring_start[i + 1]]  # ... within one ring
    a, b = xy[i], xy[i + 1]
    ring = np.searchsorted(ring_off, i, "right") - 1
    epoly = np.searchsorted(poly_off, ring, "right") - 1
    out: dict[str, np.ndarray] = {}
    for name in sides:
        if name in ("top", "bottom"):
            line, axis, start, size = (r0 if name == "top" else r0 + h), 1, c0, w
        else:
            line, axis, start, size = (c0 if name == "left" else c0 + w), 0, r0, h
        sel = (a[:, axis] == line) & (b[:, axis] == line)
        lo = np.minimum(a[sel, 1 - axis], b[sel, 1 - axis]).astype(np.int64) - start
        n = np.abs(b[sel, 1 - axis] - a[sel, 1 - axis]).astype(np.int64)
        strip = np.full(size, -1, np.int64)
        k = np.arange(int(n.sum())) - np.repeat(np.cumsum(n) - n, n)
        strip[np.repeat(lo, n) + k] = np.repeat(epoly[sel], n)
        out[name] = strip
    return out


def _narrow(values: np.ndarray) -> np.ndarray | None:
    """Class ids in a dtype GDAL polygonizes (uint8/uint16/int32), None when none fits."""
    if values.size == 0:
        return values.astype(np.uint8)
    lo, hi = int(values.min()), int(values.max())
    for dt in (np.uint8, np.uint16, np.int32):
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return values.astype(dt)
    return None


def drop_collinear(geoms: np.ndarray) -> np.ndarray:
    """Remove vertices in the middle of straight runs from pixel (axis-aligned) polygons.

    Vectorized over all rings at once (``shapely.simplify(g, 0)`` does the same but is
    ~10x slower and topology-preserving machinery is not needed for pixel outlines).
    """
    if len(geoms) == 0:
        return geoms
    gtype, coords, offsets = shapely.to_ragged_array(geoms)
    ring_off = offsets[0]
    sizes = np.diff(ring_off)
    n_open = sizes - 1
    closing = ring_off[1:] - 1
    keep_pt = np.ones(len(coords), bool)
    keep_pt[closing] = False
    p = coords[keep_pt]
    nr = len(n_open)
    ring_id = np.repeat(np.arange(nr), n_open)
    ostart = np.concatenate([[0], np.cumsum(n_open)[:-1]])
    i = np.arange(len(p))
    local = i - ostart[ring_id]
    prev = i - 1
    first = local == 0
    prev[first] = (ostart + n_open - 1)[ring_id[first]]
    nxt = i + 1
    last = local == n_open[ring_id] - 1
    nxt[last] = ostart[ring_id[last]]
    x, y = p[:, 0], p[:, 1]
    collinear = ((x[prev] == x) & (x[nxt] == x)) | ((y[prev] == y) & (y[nxt] == y))
    q = p[~collinear]
    rid = ring_id[~collinear]
    new_n = np.bincount(rid, minlength=nr)
    new_start = np.concatenate([[0], np.cumsum(new_n)[:-1]])
    out = np.insert(q, new_start + new_n, q[new_start], axis=0)  # close every ring again
    new_off = np.concatenate([[0], np.cumsum(new_n + 1)])
    return np.asarray(shapely.from_ragged_array(gtype, out, (new_off, *offsets[1:])))


def canonicalize(geoms: np.ndarray, *, collinear: bool = True) -> np.ndarray:
    """Canonical form of pixel polygons: collinear vertices removed, then normalized.

    Two geometries of the same pixel set are then identical, however they were built.
    GDAL's polygons have no collinear vertices (``collinear=False`` skips that step).
    """
    if len(geoms) == 0:
        return geoms
    if collinear:
        geoms = drop_collinear(geoms)
    return np.asarray(shapely.normalize(geoms))


def merge_pixel_polygons(geoms: np.ndarray, seam_xs: np.ndarray, seam_ys: np.ndarray) -> Any:
    """Merge pixel polygons that share edges along seam lines into one geometry, exactly.

    Written by hand because GEOS's unions are slow on the typical "hard case" (a class
    spanning many chunks: a polygon with thousands of holes, seconds per union), and its
    coverage union needs shared edges to have identical vertices. Here everything is
    integer pixel arithmetic on edges:

    1. Orient rings so the region is on the left (shells counter-clockwise, holes
       clockwise). Rings without an edge on a seam line are kept as they are.
    2. Cut the edges lying on seam lines into unit edges; a unit edge present in two
       parts (in opposite directions) is interior to the merged region: drop both. The
       parts it joins belong to one 4-connected component (union-find over parts).
    3. Re-link the remaining edges of each component into rings. Where a component
       touches itself at a pixel corner, take the rightmost turn, which keeps every ring
       around one piece of the complement: the OGC-valid form (a hole touching the shell
       at a point, never a self-touching shell).
    4. A 4-connected component has exactly one counter-clockwise ring (its shell); all
       its clockwise rings are holes. Components touching only at corners (8-connected
       regions) become the parts of a MultiPolygon.

    Args:
        geoms: Polygons / MultiPolygons in integer pixel coordinates, not overlapping.
        seam_xs: columns of the vertical seams (chunk borders).
        seam_ys: rows of the horizontal seams.

    Returns:
        A Polygon or MultiPolygon (not yet canonical: run :func:`canonicalize`).
    """
    e = _seam_unit_edges(shapely.get_parts(geoms), seam_xs, seam_ys)
    n_parts, rings, ring_part, touched = e.n_parts, e.rings, e.ring_part, e.touched
    A, B, unit, edge_part, width = e.A, e.B, e.unit, e.edge_part, e.width
    # 2. unit edges along seams, cancelled in pairs; the parts they join are one component
    lo = np.minimum(A, B)
    key = (lo[:, 0] * width + lo[:, 1]) * 2 + (A[:, 0] == B[:, 0])
    ui = np.flatnonzero(unit)
    order_k = ui[np.argsort(key[ui], kind="stable")]
    ks = key[order_k]
    dup = np.flatnonzero(ks[1:] == ks[:-1])  # each shared unit edge appears exactly twice
    e1, e2 = order_k[dup], order_k[dup + 1]
    drop = np.zeros(len(A), bool)
    drop[e1] = drop[e2] = True
    graph = coo_matrix(
        (np.ones(len(e1), np.int8), (edge_part[e1], edge_part[e2])), shape=(n_parts, n_parts)
    )
    n_comp, comp = connected_components(graph, directed=False)
    comp = comp.astype(np.int64)  # int32 would overflow in the vertex keys below
    A, B, ecomp, shells, holes = _component_rings(
        A, B, drop, edge_part, comp, n_comp, rings, ring_part, touched
    )
    # 3. link the edges of each component into rings (rightmost turn at pinch vertices)
    if len(A):
        succ = _link_edges(A, B, ecomp, width)
        if succ is None:  # pragma: no cover - not a pixel coverage
            return shapely.union_all(geoms)
        w, rid, n_rings = _walk_cycles(succ)
        cross = (A[w, 0] * B[w, 1] - B[w, 0] * A[w, 1]).astype(np.float64)
        area2 = np.bincount(rid, weights=cross, minlength=n_rings)
        new_rings = shapely.linearrings(A[w].astype(np.float64), indices=rid)
        starts = np.flatnonzero(np.diff(np.concatenate([[-1], rid])))
        for ring, a2, e0 in zip(new_rings, area2.tolist(), w[starts].tolist()):
            (shells if a2 > 0 else holes)[int(ecomp[e0])].append(ring)
    # 4. one shell per 4-connected component
    polys = []
    for c in range(n_comp):
        if len(shells[c]) != 1:  # pragma: no cover - defensive: fall back to GEOS
            return shapely.union_all(geoms)
        polys.append(shapely.Polygon(shells[c][0], holes[c]))
    return polys[0] if len(polys) == 1 else shapely.MultiPolygon(polys)


def _merge_pixel_batch(
    geoms: np.ndarray, group: np.ndarray, n_groups: int, seam_xs: np.ndarray, seam_ys: np.ndarray
) -> np.ndarray | None:
    """:func:`merge_pixel_polygons` for many 4-connected regions in one vectorized pass.

    ``geoms`` are Polygons; ``group`` (0..n_groups-1) says which region each belongs to,
    and each group must be one 4-connected region. Shared seam edges only cancel within a
    group (the group is part of the edge key). Returns one Polygon per group, or None when
    the input is not of that form (the caller then merges region by region).
    """
    e = _seam_unit_edges(geoms, seam_xs, seam_ys)
    n_parts, rings, ring_part, touched = e.n_parts, e.rings, e.ring_part, e.touched
    A, B, unit, edge_part, width = e.A, e.B, e.unit, e.edge_part, e.width
    lo = np.minimum(A, B)
    key = ((group[edge_part] * width + lo[:, 0]) * width + lo[:, 1]) * 2 + (A[:, 0] == B[:, 0])
    ui = np.flatnonzero(unit)
    order_k = ui[np.argsort(key[ui], kind="stable")]
    ks = key[order_k]
    dup = np.flatnonzero(ks[1:] == ks[:-1])
    e1, e2 = order_k[dup], order_k[dup + 1]
    if len(dup) > 1 and (np.diff(dup) == 1).any():  # an edge in more than two parts
        return None
    drop = np.zeros(len(A), bool)
    drop[e1] = drop[e2] = True
    graph = coo_matrix(
        (np.ones(len(e1), np.int8), (edge_part[e1], edge_part[e2])), shape=(n_parts, n_parts)
    )
    n_comp, comp = connected_components(graph, directed=False)
    comp = comp.astype(np.int64)  # int32 would overflow in the vertex keys below
    if n_comp != n_groups:
        return None
    comp_group = np.full(n_comp, -1, np.int64)
    comp_group[comp] = group
    if (comp_group[comp] != group).any() or (np.sort(comp_group) != np.arange(n_groups)).any():
        return None  # a group is not one 4-connected region
    A, B, ecomp, shells, holes = _component_rings(
        A, B, drop, edge_part, comp, n_comp, rings, ring_part, touched
    )
    if len(A):
        succ = _link_edges(A, B, ecomp, width)
        if succ is None:
            return None
        w, rid, n_rings = _walk_cycles(succ)
        cross = (A[w, 0] * B[w, 1] - B[w, 0] * A[w, 1]).astype(np.float64)
        area2 = np.bincount(rid, weights=cross, minlength=n_rings)
        starts = np.flatnonzero(np.diff(np.concatenate([[-1], rid])))
        # a vertex between two edges of the same direction is collinear: leave it out, so
        # the rings are already free of them (the GDAL rings kept as they are have none)
        d = np.sign(B[w] - A[w])
        prev = np.arange(len(w)) - 1
        ends = np.concatenate([starts[1:], [len(w)]]) - 1
        prev[starts] = ends
        corner = (d[prev] != d).any(axis=1)
        new_rings = shapely.linearrings(A[w][corner].astype(np.float64), indices=rid[corner])
        for ring, a2, e0 in zip(new_rings, area2.tolist(), w[starts].tolist()):
            (shells if a2 > 0 else holes)[int(ecomp[e0])].append(ring)
    out = np.empty(n_groups, object)
    for c in range(n_comp):
        if len(shells[c]) != 1:
            return None
        out[comp_group[c]] = shapely.Polygon(shells[c][0], holes[c])
    return out


def _component_rings(
    A: np.ndarray,
    B: np.ndarray,
    drop: np.ndarray,
    edge_part: np.ndarray,
    comp: np.ndarray,
    n_comp: int,
    rings: np.ndarray,
    ring_part: np.ndarray,
    touched: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[list[Any]], list[list[Any]]]:
    """Seam edges that remain once shared ones are dropped, and the untouched rings.

    Returns the kept edges (A, B) with their component, and the rings that touch no seam
    sorted into shells (counter-clockwise) and holes per component.
    """
    keep = ~drop
    shells: list[list[Any]] = [[] for _ in range(n_comp)]
    holes: list[list[Any]] = [[] for _ in range(n_comp)]
    kept = np.flatnonzero(~touched)
    for r, ccw in zip(kept.tolist(), shapely.is_ccw(rings[kept]).tolist()):
        (shells if ccw else holes)[comp[ring_part[r]]].append(rings[r])
    return A[keep], B[keep], comp[edge_part[keep]], shells, holes


@dataclass
class _SeamEdges:
    """Ring edges of polygons in pixel coordinates, seam edges cut into unit edges."""

    n_parts: int
    rings: np.ndarray  # every ring of every part (shells counter-clockwise)
    ring_part: np.ndarray  # part of each ring
    touched: np.ndarray  # rings with an edge on a seam (only their edges are in A/B)
    A: np.ndarray  # (E, 2) int64 edge starts
    B: np.ndarray  # (E, 2) int64 edge ends
    unit: np.ndarray  # edge is a unit edge cut from a seam edge
    edge_part: np.ndarray  # part of each edge
    width: int  # vertex id = x * width + y


def _seam_unit_edges(polys: np.ndarray, seam_xs: np.ndarray, seam_ys: np.ndarray) -> _SeamEdges:
    """Steps 1-2 of :func:`merge_pixel_polygons`: orient rings, cut seam edges to units."""
    parts = np.asarray(shapely.orient_polygons(polys, exterior_cw=False))
    n_parts = len(parts)
    rings = shapely.get_rings(parts)
    ring_part = np.repeat(np.arange(n_parts), shapely.get_num_interior_rings(parts) + 1)
    xy_f, ridx = shapely.get_coordinates(rings, return_index=True)
    xy = np.rint(xy_f).astype(np.int64)
    same = ridx[1:] == ridx[:-1]
    a, b, sring = xy[:-1][same], xy[1:][same], ridx[:-1][same]
    on_seam = ((a[:, 0] == b[:, 0]) & np.isin(a[:, 0], seam_xs)) | (
        (a[:, 1] == b[:, 1]) & np.isin(a[:, 1], seam_ys)
    )
    touched = np.zeros(len(rings), bool)
    touched[sring[on_seam]] = True
    sel = touched[sring]
    a, b, on_seam, sring = a[sel], b[sel], on_seam[sel], sring[sel]
    length = np.abs(b - a).sum(axis=1)
    n = np.where(on_seam, length, 1)
    rep = np.repeat(np.arange(len(a)), n)
    k = np.arange(len(rep)) - np.repeat(np.cumsum(n) - n, n)
    step = np.sign(b - a)
    unit = on_seam[rep]
    A = np.where(unit[:, None], a[rep] + step[rep] * k[:, None], a[rep])
    B = np.where(unit[:, None], A + step[rep], b[rep])
    edge_part = ring_part[sring[rep]]
    width = int(max(A.max(), B.max())) + 2 if len(A) else 2
    return _SeamEdges(n_parts, rings, ring_part, touched, A, B, unit, edge_part, width)


def _link_edges(A: np.ndarray, B: np.ndarray, ecomp: np.ndarray, width: int) -> np.ndarray | None:
    """Step 3 of :func:`merge_pixel_polygons`: the successor of every edge in its ring.

    Edges of one component meeting at a vertex are linked; at a pinch vertex (two
    outgoing edges) the rightmost turn is taken. Returns None if some vertex is not of
    that form (the input is not a pixel coverage).
    """
    span = width * width
    sa = ecomp * span + A[:, 0] * width + A[:, 1]
    sb = ecomp * span + B[:, 0] * width + B[:, 1]
    order = np.argsort(sa, kind="stable")
    first = np.searchsorted(sa[order], sb, "left")
    count = np.searchsorted(sa[order], sb, "right") - first
    succ = order[np.minimum(first, len(order) - 1)]
    two = np.flatnonzero(count == 2)
    if len(two):
        c1, c2 = order[first[two]], order[first[two] + 1]
        din = np.sign(B[two] - A[two])
        d1, d2 = np.sign(B[c1] - A[c1]), np.sign(B[c2] - A[c2])
        cross1 = din[:, 0] * d1[:, 1] - din[:, 1] * d1[:, 0]
        cross2 = din[:, 0] * d2[:, 1] - din[:, 1] * d2[:, 0]
        succ[two] = np.where(cross2 < cross1, c2, c1)
    if (count != 1).sum() != len(two):
        return None
    return succ


def _walk_cycles(succ: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """Walk the cycles of the permutation ``succ``, each from its smallest element.

    Returns (elements in walk order, cycle number of each, number of cycles); cycles come
    in the order of their smallest element. Long inputs use pointer jumping (O(n log n)
    in numpy: the smallest element of each cycle, then each element's distance to its
    cycle's end by list ranking) instead of a Python loop over every edge.
    """
    n = len(succ)
    if n < 4096:
        nxt = succ.tolist()
        seen = [False] * n
        walk: list[int] = []
        ring_of: list[int] = []
        n_rings = 0
        for s0 in range(n):
            if seen[s0]:
                continue
            e = s0
            while not seen[e]:
                seen[e] = True
                walk.append(e)
                ring_of.append(n_rings)
                e = nxt[e]
            n_rings += 1
        return np.asarray(walk, np.int64), np.asarray(ring_of, np.int64), n_rings
    succ = succ.astype(np.int64)
    steps = int(n).bit_length()
    root = np.arange(n, dtype=np.int64)
    p = succ.copy()
    for _ in range(steps):  # root[i] = min over the 2^k elements from i on
        root = np.minimum(root, root[p])
        p = p[p]
    end = succ == root  # the last element of each cycle (its successor is the root)
    dist = (~end).astype(np.int64)
    q = np.where(end, np.arange(n, dtype=np.int64), succ)
    for _ in range(steps):  # distance to the cycle's last element
        dist = dist + dist[q]
        q = q[q]
    w = np.lexsort((-dist, root))
    r = root[w]
    new_ring = np.ones(n, bool)
    new_ring[1:] = r[1:] != r[:-1]
    rid = np.cumsum(new_ring) - 1
    return w, rid, int(rid[-1]) + 1


def coverage_gaps_overlaps(geoms: Any, original: Any) -> tuple[float, float]:
    """Total gap and overlap area between neighbouring polygons, in CRS units².

    ``overlap`` is the area covered twice (sum of areas minus the area of the union).
    ``gap`` is the area of holes in the union of ``geoms`` that are not holes of the
    union of ``original`` (the unsimplified polygons): slivers opened between neighbours,
    not no-data areas or the moving outer edge of the map.
    """
    g = np.asarray(geoms, object)
    union = shapely.union_all(g)
    overlap = float(shapely.area(g).sum() - union.area)
    ref_holes = [
        shapely.Polygon(r)
        for p in shapely.get_parts(shapely.union_all(original))
        for r in p.interiors
    ]
    tree = shapely.STRtree(ref_holes) if ref_holes else None
    gap = 0.0
    for part in shapely.get_parts(union):
        for ring in part.interiors:
            hole = shapely.Polygon(ring)
            if tree is None or len(tree.query(hole, predicate="intersects")) == 0:
                gap += hole.area
    return gap, max(overlap, 0.0)


def _dissolve_by(geoms: np.ndarray, keys: np.ndarray, n: int) -> np.ndarray:
    """One geometry per key 1..n; keys with several parts are coverage-unioned."""
    out = np.empty(n + 1, object)
    order = np.argsort(keys, kind="stable")
    k_sorted = keys[order]
    bounds = np.flatnonzero(np.diff(np.concatenate([[-1], k_sorted, [n + 2]])))
    for s, e in itertools.pairwise(bounds):
        idx = order[s:e]
        out[k_sorted[s]] = geoms[idx[0]] if e - s == 1 else shapely.coverage_union_all(geoms[idx])
    return out


@dataclass(frozen=True)
class _Options:
    source: Any
    grid: RasterGrid
    keep: tuple[int, ...] | None
    connectivity: int
    sieve: int
    fill_holes: float
    min_area: float
    collect: bool  # True: keep everything in pixel space for a global clean-up
    prob_path: str | None = None
    prob_index: tuple[tuple[int, int], ...] = ()  # class id -> band index


@dataclass
class _Pieces:
    """Polygons with their per-region statistics (pixel-space geometries)."""

    geoms: np.ndarray
    class_id: np.ndarray
    pixels: np.ndarray
    psum: np.ndarray
    pcount: np.ndarray

    @classmethod
    def empty(cls) -> _Pieces:
        z = np.zeros(0, np.int64)
        return cls(np.empty(0, object), z, z, np.zeros(0), z)

    def take(self, idx: np.ndarray) -> _Pieces:
        return _Pieces(
            self.geoms[idx], self.class_id[idx], self.pixels[idx], self.psum[idx], self.pcount[idx]
        )

    @staticmethod
    def concat(parts: Sequence[_Pieces]) -> _Pieces:
        if not parts:
            return _Pieces.empty()
        return _Pieces(
            np.concatenate([p.geoms for p in parts]),
            np.concatenate([p.class_id for p in parts]),
            np.concatenate([p.pixels for p in parts]),
            np.concatenate([p.psum for p in parts]),
            np.concatenate([p.pcount for p in parts]),
        )


@dataclass
class _ChunkResult:
    index: tuple[int, int]
    final: Any  # a GeoDataFrame-ready dict (streaming) or _Pieces (collect mode)
    border: _Pieces
    strips: dict[str, np.ndarray] = field(default_factory=dict)  # border-piece index or -1
    alive: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))  # not merged yet

    # Pickled (worker -> main process) with the geometries as one WKB array each: shapely
    # pickles geometry by geometry (a Python call per polygon, ~3x slower both ways).
    # WKB keeps every double exactly.
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if isinstance(self.final, dict):
            state["final"] = {**self.final, "geometry": _Wkb(self.final["geometry"])}
        elif isinstance(self.final, _Pieces):
            state["final"] = _Pieces(_Wkb(self.final.geoms), *_stats_of(self.final))  # type: ignore[arg-type]
        state["border"] = _Pieces(_Wkb(self.border.geoms), *_stats_of(self.border))  # type: ignore[arg-type]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        final = state["final"]
        if isinstance(final, dict) and isinstance(final.get("geometry"), _Wkb):
            final["geometry"] = final["geometry"].geoms()
        elif isinstance(final, _Pieces) and isinstance(final.geoms, _Wkb):
            final.geoms = final.geoms.geoms()
        border = state["border"]
        if isinstance(border.geoms, _Wkb):
            border.geoms = border.geoms.geoms()
        self.__dict__.update(state)


class _Wkb:
    """An array of geometries as WKB, for pickling (see ``_ChunkResult.__getstate__``)."""

    def __init__(self, geoms: np.ndarray) -> None:
        self.wkb = np.asarray(shapely.to_wkb(geoms)) if len(geoms) else np.empty(0, object)

    def geoms(self) -> np.ndarray:
        return np.asarray(shapely.from_wkb(self.wkb)) if len(self.wkb) else np.empty(0, object)


def _stats_of(p: _Pieces) -> tuple[np.ndarray, ...]:
    return (p.class_id, p.pixels, p.psum, p.pcount)


def _read_chunk(opts: _Options, r0: int, c0: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
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


def _label_chunk(
    opts: _Options,
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
    geoms, keys = _polygons_from_shapes(lab, lab > 0, (r0, c0))
    if len(geoms) == n:  # one polygon per label (always true for 4-connectivity)
        by_label = np.empty(n + 1, object)
        by_label[keys] = geoms
    else:
        by_label = _dissolve_by(geoms, keys, n)
    rows = {"top": lab[0], "bottom": lab[-1], "left": lab[:, 0], "right": lab[:, -1]}
    strips = {name: rows[name].astype(np.int64) - 1 for name in sides}
    return (by_label[1:], cls[1:], pixels[1:], psum[1:], pcount[1:], strips,
            len(geoms) != n)  # fmt: skip


def _chunk_task(opts: _Options, index: tuple[int, int], r0: int, c0: int, h: int, w: int) -> Any:
    """Polygonize one chunk; split its regions into final ones and border pieces."""
    g = opts.grid
    vals, valid = _read_chunk(opts, r0, c0, h, w)
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
        narrow = _narrow(np.where(keep, vals, 0))
    if narrow is not None:
        # Fast path: GDAL polygonizes the class ids directly (one polygon per 4-connected
        # region); pixel counts are the exact areas of integer polygons and the border
        # strips come from the polygon edges on the chunk outline: no label image.
        xy, ring_off, poly_off, cls = _shapes_ragged(narrow, keep, (r0, c0))
        geoms = (
            np.asarray(shapely.from_ragged_array(GeometryType.POLYGON, xy, (ring_off, poly_off)))
            if len(cls)
            else np.empty(0, object)
        )
        pixels = np.rint(shapely.area(geoms)).astype(np.int64)
        psum: np.ndarray = np.zeros(len(cls))
        pcount: np.ndarray = np.zeros(len(cls), np.int64)
        strips_idx = _border_strips(xy, ring_off, poly_off, (r0, c0, h, w), sides)
        collinear = False
    else:
        geoms, cls, pixels, psum, pcount, strips_idx, collinear = _label_chunk(
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
    border = _Pieces(geoms[border_ids], cls[border_ids], pixels[border_ids],
                     psum[border_ids], pcount[border_ids])  # fmt: skip
    final = _Pieces(
        canonicalize(geoms[final_ids], collinear=collinear),
        cls[final_ids],
        pixels[final_ids],
        psum[final_ids],
        pcount[final_ids],
    )
    if opts.collect:
        return _ChunkResult(index, final, border, strips)
    final, _ = _clean(final, opts)
    return _ChunkResult(index, _attributes(final, g), border, strips)


# ------------------------------------------------------------------------------------------
# Cleaning and attributes
# ------------------------------------------------------------------------------------------
def _fill_holes(pieces: _Pieces, grid: RasterGrid, max_area: float) -> tuple[_Pieces, np.ndarray]:
    """Remove interior rings smaller than ``max_area`` m²; return the filled holes too."""
    n_holes = shapely.get_num_interior_rings(shapely.get_parts(pieces.geoms))
    if len(pieces.geoms) == 0 or not np.any(n_holes):
        return pieces, np.empty(0, object)
    geoms = pieces.geoms.copy()
    filled: list[Any] = []
    for i, g in enumerate(geoms):
        parts = shapely.get_parts(g)
        if not shapely.get_num_interior_rings(parts).any():
            continue
        new_parts = []
        for part in parts:
            holes = [shapely.Polygon(r) for r in part.interiors]
            if not holes:
                new_parts.append(part)
                continue
            areas = grid.metric_area(np.asarray(holes, object))
            kept = [h.exterior for h, a in zip(holes, areas) if a >= max_area]
            filled.extend(h for h, a in zip(holes, areas) if a < max_area)
            new_parts.append(shapely.Polygon(part.exterior, kept))
        geoms[i] = new_parts[0] if len(new_parts) == 1 else shapely.MultiPolygon(new_parts)
    out = _Pieces(geoms, pieces.class_id, pieces.pixels, pieces.psum, pieces.pcount)
    return out, np.asarray(filled, object)


def _clean(pieces: _Pieces, opts: _Options) -> tuple[_Pieces, np.ndarray]:
    """Hole filling and minimum area, in m²; returns (pieces, filled holes)."""
    holes = np.empty(0, object)
    if opts.fill_holes > 0:
        pieces, holes = _fill_holes(pieces, opts.grid, opts.fill_holes)
    if opts.min_area > 0 and len(pieces.geoms):
        pieces = pieces.take(np.flatnonzero(opts.grid.metric_area(pieces.geoms) >= opts.min_area))
    return pieces, holes


def _attributes(pieces: _Pieces, grid: RasterGrid) -> dict[str, Any]:
    """CRS geometries and per-polygon attributes (areas and lengths in metres)."""
    geoms = grid.to_crs(pieces.geoms)
    metric = grid.to_metric(geoms)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = pieces.psum / (254.0 * pieces.pcount)
    return {
        "geometry": geoms,
        "class_id": pieces.class_id.astype(np.int64),
        "pixels": pieces.pixels.astype(np.int64),
        "area_m2": shapely.area(metric) if len(geoms) else np.zeros(0),
        "perimeter_m": shapely.length(metric) if len(geoms) else np.zeros(0),
        "confidence": conf,
    }


# ------------------------------------------------------------------------------------------
# Seam merging
# ------------------------------------------------------------------------------------------
def _seam_pairs(a: np.ndarray, b: np.ndarray, connectivity: int) -> np.ndarray:
    """Pairs of global piece ids facing each other across a seam (a[i] next to b[j])."""
    pairs = [np.column_stack([a, b])]
    if connectivity == 8:
        pairs.append(np.column_stack([a[:-1], b[1:]]))
        pairs.append(np.column_stack([a[1:], b[:-1]]))
    p = np.concatenate(pairs)
    return p[(p[:, 0] >= 0) & (p[:, 1] >= 0)]


def _merge_border_pieces(
    results: dict[tuple[int, int], _ChunkResult],
    grid: RasterGrid,
    chunk_size: int,
    connectivity: int,
    progress: bool,
) -> Iterator[_Pieces]:
    """Join border pieces into whole regions: union-find over seam pixel adjacency.

    ``results`` holds the chunks done so far. Only regions that cannot grow any more (none
    of their pieces faces a chunk not done yet) are merged and yielded, in batches; their
    pieces are freed batch by batch, so memory holds the open frontier and one batch, not
    every border piece or merged region of the map. When all chunks are done, everything
    is merged.
    """
    n_rows = math.ceil(grid.height / chunk_size)
    n_cols = math.ceil(grid.width / chunk_size)
    seam_xs = np.arange(1, n_cols, dtype=np.int64) * chunk_size
    seam_ys = np.arange(1, n_rows, dtype=np.int64) * chunk_size
    keys = sorted(results)
    base: dict[tuple[int, int], int] = {}
    total = 0
    for k in keys:
        base[k] = total
        total += len(results[k].border.geoms)
    if total == 0:
        return
    pieces = _Pieces.concat([results[k].border for k in keys])
    alive = np.concatenate([results[k].alive for k in keys])

    def rows_of(i: int) -> int:
        return min(chunk_size, grid.height - i * chunk_size)

    def cols_of(j: int) -> int:
        return min(chunk_size, grid.width - j * chunk_size)

    def strip(k: tuple[int, int], name: str, size: int) -> np.ndarray:
        res = results.get(k)
        if res is None:
            return np.full(size, -1, np.int64)
        s = res.strips[name]
        g = np.where(s >= 0, s + base[k], -1)
        g[g >= 0] = np.where(alive[g[g >= 0]], g[g >= 0], -1)
        return g

    pairs = []
    for j in range(1, n_cols):  # vertical seams, whole height
        a = np.concatenate([strip((i, j - 1), "right", rows_of(i)) for i in range(n_rows)])
        b = np.concatenate([strip((i, j), "left", rows_of(i)) for i in range(n_rows)])
        pairs.append(_seam_pairs(a, b, connectivity))
    for i in range(1, n_rows):  # horizontal seams, whole width
        a = np.concatenate([strip((i - 1, j), "bottom", cols_of(j)) for j in range(n_cols)])
        b = np.concatenate([strip((i, j), "top", cols_of(j)) for j in range(n_cols)])
        pairs.append(_seam_pairs(a, b, connectivity))
    p = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
    p = p[pieces.class_id[p[:, 0]] == pieces.class_id[p[:, 1]]]
    graph = coo_matrix((np.ones(len(p), np.int8), (p[:, 0], p[:, 1])), shape=(total, total))
    n_comp, comp = connected_components(graph, directed=False)
    # pieces that face a chunk not done yet keep their whole region open
    open_comp = np.zeros(n_comp, bool)
    sides = {"top": (-1, 0), "bottom": (1, 0), "left": (0, -1), "right": (0, 1)}
    corners = {((1, 1), "bottom", -1), ((1, -1), "bottom", 0), ((-1, 1), "top", -1),
               ((-1, -1), "top", 0)}  # fmt: skip
    for (i, j), res in results.items():
        for name, (di, dj) in sides.items():
            if name in res.strips and (i + di, j + dj) not in results:
                s = strip((i, j), name, len(res.strips[name]))
                open_comp[comp[s[s >= 0]]] = True
        if connectivity == 8:
            for (di, dj), name, at in corners:
                ni, nj = i + di, j + dj
                if 0 <= ni < n_rows and 0 <= nj < n_cols and (ni, nj) not in results:
                    if name in res.strips:
                        g = strip((i, j), name, len(res.strips[name]))[at]
                        if g >= 0:
                            open_comp[comp[g]] = True
    closed = np.flatnonzero(alive & ~open_comp[comp])
    if len(closed) == 0:
        return
    order = closed[np.argsort(comp[closed], kind="stable")]
    cs = comp[order]
    bounds = np.flatnonzero(np.diff(np.concatenate([[-1], cs, [cs.max() + 1]])))
    groups = list(itertools.pairwise(bounds.tolist()))
    # owner chunk and local index of every piece, to free merged pieces as we go
    owner = np.repeat(np.arange(len(keys)), [len(results[k].border.geoms) for k in keys])
    local = np.arange(total) - np.asarray([base[k] for k in keys])[owner]
    # 4-connected regions are merged many at a time (one vectorized pass per batch)
    batchable = connectivity == 4 and bool((shapely.get_type_id(pieces.geoms[closed]) == 3).all())
    n_vert = shapely.get_num_coordinates(pieces.geoms)

    def merge_groups(gs: list[tuple[int, int]]) -> _Pieces:
        merged = np.empty(len(gs), object)
        plain: list[int] = []  # need collinear vertices removed
        clean: list[int] = []  # merged without collinear vertices
        singles: list[int] = []
        batch: list[tuple[int, np.ndarray]] = []
        for slot, (s, e) in enumerate(gs):
            idx = order[s:e]
            if e - s == 1:
                singles.append(slot)
            elif batchable:
                batch.append((slot, idx))
            else:
                merged[slot] = merge_pixel_polygons(pieces.geoms[idx], seam_xs, seam_ys)
                plain.append(slot)
        if batch:
            idx = np.concatenate([g for _, g in batch])
            grp = np.repeat(np.arange(len(batch)), [len(g) for _, g in batch])
            res = _merge_pixel_batch(pieces.geoms[idx], grp, len(batch), seam_xs, seam_ys)
            for j, (slot, g) in enumerate(batch):
                if res is not None:  # no collinear vertices (see _merge_pixel_batch)
                    merged[slot] = res[j]
                    clean.append(slot)
                else:
                    merged[slot] = merge_pixel_polygons(pieces.geoms[g], seam_xs, seam_ys)
                    plain.append(slot)
        for todo, collinear in ((plain, True), (clean, False)):
            if todo:
                merged[todo] = canonicalize(merged[todo], collinear=collinear)
        starts = np.asarray([s for s, _ in gs])
        if singles:
            merged[singles] = canonicalize(pieces.geoms[order[starts[singles]]])
        seg = order[starts[0] : gs[-1][1]]
        rel = starts - starts[0]
        return _Pieces(
            merged,
            pieces.class_id[order[starts]],
            np.add.reduceat(pieces.pixels[seg], rel),
            np.add.reduceat(pieces.psum[seg], rel),
            np.add.reduceat(pieces.pcount[seg], rel),
        )

    from tqdm.auto import tqdm

    bar = tqdm(total=len(groups), desc="merge seams", unit="region", disable=not progress)
    # Regions are built, yielded and their pieces freed in batches of ~1M input vertices,
    # so the merge never holds every merged region of the map at once.
    i = 0
    try:
        while i < len(groups):
            j, nv = i, 0
            while j < len(groups) and (j == i or nv < 1_000_000):
                g0, g1 = groups[j]
                nv += int(n_vert[order[g0:g1]].sum())
                j += 1
            out = merge_groups(groups[i:j])
            used = order[groups[i][0] : groups[j - 1][1]]
            pieces.geoms[used] = None
            for o in np.unique(owner[used]):
                sel = local[used[owner[used] == o]]
                res_k = results[keys[o]]
                res_k.alive[sel] = False
                res_k.border.geoms[sel] = None
            bar.update(j - i)
            i = j
            yield out
    finally:
        bar.close()


# ------------------------------------------------------------------------------------------
# Scheduling
# ------------------------------------------------------------------------------------------
def _chunk_windows(
    grid: RasterGrid, chunk_size: int
) -> list[tuple[tuple[int, int], int, int, int, int]]:
    out = []
    for i, r0 in enumerate(range(0, grid.height, chunk_size)):
        for j, c0 in enumerate(range(0, grid.width, chunk_size)):
            h = min(chunk_size, grid.height - r0)
            w = min(chunk_size, grid.width - c0)
            out.append(((i, j), r0, c0, h, w))
    return out


def _run_tasks(
    opts: _Options,
    windows: list[tuple[tuple[int, int], int, int, int, int]],
    workers: int,
    client: Any,
    progress: bool,
) -> Iterator[_ChunkResult]:
    """Run the chunk tasks; serially, on a given Dask client, or on a local Dask cluster.

    At most ``2 * workers`` chunks are in flight, so memory stays bounded.
    """
    from tqdm.auto import tqdm

    bar = tqdm(total=len(windows), desc="vectorize", unit="chunk", disable=not progress)
    try:
        if client is None and (workers <= 1 or len(windows) == 1):
            for w in windows:
                yield _chunk_task(opts, *w)
                bar.update()
            return
        import dask
        from distributed import Client, LocalCluster, as_completed

        own = client is None
        cluster = None
        if own:
            # Forked workers start in ~1 s; spawned ones re-import GDAL, shapely, geopandas
            # (~10 s on a busy machine). Nothing holds a GDAL lock in this process while it
            # forks. A non-default method set in the Dask config wins.
            key = "distributed.worker.multiprocessing-method"
            method = dask.config.get(key, "spawn")
            if method == "spawn" and sys.platform.startswith("linux"):
                method = "fork"
            with dask.config.set({key: method}):
                cluster = LocalCluster(
                    n_workers=workers,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
            client = Client(cluster)
        try:
            opts_f = client.scatter(opts, broadcast=True)
            todo = list(windows)
            limit = 2 * max(workers, len(client.scheduler_info().get("workers", {})) or 1)
            futures = [client.submit(_chunk_task, opts_f, *todo.pop(0), pure=False)
                       for _ in range(min(limit, len(todo)))]  # fmt: skip
            ac = as_completed(futures)
            for fut in ac:
                res = fut.result()
                fut.release()
                if todo:
                    ac.add(client.submit(_chunk_task, opts_f, *todo.pop(0), pure=False))
                bar.update()
                yield res
        finally:
            if own:
                client.close()
                if cluster is not None:
                    cluster.close()
    finally:
        bar.close()


def _default_workers(workers: int | None) -> int:
    if workers is not None:
        if workers < 1:
            raise ConfigError(f"workers must be >= 1, got {workers}")
        return workers
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# ------------------------------------------------------------------------------------------
# Public API
# ------------------------------------------------------------------------------------------
@dataclass
class _Job:
    grid: RasterGrid
    opts: _Options
    name_of: Callable[[int], str]
    with_confidence: bool
    simplify_px: float
    geometry_type: str
    #: timings and sizes of the last run (seconds, counts), see ``GeoDataFrame.attrs``
    stats: dict[str, float] = field(default_factory=dict)


def _prepare(
    labels: Any,
    *,
    source: Any = None,
    grid: RasterGrid | None = None,
    table: ClassTable | None = None,
    simplify: float,
    min_area: float,
    fill_holes: float,
    classes: Any,
    probabilities: Any,
    sieve: int,
    connectivity: int,
    band: int = 1,
    nodata: float | None = None,
) -> _Job:
    if connectivity not in CONNECTIVITY:
        raise ConfigError(f"connectivity must be one of {list(CONNECTIVITY)}, got {connectivity!r}")
    for name, v in (("simplify", simplify), ("min_area", min_area), ("fill_holes", fill_holes)):
        if not (v >= 0 and math.isfinite(v)):
            raise ConfigError(f"{name} must be a finite number >= 0 (metres), got {v!r}")
    if sieve < 0:
        raise ConfigError(f"sieve must be >= 0 pixels, got {sieve!r}")
    if source is None:
        path = _path_of(labels)
        grid = open_grid(path, band=band)
        source = RasterSource(path, band, nodata)
        table = class_table_for(path, band=band)
    assert grid is not None
    keep, overrides = parse_classes(classes)
    name_of = _names_for(table, overrides)
    prob_path = None
    prob_index: tuple[tuple[int, int], ...] = ()
    if probabilities is not None:
        prob_path = _path_of(probabilities)
        pgrid = open_grid(prob_path, what="probability raster")
        if table is None:
            raise DataError(
                "probabilities need the class map's class table (GEOSEG_CLASSES tag) to know "
                "which band belongs to which class; write it with geoseg.classes.write_class_table"
            )
        with rasterio.open(prob_path) as ps:
            if ps.count != len(table):
                raise DataError(
                    f"probability raster {prob_path!r} has {ps.count} band(s) but the class "
                    f"table has {len(table)} classes ({table.names}); one band per class"
                )
        if (pgrid.height, pgrid.width) != (
            grid.height,
            grid.width,
        ) or not pgrid.transform.almost_equals(grid.transform):
            raise DataError(
                f"probability raster {prob_path!r} is not on the class map's grid "
                f"({pgrid.width}x{pgrid.height} vs {grid.width}x{grid.height})"
            )
        prob_index = tuple((c.id, i) for i, c in enumerate(table))
    simplify_px = simplify / grid.pixel_size_m() if simplify > 0 else 0.0
    opts = _Options(
        source=source,
        grid=grid,
        keep=tuple(keep) if keep is not None else None,
        connectivity=connectivity,
        sieve=int(sieve),
        fill_holes=float(fill_holes),
        min_area=float(min_area),
        collect=simplify > 0 or fill_holes > 0,
        prob_path=prob_path,
        prob_index=prob_index,
    )
    gtype = "Polygon" if connectivity == 4 else "MultiPolygon"
    return _Job(grid, opts, name_of, probabilities is not None, simplify_px, gtype)


def _names_array(class_id: np.ndarray, job: _Job) -> np.ndarray:
    """Class names of ``class_id``, looked up once per distinct class."""
    if len(class_id) == 0:
        return np.empty(0, object)
    uniq, inv = np.unique(class_id, return_inverse=True)
    return np.array([job.name_of(c) for c in uniq.tolist()], object)[inv.ravel()]


def _frame(table: dict[str, Any], job: _Job) -> gpd.GeoDataFrame:
    """A GeoDataFrame with the standard schema from an attribute dict."""
    cols: dict[str, Any] = {
        "class_id": pd.array(table["class_id"], dtype="int64"),
        "class_name": _names_array(np.asarray(table["class_id"]), job),
        "pixels": pd.array(table["pixels"], dtype="int64"),
        "area_m2": np.asarray(table["area_m2"], np.float64),
        "perimeter_m": np.asarray(table["perimeter_m"], np.float64),
    }
    if job.with_confidence:
        cols["confidence"] = np.asarray(table["confidence"], np.float64)
    geoms = table["geometry"]
    if job.geometry_type == "MultiPolygon" and len(geoms):
        geoms = geoms.copy()
        for i in np.flatnonzero(shapely.get_type_id(geoms) == 3):
            geoms[i] = shapely.MultiPolygon([geoms[i]])
    return gpd.GeoDataFrame(
        cols, geometry=gpd.GeoSeries(geoms, crs=job.grid.output_crs), crs=job.grid.output_crs
    )


def _iter_frames(
    job: _Job,
    *,
    chunk_size: int,
    workers: int | None,
    client: Any,
    progress: bool,
) -> Iterator[gpd.GeoDataFrame]:
    """Yield GeoDataFrames of final polygons as chunks complete, merged regions last."""
    if chunk_size < 16:
        raise ConfigError(f"chunk_size must be >= 16 pixels, got {chunk_size}")
    t_start = time.perf_counter()
    grid, opts = job.grid, job.opts
    windows = _chunk_windows(grid, chunk_size)
    n_cols = math.ceil(grid.width / chunk_size)
    results: dict[tuple[int, int], _ChunkResult] = {}
    collected: list[_Pieces] = []
    t_merge = 0.0
    n_border = n_merged = largest = 0
    merged_parts: list[_Pieces] = []  # kept only when cleaning needs the whole coverage

    def merge_round() -> Iterator[gpd.GeoDataFrame]:
        nonlocal t_merge, n_merged, largest
        batches = _merge_border_pieces(results, grid, chunk_size, opts.connectivity, False)
        while True:
            t0 = time.perf_counter()
            merged = next(batches, None)
            t_merge += time.perf_counter() - t0
            if merged is None:
                return
            n_merged += len(merged.geoms)
            largest = max(largest, int(shapely.get_num_coordinates(merged.geoms).max()))
            if opts.collect:
                merged_parts.append(merged)
                continue
            part, _ = _clean(merged, opts)
            if len(part.geoms):
                yield _frame(_attributes(part, grid), job)

    since = 0
    for res in _run_tasks(opts, windows, _default_workers(workers), client, progress):
        if opts.collect:
            collected.append(res.final)
        elif len(res.final["geometry"]):
            yield _frame(res.final, job)
        res.final = None
        res.alive = np.ones(len(res.border.geoms), bool)
        n_border += len(res.border.geoms)
        results[res.index] = res
        since += 1
        if since >= n_cols and len(results) < len(windows):
            since = 0  # a chunk row's worth of new chunks: merge what is complete
            yield from merge_round()
    yield from merge_round()
    results.clear()
    job.stats.update(
        chunks_seconds=time.perf_counter() - t_start - t_merge,
        merge_seconds=t_merge,
        chunks=len(windows),
        border_pieces=n_border,
        merged_regions=n_merged,
        largest_merged_vertices=largest,
    )
    if not opts.collect:
        return
    merged = _Pieces.concat(merged_parts)
    merged_parts.clear()
    allp = _Pieces.concat([*collected, merged])
    collected.clear()
    allp, holes = _clean(
        allp,
        _Options(**{**opts.__dict__, "min_area": 0.0}),  # min area after the islands
    )
    if len(holes) and len(allp.geoms):
        # regions inside a filled hole disappear with it (the coverage stays overlap-free)
        tree = shapely.STRtree(holes)
        inside = tree.query(allp.geoms, predicate="covered_by")
        drop = np.zeros(len(allp.geoms), bool)
        drop[inside[0]] = True
        allp = allp.take(np.flatnonzero(~drop))
    if opts.min_area > 0 and len(allp.geoms):
        allp = allp.take(np.flatnonzero(grid.metric_area(allp.geoms) >= opts.min_area))
    if job.simplify_px > 0 and len(allp.geoms):
        # one coverage simplification: shared edges stay shared (no gaps, no overlaps)
        # A coverage must be edge-matched: a vertex of one polygon in the middle of its
        # neighbour's straight edge breaks it, so first put a vertex at every pixel corner.
        dense = shapely.transform(shapely.segmentize(allp.geoms, 1.0), np.rint)
        simplified = np.asarray(shapely.coverage_simplify(dense, job.simplify_px))
        allp = _Pieces(
            np.asarray(shapely.make_valid(simplified, method="structure", keep_collapsed=False))
            if not shapely.is_valid(simplified).all()
            else simplified,
            allp.class_id,
            allp.pixels,
            allp.psum,
            allp.pcount,
        )
    yield _frame(_attributes(allp, grid), job)


def _sorted(gdf: gpd.GeoDataFrame, grid: RasterGrid) -> gpd.GeoDataFrame:
    """Deterministic order: class id, then top-left corner, then area."""
    if len(gdf) == 0:
        return gdf.reset_index(drop=True)
    b = gdf.geometry.bounds
    key = pd.DataFrame(
        {
            "c": gdf["class_id"].to_numpy(),
            "y": -b["maxy"].to_numpy(),
            "x": b["minx"].to_numpy(),
            "a": gdf["area_m2"].to_numpy(),
        }
    )
    order = np.lexsort((key["a"], key["x"], key["y"], key["c"]))
    return gdf.iloc[order].reset_index(drop=True)


def vectorize(
    labels: Any,
    *,
    simplify: float = 0.0,
    min_area: float = 0.0,
    fill_holes: float = 0.0,
    classes: Any = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    workers: int | None = None,
    probabilities: Any = None,
    sieve: int = 0,
    connectivity: int = 4,
    band: int = 1,
    nodata: float | None = None,
    client: Any = None,
    progress: bool = True,
) -> gpd.GeoDataFrame:
    """Turn a class raster into polygons, one per connected region of equal class.

    The raster is processed in chunks of ``chunk_size`` pixels, in parallel on a Dask
    cluster; regions crossing chunk borders are merged exactly, so the result does not
    depend on ``chunk_size`` or ``workers``.

    Args:
        labels: a class-map GeoTIFF (path or open rasterio dataset).
        simplify: coverage simplification tolerance in metres (0: none). Neighbours keep
            sharing their edges (``shapely.coverage_simplify``): no gaps, no overlaps.
        min_area: drop polygons smaller than this many m².
        fill_holes: fill holes smaller than this many m² (regions inside them are dropped).
        classes: which classes to keep and/or their names: ids ``[1, 5]``, ``{5: "forest"}``,
            ``"1,5=forest"`` or a ClassTable. Default: all classes, names from the raster.
        chunk_size: chunk edge in pixels.
        workers: parallel worker processes (default: all cores; 1 runs in this process).
        probabilities: probability GeoTIFF (one uint8 band per class, p = v/254, nodata
            255) on the same grid; adds ``confidence``, the mean probability of the
            polygon's class over its pixels.
        sieve: before polygonizing, merge regions smaller than this many pixels into their
            most common neighbouring class (chunk-exact).
        connectivity: 4 or 8, which pixels form one region (see module docs).
        band: the band of class ids.
        nodata: override the raster's nodata value.
        client: a ``distributed.Client`` to run on (default: a local cluster).
        progress: show progress bars.

    Returns:
        A GeoDataFrame in the raster's CRS with columns ``class_id``, ``class_name``,
        ``pixels``, ``area_m2``, ``perimeter_m`` (and ``confidence``), sorted by class.

    Raises:
        DataError: the raster has no CRS or non-integer class values.
        ConfigError: an option is invalid.
    """
    job = _prepare(
        labels,
        simplify=simplify,
        min_area=min_area,
        fill_holes=fill_holes,
        classes=classes,
        probabilities=probabilities,
        sieve=sieve,
        connectivity=connectivity,
        band=band,
        nodata=nodata,
    )
    return _collect(job, chunk_size=chunk_size, workers=workers, client=client, progress=progress)


def _collect(job: _Job, **kw: Any) -> gpd.GeoDataFrame:
    frames = [f for f in _iter_frames(job, **kw) if len(f)]
    if not frames:
        return _frame(_attributes(_Pieces.empty(), job.grid), job)
    gdf = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=job.grid.output_crs)
    gdf = _sorted(gdf, job.grid)
    gdf.attrs["vectorize_stats"] = dict(job.stats)
    return gdf


def vectorize_to_file(
    labels: Any,
    path: str | Path,
    *,
    overwrite: bool = False,
    simplify: float = 0.0,
    min_area: float = 0.0,
    fill_holes: float = 0.0,
    classes: Any = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    workers: int | None = None,
    probabilities: Any = None,
    sieve: int = 0,
    connectivity: int = 4,
    band: int = 1,
    nodata: float | None = None,
    client: Any = None,
    progress: bool = True,
) -> int:
    """Vectorize ``labels`` straight into a vector file; returns the number of polygons.

    Same options as :func:`vectorize`. For formats that can append (GeoPackage, Shapefile)
    and without ``simplify`` / ``fill_holes``, polygons are streamed to the file as chunks
    finish, so memory does not grow with the number of polygons. The file appears
    atomically (written under a temporary name, renamed on success).
    """
    from geoseg.export import check_vector_path, stream_vector

    check_vector_path(path, overwrite=overwrite)
    job = _prepare(
        labels,
        simplify=simplify,
        min_area=min_area,
        fill_holes=fill_holes,
        classes=classes,
        probabilities=probabilities,
        sieve=sieve,
        connectivity=connectivity,
        band=band,
        nodata=nodata,
    )
    empty = _frame(_attributes(_Pieces.empty(), job.grid), job)
    frames = _iter_frames(
        job, chunk_size=chunk_size, workers=workers, client=client, progress=progress
    )
    return stream_vector(frames, path, empty=empty, overwrite=overwrite)
