"""``geoseg predict CHECKPOINT INPUT... -o CLASSMAP.tif``: tiled prediction over a mosaic."""

from __future__ import annotations

import argparse
from typing import Any

from geoseg.inference.backends import BACKENDS, PRECISIONS, TTA_MODES
from geoseg.inference.blending import BLEND_WINDOWS, DEFAULT_BLEND


def _bands(text: str) -> list[int | str]:
    return [int(b) if b.strip().isdigit() else b.strip() for b in text.split(",") if b.strip()]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register the ``predict`` subcommand."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "predict",
        help="predict a class map over GeoTIFFs (tiled, seam-free, Dask-parallel)",
        description=(
            "Segment one GeoTIFF, several GeoTIFFs forming a mosaic (any CRS: reprojected "
            "to one grid), a folder or a VRT with a geoseg checkpoint. Writes a "
            "Cloud-Optimized GeoTIFF class map with colour table and class names."
        ),
    )
    p.add_argument("checkpoint", help="geoseg checkpoint (.safetensors)")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="GeoTIFF(s), a folder or a VRT")
    p.add_argument("-o", "--output", required=True, help="class map GeoTIFF to write")
    p.add_argument("--probabilities", help="also write per-class probabilities (uint8 COG)")
    p.add_argument(
        "--instances",
        help="instance/panoptic models: the instance-id COG (uint32 id, 0 = none; band 2 class)",
    )
    p.add_argument("--objects", help="instance/panoptic models: a CSV table of the objects")
    p.add_argument("--tile-size", type=int, help="window in pixels (default: checkpoint, >= 512)")
    p.add_argument("--overlap", type=int, help="window overlap in pixels (default: tile/8)")
    p.add_argument("--batch-size", type=int, default=8, help="windows per model call")
    p.add_argument(
        "--blend",
        default=DEFAULT_BLEND,
        choices=sorted(BLEND_WINDOWS),
        help="blend window of overlapping windows (default %(default)s: a cosine cross-fade "
        "that ignores the pixels nearest each window edge)",
    )
    p.add_argument(
        "--tta",
        nargs="?",
        const="d4",
        default="none",
        choices=sorted(TTA_MODES),
        help="test-time augmentation (bare --tta = d4, 8 flips/rotations)",
    )
    p.add_argument("--workers", type=int, help="Dask workers (threads or processes)")
    p.add_argument("--threads-per-worker", type=int, help="intra-op threads per model")
    p.add_argument(
        "--scheduler",
        default="threads",
        help="threads, processes, synchronous or tcp://host:port of a dask scheduler",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--precision", default="fp32", choices=PRECISIONS)
    p.add_argument("--backend", default="auto", choices=BACKENDS)
    p.add_argument("--bands", type=_bands, help="input bands in model order, e.g. 3,2,1")
    p.add_argument("--crs", help="CRS to assume for inputs without one (e.g. EPSG:32618)")
    p.add_argument("--dst-crs", help="output grid CRS (default: the first input's)")
    p.add_argument("--resolution", type=float, help="output pixel size in dst CRS units")
    p.add_argument("--resampling", default="nearest", help="for reprojected inputs")
    p.add_argument(
        "--nodata",
        default="auto",
        metavar="VALUE",
        help="no-data value of inputs that declare none: auto (default: the model's "
        "training no-data value and band rule), a number, or none",
    )
    p.add_argument("--block-size", type=int, default=1024, help="output block (pixels)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep finished blocks beside the outputs while running and continue an "
        "interrupted run of the same command from them (bit-identical result)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``geoseg predict``."""
    from geoseg.inference import predict

    stats: dict[str, Any] = {}
    result = predict(
        args.checkpoint,
        args.inputs,
        args.output,
        probabilities=args.probabilities,
        instances=args.instances,
        objects=args.objects,
        tile_size=args.tile_size,
        overlap=args.overlap,
        batch_size=args.batch_size,
        blend=args.blend,
        tta=args.tta,
        workers=args.workers,
        threads_per_worker=args.threads_per_worker,
        scheduler=args.scheduler,
        device=args.device,
        precision=args.precision,
        backend=args.backend,
        bands=args.bands,
        crs=args.crs,
        dst_crs=args.dst_crs,
        resolution=args.resolution,
        resampling=args.resampling,
        nodata=_nodata_option(args.nodata),
        block_size=args.block_size,
        overwrite=args.overwrite,
        resume=args.resume,
        progress=not args.quiet,
        stats=stats,
    )
    paths = result if isinstance(result, tuple) else (result,)
    mpx = stats["height"] * stats["width"] / 1e6
    print(
        f"wrote {', '.join(str(p) for p in paths)} ({stats['width']} x {stats['height']} px, "
        f"{stats['windows']} windows, {stats['backend']} on {stats['device']}, "
        f"{mpx / stats['seconds']:.2f} Mpx/s)"
    )
    return 0


def _nodata_option(text: str) -> float | str:
    """``--nodata``: a number, else the word as given (``auto``/``none``, checked later)."""
    try:
        return float(text)
    except ValueError:
        return text
