"""Change between two class maps: the from-to area matrix and polygons of change."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from rasterio.windows import Window

from geoseg.analysis.areas import raster_windows
from geoseg.arguments import check_flag, check_path
from geoseg.classes import class_table_for
from geoseg.errors import DataError, ReprojectionWarning, warn
from geoseg.io.bands import (
    BandSource,
    class_band,
    open_grid,
    raster_dtype,
    raster_path,
    warn_if_not_classes,
)
from geoseg.io.grid import RasterGrid, pixel_areas, same_grid_crs
from geoseg.io.outputs import atomic_outputs, check_output_path
from geoseg.vectorize import DEFAULT_CHUNK_SIZE, collect, prepare_job

#: Transition codes are ``before_id << _CODE_BITS | after_id``.
_CODE_BITS = 20


_CODE_MASK = (1 << _CODE_BITS) - 1

#: A transition matrix shows at most this many distinct classes (rows and columns).
MAX_MATRIX_CLASSES = 1024


@dataclass(frozen=True)
class TransitionSource:
    """Reads ``before_id << 20 | after_id`` where the class changed (picklable, windowed)."""

    before: BandSource
    after: BandSource

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Return (transition codes, valid mask: both valid and different) for ``window``."""
        b, vb = self.before.read(window)
        a, va = self.after.read(window)
        valid = vb & va & (a != b)
        _check_code_range(b[valid], a[valid])
        return (b << _CODE_BITS) | a, valid


def _check_code_range(*arrays: np.ndarray) -> None:
    for arr in arrays:
        if arr.size and (arr.min() < 0 or arr.max() > _CODE_MASK):
            raise DataError(
                f"change needs class ids in 0..{_CODE_MASK}, found {int(arr.min())}.."
                f"{int(arr.max())}; set the nodata value (--nodata) for negative codes"
            )


@dataclass
class ChangeResult:
    """Output of :func:`change`.

    Attributes:
        matrix: from-to transition areas in m² (rows: before class, columns: after class).
        polygons: regions that changed, with ``from_id``, ``from_name``, ``to_id``,
            ``to_name``, ``area_m2``.
        matrix_path: the CSV written beside the output, if any.
        polygons_path: the vector output, if any.
    """

    matrix: pd.DataFrame
    polygons: gpd.GeoDataFrame
    matrix_path: Path | None = None
    polygons_path: Path | None = None


def _align(before: str, after: str, grid: RasterGrid, band: int) -> tuple | None:
    """None if ``after`` is on ``before``'s grid, else the warp spec; errors if impossible."""
    from rasterio.warp import transform_bounds

    ag = open_grid(after, band=band, what="after raster")
    a_bounds = rasterio.transform.array_bounds(ag.height, ag.width, ag.transform)
    pixel = min(abs(grid.transform.a), abs(grid.transform.e))
    # the one CRS rule (geoseg.io.grid): same pixels and a CRS giving the same coordinates
    # to a tenth of a pixel is the same grid, read directly
    same = (
        (ag.height, ag.width) == (grid.height, grid.width)
        and ag.transform.almost_equals(grid.transform)
        and same_grid_crs(ag.crs, grid.crs, (a_bounds[0], a_bounds[1], a_bounds[2], a_bounds[3]),
                          pixel)
    )  # fmt: skip
    if same:
        return None
    t = grid.transform
    b_bounds = rasterio.transform.array_bounds(grid.height, grid.width, t)
    try:
        a_in_b = transform_bounds(ag.crs_wkt, grid.crs_wkt, *a_bounds)
    except Exception as exc:
        raise DataError(
            f"cannot align {after!r} onto {before!r}: its CRS cannot be transformed ({exc})"
        ) from exc
    if not all(math.isfinite(v) for v in a_in_b) or not shapely.box(*b_bounds).intersects(
        shapely.box(*a_in_b)
    ):
        raise DataError(
            f"cannot align {after!r} onto {before!r}: they do not overlap "
            f"(after bounds {np.round(a_in_b, 3).tolist()} vs before bounds "
            f"{np.round(b_bounds, 3).tolist()} in the before CRS)"
        )
    warn(
        f"{after!r} is on another grid than {before!r}; reprojecting it onto the before grid "
        "with nearest-neighbour resampling",
        ReprojectionWarning,
    )
    return (grid.crs_wkt, tuple(t)[:6], grid.width, grid.height)


