"""``geoseg export CHECKPOINT --format onnx|deepness -o model.onnx``: a standalone model."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``geoseg export``."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "export",
        help="export a checkpoint to ONNX (any runtime) or for the QGIS Deepness plugin",
        description="Write a checkpoint as a standalone ONNX model with geoseg's "
        "normalization inside the graph. --format deepness follows the QGIS Deepness "
        "plugin's contract (metadata, /255 input, softmax output), so the model opens in "
        "QGIS and segments the map there.",
    )
    p.add_argument("checkpoint", help="model.safetensors written by geoseg train")
    p.add_argument("--format", default="onnx", choices=["onnx", "deepness"])
    p.add_argument("-o", "--output", required=True, help="the .onnx file to write")
    p.add_argument("--tile-size", type=int, default=None, help="model input size (pixels)")
    p.add_argument(
        "--overlap-percent",
        type=float,
        default=None,
        help="Deepness: tile overlap in %% of the tile (default: geoseg's default overlap)",
    )
    p.add_argument(
        "--nodata",
        type=float,
        default=None,
        help="raw value of no-data pixels, masked inside the graph (default: the "
        "checkpoint's image no-data)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    return p


def run(args: argparse.Namespace) -> int:
    """Export and say what was written."""
    from geoseg.deploy import export_model

    out = export_model(
        args.checkpoint,
        args.output,
        format=args.format,
        tile_size=args.tile_size,
        overlap_percent=args.overlap_percent,
        nodata=args.nodata,
        overwrite=args.overwrite,
    )
    print(f"wrote {out} ({args.format})")
    return 0
