"""Building regularization: right angles, a tolerance in metres, and no overlaps.

Pixel outlines of buildings are staircases. Regularizing turns each into a polygon whose
edges follow the building's two dominant directions (at right angles):

1. simplify the outline (Douglas-Peucker, ``tolerance``);
2. take the main direction from the minimum rotated rectangle;
3. snap every edge to that direction or its perpendicular, merge consecutive edges that
   snapped to the same direction (length-weighted offset), and intersect consecutive
   lines for the new corners.

A result that is invalid, or whose area differs from the outline's by more than
``max_area_change``, falls back to the simplified outline. Neighbours never overlap:
objects are placed largest first, and each is clipped by those already placed (touching
terraced houses keep a shared wall).

Written here because no library in geoseg's stack does it: geoai's and ArcGIS's
regularizers are not available offline as libraries, and shapely offers the pieces
(``simplify``, ``oriented_envelope``) but not the snapping.
"""

from __future__ import annotations

import math

import numpy as np
import shapely


def _main_angle(poly: shapely.Geometry) -> float:
    """Direction (radians, in [0, pi/2)) of the longest side of the minimum rectangle."""
    rect = shapely.oriented_envelope(poly)
    if rect.geom_type != "Polygon":
        return 0.0
    xy = np.asarray(rect.exterior.coords)[:4]
    d = np.diff(np.vstack([xy, xy[:1]]), axis=0)
    k = int(np.argmax(np.hypot(d[:, 0], d[:, 1])))
    return math.atan2(d[k, 1], d[k, 0]) % (math.pi / 2)


def _snap_ring(xy: np.ndarray, angle: float) -> np.ndarray | None:
    """Corners of a ring whose edges are snapped to ``angle`` and ``angle + 90``."""
    pts = xy[:-1]
    edges = np.roll(pts, -1, axis=0) - pts
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    keep = lengths > 0
    pts, edges, lengths = pts[keep], edges[keep], lengths[keep]
    if len(pts) < 3:
        return None
    u = np.array([math.cos(angle), math.sin(angle)])
    v = np.array([-u[1], u[0]])
    along = np.abs(edges @ u) >= np.abs(edges @ v)  # True: parallel to u
    mids = pts + edges / 2
    # runs of edges with the same direction become one line (length-weighted offset);
    # start the walk at a change of direction so no run wraps around
    changes = np.flatnonzero(along != np.roll(along, 1))
    if len(changes) == 0:
        return None
    lines: list[list[float]] = []  # [parallel to u (1.0) or v (0.0), offset, weight]
    for i in np.roll(np.arange(len(pts)), -int(changes[0])):
        d = 1.0 if along[i] else 0.0
        off = float(mids[i] @ (v if along[i] else u))
        if lines and lines[-1][0] == d:
            _, o, w = lines[-1]
            lines[-1] = [d, (o * w + off * lengths[i]) / (w + lengths[i]), w + lengths[i]]
        else:
            lines.append([d, off, float(lengths[i])])
    if len(lines) < 4 or len(lines) % 2:
        return None
    corners = []
    for k in range(len(lines)):
        a, b = lines[k], lines[(k + 1) % len(lines)]
        # a line parallel to u is {p : p.v = offset}; one parallel to v is {p : p.u = offset}
        ov, ou = (a[1], b[1]) if a[0] else (b[1], a[1])
        corners.append(u * ou + v * ov)
    ring = np.asarray(corners)
    return np.vstack([ring, ring[:1]])


def regularize_polygon(
    poly: shapely.Geometry, tolerance: float, *, max_area_change: float = 0.3
) -> tuple[shapely.Geometry, bool]:
    """A right-angled version of one building outline; ``(polygon, regularized?)``.

    Args:
        poly: a Polygon (MultiPolygons are regularized part by part).
        tolerance: Douglas-Peucker tolerance in the polygon's units.
        max_area_change: fall back to the simplified outline beyond this relative change.
    """
    if poly.geom_type == "MultiPolygon":
        parts = [regularize_polygon(p, tolerance, max_area_change=max_area_change)
                 for p in poly.geoms]  # fmt: skip
        merged = shapely.union_all([p for p, _ in parts])
        return merged, all(ok for _, ok in parts)
    simple = shapely.simplify(poly, tolerance, preserve_topology=True)
    if simple.is_empty or simple.geom_type != "Polygon":
        return poly, False
    ring = _snap_ring(np.asarray(simple.exterior.coords), _main_angle(simple))
    if ring is None:
        return simple, False
    out = shapely.Polygon(ring)
    if not out.is_valid or out.area <= 0:
        return simple, False
    if abs(out.area - poly.area) > max_area_change * poly.area:
        return simple, False
    holes = [h for h in simple.interiors if shapely.Polygon(h).within(out)]
    return shapely.Polygon(out.exterior, holes), True


def regularize(
    geoms: np.ndarray, tolerance: float, *, max_area_change: float = 0.3
) -> tuple[np.ndarray, np.ndarray]:
    """Regularize many buildings so that neighbours never overlap.

    Largest first; each result is clipped by the results already placed.

    Returns:
        ``(geometries, regularized flags)`` in the input order.
    """
    n = len(geoms)
    out = np.empty(n, object)
    flags = np.zeros(n, bool)
    if n == 0:
        return out, flags
    placed: list[shapely.Geometry] = []
    for i in np.argsort(-shapely.area(geoms), kind="stable"):
        g, ok = regularize_polygon(geoms[i], tolerance, max_area_change=max_area_change)
        if placed:
            tree = shapely.STRtree(placed)
            hits = tree.query(g, predicate="intersects")
            if len(hits):
                g = shapely.difference(g, shapely.union_all([placed[h] for h in hits]))
                g = shapely.make_valid(g)
                if g.geom_type == "GeometryCollection":
                    areal = ("Polygon", "MultiPolygon")
                    g = shapely.union_all([p for p in shapely.get_parts(g) if p.geom_type in areal])
        out[i], flags[i] = g, ok
        placed.append(g)
    return out, flags
