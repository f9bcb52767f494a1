"""Vectorize jobs and their output: preparing options, iterating GeoDataFrames, sorting."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely

from geoseg.arguments import check_flag, check_float, check_int
from geoseg.classes import (
    ClassTable,
    check_map_classes,
    class_table_for,
    names_for,
    parse_classes,
)
from geoseg.errors import (
    ConfigError,
    DataError,
    DataWarning,
    InputFileError,
    NoDataWarning,
    brief,
    warn,
)
from geoseg.io.bands import (
    BandSource,
    is_instance_map,
    open_grid,
    raster_dtype,
    raster_path,
    refuse_probabilities,
    warn_if_not_classes,
)
from geoseg.io.grid import RasterGrid
from geoseg.vectorize.chunks import chunk_windows, default_workers, run_tasks, trim_heap
from geoseg.vectorize.clean import attributes, clean
from geoseg.vectorize.pieces import CONNECTIVITY, ChunkResult, Options, Pieces
from geoseg.vectorize.polygonize import canonicalize, dissolve_by
from geoseg.vectorize.seams import merge_border_pieces

#: Attribute columns of every polygon layer, in order (``confidence`` only with probabilities).
VECTOR_COLUMNS = ("class_id", "class_name", "pixels", "area_m2", "perimeter_m")


@dataclass
class VectorizeJob:
    """A prepared vectorization: the grid, the chunk options and how to name classes."""

    grid: RasterGrid
    opts: Options
    name_of: Callable[[int], str]
    with_confidence: bool
    simplify_px: float
    geometry_type: str
    #: timings and sizes of the last run (seconds, counts), see ``GeoDataFrame.attrs``
    stats: dict[str, float] = field(default_factory=dict)
    #: instance maps: one polygon per object id, with its class
    instances: bool = False
    #: instance maps: class id of every object id seen so far
    object_class: dict[int, int] = field(default_factory=dict)
    #: instance maps: score of every object id (from an objects table), if given
    object_score: dict[int, float] | None = None
    #: building regularization tolerance in pixels (0: none)
    regularize_px: float = 0.0
    #: with ``classes``: the kept classes found in the map (before any cleaning)
    classes_seen: set[int] = field(default_factory=set)
    #: the raster file (set when the job reads a file): an empty or imagery-like
    #: result is warned about
    path: str | None = None
    #: the file has a class table (no imagery warning then)
    has_table: bool = False


def prepare_job(
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
    instances: bool | None = None,
    objects: Any = None,
    regularize: float = 0.0,
) -> VectorizeJob:
    """Check the options and open the raster: everything a vectorize run needs.

    Used by :func:`geoseg.vectorize.vectorize` and by analysis (change polygons), which
    passes its own ``source``/``grid``/``table`` for a computed raster.
    """
    is_inst = False
    band = check_int(band, "band", unit="1-based")
    if instances is not None:
        instances = check_flag(instances, "instances")
    if source is None:
        path = raster_path(labels)
        is_inst = is_instance_map(path) if instances is None else bool(instances)
        if is_inst:
            _check_instance_options(classes, probabilities, sieve)
        else:
            refuse_probabilities(path)
    if connectivity not in CONNECTIVITY:
        raise ConfigError(f"connectivity must be one of {list(CONNECTIVITY)}, got {connectivity!r}")
    for name, v in (("simplify", simplify), ("min_area", min_area), ("fill_holes", fill_holes),
                    ("regularize", regularize)):  # fmt: skip
        check_float(v, name, unit="metres")
        if not (v >= 0 and math.isfinite(v)):
            raise ConfigError(f"{name} must be a finite number >= 0 (metres), got {v!r}")
    if check_int(sieve, "sieve", unit="pixels") < 0:
        raise ConfigError(f"sieve must be >= 0 pixels, got {sieve!r}")
    class_source = None
    file_path = None
    if source is None:
        file_path = path
        grid = open_grid(path, band=band)
        source = BandSource(path, band, 0 if is_inst and nodata is None else nodata)
        table = class_table_for(path, band=band)
        if is_inst and _band_count(path) >= 2:
            class_source = BandSource(path, 2, 0)
    if grid is None:
        raise ConfigError("prepare_job: a computed source needs its grid")
    keep, overrides = parse_classes(classes)
    if file_path is not None:
        check_map_classes(keep, overrides, file_path, band)
    name_of = names_for(table, overrides)
    prob_path, prob_index = _probability_index(probabilities, table, grid)
    simplify_px = simplify / grid.pixel_size_m() if simplify > 0 else 0.0
    side = max(grid.width, grid.height)
    for name, value in (("simplify", simplify), ("regularize", regularize)):
        if value / grid.pixel_size_m() > side:  # every polygon a sliver (or a GEOS overflow)
            raise ConfigError(
                f"{name} {brief(value)} m is more than the whole map ({side} px of "
                f"{grid.pixel_size_m():.3g} m): give a tolerance of about a pixel or two"
            )
    opts = Options(
        source=source,
        grid=grid,
        keep=tuple(keep) if keep is not None else None,
        connectivity=connectivity,
        sieve=int(sieve),
        fill_holes=float(fill_holes),
        min_area=float(min_area),
        collect=simplify > 0 or fill_holes > 0 or regularize > 0 or is_inst,
        prob_path=prob_path,
        prob_index=prob_index,
        class_source=class_source,
    )
    gtype = "Polygon" if connectivity == 4 else "MultiPolygon"
    job = VectorizeJob(grid, opts, name_of, probabilities is not None, simplify_px, gtype)
    job.instances = is_inst
    job.path, job.has_table = file_path, table is not None
    if regularize > 0:
        if simplify > 0:
            raise ConfigError("regularize and simplify: choose one (regularize simplifies)")
        job.regularize_px = regularize / grid.pixel_size_m()
    if objects is not None:
        job.object_score = read_object_scores(objects)
    return job


def _probability_index(
    probabilities: Any, table: ClassTable | None, grid: RasterGrid
) -> tuple[str | None, tuple[tuple[int, int], ...]]:
    """The probability raster's path and (class id, band index) pairs, checked."""
    if probabilities is None:
        return None, ()
    prob_path = raster_path(probabilities)
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
    return prob_path, prob_index


