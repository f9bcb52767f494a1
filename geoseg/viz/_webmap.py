"""Interactive HTML maps (folium/Leaflet) that draw with no network access at all.

folium is used because it is already a dependency, writes one standalone HTML page, and
renders inline in Jupyter as an ``<iframe srcdoc>`` with no widget extension or live
kernel (ipyleaflet needs both, and is not installed). Its one flaw for us: it loads
Leaflet, jQuery, Bootstrap and Font Awesome from CDNs. :class:`OfflineMap` drops every
CDN link and inlines the Leaflet 1.9.4 JS/CSS vendored in ``geoseg/viz/static/`` (the
only library the map needs), so the page works in a browser with no network.
"""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Sequence
from functools import cache
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from geoseg.arguments import check_float, check_int, check_ints, check_path
from geoseg.classes import ClassTable
from geoseg.errors import ConfigError, OutputError, brief
from geoseg.viz._figures import _as_gdf, _resolve_classes, polygon_class_ids
from geoseg.viz._render import (
    DisplayRaster,
    RasterSource,
    check_source,
    colorize,
    read_display,
    stretch_rgb,
)

if TYPE_CHECKING:
    import folium
    import geopandas as gpd

STATIC = Path(__file__).with_name("static")

#: Pattern of any resource a page would fetch from the network.
_REMOTE = re.compile(
    r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["']?(?:https?:)?//[^"'\s>]*""",
    re.IGNORECASE,
)
#: Online basemap tiles (folium TileLayer), which need the network to draw.
_REMOTE_TILES = re.compile(r"""L\.tileLayer(?:\.wms)?\(\s*["'](?:https?:)?//[^"']*""")


@cache
def leaflet_assets() -> tuple[str, str]:
    """The vendored Leaflet (JS, CSS); CSS images are inlined as data URIs."""
    js = (STATIC / "leaflet.js").read_text(encoding="utf-8")
    css = (STATIC / "leaflet.css").read_text(encoding="utf-8")
    for name in ("layers.png", "layers-2x.png"):
        uri = "data:image/png;base64," + base64.b64encode((STATIC / name).read_bytes()).decode()
        css = css.replace(f"url(images/{name})", f"url({uri})")
    # the marker icons are never used by geoseg maps; drop their relative URLs
    css = re.sub(r"url\(images/marker-[^)]*\)", "none", css)
    # "</script>" inside inlined code would end the <script> element early
    js = js.replace("</script", "<\\/script")
    return js, css


def _offline_map_class() -> type[folium.Map]:
    import folium
    from branca.element import Element

    class OfflineMap(folium.Map):
        """A folium Map whose page loads nothing from the network (Leaflet inlined)."""

        default_js = []  # noqa: RUF012 (folium's own attribute)
        default_css = []  # noqa: RUF012

        def render(self, **kwargs: Any) -> Any:
            js, css = leaflet_assets()
            header = self.get_root().header  # type: ignore[attr-defined]
            header.add_child(Element(f"<style>{css}</style>"), name="geoseg_leaflet_css")
            header.add_child(Element(f"<script>{js}</script>"), name="geoseg_leaflet_js")
            return super().render(**kwargs)

    return OfflineMap


def png_data_uri(rgba: np.ndarray) -> str:
    """Encode a (rows, cols, 3|4) uint8 array as a ``data:image/png;base64,...`` URI."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgba)).save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def to_web_mercator(
    rgba: np.ndarray, raster: DisplayRaster, *, resampling: str = "nearest"
) -> tuple[np.ndarray, list[list[float]]]:
    """Warp an RGBA image on ``raster``'s grid to EPSG:3857 for a Leaflet image overlay.

    Leaflet stretches an overlay linearly between its corner coordinates in Web Mercator,
    so the image itself must be in Web Mercator to line up with vector layers.

    Returns:
        The warped RGBA image and its bounds as ``[[south, west], [north, east]]`` degrees.
    """
    from rasterio.crs import CRS
    from rasterio.warp import Resampling, calculate_default_transform, reproject, transform_bounds

    dst_crs = CRS.from_epsg(3857)
    rows, cols = rgba.shape[:2]
    left, bottom, right, top = raster.bounds
    transform, width, height = calculate_default_transform(
        raster.crs, dst_crs, cols, rows, left=left, bottom=bottom, right=right, top=top
    )
    out = np.zeros((4, height, width), dtype="uint8")
    reproject(
        np.moveaxis(rgba, -1, 0),
        out,
        src_transform=raster.transform,
        src_crs=raster.crs,
        dst_transform=transform,
        dst_crs=dst_crs,
        resampling=Resampling[resampling],
    )
    w3857, n3857 = transform.c, transform.f
    e3857, s3857 = transform.c + transform.a * width, transform.f + transform.e * height
    west, south, east, north = transform_bounds(dst_crs, "EPSG:4326", w3857, s3857, e3857, n3857)
    return np.moveaxis(out, 0, -1), [[south, west], [north, east]]


def _legend_html(classes: ClassTable, title: str) -> str:
    # class names and the title come from users' files: escaped, never markup
    rows = "".join(
        f'<div class="geoseg-legend-item"><span style="background:{escape(c.color)}"></span>'
        f"{escape(c.name)}</div>"
        for c in classes
    )
    title = escape(title)
    return f"""
<style>
.geoseg-legend {{position: fixed; bottom: 24px; right: 12px; z-index: 1000;
  background: rgba(255,255,255,0.92); padding: 6px 10px; border-radius: 4px;
  font: 12px/1.5 sans-serif; box-shadow: 0 1px 4px rgba(0,0,0,0.4);}}
.geoseg-legend-item span {{display: inline-block; width: 14px; height: 14px;
  margin-right: 6px; vertical-align: middle; border: 1px solid #555;}}
</style>
<div class="geoseg-legend" id="geoseg-legend"><b>{title}</b>{rows}</div>
"""


def _polygons_for_map(gdf: gpd.GeoDataFrame, classes: ClassTable) -> gpd.GeoDataFrame:
    """Polygons in EPSG:4326 with ``class_id``, ``class_name``, ``area_m2``, ``area_ha``.

    A ``confidence`` column (mean class probability) is kept when present.
    """
    import geopandas as gpd

    ids = polygon_class_ids(gdf, classes)
    names = {c.id: c.name for c in classes}
    if "area_m2" in gdf.columns:
        area = gdf["area_m2"].to_numpy(dtype="float64")
    elif gdf.crs is not None and gdf.crs.is_projected:
        area = gdf.geometry.area.to_numpy() * gdf.crs.axis_info[0].unit_conversion_factor ** 2
    else:  # geographic: never measure in degrees; use a local UTM zone
        area = gdf.to_crs(gdf.estimate_utm_crs()).geometry.area.to_numpy()
    out = gpd.GeoDataFrame(
        {
            "class_id": ids,
            "class_name": [escape(names.get(int(i), str(i))) for i in ids],
            "area_m2": np.round(area, 1),
            "area_ha": np.round(area / 1e4, 3),
        },
        geometry=gdf.geometry.to_numpy(),
        crs=gdf.crs,
    )
    if "confidence" in gdf.columns:  # mean class probability, from vectorize(probabilities=)
        out["confidence"] = np.round(gdf["confidence"].to_numpy(dtype="float64"), 3)
    return out.to_crs("EPSG:4326") if out.crs is not None else out


def web_map(
    image: RasterSource | None,
    classmap: RasterSource | None,
    polygons: gpd.GeoDataFrame | str | Path | None = None,
    *,
    classes: ClassTable | None = None,
    rgb: Sequence[int] = (1, 2, 3),
    max_size: int = 1024,
    opacity: float = 0.7,
    legend_title: str = "Classes",
    height: int | str = "100%",
) -> folium.Map:
    """An interactive map: imagery, class map and polygons as layers, legend, popups.

    Everything is embedded (images as PNG data URIs, polygons as GeoJSON, Leaflet inlined):
    the page needs no network and no tile server. Display it inline in Jupyter (the
    returned map renders itself) or write it with :func:`save_web_map`.

    Args:
        image: imagery (path, dataset or list of mosaic tiles); None to omit.
        classmap: a geoseg class-map GeoTIFF; None to omit (then pass ``classes``).
        polygons: vectorized classes (GeoDataFrame or vector file); each polygon's popup
            shows its class and area in m² and ha.
        classes: the class table (default: read from the class map).
        rgb: 1-based band numbers of ``image`` shown as red, green, blue.
        max_size: longest side, in pixels, of the embedded images.
        opacity: opacity of the class-map layer.
        legend_title: heading of the legend.
        height: height of the map element (CSS length or pixels).

    Returns:
        A ``folium.Map`` (subclass) with a layer control.
    """
    import folium

    if image is None and classmap is None and polygons is None:
        raise ConfigError("web_map: give at least one of image, classmap or polygons")
    for name, source in (("image", image), ("classmap", classmap)):
        if source is not None:
            check_source(source, name)
    rgb = check_ints(rgb, "rgb", low=1)
    max_size = check_int(max_size, "max_size", low=1, unit="pixels")
    opacity = check_float(opacity, "opacity", low=0, high=1)
    if not isinstance(legend_title, str):
        raise ConfigError(f"legend_title: expected a string, got {brief(legend_title)}")
    size = _css_length(height, "height")
    layers: list[tuple[str, str, list[list[float]], float, bool]] = []
    table: ClassTable | None = ClassTable.from_config(classes) if classes is not None else None
    if image is not None:
        img = read_display(image, bands=list(rgb), max_size=max_size)
        rgba, bounds = to_web_mercator(stretch_rgb(img.data), img, resampling="bilinear")
        layers.append(("Imagery", png_data_uri(rgba), bounds, 1.0, False))
    if classmap is not None:
        cmap = read_display(classmap, bands=[1], max_size=max_size)
        table = _resolve_classes(table, cmap)
        rgba, bounds = to_web_mercator(colorize(cmap.data[0], table), cmap)
        layers.append(("Class map", png_data_uri(rgba), bounds, opacity, True))
    if table is None:
        raise ConfigError("web_map: pass classes= when no class map is given")
    gdf = _as_gdf(polygons)

    m = _offline_map_class()(
        tiles=None, control_scale=True, height=size, zoom_snap=0.25, zoom_delta=0.5
    )
    all_bounds: list[list[float]] = []
    for name, uri, bounds, alpha, pixelated in layers:
        folium.raster_layers.ImageOverlay(
            image=uri,
            bounds=bounds,
            opacity=alpha,
            name=name,
            pixelated=pixelated,
            mercator_project=False,
        ).add_to(m)
        all_bounds.extend(bounds)
    if gdf is not None and len(gdf):
        all_bounds.extend(_add_polygons(m, gdf, table))
    folium.LayerControl(collapsed=False).add_to(m)
    if all_bounds:
        lats = [b[0] for b in all_bounds]
        lons = [b[1] for b in all_bounds]
        m.fit_bounds([[min(lats), min(lons)], [max(lats), max(lons)]])
    m.get_root().html.add_child(  # type: ignore[attr-defined]
        folium.Element(_legend_html(table, legend_title)), name="geoseg_legend"
    )
    return m


def _add_polygons(m: folium.Map, gdf: gpd.GeoDataFrame, table: ClassTable) -> list[list[float]]:
    """Add the polygons layer (class colours, popups with class and area); its bounds."""
    import folium

    poly = _polygons_for_map(gdf, table)
    colors = {c.id: c.color for c in table}
    poly["fill"] = [colors.get(int(i), "#cccccc") for i in poly["class_id"]]
    popup_fields = [
        ("class_name", "Class"),
        ("class_id", "Class id"),
        ("area_m2", "Area (m²)"),
        ("area_ha", "Area (ha)"),
    ]
    if "confidence" in poly.columns:
        popup_fields.append(("confidence", "Mean probability"))
    folium.GeoJson(
        poly,
        name="Polygons",
        style_function=lambda f: {
            "fillColor": f["properties"]["fill"],
            "color": "#222222",
            "weight": 0.6,
            "fillOpacity": 0.0,  # outlines over the class map; clicks still open popups
        },
        highlight_function=lambda f: {"weight": 2.5, "color": "#000000", "fillOpacity": 0.5},
        popup=folium.GeoJsonPopup(
            fields=[f for f, _ in popup_fields],
            aliases=[a for _, a in popup_fields],
            localize=True,
        ),
        tooltip=folium.GeoJsonTooltip(fields=["class_name"], aliases=["Class"]),
    ).add_to(m)
    w, s, e, n = poly.total_bounds
    return [[s, w], [n, e]]


def _css_length(value: Any, name: str) -> float | str:
    """A map element's size: pixels (a number > 0) or a CSS length (``"100%"``, ``"600px"``)."""
    if isinstance(value, str):
        if re.fullmatch(r"\s*\d+(\.\d+)?\s?([A-Za-z]{1,5}|%)\s*", value):
            return value
        raise ConfigError(
            f"{name}: expected pixels (600) or a CSS length ('600px', '100%'), got {brief(value)}"
        )
    return check_float(value, name, above=0, unit="pixels")


def save_web_map(m: folium.Map, path: str | Path, *, overwrite: bool = True) -> Path:
    """Write a map from :func:`web_map` as one self-contained HTML file, atomically.

    Raises:
        OutputError: the page would fetch something from the network (a layer added by
            hand that links a CDN), or the file cannot be written.
    """
    from geoseg.io.outputs import atomic_path

    check_path(path, "path")
    if not hasattr(m, "get_root"):
        raise ConfigError(f"m: expected the map of geoseg.viz.web_map, got {brief(m)}")
    html = m.get_root().render()
    remote = _REMOTE.findall(html) + _REMOTE_TILES.findall(html)
    if remote:
        raise OutputError(
            f"map for {str(path)!r} links {len(remote)} network resource(s) ({remote[:3]}); "
            "geoseg maps must work offline: build it with geoseg.viz.web_map"
        )
    out = Path(path)
    with atomic_path(out, overwrite=overwrite) as tmp:
        tmp.write_text(html, encoding="utf-8")
    return out
