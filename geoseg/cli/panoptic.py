"""``geoseg panoptic``: fuse a land-cover map with an object map; export COCO panoptic."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``geoseg panoptic`` and its options."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "panoptic",
        help="fuse a class map with an instance map; export COCO panoptic (PNG + JSON)",
        description=(
            "A panoptic map is a class map plus an instance map on one grid. With -o, fuse "
            "a land-cover CLASSES map with an INSTANCES map of things (objects take their "
            "class, other pixels keep their land cover). With --coco, write the pair (the "
            "fused one when -o is given) in the COCO panoptic format: one PNG per tile and "
            "panoptic.json."
        ),
    )
    p.add_argument("classes", help="class map GeoTIFF (land cover, or a panoptic class map)")
    p.add_argument("instances", help="instance map GeoTIFF on the same grid")
    p.add_argument("-o", "--output", help="fused class map to write")
    p.add_argument("--instances-output", help="fused instance map to write (with -o)")
    p.add_argument("--thing-class", type=int, help="class id of the objects (1-band instances)")
    p.add_argument("--coco", metavar="DIR", help="write the COCO panoptic export here")
    p.add_argument("--tile-size", type=int, default=1024, help="COCO image side (pixels)")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    return p


def run(args: argparse.Namespace) -> int:
    """Run ``geoseg panoptic``."""
    from geoseg.analysis.panoptic import export_coco_panoptic, fuse_panoptic
    from geoseg.errors import ConfigError, OutputError
    from geoseg.io.outputs import check_distinct

    if args.output is None and args.coco is None:
        raise ConfigError("give -o (fuse the two maps) and/or --coco DIR (export them)")
    coco_json = Path(args.coco) / "panoptic.json" if args.coco is not None else None
    if args.coco is not None and Path(args.coco).exists() and not Path(args.coco).is_dir():
        raise OutputError(f"--coco {args.coco!r} is a file; give a folder (new or a COCO export)")
    check_distinct({"-o": args.output, "--instances-output": args.instances_output,
                    "--coco": coco_json})  # fmt: skip
    classes, instances = args.classes, args.instances
    if args.output is not None:
        if args.instances_output is None:
            raise ConfigError("--instances-output: the fused instance map's path is needed")
        classes, instances = fuse_panoptic(
            args.classes, args.instances, args.output, args.instances_output,
            thing_class=args.thing_class, overwrite=args.overwrite,
        )  # fmt: skip
        print(f"wrote {classes} and {instances}")
    if args.coco is not None:
        path = export_coco_panoptic(
            classes, instances, args.coco, tile_size=args.tile_size, overwrite=args.overwrite
        )
        print(f"wrote {path}")
    return 0
