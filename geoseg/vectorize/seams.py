"""Exact seam merging: regions cut by chunk borders joined by union-find over any integer id.

Pieces of regions that touch an internal chunk border are joined when pixels of equal
value (a class id today, an instance id for object maps) face each other across a seam
(4- or 8-connectivity): integer union-find, no geometry operation decides what belongs
together. Each merged region is then built from its pieces' edges
(:func:`merge_pixel_polygons`), equal vertex for vertex to a single pass.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import shapely
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from geoseg.io.grid import RasterGrid
from geoseg.vectorize.pieces import ChunkResult, PackedPieces, Pieces
from geoseg.vectorize.polygonize import canonicalize


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


def merge_pixel_batch(
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


def seam_pairs(a: np.ndarray, b: np.ndarray, connectivity: int) -> np.ndarray:
    """Pairs of global piece ids facing each other across a seam (a[i] next to b[j])."""
    pairs = [np.column_stack([a, b])]
    if connectivity == 8:
        pairs.append(np.column_stack([a[:-1], b[1:]]))
        pairs.append(np.column_stack([a[1:], b[:-1]]))
    p = np.concatenate(pairs)
    return p[(p[:, 0] >= 0) & (p[:, 1] >= 0)]


class _SeamFront:
    """The border pieces of the chunks done so far, numbered globally, and their seams."""

    def __init__(
        self,
        results: dict[tuple[int, int], ChunkResult],
        grid: RasterGrid,
        chunk_size: int,
        connectivity: int,
    ) -> None:
        self.results, self.grid, self.size = results, grid, chunk_size
        self.connectivity = connectivity
        self.n_rows = math.ceil(grid.height / chunk_size)
        self.n_cols = math.ceil(grid.width / chunk_size)
        self.keys = sorted(results)
        self.base: dict[tuple[int, int], int] = {}
        total = 0
        for k in self.keys:
            self.base[k] = total
            total += len(results[k].border)
        self.total = total
        self.pieces = PackedPieces.concat([results[k].border for k in self.keys])
        self.alive = (
            np.concatenate([results[k].alive for k in self.keys])
            if self.keys
            else np.zeros(0, bool)
        )

    def strip(self, k: tuple[int, int], name: str, size: int) -> np.ndarray:
        """Global piece ids along a side of chunk ``k`` (-1: none, or already merged)."""
        res = self.results.get(k)
        if res is None:
            return np.full(size, -1, np.int64)
        s = res.strips[name]
        g = np.where(s >= 0, s + self.base[k], -1)
        g[g >= 0] = np.where(self.alive[g[g >= 0]], g[g >= 0], -1)
        return g

    def components(self) -> np.ndarray:
        """Union-find over pieces of equal value facing each other across every seam."""
        size = self.size
        rows_of = [min(size, self.grid.height - i * size) for i in range(self.n_rows)]
        cols_of = [min(size, self.grid.width - j * size) for j in range(self.n_cols)]
        pairs = []
        for j in range(1, self.n_cols):  # vertical seams, whole height
            a = np.concatenate([self.strip((i, j - 1), "right", rows_of[i])
                                for i in range(self.n_rows)])  # fmt: skip
            b = np.concatenate([self.strip((i, j), "left", rows_of[i]) for i in range(self.n_rows)])
            pairs.append(seam_pairs(a, b, self.connectivity))
        for i in range(1, self.n_rows):  # horizontal seams, whole width
            a = np.concatenate([self.strip((i - 1, j), "bottom", cols_of[j])
                                for j in range(self.n_cols)])  # fmt: skip
            b = np.concatenate([self.strip((i, j), "top", cols_of[j]) for j in range(self.n_cols)])
            pairs.append(seam_pairs(a, b, self.connectivity))
        p = np.concatenate(pairs) if pairs else np.zeros((0, 2), np.int64)
        value = self.pieces.value
        p = p[value[p[:, 0]] == value[p[:, 1]]]  # regions are pixels of one equal value
        graph = coo_matrix(
            (np.ones(len(p), np.int8), (p[:, 0], p[:, 1])), shape=(self.total, self.total)
        )
        _, comp = connected_components(graph, directed=False)
        return np.asarray(comp)

    def open_components(self, comp: np.ndarray) -> np.ndarray:
        """Components with a piece facing a chunk not done yet (they may still grow)."""
        open_comp = np.zeros(int(comp.max()) + 1 if len(comp) else 0, bool)
        sides = {"top": (-1, 0), "bottom": (1, 0), "left": (0, -1), "right": (0, 1)}
        corners = {((1, 1), "bottom", -1), ((1, -1), "bottom", 0), ((-1, 1), "top", -1),
                   ((-1, -1), "top", 0)}  # fmt: skip
        for (i, j), res in self.results.items():
            for name, (di, dj) in sides.items():
                if name in res.strips and (i + di, j + dj) not in self.results:
                    s = self.strip((i, j), name, len(res.strips[name]))
                    open_comp[comp[s[s >= 0]]] = True
            if self.connectivity != 8:
                continue
            for (di, dj), name, at in corners:
                ni, nj = i + di, j + dj
                inside = 0 <= ni < self.n_rows and 0 <= nj < self.n_cols
                if inside and (ni, nj) not in self.results and name in res.strips:
                    g = self.strip((i, j), name, len(res.strips[name]))[at]
                    if g >= 0:
                        open_comp[comp[g]] = True
        return open_comp

    def free(self, used: np.ndarray) -> None:
        """Forget merged pieces (here and in their chunk results)."""
        owner = np.searchsorted([self.base[k] for k in self.keys], used, "right") - 1
        self.pieces.blobs[used] = None
        for o in np.unique(owner):
            key = self.keys[int(o)]
            sel = used[owner == o] - self.base[key]
            res_k = self.results[key]
            res_k.alive[sel] = False
            res_k.border.blobs[sel] = None


def _merge_groups(
    pieces: Pieces,
    order: np.ndarray,
    gs: list[tuple[int, int]],
    batchable: bool,
    seams: tuple[np.ndarray, np.ndarray],
) -> Pieces:
    """Merged regions of the groups ``gs`` (slices of ``order``), canonical, with sums."""
    seam_xs, seam_ys = seams
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
        res = merge_pixel_batch(pieces.geoms[idx], grp, len(batch), seam_xs, seam_ys)
        for j, (slot, g) in enumerate(batch):
            if res is not None:  # no collinear vertices (see merge_pixel_batch)
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
    return Pieces(
        merged,
        pieces.value[order[starts]],
        np.add.reduceat(pieces.pixels[seg], rel),
        np.add.reduceat(pieces.psum[seg], rel),
        np.add.reduceat(pieces.pcount[seg], rel),
    )


#: Input vertices merged per batch (one vectorized pass) by :func:`merge_border_pieces`.
MERGE_BATCH_VERTICES = 1_000_000


def merge_border_pieces(
    results: dict[tuple[int, int], ChunkResult],
    grid: RasterGrid,
    chunk_size: int,
    connectivity: int,
    progress: bool,
) -> Iterator[Pieces]:
    """Join border pieces into whole regions: union-find over seam pixel adjacency.

    ``results`` holds the chunks done so far. Only regions that cannot grow any more (none
    of their pieces faces a chunk not done yet) are merged and yielded, in batches; their
    pieces are freed batch by batch, so memory holds the open frontier and one batch, not
    every border piece or merged region of the map. When all chunks are done, everything
    is merged. Pieces are joined when they hold the same integer value (a class id, an
    instance id) and face each other across a seam.
    """
    front = _SeamFront(results, grid, chunk_size, connectivity)
    if front.total == 0:
        return
    seams = (
        np.arange(1, front.n_cols, dtype=np.int64) * chunk_size,
        np.arange(1, front.n_rows, dtype=np.int64) * chunk_size,
    )
    comp = front.components()
    closed = np.flatnonzero(front.alive & ~front.open_components(comp)[comp])
    if len(closed) == 0:
        return
    order = closed[np.argsort(comp[closed], kind="stable")]
    cs = comp[order]
    bounds = np.flatnonzero(np.diff(np.concatenate([[-1], cs, [cs.max() + 1]])))
    groups = list(itertools.pairwise(bounds.tolist()))
    pieces = front.pieces
    # 4-connected regions are merged many at a time (one vectorized pass per batch)
    batchable = connectivity == 4 and bool((pieces.type_id[closed] == 3).all())
    n_vert = pieces.n_coords
    from tqdm.auto import tqdm

    bar = tqdm(total=len(groups), desc="merge seams", unit="region", disable=not progress)
    # Regions are built, yielded and their pieces freed in batches of at most
    # MERGE_BATCH_VERTICES input vertices (or one region, if larger), so the merge never
    # holds every merged region of the map at once and its working memory does not grow
    # with the map (a batch that could overshoot by its last region grew with the
    # largest region).
    sizes = np.add.reduceat(n_vert[order], bounds[:-1]).tolist()
    i = 0
    try:
        while i < len(groups):
            j, nv = i + 1, sizes[i]
            while j < len(groups) and nv + sizes[j] <= MERGE_BATCH_VERTICES:
                nv += sizes[j]
                j += 1
            used = order[groups[i][0] : groups[j - 1][1]]
            local = [(s - groups[i][0], e - groups[i][0]) for s, e in groups[i:j]]
            out = _merge_groups(pieces.unpack(used), np.arange(len(used)), local, batchable, seams)
            front.free(used)
            bar.update(j - i)
            i = j
            yield out
    finally:
        bar.close()
