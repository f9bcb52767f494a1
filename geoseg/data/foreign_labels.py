"""Label rasters without georeferencing, from annotation tools (ilastik, ITK-SNAP, GIMP).

Such tools export a plain TIFF/PNG on the imagery's pixel grid but drop the CRS and the
transform. A label raster with no CRS and an identity transform takes the georeferencing
of its image: the image file with the same name (stem), or the only image file. Its
height and width must equal the image's. NIfTI exports (``.nii``, ``.nii.gz``) are
refused with a hint to export TIFF/PNG instead.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path

import rasterio
from affine import Affine
from rasterio.errors import NotGeoreferencedWarning

from geoseg.errors import DataError, GeosegWarning, warn
from geoseg.io.handles import use_file
from geoseg.io.source import RasterSource

#: Suffixes of label exports that carry no georeferencing (in addition to GeoTIFFs).
PLAIN_LABEL_SUFFIXES = (".png",)
NIFTI_SUFFIXES = (".nii", ".gz")


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


def check_not_nifti(path: Path, where: str) -> None:
    """DataError for NIfTI label files (ITK-SNAP): export them as TIFF or PNG."""
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        raise DataError(
            f"{where}: {str(path)!r} is NIfTI (ITK-SNAP/medical format), which geoseg does "
            "not read; export the segmentation as TIFF or PNG (ITK-SNAP: Segmentation > "
            "Export as image, choose .tif/.png) on the image's pixel grid"
        )


def _matching_image(path: Path, images: Sequence[RasterSource], where: str) -> RasterSource:
    if len(images) == 1:
        return images[0]
    same = [s for s in images if s.path.stem == path.stem]
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
    if not images:
        raise DataError(
            f"{where}: label raster {str(path)!r} has no CRS or transform and no imagery "
            "is known to take them from; georeference it (gdal_edit.py -a_srs/-a_ullr)"
        )
    image = _matching_image(path, images, where)
    with rasterio.open(image.path) as ds:  # the file's own grid, not the working one
        crs, transform, h, w = ds.crs, ds.transform, ds.height, ds.width
    with _quiet(), use_file(path, what=f"{where}: raster") as src:
        lh, lw = src.height, src.width
        count, dtype = src.count, src.dtypes[0]
        file_nodata = src.nodata
    if (lh, lw) != (h, w):
        raise DataError(
            f"{where}: label raster {str(path)!r} ({lh} x {lw} px, no georeferencing) "
            f"does not match the pixel grid of its image {str(image.path)!r} ({h} x {w} "
            "px, rows x columns); export the labels on the image's full grid"
        )
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
