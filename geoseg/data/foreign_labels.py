"""Label rasters without georeferencing, from annotation tools (ilastik, ITK-SNAP, GIMP).

Such tools export a plain TIFF/PNG on the imagery's pixel grid but drop the CRS and the
transform. A label raster with no CRS and an identity transform takes the georeferencing
of its image: the image file with the same name (stem), or the only image file. Its
height and width must equal the image's.

NIfTI (``.nii``, ``.nii.gz``), ITK-SNAP's segmentation format, is read with nibabel (the
``nifti`` extra): ITK stores a 2-D image as voxel index (i, j) = (column, row), one slice,
so the label array is the transpose of its first slice, whatever the header's affine
(which maps to a medical world frame, not to the map). It is converted once to a
GeoTIFF on its image's grid in geoseg's cache folder (keyed by the file's content and
the grid) and read from there like any label raster.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

from geoseg.errors import ConfigError, DataError, GeosegWarning, warn
from geoseg.io.files import geoseg_cache_dir
from geoseg.io.handles import use_file
from geoseg.io.outputs import atomic_path
from geoseg.io.source import RasterSource

#: Suffixes of label exports that carry no georeferencing (in addition to GeoTIFFs).
PLAIN_LABEL_SUFFIXES = (".png",)
#: Suffixes that select NIfTI files in a folder (``.gz``: ``*.nii.gz``).
NIFTI_SUFFIXES = (".nii", ".gz")
#: Largest NIfTI label slice read (pixels), checked from the header before reading.
MAX_NIFTI_PIXELS = 1 << 31


class GridFromImageWarning(GeosegWarning):
    """A label raster without georeferencing took the grid of its image."""


def is_plain(path: Path) -> bool:
    """True when ``path`` has no CRS and an identity (or missing) transform."""
    with _quiet(), use_file(path, what="label raster") as src:
        return src.crs is None and src.transform.almost_equals(Affine.identity())


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence rasterio's NotGeoreferencedWarning: these files are plain on purpose."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        yield


def is_nifti(path: Path) -> bool:
    """True for ``.nii`` / ``.nii.gz`` files (ITK-SNAP segmentations)."""
    return path.name.lower().endswith((".nii", ".nii.gz"))


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def read_nifti_labels(path: Path, where: str) -> np.ndarray:
    """The label slice of a NIfTI file as rows x columns.

    Raises:
        ConfigError: nibabel is not installed.
        DataError: unreadable, more than one slice or channel, too large, or values that
            are not integers.
    """
    try:
        import nibabel
    except ImportError as exc:
        raise ConfigError(
            f"{where}: {str(path)!r} is NIfTI; reading it needs nibabel: pip install "
            "'geoseg[nifti]' (or export the segmentation as TIFF/PNG)"
        ) from exc
    try:
        img: Any = nibabel.load(str(path))
        shape = tuple(int(s) for s in img.shape)
    except Exception as exc:
        raise DataError(
            f"{where}: cannot read the NIfTI file {str(path)!r}: {type(exc).__name__}: "
            f"{str(exc)[:200]}"
        ) from exc
    if len(shape) < 2 or any(s != 1 for s in shape[2:]) or 0 in shape[:2]:
        raise DataError(
            f"{where}: NIfTI file {str(path)!r} has shape {shape}; geoseg takes one 2-D "
            "slice (width x height x 1) on the image's pixel grid"
        )
    if math.prod(shape[:2]) > MAX_NIFTI_PIXELS:
        raise DataError(f"{where}: NIfTI file {str(path)!r} is too large ({shape[:2]} px)")
    try:
        data = np.asarray(img.dataobj)  # scaled by the header's slope / intercept, if any
    except Exception as exc:
        raise DataError(
            f"{where}: cannot read the data of the NIfTI file {str(path)!r}: "
            f"{type(exc).__name__}: {str(exc)[:200]}"
        ) from exc
    arr = data.reshape(shape[:2]).T  # ITK index (i, j) = (column, row)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            raise DataError(
                f"{where}: NIfTI file {str(path)!r} holds non-integer values; label "
                "values must be class ids"
            )
        arr = arr.astype(np.int32 if np.abs(arr).max(initial=0) < 2**31 else np.int64)
    elif arr.dtype.kind not in "iub":
        raise DataError(f"{where}: NIfTI file {str(path)!r} has data type {arr.dtype}")
    return np.ascontiguousarray(arr)


def open_nifti_label(
    path: Path, images: Sequence[RasterSource], *, where: str, nodata: float | None = None
) -> RasterSource:
    """A :class:`RasterSource` for a NIfTI label slice on the grid of its image.

    The slice is converted once to a GeoTIFF in geoseg's cache (see the module docstring).

    Raises:
        ConfigError: nibabel is not installed.
        DataError: as :func:`read_nifti_labels`, no image to take the grid from, or the
            slice's shape differs from the image's.
    """
    image = _matching_image(path, images, where)
    arr = read_nifti_labels(path, where)
    with rasterio.open(image.path) as ds:  # the file's own grid, not the working one
        crs, transform, h, w = ds.crs, ds.transform, ds.height, ds.width
    _check_shape(path, arr.shape, image.path, (h, w), where)
    key = hashlib.sha256(path.read_bytes())
    key.update(f"{crs.to_wkt()}|{tuple(transform)}|{h}x{w}".encode())
    out = geoseg_cache_dir() / "labels" / f"{_stem(path)}-{key.hexdigest()[:16]}.tif"
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        dtype = arr.dtype if arr.dtype != np.bool_ else np.uint8
        with atomic_path(out, overwrite=True) as tmp:
            with rasterio.open(
                tmp, "w", driver="GTiff", width=w, height=h, count=1, dtype=dtype, crs=crs,
                transform=transform, compress="deflate", tiled=True,
            ) as dst:  # fmt: skip
                dst.write(arr.astype(dtype, copy=False), 1)
    warn(
        f"{where}: NIfTI labels {path.name!r} take the grid of {image.path.name!r} "
        f"({crs.to_string()}, {h} x {w} px); read from the converted copy {str(out)!r}",
        GridFromImageWarning,
    )
    return RasterSource.open(out, where=where, nodata=nodata)


def _check_shape(
    path: Path, shape: tuple[int, ...], image: Path, grid: tuple[int, int], where: str
) -> None:
    if tuple(shape) != grid:
        raise DataError(
            f"{where}: label raster {str(path)!r} ({shape[0]} x {shape[1]} px, no "
            f"georeferencing) does not match the pixel grid of its image {str(image)!r} "
            f"({grid[0]} x {grid[1]} px, rows x columns); export the labels on the image's "
            "full grid"
        )


def _matching_image(path: Path, images: Sequence[RasterSource], where: str) -> RasterSource:
    if not images:
        raise DataError(
            f"{where}: label raster {str(path)!r} has no CRS or transform and no imagery "
            "is known to take them from; georeference it (gdal_edit.py -a_srs/-a_ullr)"
        )
    if len(images) == 1:
        return images[0]
    same = [s for s in images if s.path.stem == _stem(path)]
    if len(same) != 1:
        raise DataError(
            f"{where}: label raster {str(path)!r} has no georeferencing and no image file "
            f"of the same name among {[s.path.name for s in images][:10]}; name it like "
            "its image, or georeference it (gdal_edit.py / rio edit-info)"
        )
    return same[0]


def open_plain_label(
    path: Path, images: Sequence[RasterSource], *, where: str, nodata: float | None = None
) -> RasterSource:
    """A :class:`RasterSource` for a label raster without georeferencing.

    Args:
        path: the label file (no CRS, identity transform).
        images: the imagery files (their own CRS and transform, not yet reprojected).
        where: config key for messages.
        nodata: no-data override.

    Raises:
        DataError: no image to take the grid from, or the shapes differ.
    """
    image = _matching_image(path, images, where)
    with rasterio.open(image.path) as ds:  # the file's own grid, not the working one
        crs, transform, h, w = ds.crs, ds.transform, ds.height, ds.width
    with _quiet(), use_file(path, what=f"{where}: raster") as src:
        lh, lw = src.height, src.width
        count, dtype = src.count, src.dtypes[0]
        file_nodata = src.nodata
    _check_shape(path, (lh, lw), image.path, (h, w), where)
    warn(
        f"{where}: label raster {path.name!r} has no georeferencing; it takes the grid "
        f"of {image.path.name!r} ({crs.to_string()}, {h} x {w} px)",
        GridFromImageWarning,
    )
    left, top = transform.c, transform.f
    right, bottom = left + transform.a * w, top + transform.e * h
    return RasterSource(
        path=path,
        crs=crs,
        transform=transform,
        width=w,
        height=h,
        count=count,
        dtype=dtype,
        nodata=file_nodata if nodata is None else nodata,
        bounds=(min(left, right), min(top, bottom), max(left, right), max(top, bottom)),
    )
