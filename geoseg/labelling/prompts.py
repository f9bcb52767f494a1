"""SAM prompts from a vector layer: reading, checking, and grouping into windows.

Point features are point prompts (a ``label`` attribute of 0 makes a background point,
applied to every prompt of its window); polygon features are box prompts (their bounding
box). Prompts are grouped into square windows of the model's input size so that each
window's image embedding is computed once for all the prompts it contains fully.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from affine import Affine

from geoseg.errors import ConfigError, DataError
from geoseg.io.grid import PixelWindow


@dataclass
class Prompt:
    """One prompt in image pixel coordinates.

    Attributes:
        fid: the feature's position in the layer (0-based), used in messages and output.
        kind: ``"point"`` or ``"box"``.
        xy: (N, 2) x, y pixel coordinates of the points (a box: its two corners).
        positive: False for a background point (no output of its own).
        value: the class attribute's value (None for background points).
    """

    fid: int
    kind: str
    xy: np.ndarray
    positive: bool = True
    value: Any = None

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) pixel bounds."""
        return (
            float(self.xy[:, 0].min()),
            float(self.xy[:, 1].min()),
            float(self.xy[:, 0].max()),
            float(self.xy[:, 1].max()),
        )


@dataclass
class PromptWindow:
    """A window of the image and the prompts decoded against its embedding."""

    window: PixelWindow
    prompts: list[Prompt] = field(default_factory=list)
    negatives: list[Prompt] = field(default_factory=list)


def read_prompts(
    prompts: str | Path | Any,
    *,
    crs: Any,
    transform: Affine,
    height: int,
    width: int,
    class_field: str = "class",
    classes: Sequence[str] | None = None,
    layer: str | None = None,
) -> list[Prompt]:
    """Read a prompt layer and convert it to pixel prompts on the image grid.

    Args:
        prompts: a vector file (GeoPackage, GeoJSON, ...) or a GeoDataFrame.
        crs: the image CRS; prompts in another CRS are reprojected.
        transform: the image transform.
        height: image height in pixels.
        width: image width in pixels.
        class_field: the attribute holding each prompt's class (name or id).
        classes: valid class names (ids are their 0-based positions); None accepts any
            value.
        layer: the layer of a file of several layers (a GeoPackage); a file of one
            layer needs none.

    Raises:
        InputFileError: the file does not exist or cannot be read.
        DataError: several layers and no ``layer``, no layer called ``layer``, empty
            layer, no CRS, unsupported geometry, prompts outside the image, unknown
            class values.
        ConfigError: the class field is missing, or ``layer`` with a GeoDataFrame.
    """
    import geopandas as gpd

    from geoseg.io.vector import read_vector

    where = "prompts"
    if isinstance(prompts, gpd.GeoDataFrame):
        if layer is not None:
            raise ConfigError(
                f"prompt_layer {layer!r} names a layer of a prompts file; the prompts are a "
                "GeoDataFrame already: leave prompt_layer out"
            )
        df = prompts
    else:
        where = f"prompts {str(prompts)!r}"
        df = read_vector(prompts, where=where, layer=layer, option="prompt_layer / --prompt-layer")
    if len(df) == 0:
        raise DataError(f"{where}: the layer has no features; add point or box prompts")
    if df.crs is None:
        raise DataError(
            f"{where}: the layer has no CRS; set one (e.g. ogr2ogr -a_srs EPSG:XXXX) and retry"
        )
    df = df.to_crs(crs)
    negative = np.zeros(len(df), dtype=bool)
    if "label" in df.columns:
        negative = np.asarray(df["label"].fillna(1).astype(int) == 0)
    if class_field not in df.columns:
        fields = [c for c in df.columns if c != "geometry"]
        raise ConfigError(
            f"{where}: no class field {class_field!r}; its fields are {fields} "
            "(choose one with --class-field)"
        )
    values = _check_classes(df[class_field], negative, classes, where)
    inv = ~transform
    out: list[Prompt] = []
    outside: list[int] = []
    for i, geom in enumerate(df.geometry.values):
        kind, xy_map = _prompt_coords(geom, i, where)
        cols, rows = apply_transform(inv, xy_map[:, 0], xy_map[:, 1])
        xy = np.stack([np.asarray(cols), np.asarray(rows)], axis=1)
        if kind == "box":
            xy = np.array([xy.min(axis=0), xy.max(axis=0)])
        if xy.min() < 0 or (xy[:, 0] > width).any() or (xy[:, 1] > height).any():
            outside.append(i)
            continue
        out.append(Prompt(i, kind, xy, not negative[i], None if negative[i] else values[i]))
    if outside:
        raise DataError(
            f"{where}: features {outside[:20]} (0-based) lie outside the image "
            f"({width} x {height} px); move or delete them"
        )
    if not any(p.positive for p in out):
        raise DataError(f"{where}: only background points (label 0); add prompts")
    return out


