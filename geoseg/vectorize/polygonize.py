"""Regions -> polygons in integer pixel coordinates, and their canonical form.

GDAL polygonizes (``rasterio.features.shapes``); every geometry is then put in canonical
form (collinear vertices removed, normalized) so that a region's geometry does not depend
on how the raster was chunked.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import shapely
from affine import Affine
from rasterio.features import shapes as gdal_shapes
from shapely import GeometryType


def shapes_ragged(
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
    for geom, value in gdal_shapes(values, mask=mask, connectivity=4, transform=transform):
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


def polygons_from_shapes(labels: np.ndarray, mask: np.ndarray, offset: tuple[int, int]) -> tuple:
    """GDAL-polygonize a label image (4-connected) into shapely polygons, in pixel coords.

    The polygons are built in one vectorized ``from_ragged_array`` call instead of one
    ``shape()`` per feature (about half the cost of the naive path).
    """
    xy, ring_off, poly_off, values = shapes_ragged(labels, mask, offset)
    if len(values) == 0:
        return np.empty(0, object), np.empty(0, np.int64)
    geoms = shapely.from_ragged_array(GeometryType.POLYGON, xy, (ring_off, poly_off))
    return geoms, values


def border_strips(
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


def narrow_ids(values: np.ndarray) -> np.ndarray | None:
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


def dissolve_by(geoms: np.ndarray, keys: np.ndarray, n: int) -> np.ndarray:
    """One geometry per key 1..n; keys with several parts are coverage-unioned."""
    out = np.empty(n + 1, object)
    order = np.argsort(keys, kind="stable")
    k_sorted = keys[order]
    bounds = np.flatnonzero(np.diff(np.concatenate([[-1], k_sorted, [n + 2]])))
    for s, e in itertools.pairwise(bounds):
        idx = order[s:e]
        out[k_sorted[s]] = geoms[idx[0]] if e - s == 1 else shapely.coverage_union_all(geoms[idx])
    return out
