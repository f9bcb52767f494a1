"""One band of integer ids read window by window: class maps and instance maps.

:class:`BandSource` is small and picklable (shipped to Dask workers) and reads through the
process's handle pool (:mod:`geoseg.io.handles`); a map on another grid is read through a
nearest-neighbour ``WarpedVRT`` (ids are never interpolated).
"""

from __future__ import annotations

import contextlib
import numbers
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.windows import Window

from geoseg.arguments import check_int
from geoseg.classes import CLASSES_TAG, read_class_table
from geoseg.errors import ConfigError, DataError, InputFileError, brief
from geoseg.io.grid import RasterGrid, check_size
from geoseg.io.handles import (
    HANDLES,
    NO_STAMP,
    Stamp,
    Version,
    check_versions,
    file_key,
    file_stamp,
    file_versions,
    open_dataset,
)
from geoseg.io.outputs import input_files


def ensure_integers(values: np.ndarray, valid: np.ndarray, where: str) -> np.ndarray:
    """Class ids as int64; a float raster must hold whole numbers."""
    if values.dtype.kind == "f":
        v = values[valid]
        bad = ~np.isfinite(v) | (v != np.floor(v))
        if bad.any():
            example = v[bad][0]
            raise DataError(
                f"{where}: class values must be whole numbers, found {example!r}; this looks "
                "like a continuous raster (probabilities or imagery), not a class map. Convert "
                "it first, e.g. `gdal_translate -ot UInt8 in.tif out.tif` after rounding, or "
                "`np.rint(a).astype('uint8')`, and set its nodata value"
            )
        values = np.where(valid, values, 0)
    return values.astype(np.int64, copy=False)


def check_band_selection(bands: Any, *, where: str = "bands") -> list[int | str] | None:
    """A selection of input bands as a list; ConfigError for a wrong kind or a repeated band.

    Each entry is a 1-based band number (an int, a numpy integer or a whole float) or a
    band description (a string); the selection is a list, tuple, array or other iterable
    (a generator is read once), never one bare number or string. Each model band needs its
    own input band; a repeated one (``1,1,1``) feeds the same values to two model inputs,
    which is always a typo. Names and numbers are compared as written (whether a name and
    a number mean one band is checked when the file is opened).
    """
    if bands is None:
        return None
    if isinstance(bands, str | bytes) or not isinstance(bands, Iterable):
        raise ConfigError(
            f"{where}: expected a list of 1-based band numbers or band names, such as "
            f"[3, 2, 1] or ['red', 'green', 'blue'], got {type(bands).__name__} {brief(bands)}"
        )
    selection: list[int | str] = [
        b if isinstance(b, str) else check_int(b, f"{where}[{i}]", unit="a 1-based band number")
        for i, b in enumerate(bands)
    ]
    written = [str(b).strip() for b in selection]
    repeated = sorted({b for b in written if written.count(b) > 1}, key=written.index)
    if repeated:
        raise ConfigError(
            f"{where} {','.join(written)}: band(s) {', '.join(repeated)} selected more than "
            f"once; give {len(written)} different input bands (bands=[...] / --bands), one "
            "per model band, in model order"
        )
    return selection


#: GeoTIFF tag marking an instance map geoseg wrote (band 1 ids, band 2 their classes).
INSTANCES_TAG = "GEOSEG_INSTANCES"


def is_instance_map(path: str | Path) -> bool:
    """True for a raster tagged as an instance map (False also when it cannot be read)."""
    try:
        with rasterio.open(path) as src:
            return bool(src.tags().get(INSTANCES_TAG) == "1")
    except rasterio.errors.RasterioIOError:
        return False  # the caller's own open reports the unreadable file clearly


class _Handle:
    """A pooled dataset (and the file under a warped view); ``close`` closes both."""

    def __init__(self, dataset: Any, base: Any = None) -> None:
        self.dataset, self.base = dataset, base

    def close(self) -> None:
        self.dataset.close()
        if self.base is not None:
            self.base.close()


