"""SAM-assisted labelling over a GeoTIFF or a mosaic: prompts in, class polygons out.

The output layer (one polygon per prompt, the class attribute and SAM's predicted IoU as
``score``, in the image CRS) is ready to be ``data.labels.path`` of a training config
with ``class_field`` set to the same attribute.

Imagery: three bands are shown to SAM. 8-bit bands are used as they are; other dtypes
are stretched to 0-255 per band between the 2nd and 98th percentiles of the valid pixels
of each window (a per-window stretch, as a viewer would show the window).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from affine import Affine
from rasterio.features import shapes
from shapely.geometry import shape

from geoseg.arguments import (
    check_flag,
    check_ints,
    check_path,
    check_paths,
    check_text,
    check_texts,
)
from geoseg.errors import ConfigError, DataError, DataWarning, GeosegWarning, brief, warn
from geoseg.io.grid import PixelWindow
from geoseg.io.mosaic import Mosaic, open_mosaic
from geoseg.labelling.prompts import Prompt, apply_transform, group_windows, read_prompts
from geoseg.labelling.sam import SamModelAdapter, load_sam

#: Measured CPU cost of automatic masks (SAM ViT-B, 32 x 32 grid): seconds per 512 px tile.
AUTOMATIC_CPU_SECONDS = "168-197 s per 512 px tile (SAM ViT-B, 32 x 32 points, CPU)"


class SlowOnCpuWarning(GeosegWarning):
    """An operation is known to be very slow without a GPU."""


def open_image(images: str | Path | Sequence[str | Path], bands: Sequence[int]) -> Mosaic:
    """The imagery (one file or a mosaic) with the three bands shown to SAM.

    Raises:
        DataError: not exactly three bands, or a band does not exist.
    """
    if len(bands) != 3:
        raise DataError(f"SAM needs exactly 3 bands; got --bands {list(bands)}")
    return open_mosaic(images, model_bands=("b1", "b2", "b3"), bands=list(bands))


def is_byte(mosaic: Mosaic) -> bool:
    """True when every selected band of every source is 8-bit."""
    import rasterio

    for src in mosaic.sources:
        with rasterio.open(src.path) as ds:
            if any(ds.dtypes[b - 1] != "uint8" for b in mosaic.bands):
                return False
    return True


def read_rgb(mosaic: Mosaic, window: PixelWindow, *, byte: bool) -> np.ndarray:
    """Read ``window`` as (H, W, 3) uint8 (2-98 % stretch unless the bands are 8-bit)."""
    data, valid = mosaic.read(window)
    if byte:
        rgb = np.clip(data, 0, 255)
    else:
        rgb = np.zeros_like(data)
        for b in range(data.shape[0]):
            v = data[b][valid]
            if v.size == 0:
                continue
            lo, hi = np.percentile(v, [2, 98])
            rgb[b] = np.clip((data[b] - lo) / max(hi - lo, 1e-12) * 255.0, 0, 255)
    rgb[:, ~valid] = 0
    return np.ascontiguousarray(rgb.transpose(1, 2, 0).astype(np.uint8))


def mask_to_polygon(mask: np.ndarray, transform: Affine, prompt: Prompt | None = None) -> Any:
    """The mask's piece that touches the prompt (else its largest piece), in map units.

    Args:
        mask: (H, W) bool mask of the window.
        transform: the window's transform.
        prompt: the prompt in window pixel coordinates, or None.

    Returns:
        A shapely Polygon, or None when the mask is empty.
    """
    if not mask.any():
        return None
    pieces = [
        shape(g) for g, v in shapes(mask.astype(np.uint8), mask=mask, transform=transform) if v
    ]
    if prompt is not None:
        x0, y0, x1, y1 = prompt.bounds
        corners = apply_transform(transform, np.array([x0, x1]), np.array([y0, y1]))
        near = shapely.box(
            min(corners[0]), min(corners[1]), max(corners[0]), max(corners[1])
        ).buffer(abs(transform.a) * 0.5)
        touching = [p for p in pieces if p.intersects(near)]
        pieces = touching or pieces
    return max(pieces, key=lambda p: p.area)


def _decode(sam: SamModelAdapter, p: Prompt, negatives: list[Prompt], off: np.ndarray) -> Any:
    neg = [n.xy[0] - off for n in negatives]
    if p.kind == "box":
        pts = np.array(neg).reshape(-1, 2) if neg else None
        labels = np.zeros(len(neg)) if neg else None
        return sam.predict(points=pts, labels=labels, box=(p.xy - off).reshape(-1))
    pts = np.vstack([p.xy - off, *[n.reshape(1, 2) for n in neg]])
    labels = np.array([1] + [0] * len(neg))
    return sam.predict(points=pts, labels=labels)


#: What ``sam`` may be: a loaded model, a path for :func:`load_sam`, or a function that
#: loads one (called once the imagery, prompts and options are checked).
SamSource = str | Path | SamModelAdapter | Callable[[], SamModelAdapter]


def check_label_options(
    images: Any, sam: Any, *, class_field: Any, bands: Any, progress: Any
) -> tuple[list[int], bool]:
    """Check the options of :func:`label_image` and :func:`automatic_masks`: ``(bands, progress)``.

    Before any work: the images are paths, ``sam`` a model, a path or a loader,
    ``class_field`` a name, ``bands`` whole numbers and ``progress`` a flag.
    """
    check_paths(images, "images")
    if not (isinstance(sam, SamModelAdapter | str | Path) or callable(sam)):
        raise ConfigError(
            "sam: expected a loaded model (geoseg.labelling.load_sam), the path of a SAM "
            f"checkpoint, or a function that loads one; got {type(sam).__name__} {brief(sam)}"
        )
    check_text(class_field, "class_field")
    return check_ints(bands, "bands", low=1), check_flag(progress, "progress")


def get_sam(sam: SamSource) -> SamModelAdapter:
    """The model ``sam`` stands for, loaded now (see :data:`SamSource`)."""
    if isinstance(sam, SamModelAdapter):
        return sam
    if isinstance(sam, str | Path):
        return load_sam(sam)
    return sam()


def label_image(
    images: str | Path | Sequence[str | Path],
    prompts: str | Path | Any,
    sam: SamSource,
    *,
    class_field: str = "class",
    classes: Sequence[str] | None = None,
    bands: Sequence[int] = (1, 2, 3),
    progress: bool = False,
    prompt_layer: str | None = None,
) -> Any:
    """Segment one object per prompt with SAM; return the polygons as a GeoDataFrame.

    Args:
        images: a GeoTIFF, a folder, a VRT or a list (a mosaic).
        prompts: a vector file or GeoDataFrame of Point / Polygon prompts (see
            :func:`geoseg.labelling.prompts.read_prompts`).
        sam: a loaded model, a path for :func:`geoseg.labelling.sam.load_sam`, or a
            function returning a model: loaded only once the images, prompts and
            options are checked, so a bad prompt file fails before a slow model load.
        class_field: the prompts' class attribute, copied to the output.
        classes: valid class names (None: any value).
        bands: the three 1-based bands shown to SAM.
        progress: show a progress bar over windows.
        prompt_layer: the layer of a prompts file of several layers (a GeoPackage).

    Returns:
        A GeoDataFrame in the image CRS: ``prompt_id``, ``kind``, the class field,
        ``score`` and the geometry, one row per positive prompt whose mask is not empty.
    """
    import geopandas as gpd
    from tqdm.auto import tqdm

    bands, progress = check_label_options(
        images, sam, class_field=class_field, bands=bands, progress=progress
    )
    if not isinstance(prompts, gpd.GeoDataFrame):
        check_path(prompts, "prompts", also="or a GeoDataFrame")
    if classes is not None:
        classes = check_texts(classes, "classes")
    if prompt_layer is not None:
        check_text(prompt_layer, "prompt_layer")
    mosaic = open_image(images, bands)
    items = read_prompts(
        prompts,
        crs=mosaic.crs,
        transform=mosaic.transform,
        height=mosaic.height,
        width=mosaic.width,
        class_field=class_field,
        classes=classes,
        layer=prompt_layer,
    )
    model = get_sam(sam)
    groups = group_windows(items, size=model.image_size, height=mosaic.height, width=mosaic.width)
    byte = is_byte(mosaic)
    rows: list[dict[str, Any]] = []
    empty: list[int] = []
    for g in tqdm(groups, desc="SAM windows", unit="window", disable=not progress):
        w = g.window
        model.embed(read_rgb(mosaic, w, byte=byte))
        off = np.array([w.col, w.row], dtype=float)
        wt = mosaic.transform @ Affine.translation(w.col, w.row)
        for p in g.prompts:
            pred = _decode(model, p, g.negatives, off)
            local = Prompt(p.fid, p.kind, p.xy - off)
            geom = mask_to_polygon(pred.mask, wt, local)
            if geom is None:
                empty.append(p.fid)
                continue
            rows.append(
                {"prompt_id": p.fid, "kind": p.kind, class_field: p.value,
                 "score": pred.score, "geometry": geom}
            )  # fmt: skip
    if empty:
        warn(f"SAM returned an empty mask for prompts {empty[:20]}; no polygon for them",
             DataWarning)  # fmt: skip
    rows.sort(key=lambda r: r["prompt_id"])
    cols = ["prompt_id", "kind", class_field, "score", "geometry"]
    return gpd.GeoDataFrame(rows, columns=cols, geometry="geometry", crs=mosaic.crs)


def write_labels(gdf: Any, output: str | Path, *, overwrite: bool = False) -> Path:
    """Write the labelled polygons atomically (format by extension, see geoseg.io.vector)."""
    from geoseg.io.vector import write_vector

    if not hasattr(gdf, "geometry"):
        raise ConfigError(
            f"gdf: expected the GeoDataFrame of label_image, got {type(gdf).__name__} {brief(gdf)}"
        )
    check_path(output, "output")
    overwrite = check_flag(overwrite, "overwrite")
    if len(gdf) == 0:
        raise DataError("no polygons to write: SAM returned an empty mask for every prompt")
    return write_vector(gdf, output, overwrite=overwrite)
