"""``geoseg label IMAGE... --prompts P.gpkg --sam MODEL -o labels.gpkg``: SAM-assisted labels."""

from __future__ import annotations

import argparse
from typing import Any


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated band numbers: {text!r}"
        ) from exc


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``geoseg label``."""
    from geoseg.labelling.label import AUTOMATIC_CPU_SECONDS

    p: argparse.ArgumentParser = subparsers.add_parser(
        "label",
        help="turn point/box prompts into class polygons with SAM (training labels)",
        description="Segment one object per prompt with SAM (Segment Anything) and write "
        "the polygons, in the image CRS, with the prompt's class and SAM's predicted IoU "
        "('score'). Point features are point prompts (label=0: background point), "
        "Polygon features are box prompts (their bounding box). The output can be "
        "data.labels.path of a training config (class_field: the --class-field). "
        "Weights are read only from the local --sam path, never downloaded.",
    )
    p.add_argument("images", nargs="+", help="GeoTIFF(s), a folder or a VRT (a mosaic)")
    p.add_argument("--prompts", help="vector layer of Point / Polygon prompts")
    p.add_argument("--prompt-layer", help="the prompts' layer (a file of several layers needs it)")
    p.add_argument(
        "--sam",
        required=True,
        help="a transformers SAM folder, a segment-anything .pth or a SAM 2 .pt",
    )
    p.add_argument(
        "--sam-kind",
        default="auto",
        choices=["auto", "transformers", "segment-anything", "sam2"],
        help="what --sam is (auto: a folder is transformers, '*sam2*' files SAM 2)",
    )
    p.add_argument("--sam-model-type", help="segment-anything: vit_b, vit_l or vit_h")
    p.add_argument("--sam2-config", help="SAM 2: the model config (sam2 package)")
    p.add_argument("-o", "--output", required=True, help=".gpkg, .geojson, ... to write")
    p.add_argument("--class-field", default="class", help="the prompts' class attribute")
    p.add_argument(
        "--classes",
        help="comma-separated valid class names (ids: their 0-based positions); "
        "unknown values are an error",
    )
    p.add_argument(
        "--bands",
        type=_ints,
        default=[1, 2, 3],
        help="three 1-based bands shown to SAM (default 1,2,3); non-8-bit bands are "
        "stretched per window between the 2nd and 98th percentiles",
    )
    p.add_argument(
        "--automatic",
        action="store_true",
        help=f"no prompts: automatic masks over the whole image. Slow on CPU "
        f"(measured {AUTOMATIC_CPU_SECONDS})",
    )
    p.add_argument("--points-per-side", type=int, default=16, help="--automatic grid")
    p.add_argument("--score-threshold", type=float, default=0.85, help="--automatic")
    p.add_argument("--class-value", default="1", help="--automatic: class of every mask")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    return p


def run(args: argparse.Namespace) -> int:
    """Label and say what was written.

    Everything is checked (options, output, SAM path and kind, imagery, prompts) before
    SAM is loaded: the library functions load it only then.
    """
    from geoseg.errors import ConfigError
    from geoseg.io.vector import check_vector_path
    from geoseg.labelling import automatic_masks, label_image, load_sam, write_labels
    from geoseg.labelling.sam import check_sam_options

    if args.automatic == bool(args.prompts):
        raise ConfigError("give either --prompts or --automatic (one of them)")
    if args.prompt_layer is not None and not args.prompts:
        raise ConfigError(
            f"--prompt-layer {args.prompt_layer!r} names a layer of the --prompts file; "
            "give --prompts too, or leave --prompt-layer out"
        )
    check_vector_path(
        args.output, overwrite=args.overwrite, inputs=[*args.images, args.prompts, args.sam]
    )
    check_sam_options(args.sam, kind=args.sam_kind, model_type=args.sam_model_type)
    loaded: list[Any] = []  # the model, loaded by label_image once the inputs are checked

    def sam() -> Any:
        loaded.append(
            load_sam(args.sam, kind=args.sam_kind, model_type=args.sam_model_type,
                     sam2_config=args.sam2_config)
        )  # fmt: skip
        return loaded[-1]

    if args.automatic:
        gdf = automatic_masks(
            args.images,
            sam,
            class_value=args.class_value,
            class_field=args.class_field,
            bands=args.bands,
            points_per_side=args.points_per_side,
            score_threshold=args.score_threshold,
            progress=True,
        )
    else:
        classes = args.classes.split(",") if args.classes else None
        gdf = label_image(
            args.images,
            args.prompts,
            sam,
            class_field=args.class_field,
            classes=classes,
            bands=args.bands,
            progress=True,
            prompt_layer=args.prompt_layer,
        )
    out = write_labels(gdf, args.output, overwrite=args.overwrite)
    print(f"wrote {out}: {len(gdf)} polygons ({loaded[0].name})")
    return 0
