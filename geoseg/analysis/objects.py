"""Object statistics for planners: counts, footprint areas and sizes per class and zone.

Works on an instance map (band 1: object id, 0 = none; band 2: the object's class id, as
``geoseg predict --instances`` writes it), chunk by chunk. An object belongs to the zone
holding most of its pixels (so each object is counted once, even when a district border
cuts it); its area is the sum of its pixels' ground areas (the one area model of
:mod:`geoseg.io.grid`, m²).
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd
import rasterio
import shapely
from rasterio.features import geometry_mask

from geoseg.analysis.areas import ALL_ZONES, check_zone_options, raster_windows, read_zones
from geoseg.arguments import check_flag
from geoseg.classes import class_color, class_table_for
from geoseg.errors import NoDataWarning, warn
from geoseg.io.bands import BandSource, check_instance_map, open_grid, raster_path
from geoseg.io.grid import pixel_areas
from geoseg.vectorize import DEFAULT_CHUNK_SIZE

#: Columns of :func:`object_stats`.
OBJECT_COLUMNS = [
    "zone",
    "class_id",
    "class_name",
    "objects",
    "footprint_m2",
    "footprint_ha",
    "mean_object_m2",
    "median_object_m2",
]


def object_stats(
    instances: Any,
    *,
    zones: Any = None,
    zone_field: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = True,
    zone_layer: str | None = None,
) -> pd.DataFrame:
    """Objects per class, overall and per zone: count, footprint area, mean and median size.

    Args:
        instances: an instance-map GeoTIFF (band 1 object ids; band 2 class ids, else
            every object is of class 0).
        zones: zone polygons (path or GeoDataFrame), reprojected to the map's CRS.
        zone_field: the zones' attribute naming each zone (default: the row index).
        chunk_size: chunk edge in pixels.
        progress: show a progress bar.
        zone_layer: the layer of a zones file of several layers (a GeoPackage).

    Returns:
        A DataFrame with :data:`OBJECT_COLUMNS`; ``zone`` is :data:`ALL_ZONES` for the
        whole map, and objects in no zone are left out of the zone rows.

    Raises:
        DataError: not an integer raster, no CRS, a class map or probability raster (not
            an instance map), or zones off the map.
        ConfigError: ``zone_field`` or ``zone_layer`` without ``zones``.

    A map without any object gives an empty table and a NoDataWarning.
    """
    from tqdm.auto import tqdm

    progress = check_flag(progress, "progress")
    check_zone_options(zones, zone_field, zone_layer)
    path = raster_path(instances)
    grid = open_grid(path, what="instance map")
    check_instance_map(path)
    with rasterio.open(path) as src:
        two = src.count >= 2
    ids_src = BandSource(path, 1, 0)
    cls_src = BandSource(path, 2, 0) if two else None
    table = class_table_for(path)
    row_area = pixel_areas(grid)
    geoms, labels = (
        (None, []) if zones is None else read_zones(zones, zone_field, grid, layer=zone_layer)
    )
    zone_names = list(dict.fromkeys(labels))
    zone_of = [zone_names.index(z) for z in labels]
    tree = shapely.STRtree(geoms.values) if geoms is not None else None
    area: dict[int, float] = defaultdict(float)
    klass: dict[int, int] = {}
    in_zone: dict[tuple[int, int], int] = defaultdict(int)  # (object, zone) -> pixels
    for win in tqdm(list(raster_windows(grid, chunk_size)), desc="objects", unit="chunk",
                    disable=not progress):  # fmt: skip
        ids, ok = ids_src.read(win)
        ok &= ids > 0
        if not ok.any():
            continue
        w = np.broadcast_to(row_area[win.row_off : win.row_off + win.height, None], ids.shape)
        u, inv = np.unique(ids[ok], return_inverse=True)
        for i, a in zip(u.tolist(), np.bincount(inv, weights=w[ok]).tolist()):
            area[i] += a
        if cls_src is not None:
            cls, _ = cls_src.read(win)
            pairs = np.unique(np.stack([ids[ok], cls[ok]], axis=1), axis=0)
            klass.update(zip(pairs[:, 0].tolist(), pairs[:, 1].tolist()))
        if tree is not None and geoms is not None:
            _zone_pixels(in_zone, tree, geoms.values, zone_of, grid, win, ids, ok)
    if not area:
        warn(f"instance map {path!r} holds no object (every id is 0 or no-data)", NoDataWarning)
        return pd.DataFrame({c: [] for c in OBJECT_COLUMNS}).astype(
            {"class_id": "int64", "objects": "int64"}
        )
    return _object_frame(area, klass, in_zone, zone_names, table, zones is not None)


def _zone_pixels(
    acc: dict[tuple[int, int], int],
    tree: shapely.STRtree,
    geoms: np.ndarray,
    zone_of: list[int],
    grid: Any,
    win: Any,
    ids: np.ndarray,
    ok: np.ndarray,
) -> None:
    """Add each object's pixels per zone in one chunk (a pixel is in a zone by its centre)."""
    wt = rasterio.windows.transform(win, grid.transform)
    hits = tree.query(shapely.box(*rasterio.windows.bounds(win, grid.transform)))
    for z in sorted({zone_of[h] for h in hits}):
        parts = [geoms[h] for h in hits if zone_of[h] == z]
        m = geometry_mask(parts, out_shape=ids.shape, transform=wt, invert=True) & ok
        if m.any():
            u, c = np.unique(ids[m], return_counts=True)
            for i, n in zip(u.tolist(), c.tolist()):
                acc[(i, z)] += n


def _object_frame(
    area: dict[int, float],
    klass: dict[int, int],
    in_zone: dict[tuple[int, int], int],
    zone_names: list[str],
    table: Any,
    with_zones: bool,
) -> pd.DataFrame:
    objects = pd.DataFrame({"id": list(area), "area": list(area.values())})
    objects["class_id"] = [klass.get(i, 0) for i in objects["id"]]
    objects["zone"] = ALL_ZONES
    frames = [objects]
    if with_zones and in_zone:
        best: dict[int, tuple[int, int]] = {}
        for (i, z), n in in_zone.items():  # majority zone, ties to the first zone
            if i not in best or n > best[i][0] or (n == best[i][0] and z < best[i][1]):
                best[i] = (n, z)
        zoned = objects[objects["id"].isin(list(best))].copy()
        zoned["zone"] = [zone_names[best[i][1]] for i in zoned["id"]]
        frames.append(zoned)
    allobj = pd.concat(frames, ignore_index=True)
    names = {c.id: c.name for c in table} if table is not None else {}
    g = allobj.groupby(["zone", "class_id"], sort=False)["area"]
    out = g.agg(objects="size", footprint_m2="sum", mean_object_m2="mean",
                median_object_m2="median").reset_index()  # fmt: skip
    out["class_name"] = [names.get(int(c), f"class_{int(c)}") for c in out["class_id"]]
    out["footprint_ha"] = out["footprint_m2"] / 1e4
    order = {z: k for k, z in enumerate([ALL_ZONES, *zone_names])}
    out = out.sort_values(["zone", "class_id"], key=lambda s: s.map(order) if s.name == "zone"
                          else s).reset_index(drop=True)  # fmt: skip
    out = out[OBJECT_COLUMNS].astype({"class_id": "int64", "objects": "int64"})
    out.attrs["colors"] = {
        int(c): class_color(table, int(c), k) for k, c in enumerate(sorted(out["class_id"]))
    }
    return out
