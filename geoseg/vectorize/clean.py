"""Cleaning and measuring polygons: holes, minimum area, coverage checks, attributes in metres."""

from __future__ import annotations

from typing import Any

import numpy as np
import shapely

from geoseg.io.grid import RasterGrid
from geoseg.vectorize.pieces import Options, Pieces


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


def fill_holes(pieces: Pieces, grid: RasterGrid, max_area: float) -> tuple[Pieces, np.ndarray]:
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
    out = Pieces(geoms, pieces.value, pieces.pixels, pieces.psum, pieces.pcount)
    return out, np.asarray(filled, object)


def clean(pieces: Pieces, opts: Options) -> tuple[Pieces, np.ndarray]:
    """Hole filling and minimum area, in m²; returns (pieces, filled holes)."""
    holes = np.empty(0, object)
    if opts.fill_holes > 0:
        pieces, holes = fill_holes(pieces, opts.grid, opts.fill_holes)
    if opts.min_area > 0 and len(pieces.geoms):
        pieces = pieces.take(np.flatnonzero(opts.grid.metric_area(pieces.geoms) >= opts.min_area))
    return pieces, holes


def attributes(pieces: Pieces, grid: RasterGrid, *, repair: bool = False) -> dict[str, Any]:
    """CRS geometries and per-polygon attributes (areas and lengths in metres).

    ``repair``: make geometries that the affine transform left invalid valid again
    (regularized outlines: a sub-pixel spike from clipping a neighbour can cross itself
    once scaled to map units; the repaired geometry covers the same points, so
    neighbours still do not overlap). Pixel outlines stay valid and skip the check.
    """
    geoms = grid.to_crs(pieces.geoms)
    if repair and len(geoms):
        bad = np.flatnonzero(~shapely.is_valid(geoms))
        for i in bad:
            fixed = shapely.make_valid(geoms[i])
            parts = [p for p in shapely.get_parts(fixed) if p.geom_type == "Polygon"]
            geoms[i] = parts[0] if len(parts) == 1 else shapely.MultiPolygon(parts)
    metric = grid.to_metric(geoms)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = pieces.psum / (254.0 * pieces.pcount)
    return {
        "geometry": geoms,
        "class_id": pieces.value.astype(np.int64),
        "pixels": pieces.pixels.astype(np.int64),
        "area_m2": shapely.area(metric) if len(geoms) else np.zeros(0),
        "perimeter_m": shapely.length(metric) if len(geoms) else np.zeros(0),
        "confidence": conf,
    }
