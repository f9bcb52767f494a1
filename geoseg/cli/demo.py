"""``geoseg demo``: map the bundled North Carolina scene end to end (see :mod:`geoseg.demo`)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``geoseg demo`` and its options."""
    p = subparsers.add_parser(
        "demo",
        help="map the bundled NC Landsat scene end to end with the shipped model",
        description=(
            "Predict land cover over the bundled North Carolina Landsat 7 scene (cut into a "
            "4-tile mosaic) with models/nc_landcover.safetensors, vectorize it, compute class "
            "areas, and write a COG, probabilities, a GeoPackage, a CSV and chart, a "
            "side-by-side PNG and an offline interactive HTML map. Re-running replaces the "
            "previous demo outputs."
        ),
    )
    p.add_argument(
        "--output",
        "-o",
        default="demo-output",
        metavar="DIR",
        help="output folder (default: demo-output/)",
    )
    p.add_argument(
        "--model",
        default=None,
        metavar="PATH",
        help="checkpoint to use (default: models/nc_landcover.safetensors in the working "
        "directory, i.e. run from a geoseg checkout)",
    )
    p.add_argument(
        "--data",
        default=None,
        metavar="DIR",
        help="folder of the NC Landsat band files (default: data/nc-landsat7-landcover in "
        "the working directory)",
    )
    p.add_argument(
        "--workers", type=int, default=None, help="Dask threads (default: all CPU cores)"
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def run(args: argparse.Namespace) -> int:
    """Run the demo; messages and the summary go to stdout."""
    from geoseg.demo import run_demo

    run_demo(
        args.output,
        model=args.model,
        data_dir=args.data,
        workers=args.workers,
        progress=not args.no_progress,
    )
    return 0
