"""``geoseg evaluate CHECKPOINT``: score a trained model on a split of its data."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``geoseg evaluate``."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "evaluate",
        help="score a checkpoint on the test (or val/train) split",
        description="Evaluate a geoseg checkpoint on a split of the data it was trained "
        "on (the config stored in the checkpoint) or of another config. Writes a JSON "
        "report and <stem>_confusion.png beside it.",
    )
    p.add_argument("checkpoint", help="model.safetensors written by geoseg train")
    p.add_argument("--split", default="test", choices=["test", "val", "train"])
    p.add_argument("--config", default=None, help="experiment YAML to take the data from")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. data.batch_size=4 (repeatable)",
    )
    p.add_argument("-o", "--output", default=None, help="report JSON path")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing report (and its _confusion.png); never an input",
    )
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:1)")
    return p


def run(args: argparse.Namespace) -> int:
    """Evaluate and print the headline scores."""
    from geoseg.evaluation import evaluate

    rep = evaluate(
        args.checkpoint,
        split=args.split,
        config=args.config,
        output=args.output,
        overwrite=args.overwrite,
        overrides=args.overrides,
        device=args.device,
    )
    miou, acc = rep["miou"], rep["overall_accuracy"]
    print(
        f"{args.split}: mIoU {'-' if miou is None else f'{miou:.4f}'}  "
        f"accuracy {'-' if acc is None else f'{acc:.4f}'}  pixels {rep['pixels']}"
    )
    for name, v in rep["iou"].items():
        f1 = rep["f1"][name]
        print(
            f"  {name:<16} IoU {'-' if v is None else f'{v:.4f}'}  "
            f"F1 {'-' if f1 is None else f'{f1:.4f}'}"
        )
    if args.output:
        print(f"report: {args.output}")
    return 0
