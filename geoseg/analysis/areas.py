"""Area statistics of class maps: class areas per zone, as tables and charts.

Everything is computed chunk by chunk (windowed reads, zones rasterized per chunk), so
memory is bounded by the chunk size whatever the raster size. Areas are true ground areas
in m² from the one area model of :mod:`geoseg.io.grid` (the same as polygon areas):
the pixel area for a projected CRS, and the exact equal-area pixel area of each row for
a geographic CRS; never degrees.

The statistics are written in the format of the output's extension
(:data:`STATS_FORMATS`): a CSV table, or the zone polygons with one column per class
(:func:`zone_table`) for a choropleth in a GIS.
"""

from __future__ import annotations

import contextlib
import os
import re
import unicodedata
import warnings
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from rasterio.features import geometry_mask
from rasterio.windows import Window

from geoseg.analysis.charts import check_stats_frame, plot_class_areas
from geoseg.arguments import check_flag, check_int, check_path
from geoseg.classes import (
    ClassTable,
    check_map_classes,
    class_color,
    class_table_for,
    parse_classes,
)
from geoseg.errors import (
    ConfigError,
    DataError,
    DataWarning,
    NoDataWarning,
    ReprojectionWarning,
    brief,
    warn,
)
from geoseg.io.bands import (
    BandSource,
    class_band,
    open_grid,
    raster_dtype,
    raster_path,
    warn_if_not_classes,
)
from geoseg.io.grid import RasterGrid, pixel_areas
from geoseg.io.outputs import atomic_path, check_distinct, check_output_path
from geoseg.io.vector import read_vector, write_layer
from geoseg.vectorize import DEFAULT_CHUNK_SIZE

#: Value of the ``zone`` column on the rows for the whole raster.
ALL_ZONES = "(all)"


STATS_COLUMNS = ["zone", "class_id", "class_name", "pixels", "area_m2", "area_ha", "percent"]

#: Output formats of :func:`write_stats` by extension (a name without one is a CSV).
STATS_FORMATS = {
    ".csv": "a CSV table, one row per zone and class",
    ".gpkg": "a GeoPackage of the zones with a column per class, or without zones the CSV's table",
    ".geojson": "a GeoJSON of the zones with a column per class, in EPSG:4326 (needs zones)",
    ".fgb": "a FlatGeobuf of the zones with a column per class (needs zones)",
}
#: The formats of :data:`STATS_FORMATS` that hold features only: they need zones.
FEATURE_FORMATS = (".geojson", ".fgb")


def raster_windows(grid: RasterGrid, chunk_size: int) -> Iterator[Window]:
    """Windows of at most ``chunk_size`` pixels a side covering ``grid``, row-major."""
    if check_int(chunk_size, "chunk_size", unit="pixels") < 16:
        raise ConfigError(f"chunk_size must be >= 16 pixels, got {chunk_size}")
    chunk_size = int(chunk_size)
    for r0 in range(0, grid.height, chunk_size):
        for c0 in range(0, grid.width, chunk_size):
            yield Window(
                c0, r0, min(chunk_size, grid.width - c0), min(chunk_size, grid.height - r0)
            )


def _clean_zone_geometries(gdf: gpd.GeoDataFrame, where: str) -> gpd.GeoDataFrame:
    """Drop empty/null geometries and repair invalid ones, saying how many of each."""
    missing = gdf.geometry.isna() | gdf.geometry.is_empty
    if missing.all():
        raise DataError(f"{where}: every zone geometry is empty or null")
    if missing.any():
        warn(f"{where}: {int(missing.sum())} zone(s) without geometry are left out", DataWarning)
        gdf = gdf[~missing]
    areal = gdf.geometry.geom_type.isin(["Polygon", "MultiPolygon"])
    if not areal.all():
        warn(
            f"{where}: {int((~areal).sum())} zone(s) are not polygons "
            f"({sorted(set(gdf.geometry.geom_type[~areal]))}) and are left out",
            DataWarning,
        )
        gdf = gdf[areal]
    invalid = ~gdf.geometry.is_valid
    if invalid.any():
        warn(
            f"{where}: {int(invalid.sum())} invalid zone polygon(s) (self-intersecting?) "
            "are repaired (shapely make_valid)",
            DataWarning,
        )
        gdf = gdf.copy()
        gdf.loc[invalid, gdf.geometry.name] = shapely.make_valid(gdf.geometry[invalid].values)
    return gdf


