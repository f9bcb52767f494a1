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
chunk row plus the regions that span many chunks; they wait as zlib-compressed WKB, about
2.5 bytes per vertex), plus one merge batch (at most 1M input vertices, or the largest
region), plus the output when it is returned as a GeoDataFrame (use
:func:`vectorize_to_file` to stream). Simplification and hole filling
need the whole coverage, so they keep all polygons.

Modules: :mod:`~geoseg.vectorize.label` (regions, sieve), :mod:`~geoseg.vectorize.polygonize`
(GDAL polygons in pixel coordinates, canonical form), :mod:`~geoseg.vectorize.chunks` (chunk
tasks and scheduling), :mod:`~geoseg.vectorize.seams` (union-find over any integer id and
exact merging), :mod:`~geoseg.vectorize.clean` (holes, minimum area, attributes in metres),
:mod:`~geoseg.vectorize.frames` (jobs and GeoDataFrames).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import geopandas as gpd

from geoseg.arguments import check_flag
from geoseg.io.grid import RasterGrid
from geoseg.vectorize.clean import coverage_gaps_overlaps
from geoseg.vectorize.frames import (
    VECTOR_COLUMNS,
    VectorizeJob,
    attributes,
    collect,
    frame,
    iter_frames,
    prepare_job,
)
from geoseg.vectorize.pieces import CONNECTIVITY, DEFAULT_CHUNK_SIZE, Pieces
from geoseg.vectorize.polygonize import canonicalize, drop_collinear
from geoseg.vectorize.seams import merge_pixel_polygons

__all__ = [
    "CONNECTIVITY",
    "DEFAULT_CHUNK_SIZE",
    "VECTOR_COLUMNS",
    "RasterGrid",
    "VectorizeJob",
    "canonicalize",
    "collect",
    "coverage_gaps_overlaps",
    "drop_collinear",
    "iter_frames",
    "merge_pixel_polygons",
    "prepare_job",
    "vectorize",
    "vectorize_to_file",
]


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
    instances: bool | None = None,
    objects: Any = None,
    regularize: float = 0.0,
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
        instances: the raster is an instance map (object ids in band 1, 0 = none; a geoseg
            instance COG also holds each object's class in band 2): one polygon per
            object, with an ``instance_id`` column. None (default) detects a geoseg
            instance COG from its GEOSEG_INSTANCES tag.
        objects: instance maps: the objects table of ``geoseg predict --objects`` (CSV
            path or DataFrame): adds each object's ``score``.
        regularize: building regularization tolerance in metres (0: none): outlines become
            right-angled polygons along each building's main directions, and neighbours
            never overlap (:mod:`geoseg.vectorize.regularize`).
        client: a ``distributed.Client`` to run on (default: a local cluster).
        progress: show progress bars.

    Returns:
        A GeoDataFrame in the raster's CRS with columns ``class_id``, ``class_name``,
        ``pixels``, ``area_m2``, ``perimeter_m`` (and ``confidence``), sorted by class;
        for an instance map ``instance_id`` first (and ``score``), sorted by id.

    Raises:
        DataError: the raster has no CRS or non-integer class values.
        ConfigError: an option is invalid, or ``classes`` names a class the raster's
            class table does not hold.

    A requested class with no pixel in the map gives a DataWarning.
    """
    progress = check_flag(progress, "progress")
    job = prepare_job(
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
        instances=instances,
        objects=objects,
        regularize=regularize,
    )
    return collect(job, chunk_size=chunk_size, workers=workers, client=client, progress=progress)


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
    instances: bool | None = None,
    objects: Any = None,
    regularize: float = 0.0,
    client: Any = None,
    progress: bool = True,
) -> int:
    """Vectorize ``labels`` straight into a vector file; returns the number of polygons.

    Same options as :func:`vectorize`. For formats that can append (GeoPackage, Shapefile)
    and without ``simplify`` / ``fill_holes``, polygons are streamed to the file as chunks
    finish, so memory does not grow with the number of polygons. The file appears
    atomically (written under a temporary name, renamed on success).
    """
    from geoseg.io.vector import check_vector_path, stream_vector

    progress = check_flag(progress, "progress")
    check_vector_path(
        path, overwrite=overwrite, inputs=(labels, probabilities, objects), name="path"
    )
    job = prepare_job(
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
        instances=instances,
        objects=objects,
        regularize=regularize,
    )
    empty = frame(attributes(Pieces.empty(), job.grid), job)
    frames = iter_frames(
        job, chunk_size=chunk_size, workers=workers, client=client, progress=progress
    )
    # an interruption while a frame is written closes the run (and its workers) at once
    with contextlib.closing(frames):
        return stream_vector(frames, path, empty=empty, overwrite=overwrite)
