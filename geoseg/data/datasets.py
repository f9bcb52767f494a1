"""torchgeo datasets for imagery, label rasters, vector labels and training tiles.

All datasets are :class:`torchgeo.datasets.GeoDataset` subclasses, so torchgeo samplers
(``RandomGeoSampler``, ``RandomBatchGeoSampler``, ``GridGeoSampler``) index them, and they
share one working :class:`~geoseg.data.sources.Grid` (the imagery's CRS and pixel size):

* :class:`ImageryDataset` - one multi-band file, a mosaic of files, or one file per band.
* :class:`RasterLabelDataset` - a class raster (or a mosaic of them).
* :class:`VectorLabelDataset` - polygons (GeoJSON, GeoPackage, Shapefile, ...) rasterized
  on the fly onto the working grid.
* :class:`SegmentationDataset` - imagery + labels over the regions of one split; returns
  ``{"image", "mask", "bounds"}`` tiles with class indices and ``IGNORE_INDEX``.

Compatibility: torchgeo >= 0.8 indexes datasets with a GeoDataFrame and queries them with
``(x, y, t)`` slices; older releases use an R-tree and ``BoundingBox`` queries; torchgeo
0.10 also accepts shapely geometries. :func:`make_index` and :func:`query_box` handle all
three by feature checks, never by version numbers.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely
import torch
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.features import rasterize
from torchgeo.datasets import GeoDataset

from geoseg.classes import IGNORE_INDEX, ClassTable
from geoseg.config.data import ImageryConfig, LabelConfig
from geoseg.errors import ConfigError, DataError, InputFileError, ReprojectionWarning, warn
from geoseg.io.files import RASTER_SUFFIXES, VECTOR_SUFFIXES, resolve_paths
from geoseg.io.grid import Box, Grid, intersect, union_bounds
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


class _GridDataset(GeoDataset):
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
    except Exception:
        raise ConfigError(f"data.crs: {crs!r} is not a CRS rasterio understands") from None
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


def _attach_all(sources: Sequence[RasterSource], grid: Grid, where: str) -> None:
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


class ImageryDataset(_GridDataset):
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
        _attach_all(self.sources, grid, where)
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


class LabelReader:
    """Turns raw label values into class indices (``IGNORE_INDEX`` where ignored).

    Args:
        classes: the class table.
        ignore_values: raw values that mean "ignore".
        source: file or config key named in errors.
    """

    def __init__(self, classes: ClassTable, ignore_values: Sequence[float], source: str) -> None:
        self.classes = classes
        self.ignore_values = [float(v) for v in ignore_values]
        self.source = source
        ids = np.array(classes.ids, dtype=np.float64)
        order = np.argsort(ids)
        self._sorted_ids = ids[order]
        self._sorted_idx = order.astype(np.int64)

    def to_indices(self, values: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """Class indices of ``values`` (int64, ``IGNORE_INDEX`` where not valid/ignored).

        Raises:
            DataError: a valid value that is neither a class id nor an ignore value.
        """
        valid = valid.copy()
        for v in self.ignore_values:
            valid &= values != v
        out = np.full(values.shape, IGNORE_INDEX, dtype=np.int64)
        vals = values[valid]
        if vals.size == 0:
            return out
        pos = np.searchsorted(self._sorted_ids, vals)
        pos = np.clip(pos, 0, len(self._sorted_ids) - 1)
        known = self._sorted_ids[pos] == vals
        if not known.all():
            self.raise_unknown(np.unique(vals[~known]))
        out[valid] = self._sorted_idx[pos]
        return out

    def raise_unknown(self, unknown: np.ndarray) -> None:
        """Raise the DataError for label values missing from the class table."""
        shown = [int(v) if float(v).is_integer() else float(v) for v in unknown[:20]]
        raise DataError(
            f"{self.source}: label values {shown} are not class ids of data.classes "
            f"(valid ids: {self.classes.ids}); add them to data.classes, or list them in "
            "data.labels.ignore_values to exclude them from training"
        )


class RasterLabelDataset(_GridDataset):
    """Class labels from a raster (or a mosaic of rasters), read onto the working grid.

    Labels are never interpolated: files off the grid are reprojected with nearest
    neighbour (and a ReprojectionWarning).

    Args:
        config: the ``data.labels`` section.
        paths: the label files (already resolved).
        grid: the working grid (the imagery's).
    """

    def __init__(self, config: LabelConfig, paths: Sequence[Path], grid: Grid) -> None:
        where = "data.labels"
        self.config = config
        self.sources = [RasterSource.open(p, where=where, nodata=config.nodata) for p in paths]
        for s in self.sources:
            if s.count != 1:
                raise DataError(
                    f"{where}.path: label raster {str(s.path)!r} has {s.count} bands; "
                    "labels must be one band of class ids"
                )
        _attach_all(self.sources, grid, where)
        self._init_index([s.bounds for s in self.sources], grid)

    def read(self, box: Box, *, grid: Grid | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Read ``box``: ``(values (H, W) float64, valid (H, W) bool)``.

        Args:
            box: the area, in the working CRS.
            grid: read on this coarsened working grid instead (quick scans).
        """
        g = grid or self.grid
        rows, cols = g.shape(box)
        values = np.zeros((rows, cols), dtype=np.float64)
        valid = np.zeros((rows, cols), dtype=bool)
        for s in self.sources:
            if intersect(s.bounds, box) is None:
                continue
            v, ok = s.read(g, box, resampling=Resampling.nearest, coarse=g != self.grid)
            take = ok[0] & ~valid
            values[take] = v[0][take]
            valid |= take
        return values, valid


class VectorLabelDataset(_GridDataset):
    """Class labels from polygons, rasterized per query onto the working grid.

    Features are read once with pyogrio (via geopandas) and reprojected to the working
    CRS (vector reprojection, no resampling); each query burns only the features its box
    intersects (an STRtree lookup). Pixels no polygon covers get ``background`` (or stay
    invalid when it is None).

    Args:
        config: the ``data.labels`` section.
        paths: the vector files (already resolved).
        grid: the working grid (the imagery's).
        classes: the class table (to check class ids and pick the burn value).
        extent: area that ``background`` fills (the imagery footprint).
    """

    def __init__(
        self,
        config: LabelConfig,
        paths: Sequence[Path],
        grid: Grid,
        classes: ClassTable,
        extent: Box,
    ) -> None:
        import geopandas as gpd

        where = "data.labels"
        self.config = config
        self.label_files = list(paths)
        frames = []
        for p in paths:
            try:
                kwargs: dict[str, Any] = {}
                if config.layer is not None:
                    kwargs["layer"] = config.layer
                df = gpd.read_file(p, **kwargs)
            except Exception as exc:
                raise InputFileError(
                    f"{where}.path: cannot read vector file {str(p)!r}: {exc}"
                ) from None
            if len(df) == 0:
                continue
            if df.crs is None:
                raise DataError(
                    f"{where}.path: vector file {str(p)!r} has no CRS; set one (e.g. "
                    "ogr2ogr -a_srs EPSG:XXXX) and retry"
                )
            if config.class_field is not None and config.class_field not in df.columns:
                fields = [c for c in df.columns if c != "geometry"]
                raise ConfigError(
                    f"{where}.class_field: {config.class_field!r} is not a field of "
                    f"{str(p)!r}; its fields are {fields}"
                )
            df = df.to_crs(grid.crs)
            frames.append(df)
        ids = classes.ids
        burn = 0
        if config.class_field is None:
            if config.burn_value is not None:
                burn = config.burn_value
            else:
                others = [i for i in ids if i != config.background]
                if len(others) != 1:
                    raise ConfigError(
                        f"{where}.burn_value: vector labels without class_field burn one "
                        f"class id; several classes ({others}) are possible, so set "
                        "burn_value (or class_field)"
                    )
                burn = others[0]
            if burn not in ids:
                raise ConfigError(f"{where}.burn_value: {burn} is not a class id ({ids})")
        self.background = config.background
        if self.background is not None and self.background not in ids:
            raise ConfigError(
                f"{where}.background: {self.background} is not a class id ({ids}); add a "
                "background class to data.classes"
            )
        geoms: list[Any] = []
        values: list[float] = []
        for df in frames:
            g = shapely.force_2d(df.geometry.values)
            keep = ~(shapely.is_empty(g) | shapely.is_missing(g))
            if config.class_field is None:
                v = np.full(len(df), float(burn))
            else:
                v = _field_class_ids(df[config.class_field], classes, where=where)
            geoms += list(g[keep])
            values += list(v[keep])
        self.geometries = np.array(geoms, dtype=object)
        self.values = np.array(values, dtype=np.float64)
        reader = LabelReader(classes, config.ignore_values, f"{where}.path")
        if len(self.values):
            vals = np.unique(self.values)
            vals = vals[~np.isin(vals, reader.ignore_values)]
            unknown = vals[~np.isin(vals, ids)]
            if len(unknown):
                reader.raise_unknown(unknown)
        self.tree = shapely.STRtree(self.geometries)
        if len(self.geometries):
            gb = shapely.total_bounds(self.geometries)
            vec_bounds: Box = (float(gb[0]), float(gb[1]), float(gb[2]), float(gb[3]))
        else:
            vec_bounds = extent
        self.vector_bounds = vec_bounds
        self.extent = extent
        box = extent if self.background is not None else vec_bounds
        self._init_index([box], grid)

    def read(self, box: Box, *, grid: Grid | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Rasterize ``box``: ``(values (H, W) float64, valid (H, W) bool)``.

        Args:
            box: the area, in the working CRS.
            grid: rasterize on this coarsened working grid instead (quick scans).
        """
        g = grid or self.grid
        rows, cols = g.shape(box)
        fill = np.nan if self.background is None else float(self.background)
        out = np.full((rows, cols), fill, dtype=np.float64)
        if rows and cols:
            hits = self.tree.query(shapely.box(*box))
            if len(hits):
                hits = np.sort(hits)  # file order: later features are burnt on top
                out = rasterize(
                    zip(self.geometries[hits], self.values[hits]),
                    out_shape=(rows, cols),
                    fill=fill,
                    transform=g.transform(box),
                    all_touched=self.config.all_touched,
                    dtype="float64",
                )
        valid = ~np.isnan(out)
        if self.background is not None:
            # background only where the imagery footprint is
            inside = _inside_mask(g, box, [self.extent])
            valid &= inside | (out != self.background)
        out[~valid] = 0.0
        return out, valid


def _field_class_ids(values: pd.Series, classes: ClassTable, *, where: str) -> np.ndarray:
    """Class ids from an attribute holding ids (numbers) or class names (text)."""
    try:
        return np.asarray(pd.to_numeric(values), dtype=float)
    except (TypeError, ValueError):
        pass
    by_name = {c.name.strip().lower(): c.id for c in classes}
    text = values.astype(str).str.strip().str.lower()
    unknown = sorted(set(text[~text.isin(list(by_name))].tolist()))
    if unknown:
        raise DataError(
            f"{where}.class_field: values {unknown[:10]} are neither class ids nor class "
            f"names of data.classes (names: {classes.names}); fix the attribute or the "
            "class table"
        )
    return np.array([by_name[t] for t in text], dtype=float)


def _inside_mask(grid: Grid, box: Box, regions: Sequence[Box]) -> np.ndarray:
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


def open_labels(
    config: LabelConfig,
    grid: Grid,
    classes: ClassTable,
    *,
    extent: Box,
    bases: Sequence[str | Path] = (),
) -> RasterLabelDataset | VectorLabelDataset:
    """The label dataset for ``config``: raster or vector, chosen by file suffix."""
    paths = resolve_paths(
        config.path,
        where="data.labels.path",
        suffixes=(*RASTER_SUFFIXES, *VECTOR_SUFFIXES),
        bases=bases,
    )
    kinds = {"vector" if p.suffix.lower() in VECTOR_SUFFIXES else "raster" for p in paths}
    if len(kinds) > 1:
        raise ConfigError(
            "data.labels.path: mixes raster and vector files "
            f"({[p.name for p in paths]}); use one kind of label file"
        )
    if kinds == {"vector"}:
        return VectorLabelDataset(config, paths, grid, classes, extent)
    vector_opts = {
        "class_field": config.class_field,
        "burn_value": config.burn_value,
        "background": config.background,
        "layer": config.layer,
    }
    used = [k for k, v in vector_opts.items() if v is not None]
    if used:
        raise ConfigError(
            f"data.labels: {used} only apply to vector labels, but "
            f"{[p.name for p in paths]} are rasters; remove them"
        )
    return RasterLabelDataset(config, paths, grid)


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


class SegmentationDataset(_GridDataset):
    """Training/evaluation tiles of one split: normalized imagery and class-index masks.

    The torchgeo index holds the split's regions, so torchgeo samplers draw tiles inside
    them. Pixels outside the regions, at imagery no-data, at label no-data or at ignored
    label values get ``IGNORE_INDEX`` in the mask, so a tile straying past its region
    (GridGeoSampler's last row/column) never scores pixels of another split.

    Args:
        imagery: the imagery dataset.
        labels: the label dataset.
        label_reader: maps raw label values to class indices.
        regions: the split's regions (boxes in the grid's CRS); pixels are scored only
            inside them.
        index_boxes: the boxes samplers draw from (default: ``regions``).
        mean: per-band mean used for normalization.
        std: per-band standard deviation.
        transform: optional callable applied to each sample (augmentation).
    """

    def __init__(
        self,
        imagery: ImageryDataset,
        labels: RasterLabelDataset | VectorLabelDataset,
        label_reader: LabelReader,
        regions: Sequence[Box],
        *,
        index_boxes: Sequence[Box] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.imagery = imagery
        self.labels = labels
        self.label_reader = label_reader
        self.regions = list(regions)
        n = len(imagery.band_names)
        self.mean = np.asarray(mean if mean is not None else [0.0] * n, dtype=np.float64)
        self.std = np.asarray(std if std is not None else [1.0] * n, dtype=np.float64)
        self.transform = transform
        self._init_index(list(index_boxes if index_boxes is not None else regions), imagery.grid)

    def read_raw(
        self, box: Box, *, score: Sequence[Box] | None = None, grid: Grid | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(raw values (C, H, W), image valid (H, W), mask (H, W) int64)`` of ``box``.

        Args:
            box: the area to read.
            score: boxes whose pixels may be scored (default: the split's regions).
            grid: read on this coarsened working grid instead (quick scans).
        """
        g = grid or self.grid
        values, ivalid = self.imagery.read(box, grid=grid)
        lvalues, lvalid = self.labels.read(box, grid=grid)
        mask = self.label_reader.to_indices(lvalues, lvalid)
        mask[~ivalid] = IGNORE_INDEX
        regions = self.regions if score is None else score
        mask[~_inside_mask(g, box, regions)] = IGNORE_INDEX
        return values, ivalid, mask

    def __getitem__(self, query: Any) -> dict[str, Any]:
        if isinstance(query, EvalTile):
            box, score = query.box, query.score
        else:
            box, score = query_box(query), None
        values, ivalid, mask = self.read_raw(box, score=score)
        image = (values - self.mean[:, None, None]) / self.std[:, None, None]
        image[:, ~ivalid] = 0.0
        sample = {
            "image": torch.from_numpy(image.astype(np.float32)),
            "mask": torch.from_numpy(mask),
            "bounds": torch.tensor(box, dtype=torch.float64),
        }
        if self.transform is not None:
            sample = self.transform(sample)
        return sample


def collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Stack samples into a batch (tensors stacked, other values listed)."""
    out: dict[str, Any] = {}
    for key in samples[0]:
        vals = [s[key] for s in samples]
        if isinstance(vals[0], torch.Tensor):
            # numpy's single-threaded copy: torch.stack's thread pool is slow on busy CPUs
            if all(v.device.type == "cpu" and not v.requires_grad for v in vals):
                out[key] = torch.from_numpy(np.stack([v.numpy() for v in vals]))
            else:
                out[key] = torch.stack(vals)
        else:
            out[key] = vals
    return out


__all__ = [
    "EvalTile",
    "ImageryDataset",
    "LabelReader",
    "RasterLabelDataset",
    "SegmentationDataset",
    "VectorLabelDataset",
    "collate",
    "make_index",
    "open_labels",
    "query_box",
    "union_bounds",
]