def _band_count(path: str) -> int:
    with rasterio.open(path) as src:
        return int(src.count)


def _check_instance_options(classes: Any, probabilities: Any, sieve: int) -> None:
    for name, value in (("classes", classes), ("probabilities", probabilities)):
        if value is not None:
            raise ConfigError(
                f"{name}: not used with an instance map (one polygon per object id); filter "
                "the result by its class_id column instead"
            )
    if sieve:
        raise ConfigError("sieve: an instance map is not sieved (it would merge objects)")


def read_object_scores(objects: Any) -> dict[int, float]:
    """``instance_id -> score`` from an objects table (a CSV path or a DataFrame)."""
    if isinstance(objects, pd.DataFrame):
        table = objects
    else:
        try:
            table = pd.read_csv(objects)
        except FileNotFoundError:
            raise InputFileError(
                f"objects table {str(objects)!r} does not exist; give the CSV that geoseg "
                "predict --objects wrote, or leave --objects out"
            ) from None
        except (OSError, ValueError, UnicodeDecodeError) as exc:  # pandas' parser errors
            raise InputFileError(
                f"objects table {str(objects)!r} cannot be read as a CSV: {exc}"
            ) from None
    missing = {"instance_id", "score"} - set(table.columns)
    if missing:
        raise DataError(
            f"objects table {objects if not isinstance(objects, pd.DataFrame) else ''!s} has "
            f"no column(s) {sorted(missing)}; write it with geoseg predict --objects"
        )
    try:
        ids = table["instance_id"].astype(int).tolist()
        scores = table["score"].astype(float)
    except (TypeError, ValueError) as exc:
        raise DataError(
            f"objects table {str(objects)[:200]!r}: bad instance_id/score ({exc})"
        ) from None
    return dict(zip(ids, scores))


def names_array(class_id: np.ndarray, job: VectorizeJob) -> np.ndarray:
    """Class names of ``class_id``, looked up once per distinct class."""
    if len(class_id) == 0:
        return np.empty(0, object)
    uniq, inv = np.unique(class_id, return_inverse=True)
    return np.array([job.name_of(c) for c in uniq.tolist()], object)[inv.ravel()]


