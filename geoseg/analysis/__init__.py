"""Analysis of class maps: areas per class and zone, and change between two dates.

* :mod:`~geoseg.analysis.areas`: :func:`class_areas` (per class, optionally per zone),
  :func:`write_stats` (CSV, or the zones with a column per class: :func:`zone_table`,
  by the output's extension: :data:`STATS_FORMATS`).
* :mod:`~geoseg.analysis.charts`: :func:`plot_class_areas` (bar chart of class areas).
* :mod:`~geoseg.analysis.change`: :func:`change` (from-to matrix and change polygons).
* :mod:`~geoseg.analysis.objects`: :func:`object_stats` (objects per class and zone:
  count, footprint area, mean and median size) of an instance map.

Areas are m² from the one area model of :mod:`geoseg.io.grid` (:func:`pixel_areas`).
"""

from geoseg.analysis.areas import (
    ALL_ZONES,
    STATS_COLUMNS,
    STATS_FORMATS,
    class_areas,
    write_stats,
    zone_table,
)
from geoseg.analysis.change import ChangeResult, change
from geoseg.analysis.charts import plot_class_areas
from geoseg.analysis.objects import OBJECT_COLUMNS, object_stats
from geoseg.io.grid import pixel_areas

__all__ = [
    "ALL_ZONES",
    "OBJECT_COLUMNS",
    "STATS_COLUMNS",
    "STATS_FORMATS",
    "ChangeResult",
    "change",
    "class_areas",
    "object_stats",
    "pixel_areas",
    "plot_class_areas",
    "write_stats",
    "zone_table",
]
