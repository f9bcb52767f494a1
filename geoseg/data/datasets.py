"""torchgeo datasets on one working grid: the shared base and the imagery.

All datasets are :class:`torchgeo.datasets.GeoDataset` subclasses, so torchgeo samplers
(``RandomGeoSampler``, ``RandomBatchGeoSampler``, ``GridGeoSampler``) index them, and they
share one working :class:`~geoseg.io.grid.Grid` (the imagery's CRS and pixel size):

* :class:`ImageryDataset` (here) - one multi-band file, a mosaic of files, or one file
  per band.
* :class:`~geoseg.data.labels.RasterLabelDataset` - a class raster (or a mosaic of them).
* :class:`~geoseg.data.labels.VectorLabelDataset` - polygons (GeoJSON, GeoPackage,
  Shapefile, ...) rasterized on the fly onto the working grid.
* :class:`~geoseg.data.tiles.SegmentationDataset` - imagery + labels over the regions of
  one split; returns ``{"image", "mask", "bounds"}`` tiles with class indices and
  ``IGNORE_INDEX``.

Compatibility: torchgeo >= 0.8 indexes datasets with a GeoDataFrame and queries them with
``(x, y, t)`` slices; older releases use an R-tree and ``BoundingBox`` queries; torchgeo
0.10 also accepts shapely geometries. :func:`make_index` and :func:`query_box` handle all
three by feature checks, never by version numbers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely
import torch
from rasterio.crs import CRS
from rasterio.enums import Resampling
from torchgeo.datasets import GeoDataset

from geoseg.config.data import ImageryConfig
from geoseg.errors import ConfigError, DataError, ReprojectionWarning, warn
from geoseg.io.files import RASTER_SUFFIXES, resolve_paths
from geoseg.io.grid import Box, Grid, intersect
from geoseg.io.source import RasterSource, resampling_method, work_dtype

try:  # torchgeo >= 0.8: GeoDataFrame index and slice queries
    from torchgeo.datasets.utils import GeoSlice  # noqa: F401

    _GEODATAFRAME_INDEX = True
except ImportError:  # pragma: no cover - torchgeo <= 0.7: rtree index, BoundingBox
    _GEODATAFRAME_INDEX = False


def make_index(boxes: Sequence[Box], crs: CRS) -> Any:
    """A torchgeo spatial index holding ``boxes`` (any time) for this torchgeo version."""
    if _GEODATAFRAME_INDEX:
        from geopandas import GeoDataFrame

        times = pd.IntervalIndex.from_tuples(
            [(pd.Timestamp.min, pd.Timestamp.max)] * len(boxes), closed="both", name="datetime"
        )
        return GeoDataFrame(
            {"region": list(range(len(boxes)))},
            index=times,
            geometry=[shapely.box(*b) for b in boxes],
            crs=crs,
        )
    from rtree.index import Index, Property  # pragma: no cover

    index = Index(interleaved=False, properties=Property(dimension=3))  # pragma: no cover
    for i, (minx, miny, maxx, maxy) in enumerate(boxes):  # pragma: no cover
        index.insert(i, (minx, maxx, miny, maxy, 0, 2**62), i)
    return index  # pragma: no cover


def query_box(query: Any) -> Box:
    """``(minx, miny, maxx, maxy)`` of a torchgeo query of any version.

    Accepts ``(x, y[, t])`` slices (torchgeo >= 0.8), a ``BoundingBox`` (<= 0.7), a
    shapely geometry (0.10) or a plain 4-tuple.
    """
    if isinstance(query, EvalTile):
        return query.box
    if isinstance(query, shapely.Geometry):
        b = query.bounds
        return (b[0], b[1], b[2], b[3])
    if hasattr(query, "minx"):
        return (query.minx, query.miny, query.maxx, query.maxy)
    if isinstance(query, slice):
        raise IndexError("a query needs x and y slices: ds[xmin:xmax, ymin:ymax]")
    if isinstance(query, tuple) and len(query) >= 2 and isinstance(query[0], slice):
        x, y = query[0], query[1]
        return (float(x.start), float(y.start), float(x.stop), float(y.stop))
    if isinstance(query, Sequence) and len(query) == 4:
        return (float(query[0]), float(query[1]), float(query[2]), float(query[3]))
    raise IndexError(f"cannot interpret query {query!r} as a bounding box")


@dataclass(frozen=True)
class EvalTile:
    """A val/test grid tile and the pixels it scores.

    Overlapping grid tiles (a stride below the tile size, or GridGeoSampler's last
    row/column spilling into a neighbouring region of the same split) would score some
    pixels twice; each pixel is scored by the first tile that contains it.

    Attributes:
        query: the torchgeo sampler's query for the tile.
        box: the tile's bounds.
        score: CRS boxes whose pixels this tile scores (inside the split's regions).
    """

    query: Any
    box: Box
    score: tuple[Box, ...]


class GridDataset(GeoDataset):
    """A GeoDataset on a geoseg :class:`Grid` with an index of footprints."""

    grid: Grid

    def _init_index(self, boxes: Sequence[Box], grid: Grid) -> None:
        self.grid = grid
        self.index = make_index(boxes, grid.crs)
        if _GEODATAFRAME_INDEX:
            self._res = (grid.xres, grid.yres)
        else:  # pragma: no cover - torchgeo <= 0.7 stores a float res and _crs
            self._crs = grid.crs
            self._res = grid.xres  # type: ignore[assignment]

    @property
    def footprint(self) -> Box:
        """Bounds of all the data, in the grid's CRS."""
        if _GEODATAFRAME_INDEX:
            b = self.index.total_bounds
        else:  # pragma: no cover
            minx, maxx, miny, maxy = self.index.bounds[:4]
            b = (minx, miny, maxx, maxy)
        return (float(b[0]), float(b[1]), float(b[2]), float(b[3]))

    def read(self, box: Box, *, grid: Grid | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Read ``box`` of the grid (or of a coarsened ``grid``): ``(values, valid)``."""
        raise NotImplementedError

    def __getitem__(self, query: Any) -> dict[str, Any]:
        box = query_box(query)
        values, valid = self.read(box)
        return {
            "values": torch.from_numpy(np.ascontiguousarray(values)),
            "valid": torch.from_numpy(np.ascontiguousarray(valid)),
            "bounds": torch.tensor(box, dtype=torch.float64),
        }


def grid_from_raster(
    source: RasterSource, *, crs: str | None = None, resolution: float | None = None
) -> Grid:
    """The working grid: ``source``'s grid, or its area in ``crs`` at ``resolution``."""
    if crs is None and resolution is None:
        xres, yres = source.res
        return Grid(source.crs, xres, yres, source.transform.c, source.transform.f)
    try:
        target = CRS.from_user_input(crs) if crs is not None else source.crs
    except Exception as exc:  # rasterio raises several types for bad CRS strings
        raise ConfigError(f"data.crs: {crs!r} is not a CRS rasterio understands") from exc
    if resolution is not None and resolution <= 0:
        raise ConfigError(f"data.resolution: must be > 0 CRS units per pixel, got {resolution}")
    if resolution is None:
        if target != source.crs:
            raise ConfigError(
                "data.resolution: give the pixel size in units of data.crs when data.crs "
                "differs from the imagery's CRS"
            )
        resolution = source.res[0]
    from rasterio.warp import transform_bounds

    b = transform_bounds(source.crs, target, *source.bounds, densify_pts=21)
    x0 = math.floor(b[0] / resolution) * resolution
    y0 = math.ceil(b[3] / resolution) * resolution
    return Grid(target, resolution, resolution, x0, y0)


def attach_all(sources: Sequence[RasterSource], grid: Grid, where: str) -> None:
    """Put every source on ``grid``; one ReprojectionWarning naming all resampled files."""
    off = [s for s in sources if not s.attach(grid)]
    if off:
        names = ", ".join(
            f"{s.path.name} (CRS {s.crs.to_string()}, pixel {s.res[0]:.6g} x {s.res[1]:.6g})"
            for s in off[:5]
        )
        more = f" and {len(off) - 5} more" if len(off) > 5 else ""
        warn(
            f"{where}: {len(off)} file(s) are not on the working grid (CRS "
            f"{grid.crs.to_string()}, pixel {grid.xres:.6g} x {grid.yres:.6g}, origin "
            f"{grid.x0:.10g}, {grid.y0:.10g}) and are reprojected on the fly: "
            f"{names}{more}. Set data.crs/data.resolution to choose the grid, or warp the "
            "files onto one grid beforehand to avoid resampling",
            ReprojectionWarning,
        )


class ImageryDataset(GridDataset):
    """Multi-band imagery from one file, a mosaic of files, or one file per band.

    Indexing with a box returns ``{"values": float64 (C, H, W) raw band values (0 at
    no-data), "valid": bool (H, W), "bounds"}``; a pixel is valid where its bands are not
    no-data (see ``ImageryConfig.nodata_mode``).

    Args:
        config: the ``data.imagery`` section.
        bases: folders relative paths are looked up in, in order (default: the working
            directory).
        crs: working CRS (None: the first file's).
        resolution: working pixel size (None: the first file's).
    """

    def __init__(
        self,
        config: ImageryConfig,
        *,
        bases: Sequence[str | Path] = (),
        crs: str | None = None,
        resolution: float | None = None,
    ) -> None:
        where = "data.imagery"
        self.config = config
        paths = resolve_paths(
            config.paths, where=f"{where}.paths", suffixes=RASTER_SUFFIXES, bases=bases
        )
        self.sources = [RasterSource.open(p, where=where, nodata=config.nodata) for p in paths]
        self.resampling = resampling_method(config.resampling, where=f"{where}.resampling")
        if config.stack == "mosaic":
            counts = {s.path.name: s.count for s in self.sources}
            if len(set(counts.values())) > 1:
                raise DataError(
                    f"{where}.paths: the files of a mosaic must have the same number of "
                    f"bands, found {counts}; use stack: bands to stack single-band files, "
                    "or list only files with the same bands"
                )
            count = self.sources[0].count
            if config.bands is not None:
                bad = [b for b in config.bands if not 1 <= b <= count]
                if bad:
                    raise ConfigError(
                        f"{where}.bands: band numbers {bad} do not exist; the files have "
                        f"bands 1..{count}"
                    )
                self.band_indexes: list[int] | None = list(config.bands)
                n_bands = len(config.bands)
            else:
                self.band_indexes = None
                n_bands = count
        else:
            if config.bands is not None:
                raise ConfigError(
                    f"{where}.bands: selects bands inside each file and only applies to "
                    "stack: mosaic; with stack: bands list the wanted files instead"
                )
            self.band_indexes = None
            n_bands = sum(s.count for s in self.sources)
        if config.band_names is not None:
            if len(config.band_names) != n_bands:
                raise ConfigError(
                    f"{where}.band_names: {len(config.band_names)} names for {n_bands} bands "
                    f"({[s.path.name for s in self.sources]}); give one name per band"
                )
            self.band_names = list(config.band_names)
        else:
            self.band_names = [f"B{i + 1}" for i in range(n_bands)]
        self.work_dtype = work_dtype(s.dtype for s in self.sources)
        grid = grid_from_raster(self.sources[0], crs=crs, resolution=resolution)
        attach_all(self.sources, grid, where)
        if config.stack == "bands":
            fp: Box | None = self.sources[0].bounds
            for s in self.sources[1:]:
                fp = intersect(fp, s.bounds) if fp is not None else None
            if fp is None:
                raise DataError(
                    f"{where}.paths: the band files do not overlap each other "
                    f"({[s.path.name for s in self.sources]}); stack: bands needs files "
                    "covering the same area"
                )
            boxes = [fp]
        else:
            boxes = [s.bounds for s in self.sources]
        self._init_index(boxes, grid)

    @property
    def band_nodata(self) -> list[float | None]:
        """The no-data value of every output band."""
        if self.config.stack == "mosaic":
            n = len(self.band_names)
            return [self.sources[0].nodata] * n
        out: list[float | None] = []
        for s in self.sources:
            out += [s.nodata] * s.count
        return out

    @property
    def nodata(self) -> float | None:
        """The common no-data value of all bands, or None when they differ or have none."""
        values = {v for v in self.band_nodata}
        if len(values) == 1:
            return values.pop()
        return None

    def read(self, box: Box, *, grid: Grid | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Read ``box``: ``(values (C, H, W) float, valid (H, W) bool)``.

        Values are float32 when that holds the files' values exactly (8/16-bit
        integers, float32), else float64; no-data pixels are 0.

        Args:
            box: the area, in the working CRS.
            grid: read on this coarsened working grid instead (quick scans).
        """
        g = grid or self.grid
        coarse = g != self.grid
        rows, cols = g.shape(box)
        dt = self.work_dtype
        # coarse reads are point samples (statistics, scans): never average pixels
        resampling = Resampling.nearest if coarse else self.resampling
        if self.config.stack == "bands":
            parts, valids = [], []
            for s in self.sources:
                v, ok = s.read(g, box, resampling=resampling, dtype=dt, coarse=coarse)
                parts.append(v)
                valids.append(ok)
            values = np.concatenate(parts, axis=0)
            band_valid = np.concatenate(valids, axis=0)
        else:
            hits = [s for s in self.sources if intersect(s.bounds, box) is not None]
            n = len(self.band_names)
            if len(hits) == 1:
                values, band_valid = hits[0].read(
                    g,
                    box,
                    bands=self.band_indexes,
                    resampling=resampling,
                    dtype=dt,
                    coarse=coarse,
                )
            else:
                values = np.zeros((n, rows, cols), dtype=dt)
                band_valid = np.zeros((n, rows, cols), dtype=bool)
                filled = np.zeros((rows, cols), dtype=bool)
                for s in hits:
                    v, ok = s.read(
                        self.grid,
                        box,
                        bands=self.band_indexes,
                        resampling=resampling,
                        dtype=dt,
                    )
                    # first file wins where files overlap
                    take = ok.any(axis=0) & ~filled
                    np.copyto(values, v, where=take[None])
                    np.copyto(band_valid, ok, where=take[None])
                    filled |= take
        bv = np.asarray(band_valid, dtype=bool)
        valid = np.asarray(
            bv.any(axis=0) if self.config.nodata_mode == "all" else bv.all(axis=0), dtype=bool
        )
        np.copyto(values, 0, where=~valid[None])
        return values, valid


def inside_mask(grid: Grid, box: Box, regions: Sequence[Box]) -> np.ndarray:
    """Bool (H, W): pixel centres of ``box`` inside any of ``regions``."""
    rows, cols = grid.shape(box)
    xs = box[0] + (np.arange(cols) + 0.5) * grid.xres
    ys = box[3] - (np.arange(rows) + 0.5) * grid.yres
    out = np.zeros((rows, cols), dtype=bool)
    for r in regions:
        cx = (xs > r[0]) & (xs < r[2])
        cy = (ys > r[1]) & (ys < r[3])
        out |= cy[:, None] & cx[None, :]
    return out