@dataclass(frozen=True)
class BandSource:
    """Reads one band of class ids from a GeoTIFF, window by window.

    Args:
        path: the raster file.
        band: the band holding class ids (1-based).
        nodata: overrides the file's nodata value (e.g. ``-1`` for Sen1Floods11 labels).
    """

    path: str
    band: int = 1
    nodata: float | None = None
    #: (crs wkt, transform, width, height): read through a nearest-neighbour WarpedVRT
    warp: tuple[str, tuple[float, ...], int, int] | None = None
    #: the file's version (:func:`~geoseg.io.handles.file_stamp`) when the source was made;
    #: every read checks it, so a file replaced during a run stops the run
    stamp: Stamp = field(default=NO_STAMP, compare=False)
    #: the files reading ``path`` reads too (a VRT's tiles), with their versions
    #: (:func:`~geoseg.io.handles.file_versions`): checked on every read as well
    depends: tuple[Version, ...] = field(default=(), compare=False)

    def __post_init__(self) -> None:
        check_nodata(self.nodata)
        if self.stamp == NO_STAMP:
            with contextlib.suppress(OSError):  # a missing file is reported when read
                object.__setattr__(self, "stamp", file_stamp(os.stat(self.path)))
                object.__setattr__(self, "depends", file_versions(input_files(self.path)[1:]))

    def read(self, window: Window) -> tuple[np.ndarray, np.ndarray]:
        """Return (ids as int64, valid mask) for ``window``."""
        key = file_key(self.path, self.warp, stamp=self.stamp)
        check_versions(self.depends, self.path)
        with HANDLES.use(key, self._open) as handle:
            return self._read(handle.dataset, window)

    def _open(self) -> _Handle:
        src = open_dataset(self.path)
        if self.warp is None:
            return _Handle(src)
        from rasterio.vrt import WarpedVRT
        from rasterio.warp import Resampling

        crs, transform, width, height = self.warp
        vrt = WarpedVRT(
            src,
            crs=crs,
            transform=Affine(*transform[:6]),
            width=width,
            height=height,
            resampling=Resampling.nearest,
        )
        return _Handle(vrt, src)

    def _read(self, src: Any, window: Window) -> tuple[np.ndarray, np.ndarray]:
        try:
            a = src.read(self.band, window=window)
            valid = src.read_masks(self.band, window=window) > 0
        except rasterio.errors.RasterioError as exc:
            raise InputFileError(read_failure(self.path, exc)) from None
        nodata = self.nodata if self.nodata is not None else src.nodata
        if nodata is not None:
            valid &= ~(np.isnan(a) if np.isnan(nodata) else (a == nodata))
        if a.dtype.kind == "f":
            valid &= ~np.isnan(a)
        return ensure_integers(a, valid, f"{self.path} band {self.band}"), valid


def missing_vrt_sources(path: str) -> list[str]:
    """Files a VRT reads that do not exist ([] for other files)."""
    return [str(f) for f in input_files(path)[1:] if not f.exists()]


def read_failure(path: str, exc: Exception, *, name: str | None = None) -> str:
    """The error text of a failed read of ``path``: names a VRT's missing sources.

    ``name``: how the text names the input (default ``path``), such as the GDAL dataset
    name the user gave for a VRT of the cache (:func:`geoseg.io.files.named_inputs`).
    """
    shown = path if name is None else name
    missing = missing_vrt_sources(path)
    if missing:
        return (
            f"{shown!r} cannot be read: the VRT's source file(s) {missing[:5]} do not exist; "
            "restore them or rebuild the VRT (gdalbuildvrt)"
        )
    return f"{shown!r} cannot be read (corrupt, truncated or a broken VRT?): {exc}"


def open_grid(path: str | Path, *, band: int = 1, what: str = "class map") -> RasterGrid:
    """Open ``path`` and return its grid; clear errors for missing files, bands and CRS.

    Also refuses a raster larger than :func:`max_pixels` and a VRT whose sources are missing.
    """
    p = str(path)
    band = check_int(band, "band", unit="1-based")
    if not Path(p).exists():
        raise InputFileError(f"{what} {p!r} does not exist")
    missing = missing_vrt_sources(p)
    if missing:
        raise InputFileError(f"{what} " + read_failure(p, OSError()))
    try:
        with rasterio.open(p) as src:
            if band < 1 or band > src.count:
                raise DataError(f"{what} {p!r} has {src.count} band(s); band {band} is invalid")
            check_size(src.width, src.height, f"{what} {p!r} is",
                       "check that it is the right file")  # fmt: skip
            if src.crs is None:
                raise DataError(
                    f"{what} {p!r} has no CRS, so polygons and areas cannot be georeferenced; "
                    "assign one, e.g. `gdal_edit.py -a_srs EPSG:32633 FILE` or "
                    "`rio edit-info --crs EPSG:32633 FILE`"
                )
            return RasterGrid(
                src.height,
                src.width,
                Affine(*src.transform[:6]),
                src.crs.to_wkt(),
                src.crs.to_epsg(),
            )
    except rasterio.errors.RasterioIOError as exc:
        raise InputFileError(f"{what} {p!r} cannot be read as a raster: {exc}") from None


def check_nodata(nodata: Any, name: str = "nodata") -> None:
    """ConfigError unless ``nodata`` is None or a number (NaN allowed: a float no-data)."""
    if nodata is not None and (isinstance(nodata, bool) or not isinstance(nodata, numbers.Real)):
        raise ConfigError(
            f"{name}: expected the raw no-data value as a number (or None for the file's "
            f"own), got {type(nodata).__name__} {brief(nodata)}"
        )


def raster_path(labels: Any) -> str:
    """A raster argument (path or open rasterio dataset) as a path."""
    if isinstance(labels, str | Path):
        return str(labels)
    name = getattr(labels, "name", None)
    if isinstance(name, str):
        return name
    raise ConfigError(f"expected a raster path or an open rasterio dataset, got {type(labels)}")


