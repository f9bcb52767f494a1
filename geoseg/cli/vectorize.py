"""``geoseg vectorize``: class raster -> polygons in a GIS vector file."""

from __future__ import annotations

import argparse
from typing import Any

from geoseg.io.vector import VECTOR_FORMATS
from geoseg.vectorize import DEFAULT_CHUNK_SIZE, vectorize_to_file


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``vectorize`` subcommand."""
    exts = ", ".join(f"{k} ({v.name})" for k, v in VECTOR_FORMATS.items())
    p: argparse.ArgumentParser = subparsers.add_parser(
        "vectorize",
        help="turn a class map into polygons (GeoPackage, GeoParquet, FlatGeobuf, ...)",
        description=(
            "Polygonize a class-map GeoTIFF chunk by chunk in parallel; regions crossing "
            f"chunk borders are merged exactly. Output format by extension: {exts}."
        ),
    )
    p.add_argument("classmap", help="class-map GeoTIFF (one band of class ids)")
    p.add_argument("-o", "--output", required=True, help="output vector file")
    p.add_argument(
        "--simplify",
        type=float,
        default=0.0,
        metavar="TOL",
        help="coverage simplification tolerance in metres (shared edges stay shared)",
    )
    p.add_argument(
        "--min-area",
        type=float,
        default=0.0,
        metavar="M2",
        help="drop polygons smaller than M2 square metres",
    )
    p.add_argument(
        "--fill-holes",
        type=float,
        default=0.0,
        metavar="M2",
        help="fill holes smaller than M2 square metres",
    )
    p.add_argument(
        "--sieve",
        type=int,
        default=0,
        metavar="PX",
        help="merge regions smaller than PX pixels into their neighbours first",
    )
    p.add_argument(
        "--classes",
        default=None,
        help="classes to keep and/or names: '1,5' or '1=developed,5=forest'",
    )
    p.add_argument(
        "--connectivity",
        type=int,
        choices=(4, 8),
        default=4,
        help="4: pixels sharing an edge form a region; 8: also corners",
    )
    p.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK_SIZE,
        metavar="PX",
        help=f"chunk edge in pixels (default {DEFAULT_CHUNK_SIZE})",
    )
    p.add_argument(
        "--workers", type=int, default=None, help="parallel worker processes (default: all cores)"
    )
    p.add_argument(
        "--probabilities",
        default=None,
        metavar="PATH",
        help="probability GeoTIFF: adds the mean confidence per polygon",
    )
    p.add_argument(
        "--instances",
        action="store_true",
        default=None,
        help="the raster is an instance map: one polygon per object id (detected from a "
        "geoseg instance COG's tags)",
    )
    p.add_argument("--objects", help="instance maps: objects CSV of geoseg predict (scores)")
    p.add_argument(
        "--regularize",
        type=float,
        default=0.0,
        metavar="M",
        help="right-angled building outlines, tolerance in metres (no overlaps)",
    )
    p.add_argument("--band", type=int, default=1, help="band of class ids (default 1)")
    p.add_argument("--nodata", type=float, default=None, help="override the nodata value")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``geoseg vectorize``."""
    n = vectorize_to_file(
        args.classmap,
        args.output,
        overwrite=args.overwrite,
        simplify=args.simplify,
        min_area=args.min_area,
        fill_holes=args.fill_holes,
        classes=args.classes,
        chunk_size=args.chunk_size,
        workers=args.workers,
        probabilities=args.probabilities,
        sieve=args.sieve,
        connectivity=args.connectivity,
        band=args.band,
        nodata=args.nodata,
        progress=not args.quiet,
        instances=args.instances,
        objects=args.objects,
        regularize=args.regularize,
    )
    print(f"wrote {n} polygons to {args.output}")
    return 0
