"""CPU seconds per 512 x 512 tile: Mask2Former (geoseg's default config) next to a U-Net.

Run from the repository root (2 cores: about a minute):

    nice -n 5 .venv/bin/python benchmarks/mask2former_speed.py \\
        --json benchmarks/results/mask2former_speed.json

Both models take the same input (batch 1, ``--bands`` bands, ``--classes`` classes) in
eval mode under ``torch.inference_mode``; each is warmed up, then timed ``--reps`` times
(the median is reported). Mask2Former is timed with its output post-processing, as
prediction runs it: per-pixel class scores (semantic) and the object lists (instance).
The U-Net is smp's ``Unet`` with a ``resnet18`` encoder. For scale, a third Mask2Former
uses transformers' own defaults (Swin-T backbone, 100 queries, 10 decoder layers), the
size of the published models. The ratios are within this one run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from geoseg.classes import ClassTable
from geoseg.models.registry import build_model, get_adapter
from geoseg.tasks import task_outputs

#: transformers' own Mask2FormerConfig / SwinConfig defaults (geoseg's are smaller).
TRANSFORMERS_DEFAULTS: dict[str, Any] = {
    "num_queries": 100,
    "feature_size": 256,
    "mask_feature_size": 256,
    "hidden_dim": 256,
    "encoder_layers": 6,
    "decoder_layers": 10,
    "num_attention_heads": 8,
    "dim_feedforward": 2048,
    "encoder_feedforward_dim": 1024,
    "backbone": {"embed_dim": 96, "depths": [2, 2, 6, 2], "num_heads": [3, 6, 12, 24]},
}


def _seconds(fn: Callable[[], Any], warmup: int, reps: int) -> list[float]:
    """Wall seconds of ``reps`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _params(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


def main() -> None:
    """Time the models and write the JSON report."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="write the results here")
    ap.add_argument("--size", type=int, default=512, help="tile side (pixels)")
    ap.add_argument("--bands", type=int, default=13)
    ap.add_argument("--classes", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    torch.manual_seed(0)
    table = ClassTable.from_config(
        [{"id": k, "name": f"c{k}", "thing": k == args.classes - 1} for k in range(args.classes)]
    )
    x = torch.randn(1, args.bands, args.size, args.size)
    adapter = get_adapter("transformers")
    models = {
        "unet_resnet18": build_model("unet", in_channels=args.bands,
                                     outputs=task_outputs("semantic", table), encoder="resnet18"),
    }  # fmt: skip
    for task in ("semantic", "instance"):
        models[f"mask2former_{task}"] = build_model(
            "mask2former", in_channels=args.bands, outputs=task_outputs(task, table, adapter),
            encoder="swin", classes=table, adapter="transformers",
        )  # fmt: skip
    models["mask2former_semantic_transformers_defaults"] = build_model(
        "mask2former", in_channels=args.bands, outputs=task_outputs("semantic", table, adapter),
        encoder="swin", classes=table, adapter="transformers", kwargs=TRANSFORMERS_DEFAULTS,
    )  # fmt: skip
    results: dict[str, Any] = {}
    for name, model in models.items():
        model.eval()

        def run(model: torch.nn.Module = model) -> None:
            with torch.inference_mode():
                model(x)

        secs = _seconds(run, args.warmup, args.reps)
        results[name] = {
            "params_m": round(_params(model), 3),
            "seconds": [round(s, 4) for s in secs],
            "median_s": round(statistics.median(secs), 4),
        }
        print(f"{name}: {results[name]['median_s']:.3f} s/tile, {results[name]['params_m']} M")
    unet = results["unet_resnet18"]["median_s"]
    report = {
        "tile": [args.size, args.size],
        "bands": args.bands,
        "classes": args.classes,
        "batch": 1,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "mask2former_defaults": "geoseg.models.mask2former SMALL_DEFAULTS / SWIN_DEFAULTS",
        "models": results,
        "ratio_over_unet": {
            k: round(v["median_s"] / unet, 2) for k, v in results.items() if k != "unet_resnet18"
        },
    }
    print(json.dumps(report["ratio_over_unet"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
