"""Label datasets: class rasters read onto the working grid, or polygons rasterized on the fly."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import shapely
from rasterio.enums import Resampling
from rasterio.features import rasterize

from geoseg.classes import IGNORE_INDEX, ClassTable
from geoseg.config.data import LabelConfig
from geoseg.data.datasets import GridDataset, attach_all, inside_mask
from geoseg.errors import ConfigError, DataError, InputFileError
from geoseg.io.files import RASTER_SUFFIXES, VECTOR_SUFFIXES, resolve_paths
from geoseg.io.grid import Box, Grid, intersect
from geoseg.io.source import RasterSource


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


class RasterLabelDataset(GridDataset):
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
        attach_all(self.sources, grid, where)
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


class VectorLabelDataset(GridDataset):
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
                ) from exc
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
            inside = inside_mask(g, box, [self.extent])
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