def apply_transform(t: Affine, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``t`` applied to coordinate arrays: ``(x', y')``."""
    return t.a * x + t.b * y + t.c, t.d * x + t.e * y + t.f


def _prompt_coords(geom: Any, i: int, where: str) -> tuple[str, np.ndarray]:
    if geom is None or shapely.is_empty(geom):
        raise DataError(f"{where}: feature {i} has an empty geometry")
    if geom.geom_type == "Point":
        return "point", np.array([[geom.x, geom.y]])
    if geom.geom_type in ("Polygon", "MultiPolygon"):
        x0, y0, x1, y1 = geom.bounds
        return "box", np.array([[x0, y0], [x1, y1]])
    raise DataError(
        f"{where}: feature {i} is a {geom.geom_type}; prompts are Points (point prompts) "
        "or Polygons (box prompts)"
    )


def _check_classes(
    values: Any, negative: np.ndarray, classes: Sequence[str] | None, where: str
) -> list[Any]:
    vals = list(values)
    missing = [i for i, v in enumerate(vals) if not negative[i] and _is_null(v)]
    if missing:
        raise DataError(f"{where}: features {missing[:20]} have no class value")
    if classes is None:
        return vals
    names = [c.strip().lower() for c in classes]
    unknown = set()
    for i, v in enumerate(vals):
        if negative[i]:
            continue
        text = str(v).strip().lower()
        ok = text in names or (text.isdigit() and int(text) < len(names))
        if not ok:
            unknown.add(str(v))
    if unknown:
        raise DataError(
            f"{where}: class values {sorted(unknown)[:10]} are neither class names nor "
            f"ids of {list(classes)}; fix the attribute or --classes"
        )
    return vals


def _is_null(v: Any) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


def group_windows(
    prompts: Sequence[Prompt], *, size: int, height: int, width: int
) -> list[PromptWindow]:
    """Group prompts into windows of ``size`` pixels that contain each prompt fully.

    Greedy: the first unassigned prompt (in row-major order of its top-left corner) gets a
    window centred on it, clamped to the image; every unassigned prompt inside that window
    joins it. Background points join every window that contains them.

    Raises:
        DataError: a box prompt is larger than a window (draw smaller boxes, or use a
            model with a bigger input size); boxes are never downscaled.
    """
    positives = [p for p in prompts if p.positive]
    negatives = [p for p in prompts if not p.positive]
    for p in positives:
        x0, y0, x1, y1 = p.bounds
        if x1 - x0 > size or y1 - y0 > size:
            raise DataError(
                f"prompt {p.fid}: box of {x1 - x0:.0f} x {y1 - y0:.0f} px is larger than "
                f"SAM's {size} px window; split it into smaller boxes"
            )
    todo = sorted(positives, key=lambda p: (p.bounds[1], p.bounds[0]))
    wins: list[PromptWindow] = []
    while todo:
        x0, y0, x1, y1 = todo[0].bounds
        wh, ww = min(size, height), min(size, width)
        row = int(min(max(0, np.floor((y0 + y1) / 2 - wh / 2)), height - wh))
        col = int(min(max(0, np.floor((x0 + x1) / 2 - ww / 2)), width - ww))
        win = PixelWindow(row, col, wh, ww)
        group = PromptWindow(win, [todo[0]])  # always joins: the loop must progress
        rest: list[Prompt] = []
        for p in todo[1:]:
            (group.prompts if _inside(p, win) else rest).append(p)
        group.negatives = [p for p in negatives if _inside(p, win)]
        wins.append(group)
        todo = rest
    return wins


def _inside(p: Prompt, win: PixelWindow) -> bool:
    x0, y0, x1, y1 = p.bounds
    return x0 >= win.col and x1 <= win.col_stop and y0 >= win.row and y1 <= win.row_stop