def check_zone_options(zones: Any, zone_field: str | None, zone_layer: str | None) -> None:
    """ConfigError for a zone option without zones, or zones not a path or a GeoDataFrame."""
    if zones is not None:
        if not isinstance(zones, gpd.GeoDataFrame):
            check_path(zones, "zones", also="or a GeoDataFrame")
        if zone_layer is not None and isinstance(zones, gpd.GeoDataFrame):
            raise ConfigError(
                f"zone_layer {zone_layer!r} names a layer of a zones file; zones is a "
                "GeoDataFrame already: leave zone_layer out"
            )
        return
    for name, value in (("zone_field", zone_field), ("zone_layer", zone_layer)):
        if value is not None:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(
                f"{name} / {flag} {value!r} is given without zones (zones= / --zones): give "
                f"the zone polygons too, or leave {flag} out"
            )


def read_zones(
    zones: Any, zone_field: str | None, grid: RasterGrid, *, layer: str | None = None
) -> tuple[gpd.GeoSeries, list]:
    """Zones as geometries in the raster CRS plus their labels; clear errors otherwise.

    Zones sharing a label form one zone. A zone whose ``zone_field`` is null, NaN or
    blank has no name: each such zone is reported on its own, named
    ``"(no <zone_field>, feature <i>)"`` (``i``: its 0-based row in the file), with a
    DataWarning saying how many there are. A file of several layers needs ``layer``.
    """
    gdf, where = _load_zones(zones, zone_field, layer)
    if gdf.crs is None:
        warn(
            f"{where} has no CRS; assuming the raster's CRS",
            ReprojectionWarning,
        )
        gdf = gdf.set_crs(grid.crs_wkt)
    elif not gdf.crs.equals(grid.crs):
        gdf = gdf.to_crs(grid.crs_wkt)
    labels = zone_names(gdf, zone_field, where)
    repeated = sorted({z for z in labels if labels.count(z) > 1}) if len(labels) < 5000 else []
    if repeated:
        warn(
            f"{where}: zone name(s) {repeated[:5]} appear on several polygons; the polygons "
            "of one name are counted as one zone (a pixel once)",
            DataWarning,
        )
    t = grid.transform
    corners = [t @ (0, 0), t @ (grid.width, 0), t @ (grid.width, grid.height), t @ (0, grid.height)]
    extent = shapely.Polygon(corners)
    hit = shapely.intersects(gdf.geometry.values, extent)
    if not hit.any():
        b = gdf.total_bounds
        raise DataError(
            f"{where}: no zone intersects the raster (zones bounds {np.round(b, 3).tolist()} "
            f"vs raster bounds {np.round(extent.bounds, 3).tolist()} in the raster CRS); "
            "check that both cover the same place"
        )
    return gdf.geometry, labels


def _load_zones(
    zones: Any, zone_field: str | None, layer: str | None
) -> tuple[gpd.GeoDataFrame, str]:
    """The zones' polygons (in their CRS) and how messages name them; errors, warnings."""
    if isinstance(zones, gpd.GeoDataFrame):
        gdf, where = zones, "zones"
    else:
        where = f"zones file {str(zones)!r}"
        gdf = read_vector(zones, where=where, layer=layer, option="zone_layer / --zone-layer")
    if len(gdf) == 0:
        raise DataError(f"{where} holds no zone (no feature): give a file with zone polygons")
    if zone_field is not None and zone_field not in gdf.columns:
        fields = [c for c in gdf.columns if c != gdf.geometry.name]
        raise DataError(f"{where} has no field {zone_field!r}; its fields are {fields}")
    return _clean_zone_geometries(gdf, where), where


def zone_names(gdf: gpd.GeoDataFrame, zone_field: str | None, where: str) -> list[str]:
    """The name of each zone: its ``zone_field`` as text, or its row index without one.

    Zones without a name (null, NaN or blank) get distinct names
    ``"(no <zone_field>, feature <i>)"`` and a DataWarning: merged, they would be one
    zone of an empty name whose percentages cannot be computed.
    """
    if zone_field is None:
        return [str(i) for i in gdf.index]
    names, nameless = [], []
    for i, value in zip(gdf.index, gdf[zone_field].tolist(), strict=True):
        if _is_blank(value):
            nameless.append(i)
            names.append(f"(no {zone_field}, feature {i})")
        else:
            names.append(str(value))
    if nameless:
        warn(
            f"{where}: {len(nameless)} zone(s) have no {zone_field!r} (null, NaN or blank: "
            f"features {nameless[:5]}{' ...' if len(nameless) > 5 else ''}); each is "
            f"reported as its own zone named '(no {zone_field}, feature N)', N its row",
            DataWarning,
        )
    return names