def frame(table: dict[str, Any], job: VectorizeJob) -> gpd.GeoDataFrame:
    """A GeoDataFrame with the standard schema from an attribute dict."""
    value = np.asarray(table["class_id"], np.int64)
    cols: dict[str, Any] = {}
    if job.instances:  # the polygons' value is the object id; the class is looked up
        cols["instance_id"] = pd.array(value, dtype="int64")
        value = np.array([job.object_class.get(int(v), -1) for v in value], np.int64)
    cols.update(
        {
            "class_id": pd.array(value, dtype="int64"),
            "class_name": names_array(value, job),
            "pixels": pd.array(table["pixels"], dtype="int64"),
            "area_m2": np.asarray(table["area_m2"], np.float64),
            "perimeter_m": np.asarray(table["perimeter_m"], np.float64),
        }
    )
    if job.object_score is not None:
        ids = cols["instance_id"].to_numpy() if job.instances else value
        cols["score"] = np.array([job.object_score.get(int(v), np.nan) for v in ids])
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


def iter_frames(job: VectorizeJob, **kw: Any) -> Generator[gpd.GeoDataFrame, None, None]:
    """Yield GeoDataFrames of final polygons as chunks complete (see :func:`_iter_frames`).

    A job reading a file warns when the result is empty (all no-data, or no kept class)
    or when the raster looks like imagery (many distinct values, no class table).
    """
    n = 0
    values: set[int] = set()
    # closed at once when the consumer stops (an error, Ctrl-C): the workers go first
    with contextlib.closing(_iter_frames(job, **kw)) as frames:
        for gdf in frames:
            n += len(gdf)
            if len(values) <= 1000 and len(gdf):
                values.update(np.unique(gdf["class_id"].to_numpy()).tolist())
            yield gdf
    if job.path is None:
        return
    kept = job.opts.keep
    absent = sorted(set(kept) - job.classes_seen) if kept is not None else []
    if n and absent:
        warn(
            f"{job.path!r}: class(es) {absent[:10]} requested but absent from the map (or all "
            "no-data); they have no polygon",
            DataWarning,
        )
    if n == 0:
        why = f"none of the classes {list(kept)[:10]} occurs in it" if kept else "no valid pixel"
        warn(
            f"{job.path!r}: no polygon: {why} (all no-data, or a wrong nodata value, band or "
            "classes?)",
            NoDataWarning,
        )
    elif not job.instances:
        dtype = raster_dtype(job.path, getattr(job.opts.source, "band", 1))
        warn_if_not_classes(job.path, len(values), has_table=job.has_table, dtype=dtype)


def _iter_frames(
    job: VectorizeJob,
    *,
    chunk_size: int,
    workers: int | None,
    client: Any,
    progress: bool,
) -> Generator[gpd.GeoDataFrame, None, None]:
    """Yield GeoDataFrames of final polygons as chunks complete, merged regions last.

    Instance maps give one feature per object id: the regions of an id that do not touch
    (a Mask2Former or Mask R-CNN mask in pieces) are joined into one MultiPolygon. Whether
    an id has more regions is only known once every chunk is done, so instance maps run in
    collect mode (memory grows with the objects' polygons, not with the pixels).
    """
    if check_int(chunk_size, "chunk_size", unit="pixels") < 16:
        raise ConfigError(f"chunk_size must be >= 16 pixels, got {chunk_size}")
    chunk_size = int(chunk_size)
    t_start = time.perf_counter()
    grid, opts = job.grid, job.opts
    windows = chunk_windows(grid, chunk_size)
    n_cols = math.ceil(grid.width / chunk_size)
    results: dict[tuple[int, int], ChunkResult] = {}
    collected: list[Pieces] = []
    t_merge = 0.0
    n_border = n_merged = largest = 0
    merged_parts: list[Pieces] = []  # kept only when cleaning needs the whole coverage

    def merge_round() -> Iterator[gpd.GeoDataFrame]:
        nonlocal t_merge, n_merged, largest
        batches = merge_border_pieces(results, grid, chunk_size, opts.connectivity, False)
        while True:
            t0 = time.perf_counter()
            merged = next(batches, None)
            trim_heap()  # the batch's edge arrays are freed: return them to the system
            t_merge += time.perf_counter() - t0
            if merged is None:
                return
            n_merged += len(merged.geoms)
            largest = max(largest, int(shapely.get_num_coordinates(merged.geoms).max()))
            if opts.collect:
                merged_parts.append(merged)
                continue
            part, _ = clean(merged, opts)
            if len(part.geoms):
                yield frame(attributes(part, grid), job)

    since = 0
    tasks = run_tasks(opts, windows, default_workers(workers), client, progress)
    with contextlib.closing(tasks):  # the local cluster closes with this generator
        for res in tasks:
            job.classes_seen.update(res.classes.tolist())
            if res.id_classes is not None:
                job.object_class.update(
                    zip(res.id_classes[:, 0].tolist(), res.id_classes[:, 1].tolist())
                )
            if opts.collect:
                collected.append(res.final)
            elif len(res.final["geometry"]):
                yield frame(res.final, job)
                trim_heap()  # after the consumer wrote it (see trim_heap)
            res.final = None
            res.alive = np.ones(len(res.border), bool)
            n_border += len(res.border)
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
    if opts.collect:
        merged = Pieces.concat(merged_parts)
        merged_parts.clear()
        allp = Pieces.concat([*collected, merged])
        collected.clear()
        if job.instances:
            allp = one_piece_per_value(allp)
        yield frame(attributes(clean_coverage(allp, job), grid, repair=job.regularize_px > 0),
                    job)  # fmt: skip


