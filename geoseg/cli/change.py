"""``geoseg change``: from-to transition areas and polygons of change between two maps."""

from __future__ import annotations

import argparse
from typing import Any

from geoseg.analysis import change
from geoseg.vectorize import DEFAULT_CHUNK_SIZE


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``change`` subcommand."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "change",
        help="transition matrix and polygons of change between two class maps",
        description=(
            "Compare two class maps (AFTER is reprojected onto BEFORE's grid with nearest "
            "neighbour if needed). Writes the change polygons (format by extension) and the "
            "from-to matrix in m² beside them (.csv)."
        ),
    )
    p.add_argument("before", help="earlier class map")
    p.add_argument("after", help="later class map")
    p.add_argument("-o", "--output", required=True, help="output vector file (e.g. change.gpkg)")
    p.add_argument("--min-area", type=float, default=0.0, metavar="M2")
    p.add_argument("--simplify", type=float, default=0.0, metavar="TOL")
    p.add_argument("--connectivity", type=int, choices=(4, 8), default=4)
    p.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE, metavar="PX")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument(
        "--band", type=int, default=None, help="band of class ids (default: the only band)"
    )
    p.add_argument("--nodata", type=float, default=None)
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--quiet", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``geoseg change``."""
    res = change(
        args.before,
        args.after,
        output=args.output,
        min_area=args.min_area,
        simplify=args.simplify,
        connectivity=args.connectivity,
        chunk_size=args.chunk_size,
        workers=args.workers,
        band=args.band,
        nodata=args.nodata,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    print("transition areas (ha):")
    print((res.matrix / 1e4).round(2).to_string())
    print(f"wrote {len(res.polygons)} change polygons to {res.polygons_path}")
    print(f"wrote the matrix to {res.matrix_path}")
    return 0