def _is_blank(value: Any) -> bool:
    """True for None, NaN, NA and blank text."""
    if isinstance(value, str):
        return not value.strip()
    return value is None or (np.ndim(value) == 0 and bool(pd.isna(value)))


def class_areas(
    classmap: Any,
    *,
    zones: Any = None,
    zone_field: str | None = None,
    classes: Any = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    band: int | None = None,
    nodata: float | None = None,
    progress: bool = True,
    zone_layer: str | None = None,
) -> pd.DataFrame:
    """Area of each class, over the whole raster and per zone polygon.

    Args:
        classmap: class-map GeoTIFF (path or open dataset).
        zones: polygons (path or GeoDataFrame) such as districts or parcels; reprojected
            to the raster's CRS when needed. A pixel belongs to a zone when its centre does.
        zone_field: the zones' attribute naming each zone (default: the row index);
            zones without a name are reported one by one (:func:`read_zones`).
        classes: class ids to report and/or names (as in :func:`geoseg.vectorize.vectorize`).
        chunk_size: chunk edge in pixels (memory is proportional to its square).
        band: the band of class ids (default: the only band; a multi-band raster without
            a class table is refused as imagery unless a band is given).
        nodata: override the raster's nodata value.
        progress: show a progress bar.
        zone_layer: the layer of a zones file of several layers (a GeoPackage).

    Returns:
        A DataFrame with columns ``zone`` (:data:`ALL_ZONES` for the whole raster),
        ``class_id``, ``class_name``, ``pixels``, ``area_m2``, ``area_ha`` and ``percent``
        (share of the zone's classified area). ``attrs["colors"]`` maps class ids to colours,
        ``attrs["crs"]`` is the map's CRS (WKT).

    Raises:
        DataError: no CRS, non-integer values, a missing zone field, or zones that do not
            intersect the raster.
        ConfigError: ``zone_field`` or ``zone_layer`` without ``zones``.
    """
    from tqdm.auto import tqdm

    progress = check_flag(progress, "progress")
    check_zone_options(zones, zone_field, zone_layer)
    path = raster_path(classmap)
    band = class_band(path, band)
    grid = open_grid(path, band=band)
    table = class_table_for(path, band=band)
    keep, overrides = parse_classes(classes)
    check_map_classes(keep, overrides, path, band)
    source = BandSource(path, band, nodata)
    row_area = pixel_areas(grid)
    zone_geoms, zone_labels = (
        (None, []) if zones is None else read_zones(zones, zone_field, grid, layer=zone_layer)
    )
    zone_values = zone_geoms.values if zone_geoms is not None else np.empty(0, object)
    tree = shapely.STRtree(zone_values) if zone_geoms is not None else None
    unique_labels = list(dict.fromkeys(zone_labels))  # polygons sharing a label form one zone
    zone_ids = (
        [unique_labels.index(z) for z in zone_labels]
        if len(unique_labels) < 5000
        else (pd.Index(unique_labels).get_indexer(zone_labels).tolist())
    )
    acc: dict[tuple[int, int], list[float]] = defaultdict(lambda: [0, 0.0])  # (zone, class)
    windows = list(raster_windows(grid, chunk_size))
    for win in tqdm(windows, desc="class areas", unit="chunk", disable=not progress):
        vals, valid = source.read(win)
        if keep is not None:
            valid &= np.isin(vals, keep)
        weights = np.broadcast_to(
            row_area[win.row_off : win.row_off + win.height, None], vals.shape
        )
        _accumulate(acc, -1, vals[valid], weights[valid])
        if tree is None or not valid.any():
            continue
        wt = rasterio.windows.transform(win, grid.transform)
        box = shapely.box(*rasterio.windows.bounds(win, grid.transform))
        hits = tree.query(box, predicate="intersects")
        for z in sorted({zone_ids[h] for h in hits}):
            # all polygons of one zone label together: a pixel counts once per zone
            geoms = [zone_values[h] for h in hits if zone_ids[h] == z]
            inside = geometry_mask(geoms, out_shape=vals.shape, transform=wt, invert=True)
            m = inside & valid
            if m.any():
                _accumulate(acc, z, vals[m], weights[m])
    _check_result(acc, path, keep, unique_labels, table is not None, raster_dtype(path, band))
    stats = _stats_frame(acc, unique_labels, table, overrides, zones is not None)
    stats.attrs["crs"] = grid.crs_wkt  # assumed for zones without one (zone_table)
    return stats