def one_piece_per_value(p: Pieces) -> Pieces:
    """Join the pieces of each value (object id) into one geometry, in value order.

    Regions of one id that reach here do not share an edge (those that do were merged at
    the seams), so their union is the MultiPolygon of their parts; pixel counts and
    probability sums add up. Canonical form keeps it independent of the chunking.
    """
    if len(p.geoms) == 0:
        return p
    values, first, inv = np.unique(p.value, return_index=True, return_inverse=True)
    n, inv = len(values), inv.ravel()
    geoms = p.geoms[first]
    several = np.flatnonzero(np.bincount(inv, minlength=n) > 1)
    if len(several):  # usually few: dissolve only those
        rank = np.full(n, -1)
        rank[several] = np.arange(len(several))
        sub = rank[inv] >= 0
        joined = dissolve_by(p.geoms[sub], rank[inv[sub]] + 1, len(several))[1:]
        geoms[several] = canonicalize(joined, collinear=False)
    return Pieces(
        geoms,
        values,
        np.bincount(inv, weights=p.pixels, minlength=n).astype(np.int64),
        np.bincount(inv, weights=p.psum, minlength=n),
        np.bincount(inv, weights=p.pcount, minlength=n).astype(np.int64),
    )


def clean_coverage(allp: Pieces, job: VectorizeJob) -> Pieces:
    """Hole filling, minimum area and coverage simplification over all polygons at once."""
    grid, opts = job.grid, job.opts
    allp, holes = clean(
        allp,
        Options(**{**opts.__dict__, "min_area": 0.0}),  # min area after the islands
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
        allp = Pieces(
            np.asarray(shapely.make_valid(simplified, method="structure", keep_collapsed=False))
            if not shapely.is_valid(simplified).all()
            else simplified,
            allp.value,
            allp.pixels,
            allp.psum,
            allp.pcount,
        )
    if job.regularize_px > 0 and len(allp.geoms):
        from geoseg.vectorize.regularize import regularize

        geoms, _ = regularize(allp.geoms, job.regularize_px)
        allp = Pieces(geoms, allp.value, allp.pixels, allp.psum, allp.pcount)
    return allp


def sort_frame(gdf: gpd.GeoDataFrame, grid: RasterGrid) -> gpd.GeoDataFrame:
    """Deterministic order: object id (instance maps); else class id, top-left corner, area."""
    if len(gdf) == 0:
        return gdf.reset_index(drop=True)
    if "instance_id" in gdf.columns:
        return gdf.sort_values("instance_id", kind="stable").reset_index(drop=True)
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


def collect(job: VectorizeJob, **kw: Any) -> gpd.GeoDataFrame:
    """Run ``job`` and gather every polygon in one sorted GeoDataFrame."""
    frames = [f for f in iter_frames(job, **kw) if len(f)]
    if not frames:
        return frame(attributes(Pieces.empty(), job.grid), job)
    gdf = gpd.GeoDataFrame(pd.concat(frames, ignore_index=True), crs=job.grid.output_crs)
    gdf = sort_frame(gdf, job.grid)
    gdf.attrs["vectorize_stats"] = dict(job.stats)
    return gdf
