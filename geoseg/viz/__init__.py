"""Look at results: static figures (matplotlib) and offline interactive maps (Leaflet).

- :func:`plot_side_by_side`: imagery | prediction | polygons with a legend and scale bars.
- :func:`web_map` / :func:`save_web_map`: imagery, class map and polygons as layers of a
  Leaflet map with a legend, a layer control and popups (class, area); the page inlines
  the vendored Leaflet and embeds its data, so it draws with no network. In Jupyter a
  map renders inline.
"""

from geoseg.viz._figures import add_scale_bar, plot_side_by_side
from geoseg.viz._render import DisplayRaster, colorize, read_display, stretch_rgb
from geoseg.viz._webmap import leaflet_assets, png_data_uri, save_web_map, web_map

__all__ = [
    "DisplayRaster",
    "add_scale_bar",
    "colorize",
    "leaflet_assets",
    "plot_side_by_side",
    "png_data_uri",
    "read_display",
    "save_web_map",
    "stretch_rgb",
    "web_map",
]