#: A chart shows at most this many classes.
MAX_CHART_CLASSES = 60


def _check_result(
    acc: dict[tuple[int, int], list[float]],
    path: str,
    keep: list[int] | None,
    zones: list[str],
    has_table: bool,
    dtype: str,
) -> None:
    """Warn about a result that is probably not what the user wanted."""
    present = {c for z, c in acc if z < 0}
    if not present:
        what = (
            f"none of the classes {keep[:10]} occurs in it" if keep else "it holds no valid pixel"
        )
        warn(
            f"{path!r}: the statistics are empty: {what} (all no-data, or a wrong nodata "
            "value, band or --classes?)",
            NoDataWarning,
        )
        return
    absent = sorted(set(keep) - present) if keep is not None else []
    if absent:
        warn(
            f"{path!r}: class(es) {absent[:10]} requested but absent from the map (or all "
            "no-data); they have no row",
            DataWarning,
        )
    warn_if_not_classes(path, len({c for _, c in acc}), has_table=has_table, dtype=dtype)
    empty = sorted(set(range(len(zones))) - {z for z, _ in acc if z >= 0})
    if empty:
        names = [zones[z] for z in empty[:5]]
        warn(
            f"{len(empty)} zone(s) {names}{' ...' if len(empty) > 5 else ''} cover no valid "
            "pixel of the map and have no row (outside the map, smaller than a pixel, "
            "or with coordinates the map's CRS cannot place?)",
            DataWarning,
        )


def _accumulate(
    acc: dict[tuple[int, int], list[float]], zone: int, vals: np.ndarray, w: np.ndarray
) -> None:
    if vals.size == 0:
        return
    u, inv = np.unique(vals, return_inverse=True)
    counts = np.bincount(inv, minlength=len(u))
    areas = np.bincount(inv, weights=w, minlength=len(u))
    for c, n, a in zip(u.tolist(), counts.tolist(), areas.tolist()):
        entry = acc[(zone, c)]
        entry[0] += n
        entry[1] += a


def _stats_frame(
    acc: dict[tuple[int, int], list[float]],
    zone_labels: list[str],
    table: ClassTable | None,
    overrides: dict[int, str],
    with_zones: bool,
) -> pd.DataFrame:
    names = {c.id: c.name for c in table} if table is not None else {}
    names.update(overrides)
    rows = []
    for (z, c), (n, a) in acc.items():
        zone = ALL_ZONES if z < 0 else zone_labels[z]
        rows.append((z, zone, c, names.get(c, f"class_{c}"), int(n), float(a)))
    df = pd.DataFrame(rows, columns=["_z", "zone", "class_id", "class_name", "pixels", "area_m2"])
    df = df.sort_values(["_z", "class_id"]).drop(columns="_z").reset_index(drop=True)
    df["area_ha"] = df["area_m2"] / 1e4
    total = df.groupby("zone", sort=False)["area_m2"].transform("sum")
    df["percent"] = 100.0 * df["area_m2"] / total
    df = df[STATS_COLUMNS].astype({"class_id": "int64", "pixels": "int64"})
    ids = sorted(df["class_id"].unique().tolist())
    df.attrs["colors"] = {c: class_color(table, c, k) for k, c in enumerate(ids)}
    if not with_zones:
        df = df[df["zone"] == ALL_ZONES].reset_index(drop=True)
    return df


def stats_format(path: str | Path, *, zones: bool) -> str:
    """The format of a statistics output, by its extension: a key of :data:`STATS_FORMATS`.

    Args:
        path: the output.
        zones: whether the statistics are per zone (a format of features needs zones).

    Raises:
        ConfigError: an unknown extension (naming the path and the valid ones), or a
            format of features without zones.
    """
    ext = Path(path).suffix.lower() or ".csv"
    if ext not in STATS_FORMATS:
        valid = "; ".join(f"{k} ({v})" for k, v in STATS_FORMATS.items())
        raise ConfigError(
            f"statistics output {str(path)!r}: unknown extension {Path(path).suffix!r}; the "
            f"format follows the extension: {valid}"
        )
    if ext in FEATURE_FORMATS and not zones:
        raise ConfigError(
            f"statistics output {str(path)!r}: a {ext} file holds features (polygons), and "
            "no zones are given: give the zone polygons the statistics are computed with "
            "(zones= / --zones), or write a .csv or a .gpkg (a table without geometry)"
        )
    return ext


