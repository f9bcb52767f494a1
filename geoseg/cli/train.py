"""``geoseg train CONFIG.yaml``: fit a model as described by an experiment config."""

from __future__ import annotations

import argparse
from typing import Any

EPILOG = """\
overrides:
  --set KEY=VALUE changes one config value before the run; repeat it for several.
  KEY is a dotted path into the YAML (section.key[.subkey]) and VALUE is parsed as
  YAML, so 3 is an int, 0.001 or 1.0e-3 a float (YAML reads a bare 1e-3 as text),
  null is None, true/false are booleans and [1, 2] is a list:
    geoseg train configs/nc_landcover.yaml -o runs/nc \\
        --set training.max_epochs=3 --set data.batch_size=4 \\
        --set "training.loss={ce: 1.0, dice: 0.5}"
  A key that does not exist is an error naming the valid keys.

outputs (in OUTDIR): model.safetensors (best validation mIoU, with metadata),
metrics.json (per-epoch history, val and test reports), config.yaml, logs/.
"""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``geoseg train``."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "train",
        help="train a segmentation model from a YAML config",
        description="Train a segmentation model from an experiment config "
        "(sections data, model, training, output_dir).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="experiment config YAML (see configs/)")
    p.add_argument(
        "-o",
        "--output-dir",
        default=None,
        help="run folder (default: the config's output_dir)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config value, e.g. training.max_epochs=3 (repeatable)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="train into a run folder that already holds a model (replaced on success)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    """Train and print the best checkpoint's scores."""
    from geoseg.training import train

    result = train(
        args.config,
        overrides=args.overrides,
        output_dir=args.output_dir,
        overwrite=args.overwrite,
    )
    print(f"checkpoint: {result.checkpoint}")
    print(f"best epoch: {result.best_epoch}")
    for split in ("val", "test"):
        rep = result.metrics.get(split)
        if rep:
            miou = rep.get("miou")
            acc = rep.get("overall_accuracy")
            print(
                f"{split}: mIoU {miou if miou is None else round(miou, 4)}  "
                f"accuracy {acc if acc is None else round(acc, 4)}"
            )
            for name, v in rep["iou"].items():
                print(f"  IoU {name:<16} {'-' if v is None else f'{v:.4f}'}")
            inst = rep.get("instance")
            if inst:
                print("  objects: " + ", ".join(
                    f"{k} {'-' if inst.get(k) is None else f'{inst[k]:.4f}'}"
                    for k in ("f1", "precision", "recall", "pq")))  # fmt: skip
    return 0