def is_probability_raster(src: Any) -> bool:
    """True for a geoseg probability raster (predict --probabilities) or one like it.

    Those carry the class table tag but hold one scaled band per class (0-1 as 0-254),
    not class ids.
    """
    tags = src.tags()
    if CLASSES_TAG not in tags or INSTANCES_TAG in tags:
        return False
    scaled = any(s is not None and s != 1.0 for s in src.scales)
    if scaled or src.count == 1:
        return scaled
    try:
        table = read_class_table(src)
    except DataError:
        return False  # a broken tag: the caller's reading of the class table reports it
    return table is not None and list(src.descriptions) == list(table.names)


def refuse_probabilities(path: str, *, what: str = "class map") -> None:
    """DataError when ``path`` is a probability raster, not a class map."""
    try:
        with rasterio.open(path) as src:
            probs, count = is_probability_raster(src), src.count
    except rasterio.errors.RasterioIOError:
        return  # the caller's own open reports the unreadable file clearly
    if probs:
        raise _probabilities_error(path, count, what)


def _probabilities_error(path: str, count: int, what: str) -> DataError:
    return DataError(
        f"{what} {path!r} is a probability raster ({count} scaled band(s), one per class), "
        "not a class map of class ids: give the class map predict wrote beside it (or "
        "its per-pixel argmax); use it with --probabilities where a command takes one"
    )


def check_instance_map(path: str, *, what: str = "instance map") -> None:
    """Refuse a class map or probability raster given as an instance map; warn on a look-alike.

    A geoseg class map (class table tag, no instance tag, one band) would be read as
    "objects" that are whole classes: a plausible table or panoptic map, all wrong. An
    untagged one-band raster with a colour table is probably a class map too (warned: other
    tools' instance maps may carry one).
    """
    from geoseg.errors import DataWarning, warn

    try:
        with rasterio.open(path) as src:
            probs, tags, count = is_probability_raster(src), src.tags(), src.count
            try:
                has_colors = bool(src.colormap(1))
            except ValueError:
                has_colors = False
    except rasterio.errors.RasterioIOError:
        return  # the caller's own open reports the unreadable file clearly
    if probs:
        raise _probabilities_error(path, count, what)
    if INSTANCES_TAG in tags:
        return
    if CLASSES_TAG in tags and count == 1:
        raise DataError(
            f"{what} {path!r} is a class map (one band of class ids, a {CLASSES_TAG} tag and "
            f"no {INSTANCES_TAG} tag): each class would count as one object. Give the instance "
            "map of geoseg predict --instances (band 1 object ids, band 2 their classes), or "
            "use the class map where a class map is taken (geoseg stats gives its class areas)"
        )
    if has_colors:
        warn(
            f"{what} {path!r} has a colour table like a class map and no {INSTANCES_TAG} tag: "
            "if its band 1 holds class ids, not object ids, each class is counted as one "
            "object and the result is meaningless",
            DataWarning,
        )


def class_band(path: str, band: int | None, *, what: str = "class map") -> int:
    """The band of class ids to read: ``band``, or 1 for a one-band (or tagged) class map.

    Raises:
        DataError: ``band`` is None and the raster has several bands and no class table:
            it looks like imagery (a reflectance stack), not a class map; or the raster
            is a probability raster.
    """
    refuse_probabilities(path, what=what)
    if band is not None:
        return check_int(band, "band", unit="1-based")
    with open_dataset(path, what=what) as src:
        count, tags, dtype = src.count, src.tags(), src.dtypes[0]
    if count > 1 and CLASSES_TAG not in tags and INSTANCES_TAG not in tags:
        raise DataError(
            f"{what} {path!r} has {count} bands of {dtype} and no class table: it looks like "
            "imagery, not a class map (one band of class ids); pass band=N / --band N to use "
            "one of its bands as class ids"
        )
    return 1


#: More distinct values than this in a class map is suspicious (warned).
MAX_CLASS_VALUES = 1000
#: More distinct values than this in a float raster without a class table: imagery (warned).
MAX_FLOAT_CLASSES = 60


def warn_if_not_classes(path: str, n_values: int, *, has_table: bool, dtype: str) -> None:
    """Warn when a "class map" holds so many distinct values that it looks like imagery."""
    from geoseg.errors import DataWarning, warn

    if n_values > MAX_CLASS_VALUES or (
        not has_table and dtype.startswith("float") and n_values > MAX_FLOAT_CLASSES
    ):
        warn(
            f"{path!r} holds {n_values} distinct values ({dtype}"
            f"{'' if has_table else ', no class table'}): that is not a class map of a few "
            "classes (imagery, continuous values, ids of objects?); the result is probably "
            "meaningless: check the input",
            DataWarning,
        )


def raster_dtype(path: str, band: int = 1) -> str:
    """The data type of ``band`` of ``path`` ('' when it cannot be read)."""
    try:
        with rasterio.open(path) as src:
            return str(src.dtypes[band - 1]) if 1 <= band <= src.count else ""
    except rasterio.errors.RasterioIOError:
        return ""