def check_stats_outputs(
    path: str | Path,
    *,
    plot: bool,
    overwrite: bool = False,
    inputs: Iterable[str | Path | None] = (),
    zones: Any = None,
) -> Path | None:
    """Check a statistics output (its format too) and its chart (``.png`` beside it).

    ``zones``: the zones of the statistics (None: whole map only). Returns the chart's
    path (None without ``plot``).
    """
    out = Path(path)
    stats_format(out, zones=zones is not None)
    png = out.with_suffix(".png") if plot else None
    inputs = list(inputs)
    check_output_path(out, overwrite=overwrite, inputs=inputs)
    if png is not None:
        check_output_path(png, overwrite=overwrite, inputs=inputs)
        check_distinct({"the statistics": out, "their chart": png})
    return png


def class_columns(names: dict[int, str]) -> dict[int, str]:
    """Column-name suffix per class id: its name in lower-case ASCII letters, digits and _.

    ``"Built-up area"`` gives ``built_up_area``, a name without letters or digits
    ``class_<id>``; names that would give the same suffix get their class id appended.
    """
    slugs = {}
    for cid, name in names.items():
        text = unicodedata.normalize("NFKD", str(name)).encode("ascii", "ignore").decode()
        slugs[cid] = re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or f"class_{cid}"
    counts, used, out = Counter(slugs.values()), set(), {}
    for cid, slug in slugs.items():
        col = slug if counts[slug] == 1 else f"{slug}_{cid}"
        while col in used:
            col = f"{col}_{cid}"
        used.add(col)
        out[cid] = col
    return out


def zone_table(
    stats: pd.DataFrame,
    zones: Any,
    *,
    zone_field: str | None = None,
    zone_layer: str | None = None,
) -> gpd.GeoDataFrame:
    """The zones with their statistics as columns: a wide table for a choropleth map.

    Args:
        stats: the output of :func:`class_areas` with the same zones.
        zones: the zone polygons (path or GeoDataFrame), as given to :func:`class_areas`.
        zone_field: as given to :func:`class_areas`.
        zone_layer: as given to :func:`class_areas`.

    Returns:
        One feature per zone in the zones' CRS (the map's CRS for zones without one):
        its polygons (the union of those sharing its name), ``zone`` (its name),
        ``area_ha`` (its classified area) and per class ``area_ha_<class>`` and
        ``percent_<class>`` (share of ``area_ha``; ``<class>``: :func:`class_columns`).
        A zone without a valid pixel has null statistics; the whole map's row
        (:data:`ALL_ZONES`) is not a zone and has no feature.

    Raises:
        DataError: ``stats`` holds zones that ``zones`` does not.
    """
    check_zone_options(zones, zone_field, zone_layer)
    if zones is None:
        raise ConfigError("zone_table needs the zones the statistics were computed with")
    with warnings.catch_warnings():  # given when the statistics were computed
        warnings.simplefilter("ignore", DataWarning)
        gdf, where = _load_zones(zones, zone_field, zone_layer)
        names = zone_names(gdf, zone_field, where)
    parts: dict[str, list[Any]] = defaultdict(list)  # polygons sharing a name form one zone
    for name, geom in zip(names, gdf.geometry.values, strict=True):
        parts[name].append(_polygonal(geom))
    per = stats[stats["zone"] != ALL_ZONES]
    unknown = sorted(set(per["zone"]) - set(parts))
    if unknown:
        raise DataError(
            f"the statistics hold zones {unknown[:5]} that {where} does not (zone_field "
            f"{zone_field!r}): give the zones and options the statistics were computed with"
        )
    ids = sorted(stats["class_id"].unique().tolist())
    labels = stats.drop_duplicates("class_id").set_index("class_id")["class_name"]
    cols = class_columns({c: labels[c] for c in ids})
    order = list(parts)
    table = pd.DataFrame({"zone": order})
    area = per.pivot_table(index="zone", columns="class_id", values="area_ha", aggfunc="sum")
    share = per.pivot_table(index="zone", columns="class_id", values="percent", aggfunc="sum")
    area, share = area.reindex(index=order, columns=ids), share.reindex(index=order, columns=ids)
    counted = np.isin(order, per["zone"].unique())  # the other zones: no valid pixel
    area.loc[counted] = area.loc[counted].fillna(0.0)
    share.loc[counted] = share.loc[counted].fillna(0.0)
    table["area_ha"] = np.where(counted, area.sum(axis=1).to_numpy(), np.nan)
    for c in ids:
        table[f"area_ha_{cols[c]}"] = area[c].to_numpy(dtype=float)
    for c in ids:
        table[f"percent_{cols[c]}"] = share[c].to_numpy(dtype=float)
    geoms = [g[0] if len(g) == 1 else _polygonal(shapely.union_all(g)) for g in parts.values()]
    crs = gdf.crs if gdf.crs is not None else stats.attrs.get("crs")
    return gpd.GeoDataFrame(table, geometry=geoms, crs=crs)


