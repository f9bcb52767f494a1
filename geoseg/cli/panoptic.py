"""``geoseg panoptic``: fuse a land-cover map with an object map; export COCO panoptic."""

from __future__ import annotations

import argparse
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
    """Run ``geoseg panoptic``: every output is written, or none is."""
    from geoseg.analysis.panoptic import write_panoptic

    done = write_panoptic(
        args.classes,
        args.instances,
        output=args.output,
        instances_output=args.instances_output,
        coco=args.coco,
        thing_class=args.thing_class,
        tile_size=args.tile_size,
        overwrite=args.overwrite,
    )
    if done.classes is not None:
        print(f"wrote {done.classes} and {done.instances}")
    if done.coco is not None:
        print(f"wrote {done.coco}")
    return 0
