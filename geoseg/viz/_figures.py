"""Static figures (matplotlib): imagery | prediction | polygons with legend and scale bars."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg.arguments import check_float, check_int, check_ints, check_path
from geoseg.classes import ClassTable
from geoseg.errors import ConfigError, DataError, brief
from geoseg.viz._render import (
    DisplayRaster,
    RasterSource,
    check_source,
    colorize,
    read_display,
    stretch_rgb,
)

if TYPE_CHECKING:
    import geopandas as gpd
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

#: Column names, in order of preference, that hold a polygon's class id or class name.
CLASS_ID_COLUMNS = ("class_id", "class", "id", "label")
CLASS_NAME_COLUMNS = ("class_name", "name", "label")


def polygon_class_ids(gdf: gpd.GeoDataFrame, classes: ClassTable) -> np.ndarray:
    """The class id of every polygon, from a ``class_id``-like or ``class_name``-like column.

    Raises:
        DataError: no column identifies the class.
    """
    for col in CLASS_ID_COLUMNS:
        if col in gdf.columns and np.issubdtype(gdf[col].dtype, np.integer):
            return gdf[col].to_numpy(dtype="int64")
    lookup = {c.name: c.id for c in classes}
    for col in CLASS_NAME_COLUMNS:
        if col in gdf.columns and gdf[col].dtype == object:
            return np.array([lookup.get(str(v), -1) for v in gdf[col]], dtype="int64")
    raise DataError(
        f"polygons have no class column; expected one of {list(CLASS_ID_COLUMNS)} (ids) "
        f"or {list(CLASS_NAME_COLUMNS)} (names), found {list(gdf.columns)}"
    )


def _metres_per_unit(crs: Any, lat: float) -> float:
    """Ground metres per CRS unit (approximate for geographic CRSs, at latitude ``lat``)."""
    if crs is not None and crs.is_geographic:
        return 111_320.0 * max(math.cos(math.radians(lat)), 1e-6)
    if crs is not None:
        factor = crs.linear_units_factor[1] if crs.linear_units_factor else 1.0
        return float(factor)
    return 1.0


def add_scale_bar(ax: Axes, crs: Any, *, fraction: float = 0.25) -> None:
    """Draw a scale bar (a round number of m or km) in the lower-left of a map axes.

    Hand-written because matplotlib has none and matplotlib-scalebar is not a dependency.

    Args:
        ax: axes whose data coordinates are in ``crs`` units.
        crs: the rasterio/pyproj CRS of the axes (geographic: approximate at mid-latitude).
        fraction: target bar length as a fraction of the axes width.
    """
    from matplotlib.patches import Rectangle

    fraction = check_float(fraction, "fraction", above=0, high=1)
    crs = _as_crs(crs)
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    mpu = _metres_per_unit(crs, (y0 + y1) / 2)
    target_m = abs(x1 - x0) * fraction * mpu
    if target_m <= 0:
        return
    exp = 10 ** math.floor(math.log10(target_m))
    nice = max(m * exp for m in (1, 2, 5) if m * exp <= target_m)
    length = nice / mpu
    label = f"{nice / 1000:g} km" if nice >= 1000 else f"{nice:g} m"
    bx = x0 + 0.05 * (x1 - x0)
    by = y0 + 0.06 * (y1 - y0)
    thick = 0.012 * abs(y1 - y0)
    ax.add_patch(
        Rectangle((bx, by), length, thick, facecolor="black", edgecolor="white", lw=0.8, zorder=5)
    )
    ax.text(
        bx + length / 2,
        by + 2.2 * thick,
        label,
        ha="center",
        va="bottom",
        fontsize=8,
        zorder=5,
        bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1.0},
    )


def _as_crs(crs: Any) -> Any:
    """A CRS object (``is_geographic``): a CRS as is, ``"EPSG:32618"`` or 32618 parsed."""
    if crs is None or hasattr(crs, "is_geographic"):
        return crs
    from rasterio.crs import CRS
    from rasterio.errors import CRSError

    try:
        return CRS.from_user_input(crs)
    except (CRSError, TypeError, ValueError):
        raise ConfigError(
            f"crs: {brief(crs)} is not a CRS; give a rasterio CRS or 'EPSG:XXXX'"
        ) from None


def _legend_handles(classes: ClassTable) -> list[Any]:
    from matplotlib.patches import Patch

    return [Patch(facecolor=c.color, edgecolor="0.3", label=f"{c.id} {c.name}") for c in classes]


def _resolve_classes(classes: ClassTable | Any | None, classmap: DisplayRaster) -> ClassTable:
    if classes is not None:
        return ClassTable.from_config(classes)
    if classmap.classes is None:
        raise ConfigError(
            "the class map has no class table (GEOSEG_CLASSES tag); pass classes=ClassTable"
        )
    return classmap.classes


def plot_side_by_side(
    image: RasterSource,
    classmap: RasterSource,
    polygons: gpd.GeoDataFrame | str | Path | None = None,
    *,
    classes: ClassTable | None = None,
    rgb: Sequence[int] = (1, 2, 3),
    titles: Sequence[str] = ("Imagery", "Prediction", "Polygons"),
    output: str | Path | None = None,
    max_size: int = 1024,
    dpi: int = 120,
) -> Figure:
    """Imagery | class map | polygons in one figure, with a class legend and scale bars.

    Args:
        image: imagery (path, open dataset, or a list of mosaic tile paths).
        classmap: a class-map GeoTIFF as written by geoseg (path or dataset).
        polygons: vectorized classes (GeoDataFrame or vector file); None draws two panels.
        classes: the class table (default: read from the class map's tag).
        rgb: 1-based band numbers of ``image`` shown as red, green, blue.
        titles: panel titles.
        output: if given, save the figure there (PNG) atomically.
        max_size: longest side, in pixels, at which rasters are read.
        dpi: resolution of the saved figure.

    Returns:
        The matplotlib figure (closed from pyplot's state, so it does not pile up).
    """
    import matplotlib

    if output is not None:
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    check_source(image, "image")
    check_source(classmap, "classmap")
    rgb = check_ints(rgb, "rgb", low=1)
    max_size = check_int(max_size, "max_size", low=1, unit="pixels")
    dpi = check_int(dpi, "dpi", low=1, high=2400)
    if output is not None:
        check_path(output, "output")
    titles = _titles(titles, 3 if polygons is not None else 2)
    img = read_display(image, bands=list(rgb), max_size=max_size)
    cmap = read_display(classmap, bands=[1], max_size=max_size)
    table = _resolve_classes(classes, cmap)
    gdf = _as_gdf(polygons)
    panels = 3 if gdf is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.6 * panels, 5.0), layout="constrained")
    ax_img, ax_cls = axes[0], axes[1]
    ax_img.imshow(stretch_rgb(img.data, rgb=(0, 1, 2)), extent=img.extent, interpolation="none")
    ax_cls.imshow(colorize(cmap.data[0], table), extent=cmap.extent, interpolation="nearest")
    if gdf is not None:
        ax_pol = axes[2]
        if cmap.crs is not None and gdf.crs is not None and gdf.crs != cmap.crs:
            gdf = gdf.to_crs(cmap.crs)
        ids = polygon_class_ids(gdf, table)
        colors = {c.id: c.color for c in table}
        face = [colors.get(int(i), "#cccccc") for i in ids]
        gdf.plot(ax=ax_pol, color=face, edgecolor="black", linewidth=0.15)
        ax_pol.set_xlim(ax_cls.get_xlim())
        ax_pol.set_ylim(ax_cls.get_ylim())
        ax_pol.set_facecolor("white")
    epsg = cmap.crs.to_epsg() if cmap.crs is not None else None
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlim(ax_cls.get_xlim())
        ax.set_ylim(ax_cls.get_ylim())
        ax.set_aspect("equal")
        ax.set_xlabel("")
        ax.set_ylabel("")
        ax.tick_params(labelsize=7)
        add_scale_bar(ax, cmap.crs)
    axes[0].set_ylabel(f"EPSG:{epsg}" if epsg else "CRS units", fontsize=8)
    fig.legend(
        handles=_legend_handles(table),
        loc="outside lower center",
        ncol=min(len(table), 7),
        fontsize=8,
        frameon=False,
    )
    plt.close(fig)
    if output is not None:
        _save(fig, output, dpi=dpi)
    return fig


def _titles(titles: Any, panels: int) -> list[str]:
    """One title (a string) per panel."""
    if isinstance(titles, str) or not isinstance(titles, Sequence) or len(titles) < panels:
        raise ConfigError(
            f"titles: expected {panels} panel titles, e.g. ('Imagery', 'Prediction', "
            f"'Polygons'), got {brief(titles)}"
        )
    for i, t in enumerate(titles):
        if not isinstance(t, str):
            raise ConfigError(f"titles[{i}]: expected a string, got {brief(t)}")
    return list(titles)


def _as_gdf(polygons: Any) -> gpd.GeoDataFrame | None:
    if polygons is None:
        return None
    if not hasattr(polygons, "geometry"):
        check_path(polygons, "polygons", also="or a GeoDataFrame")
    if isinstance(polygons, str | Path):
        import geopandas as gpd

        return gpd.read_file(polygons)
    return polygons


def _save(fig: Figure, output: str | Path, *, dpi: int) -> Path:
    from geoseg.io.outputs import atomic_path

    out = Path(output)
    with atomic_path(out, overwrite=True) as tmp:
        fig.savefig(tmp, dpi=dpi, format=out.suffix.lstrip(".") or "png")
    return out