def change(
    before: Any,
    after: Any,
    *,
    output: str | Path | None = None,
    min_area: float = 0.0,
    simplify: float = 0.0,
    connectivity: int = 4,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    workers: int | None = None,
    band: int | None = None,
    nodata: float | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> ChangeResult:
    """From-to transition areas and polygons of change between two class maps.

    ``after`` is reprojected onto ``before``'s grid with nearest-neighbour resampling when
    the grids differ (a :class:`~geoseg.errors.ReprojectionWarning` says so).

    Args:
        before: the earlier class map (path or open dataset).
        after: the later class map.
        output: vector file for the change polygons (format by extension); the transition
            matrix is written beside it as ``<output stem>.csv``.
        min_area: drop change polygons smaller than this many m².
        simplify: coverage simplification tolerance in metres.
        connectivity: 4 or 8 (see :func:`geoseg.vectorize.vectorize`).
        chunk_size: chunk edge in pixels.
        workers: parallel workers for the polygons (default: all cores).
        band: the band of class ids in both rasters (default: the only band; a
            multi-band raster without a class table is refused as imagery).
        nodata: override both rasters' nodata value.
        overwrite: replace existing outputs.
        progress: show progress bars.

    Returns:
        A :class:`ChangeResult` with the matrix (m²) and the change polygons.

    Raises:
        DataError: the rasters cannot be aligned (no overlap, no CRS), non-integer values.
    """
    from geoseg.io.vector import check_vector_path, write_layer

    progress = check_flag(progress, "progress")
    bpath, apath = raster_path(before), raster_path(after)
    out = Path(check_path(output, "output")) if output is not None else None
    csv = out.with_suffix(".csv") if out is not None else None
    if out is not None and csv is not None:
        check_vector_path(out, overwrite=overwrite, inputs=(bpath, apath))
        check_output_path(csv, overwrite=overwrite, inputs=(bpath, apath))
    band_a = class_band(apath, band, what="after raster")
    band = class_band(bpath, band, what="before raster")
    if band != band_a:  # pragma: no cover - both resolve to 1 when band is None
        raise DataError("before and after use different bands")
    grid = open_grid(bpath, band=band, what="before raster")
    warp = _align(bpath, apath, grid, band)
    src_b = BandSource(bpath, band, nodata)
    src_a = BandSource(apath, band, nodata, warp)
    tb, ta = class_table_for(bpath, band=band), class_table_for(apath, band=band)
    names: dict[int, str] = {}
    for t in (ta, tb):
        if t is not None:
            names.update({c.id: c.name for c in t})

    def name(c: int) -> str:
        return names.get(int(c), f"class_{int(c)}")

    tabled = {p for p, t in ((bpath, tb), (apath, ta)) if t is not None}
    matrix = _transition_matrix(src_b, src_a, grid, chunk_size, name, progress, tabled)
    polys = _change_polygons(
        TransitionSource(src_b, src_a), grid, name, simplify=simplify, min_area=min_area,
        connectivity=connectivity, chunk_size=chunk_size, workers=workers, progress=progress,
    )  # fmt: skip
    result = ChangeResult(matrix, polys)
    if out is not None and csv is not None:
        # both appear together: an interruption or a full disk while the polygons are
        # written leaves neither (not a new matrix beside old or missing polygons)
        with atomic_outputs() as batch:
            matrix.to_csv(batch.path(csv, overwrite=overwrite), float_format="%.6f")
            write_layer(polys, batch.path(out, overwrite=overwrite), final=out)
        result.matrix_path, result.polygons_path = csv, out
    return result


def _transition_matrix(
    src_b: BandSource,
    src_a: BandSource,
    grid: RasterGrid,
    chunk_size: int,
    name: Callable[[int], str],
    progress: bool,
    tabled: Collection[str] = (),
) -> pd.DataFrame:
    """From-to areas in m², chunk by chunk (rows: before class, columns: after class)."""
    from tqdm.auto import tqdm

    # transition matrix, chunk by chunk
    row_area = pixel_areas(grid)
    acc: dict[tuple[int, int], float] = defaultdict(float)
    seen: set[int] = set()
    for win in tqdm(
        list(raster_windows(grid, chunk_size)), desc="change matrix", disable=not progress
    ):
        b, vb = src_b.read(win)
        a, va = src_a.read(win)
        m = vb & va
        if not m.any():
            continue
        _check_code_range(b[m], a[m])
        w = np.broadcast_to(row_area[win.row_off : win.row_off + win.height, None], b.shape)[m]
        seen.update(np.unique(b[m]).tolist())
        seen.update(np.unique(a[m]).tolist())
        if len(seen) > MAX_MATRIX_CLASSES:
            raise DataError(
                f"{src_b.path!r} and {src_a.path!r} hold more than {MAX_MATRIX_CLASSES} distinct "
                "values together: a from-to matrix of that many classes is not a change of "
                "land cover (object ids, continuous values or imagery?); give class maps of a "
                "few classes"
            )
        codes = (b[m] << _CODE_BITS) | a[m]
        u, inv = np.unique(codes, return_inverse=True)
        for code, area in zip(u.tolist(), np.bincount(inv, weights=w).tolist()):
            acc[(code >> _CODE_BITS, code & _CODE_MASK)] += area
    if not acc:
        raise DataError(f"{src_b.path!r} and {src_a.path!r} have no valid pixels in common")
    ids = sorted({k for pair in acc for k in pair})
    for k, src in enumerate((src_b, src_a)):
        n = len({pair[k] for pair in acc})
        dtype = raster_dtype(src.path, src.band)
        warn_if_not_classes(src.path, n, has_table=src.path in tabled, dtype=dtype)
    pos = {c: k for k, c in enumerate(ids)}
    table = np.zeros((len(ids), len(ids)))
    for (f, t_), area in acc.items():
        table[pos[f], pos[t_]] += area
    labels = [name(i) for i in ids]
    matrix = pd.DataFrame(table, index=labels, columns=labels)
    matrix.index.name = "from \\ to (m2)"

    return matrix


def _change_polygons(
    source: TransitionSource,
    grid: RasterGrid,
    name: Callable[[int], str],
    *,
    simplify: float,
    min_area: float,
    connectivity: int,
    chunk_size: int,
    workers: int | None,
    progress: bool,
) -> gpd.GeoDataFrame:
    """Polygons of change: the chunked vectorizer on the transition codes."""
    job = prepare_job(
        None,
        source=source,
        grid=grid,
        table=None,
        simplify=simplify,
        min_area=min_area,
        fill_holes=0.0,
        classes=None,
        probabilities=None,
        sieve=0,
        connectivity=connectivity,
    )
    gdf = collect(job, chunk_size=chunk_size, workers=workers, client=None, progress=progress)
    codes = gdf["class_id"].to_numpy(np.int64)
    from_id, to_id = codes >> _CODE_BITS, codes & _CODE_MASK
    polys = gpd.GeoDataFrame(
        {
            "from_id": from_id,
            "from_name": [name(c) for c in from_id],
            "to_id": to_id,
            "to_name": [name(c) for c in to_id],
            "pixels": gdf["pixels"].to_numpy(),
            "area_m2": gdf["area_m2"].to_numpy(),
            "perimeter_m": gdf["perimeter_m"].to_numpy(),
        },
        geometry=gdf.geometry.values,
        crs=gdf.crs,
    )
    return polys
