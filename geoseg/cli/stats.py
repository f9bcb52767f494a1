"""``geoseg stats``: area per class, overall and per zone, as CSV or GIS layer, plus a chart."""

from __future__ import annotations

import argparse
from typing import Any

from geoseg.analysis import class_areas, object_stats, write_stats
from geoseg.io.bands import is_instance_map
from geoseg.vectorize import DEFAULT_CHUNK_SIZE


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``stats`` subcommand."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "stats",
        help="area (m², ha, %%) per class, overall and per zone polygon",
        description=(
            "Area of each class of a class map, overall and per zone (districts, parcels), "
            "computed chunk by chunk in true ground units. Writes the statistics in the "
            "format of the output's extension (.csv: one row per zone and class; .gpkg, "
            ".geojson, .fgb: the zone polygons with a column per class, area_ha_<class> "
            "and percent_<class>, for a choropleth map; .gpkg without --zones: the CSV's "
            "table) and a bar chart (same name, .png). For an instance map (geoseg predict "
            "--instances): objects per class and zone, their count, footprint area and "
            "mean and median size, as CSV."
        ),
    )
    p.add_argument("classmap", help="class-map GeoTIFF")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="output: .csv, .gpkg, or with --zones also .geojson or .fgb",
    )
    p.add_argument("--zones", default=None, help="zone polygons (any OGR vector file)")
    p.add_argument(
        "--zone-field",
        default=None,
        help="zone attribute naming each zone (zones where it is empty are reported one by "
        "one as '(no FIELD, feature N)')",
    )
    p.add_argument("--zone-layer", default=None, help="the zones' layer (files of several)")
    p.add_argument("--classes", default=None, help="classes to report and/or names: '1,5=forest'")
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, metavar="PX")
    p.add_argument(
        "--band", type=int, default=None, help="band of class ids (default: the only band)"
    )
    p.add_argument("--nodata", type=float, default=None, help="override the nodata value")
    p.add_argument("--no-plot", action="store_true", help="do not write the bar chart")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``geoseg stats``."""
    from geoseg.analysis.areas import check_stats_outputs
    from geoseg.io.outputs import check_output_path, check_output_suffix

    inputs = (args.classmap, args.zones)
    check_output_path(args.output, overwrite=args.overwrite, inputs=inputs)
    if is_instance_map(args.classmap):
        check_output_suffix(
            args.output, (".csv",), what="an instance map's object statistics (CSV)"
        )
        objects = object_stats(
            args.classmap, zones=args.zones, zone_field=args.zone_field,
            zone_layer=args.zone_layer, chunk_size=args.chunk_size, progress=not args.quiet,
        )  # fmt: skip
        from geoseg.io.outputs import atomic_path

        with atomic_path(args.output, overwrite=args.overwrite) as tmp:
            objects.to_csv(tmp, index=False, float_format="%.6f")
        print(objects.to_string(index=False, float_format=lambda v: f"{v:,.2f}"))
        print(f"wrote {args.output}")
        return 0
    plot = not args.no_plot
    check_stats_outputs(
        args.output, plot=plot, overwrite=args.overwrite, inputs=inputs, zones=args.zones
    )
    stats = class_areas(
        args.classmap,
        zones=args.zones,
        zone_field=args.zone_field,
        zone_layer=args.zone_layer,
        classes=args.classes,
        chunk_size=args.chunk_size,
        band=args.band,
        nodata=args.nodata,
        progress=not args.quiet,
    )
    out, png = write_stats(
        stats, args.output, plot=plot, overwrite=args.overwrite, inputs=inputs,
        zones=args.zones, zone_field=args.zone_field, zone_layer=args.zone_layer,
    )  # fmt: skip
    print(stats.to_string(index=False, float_format=lambda v: f"{v:,.2f}"))
    print(f"wrote {out}" + (f" and {png}" if png else ""))
    return 0
