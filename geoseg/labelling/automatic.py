"""Automatic masks: a grid of point prompts per window, filtered by score, de-duplicated.

Slow on CPU (every point is decoded; measured for SAM ViT-B with a 32 x 32 grid:
168-197 s per 512 px tile); meant for a GPU or for small areas.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from affine import Affine

from geoseg.arguments import check_float, check_int
from geoseg.errors import warn
from geoseg.io.grid import PixelWindow
from geoseg.labelling.label import (
    AUTOMATIC_CPU_SECONDS,
    SamSource,
    SlowOnCpuWarning,
    check_label_options,
    get_sam,
    is_byte,
    mask_to_polygon,
    open_image,
    read_rgb,
)
from geoseg.labelling.sam import SamModelAdapter


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def window_masks(
    sam: SamModelAdapter,
    image: np.ndarray,
    *,
    points_per_side: int,
    score_threshold: float,
    iou_threshold: float,
) -> list[tuple[np.ndarray, float]]:
    """Masks of one window from a regular point grid, best score first, de-duplicated."""
    h, w = image.shape[:2]
    sam.embed(image)
    step_y, step_x = h / points_per_side, w / points_per_side
    found: list[tuple[np.ndarray, float]] = []
    for i in range(points_per_side):
        for j in range(points_per_side):
            pt = np.array([[(j + 0.5) * step_x, (i + 0.5) * step_y]])
            pred = sam.predict(points=pt, labels=np.ones(1))
            if pred.score >= score_threshold and pred.mask.any():
                found.append((pred.mask, pred.score))
    found.sort(key=lambda m: -m[1])
    kept: list[tuple[np.ndarray, float]] = []
    for mask, score in found:
        if all(_mask_iou(mask, k[0]) < iou_threshold for k in kept):
            kept.append((mask, score))
    return kept


def automatic_masks(
    images: str | Path | Sequence[str | Path],
    sam: SamSource,
    *,
    class_value: Any = 1,
    class_field: str = "class",
    bands: Sequence[int] = (1, 2, 3),
    points_per_side: int = 16,
    score_threshold: float = 0.85,
    iou_threshold: float = 0.7,
    progress: bool = False,
) -> Any:
    """Whole-image automatic masks, as polygons in the image CRS (slow on CPU).

    Windows of the model's input size tile the image; in each, a ``points_per_side``
    squared grid of foreground points is decoded, masks scoring below
    ``score_threshold`` are dropped, and masks overlapping a better one by IoU >=
    ``iou_threshold`` are removed (within a window, then polygons across windows).

    Returns:
        A GeoDataFrame with the class field (``class_value`` for every mask), ``score``
        and the geometry.
    """
    import geopandas as gpd
    from tqdm.auto import tqdm

    bands, progress = check_label_options(
        images, sam, class_field=class_field, bands=bands, progress=progress
    )
    points_per_side = check_int(points_per_side, "points_per_side", low=1, high=64)
    score_threshold = check_float(score_threshold, "score_threshold", low=0, high=1)
    iou_threshold = check_float(iou_threshold, "iou_threshold", above=0, high=1)
    mosaic = open_image(images, bands)
    warn(f"automatic masks are slow on CPU: measured {AUTOMATIC_CPU_SECONDS}", SlowOnCpuWarning)
    model = get_sam(sam)
    byte = is_byte(mosaic)
    s = model.image_size
    wins = [
        PixelWindow(r, c, min(s, mosaic.height - r), min(s, mosaic.width - c))
        for r in range(0, mosaic.height, s)
        for c in range(0, mosaic.width, s)
    ]
    geoms: list[Any] = []
    scores: list[float] = []
    for w in tqdm(wins, desc="SAM automatic", unit="window", disable=not progress):
        masks = window_masks(
            model,
            read_rgb(mosaic, w, byte=byte),
            points_per_side=points_per_side,
            score_threshold=score_threshold,
            iou_threshold=iou_threshold,
        )
        wt = mosaic.transform @ Affine.translation(w.col, w.row)
        for mask, score in masks:
            geoms.append(mask_to_polygon(mask, wt))
            scores.append(score)
    keep = _dedupe(np.array(geoms, dtype=object), np.array(scores), iou_threshold)
    gdf = gpd.GeoDataFrame(
        {class_field: [class_value] * len(keep), "score": np.array(scores)[keep]},
        geometry=list(np.array(geoms, dtype=object)[keep]),
        crs=mosaic.crs,
    )
    return gdf


def _dedupe(geoms: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Indexes of polygons kept: best score first, dropping those overlapping a kept one."""
    if not len(geoms):
        return []
    tree = shapely.STRtree(geoms)
    kept: list[int] = []
    dropped = np.zeros(len(geoms), dtype=bool)
    for i in np.argsort(-scores):
        if dropped[i]:
            continue
        kept.append(int(i))
        for j in tree.query(geoms[i]):
            if j != i and not dropped[j]:
                inter = shapely.area(shapely.intersection(geoms[i], geoms[j]))
                union = shapely.area(shapely.union(geoms[i], geoms[j]))
                if union and inter / union >= iou_threshold:
                    dropped[j] = True
    return sorted(kept)