def _polygonal(geom: Any) -> Any:
    """``geom``'s polygons: a repaired zone or a union may be a collection with lines."""
    if geom.geom_type != "GeometryCollection":
        return geom
    polys = [g for g in shapely.get_parts(geom) if g.geom_type in ("Polygon", "MultiPolygon")]
    return shapely.union_all(polys) if polys else shapely.MultiPolygon()


def _input_paths(inputs: Any) -> list[Any]:
    """``inputs`` of :func:`write_stats` as a list: one path is one input, not its letters."""
    if isinstance(inputs, str | os.PathLike):
        return [inputs]
    if isinstance(inputs, bytes) or not isinstance(inputs, Iterable):
        raise ConfigError(
            f"inputs: expected the input paths (a list), got {type(inputs).__name__} "
            f"{brief(inputs)}"
        )
    items = list(inputs)
    for i, v in enumerate(items):
        if v is not None:
            check_path(v, f"inputs[{i}]")
    return items


def write_stats(
    stats: pd.DataFrame,
    path: str | Path,
    *,
    plot: bool = True,
    overwrite: bool = False,
    inputs: Iterable[str | Path | None] = (),
    zones: Any = None,
    zone_field: str | None = None,
    zone_layer: str | None = None,
) -> tuple[Path, Path | None]:
    """Write class statistics and (``plot=True``) a bar chart beside them (``.png``).

    The format follows the extension of ``path`` (:data:`STATS_FORMATS`): ``.csv`` (or
    none) writes ``stats`` as a CSV; ``.gpkg``, ``.geojson`` and ``.fgb`` write the
    zones with their statistics as columns (:func:`zone_table`; GeoJSON in EPSG:4326);
    without zones, a ``.gpkg`` holds ``stats`` as a table without geometry.

    Args:
        stats: the output of :func:`class_areas`.
        path: the output file.
        plot: write the bar chart too.
        overwrite: replace existing outputs.
        inputs: the files the statistics were computed from; neither output may be one.
        zones: the zones given to :func:`class_areas` (path or GeoDataFrame), if any.
        zone_field: as given to :func:`class_areas`.
        zone_layer: as given to :func:`class_areas`.

    Returns:
        (output path, png path or None). Both are written atomically, together: a
        failure leaves neither.

    Raises:
        ConfigError: an unknown extension, or a format of features without zones.
    """
    check_stats_frame(stats, "stats", ("zone", "class_id"))
    out = Path(check_path(path, "path"))
    plot, overwrite = check_flag(plot, "plot"), check_flag(overwrite, "overwrite")
    inputs = _input_paths(inputs)
    ext = stats_format(out, zones=zones is not None)
    n_classes = stats["class_id"].nunique() if len(stats) else 0
    if plot and n_classes > MAX_CHART_CLASSES:
        warn(
            f"{n_classes} classes are too many for a bar chart (at most {MAX_CHART_CLASSES}); "
            "only the statistics are written. Is the raster a class map?",
            DataWarning,
        )
        plot = False
    png = check_stats_outputs(out, plot=plot, overwrite=overwrite, inputs=inputs, zones=zones)
    table: pd.DataFrame = stats
    if ext != ".csv" and zones is not None:
        table = zone_table(stats, zones, zone_field=zone_field, zone_layer=zone_layer)
    with contextlib.ExitStack() as stack:
        tmp = stack.enter_context(atomic_path(out, overwrite=overwrite, inputs=inputs))
        if ext == ".csv":
            stats.to_csv(tmp, index=False, float_format="%.6f")
        else:
            write_layer(table, tmp, final=out)
        if png is not None:  # renamed first; the statistics only after it
            tmp_png = stack.enter_context(atomic_path(png, overwrite=overwrite, inputs=inputs))
            plot_class_areas(stats).savefig(tmp_png, format="png")
    return out, png
