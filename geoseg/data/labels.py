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
from geoseg.data.foreign_labels import (
    NIFTI_SUFFIXES,
    PLAIN_LABEL_SUFFIXES,
    is_nifti,
    is_plain,
    open_nifti_label,
    open_plain_label,
)
from geoseg.errors import ConfigError, DataError, DataWarning, InputFileError, warn
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
        imagery: the imagery files: a label raster without georeferencing (an ilastik
            or ITK-SNAP export) takes the grid of the one with its name (see
            :mod:`geoseg.data.foreign_labels`).
    """

    def __init__(
        self,
        config: LabelConfig,
        paths: Sequence[Path],
        grid: Grid,
        *,
        imagery: Sequence[RasterSource] = (),
    ) -> None:
        where = "data.labels"
        self.config = config
        self.sources = []
        for p in paths:
            if is_nifti(p):  # ITK-SNAP segmentation: converted onto the image's grid
                src = open_nifti_label(p, imagery, where=f"{where}.path", nodata=config.nodata)
            elif is_plain(p):  # ilastik / GIMP / ITK-SNAP image export: the image's grid
                src = open_plain_label(p, imagery, where=f"{where}.path", nodata=config.nodata)
            else:
                src = RasterSource.open(p, where=where, nodata=config.nodata)
            self.sources.append(src)
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
    imagery: Sequence[RasterSource] = (),
) -> RasterLabelDataset | VectorLabelDataset:
    """The label dataset for ``config``: raster or vector, chosen by file suffix.

    ``imagery`` (the image files) gives its grid to label rasters exported without
    georeferencing by annotation tools (see :mod:`geoseg.data.foreign_labels`).
    """
    paths = resolve_paths(
        config.path,
        where="data.labels.path",
        suffixes=(*RASTER_SUFFIXES, *PLAIN_LABEL_SUFFIXES, *NIFTI_SUFFIXES, *VECTOR_SUFFIXES),
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
    return RasterLabelDataset(config, paths, grid, imagery=imagery)


class VectorInstances:
    """Object ids from polygon labels: each feature of a thing class is one object.

    Ids are the feature's position in the files (1, 2, ...), burnt in file order, so
    where polygons overlap the later feature wins (one warning at construction says how
    many pairs overlap). Features of classes that are not things get no id.

    Args:
        labels: the vector label dataset (geometries and class ids).
        things: ids of the thing classes.
    """

    def __init__(self, labels: VectorLabelDataset, things: Sequence[int]) -> None:
        self.labels = labels
        self.is_thing = np.isin(labels.values, np.asarray(list(things), dtype=np.float64))
        self.ids = np.arange(1, len(labels.values) + 1, dtype=np.int64)
        pairs = overlapping_pairs(labels.geometries, self.is_thing, labels.tree)
        if len(pairs):
            warn(
                f"data.labels: {len(pairs)} pair(s) of object polygons overlap (e.g. features "
                f"{tuple(int(v) for v in pairs[0])}, 0-based); where they do, the later "
                "feature in the file wins the pixels",
                DataWarning,
            )

    def read_instances(self, box: Box, *, grid: Grid | None = None) -> np.ndarray:
        """Object ids of ``box`` on the working grid (0 = no object)."""
        g = grid or self.labels.grid
        rows, cols = g.shape(box)
        out = np.zeros((rows, cols), np.int64)
        if rows and cols:
            hits = self.labels.tree.query(shapely.box(*box))
            hits = np.sort(hits[self.is_thing[hits]])
            if len(hits):
                out = rasterize(
                    zip(self.labels.geometries[hits], self.ids[hits].tolist()),
                    out_shape=(rows, cols),
                    fill=0,
                    transform=g.transform(box),
                    all_touched=self.labels.config.all_touched,
                    dtype="int64",
                )
        return out


class RasterInstances(GridDataset):
    """Object ids from an instance-id raster (0 = no object), read onto the working grid.

    Ids are never interpolated: a raster off the grid is reprojected with nearest
    neighbour (and a ReprojectionWarning).
    """

    def __init__(self, paths: Sequence[Path], grid: Grid) -> None:
        where = "data.labels.instances"
        self.sources = [RasterSource.open(p, where=where) for p in paths]
        for s in self.sources:
            if s.count != 1 or s.dtype.startswith("float"):
                raise DataError(
                    f"{where}: {str(s.path)!r} must be one band of integer object ids "
                    f"(it has {s.count} band(s) of {s.dtype})"
                )
        attach_all(self.sources, grid, where)
        self._init_index([s.bounds for s in self.sources], grid)

    def read_instances(self, box: Box, *, grid: Grid | None = None) -> np.ndarray:
        """Object ids of ``box`` (0 = no object or no data)."""
        g = grid or self.grid
        rows, cols = g.shape(box)
        out = np.zeros((rows, cols), np.int64)
        done = np.zeros((rows, cols), bool)
        for s in self.sources:
            if intersect(s.bounds, box) is None:
                continue
            v, ok = s.read(g, box, resampling=Resampling.nearest, coarse=g != self.grid)
            take = ok[0] & ~done
            out[take] = v[0][take].astype(np.int64)
            done |= take
        out[out < 0] = 0
        return out


def open_instances(
    config: LabelConfig,
    labels: RasterLabelDataset | VectorLabelDataset,
    grid: Grid,
    classes: ClassTable,
    *,
    bases: Sequence[str | Path] = (),
) -> VectorInstances | RasterInstances:
    """Where an instance or panoptic task gets its objects from (vector or raster labels).

    Raises:
        ConfigError: no thing class, or raster labels without ``data.labels.instances``.
    """
    if not classes.things:
        raise ConfigError(
            "data.classes: instance and panoptic tasks need thing classes (the countable "
            "objects, e.g. buildings); mark them with `thing: true`"
        )
    if isinstance(labels, VectorLabelDataset):
        if config.instances is not None:
            raise ConfigError(
                "data.labels.instances: vector labels are objects already (one per "
                "feature); remove instances, or give raster class labels in path"
            )
        return VectorInstances(labels, classes.things)
    if config.instances is None:
        raise ConfigError(
            "data.labels.instances: raster class labels need an instance-id raster beside "
            "them for an instance or panoptic task (or give polygons in data.labels.path)"
        )
    paths = resolve_paths(
        config.instances, where="data.labels.instances", suffixes=RASTER_SUFFIXES, bases=bases
    )
    return RasterInstances(paths, grid)


def overlapping_pairs(geoms: np.ndarray, use: np.ndarray, tree: shapely.STRtree) -> np.ndarray:
    """(i, j) index pairs, i < j, of ``use``d geometries whose interiors overlap.

    Touching polygons (a shared wall) do not overlap: their intersection has no area.
    """
    idx = np.flatnonzero(use)
    if len(idx) == 0:
        return np.zeros((0, 2), np.int64)
    left, right = tree.query(geoms[idx], predicate="intersects")
    a, b = idx[left], right
    keep = (a < b) & use[b]
    a, b = a[keep], b[keep]
    if len(a) == 0:
        return np.zeros((0, 2), np.int64)
    inter = shapely.area(shapely.intersection(geoms[a], geoms[b]))
    scale = np.minimum(shapely.area(geoms[a]), shapely.area(geoms[b]))
    sel = inter > 1e-6 * np.maximum(scale, 1e-12)
    return np.column_stack([a[sel], b[sel]])
