"""Buildings on real data: the instance model against a semantic model + connected components.

For each config (Rio, Alexandria), on the same held-out test blocks:

* the instance model (``task: instance``, the config as shipped), scored by
  ``geoseg evaluate`` (objects decoded per tile as prediction decodes them);
* a semantic model trained on the same data (the same config with ``task: semantic``),
  whose building mask is split into objects by 4-connected components;
* with ``--models maskrcnn``, Mask R-CNN (the object-list method, torchvision, from scratch) on
  the same data, split and tiles (``configs/*_maskrcnn.yaml``);
* with ``--models mask2former``, Mask2Former (query-based, HF transformers, from scratch),
  likewise (``configs/*_mask2former.yaml``);

both scored by the SpaceNet rule (IoU >= 0.5; F1, precision, recall) and PQ.

    nice -n 5 .venv/bin/python benchmarks/instances_real.py \\
        --json benchmarks/results/instances_real.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "rio": ROOT / "configs" / "spacenet_rio_buildings_instances.yaml",
    "alexandria": ROOT / "configs" / "alexandria_buildings_instances.yaml",
}
#: The object-list (Mask R-CNN) configs on the same data, split and tiles.
MASKRCNN = {
    "rio": ROOT / "configs" / "spacenet_rio_buildings_maskrcnn.yaml",
    "alexandria": ROOT / "configs" / "alexandria_buildings_maskrcnn.yaml",
}
#: The query-based object-list (Mask2Former) configs on the same data, split and tiles.
MASK2FORMER = {
    "rio": ROOT / "configs" / "spacenet_rio_buildings_mask2former.yaml",
    "alexandria": ROOT / "configs" / "alexandria_buildings_mask2former.yaml",
}


def semantic_cc_scores(checkpoint: Path, config: Path, overrides: list[str]) -> dict:
    """The semantic model's building mask split by connected components, on the test tiles."""
    import torch
    from scipy import ndimage

    from geoseg.config import ExperimentConfig
    from geoseg.models import get_adapter, load_model
    from geoseg.models.adapter import pad_forward
    from geoseg.tasks.instance import ObjectTally
    from geoseg.training import make_datamodule

    model, meta = load_model(checkpoint)
    adapter = get_adapter(meta.adapter)
    exp = ExperimentConfig.load(config, overrides=overrides)  # task: instance -> targets
    dm = make_datamodule(exp)
    dm.setup("test")
    thing = [k for k, c in enumerate(meta.classes) if c.thing] or [1]
    four = ndimage.generate_binary_structure(2, 1)
    tally = ObjectTally()
    with torch.inference_mode():
        for batch in dm.test_dataloader():
            out = adapter.outputs(pad_forward(model, batch["image"]), meta.outputs)
            pred = out["classes"].argmax(1).numpy()
            for i in range(len(pred)):
                valid = batch["mask"][i].numpy() != -100
                mask = np.isin(pred[i], thing) & valid
                ids = ndimage.label(mask, structure=four)[0]
                tally.add(ids, batch["instances"][i].numpy(), valid)
    return tally.report()


def _scores(report: dict, seconds: float, best_epoch: int | None) -> dict:
    return {
        **report["instance"],
        "pq_building": report["panoptic"]["per_class"].get("building", {}).get("pq"),
        "train_seconds": seconds,
        "best_epoch": best_epoch,
        "building_iou": report["iou"].get("building"),
    }


def run(name: str, work: Path, epochs: int | None, models: list[str]) -> dict:
    """Train and score the chosen ``models`` on data set ``name``."""
    from geoseg.evaluation import evaluate
    from geoseg.training import train

    config = CONFIGS[name]
    common = ["training.progress_bar=false", "training.num_threads=2"]
    if epochs is not None:
        common.append(f"training.max_epochs={epochs}")
    out: dict = {}
    if "instance" in models:
        t0 = time.perf_counter()
        inst = train(config, overrides=common, output_dir=work / f"{name}_instance")
        report = evaluate(inst.checkpoint, split="test", progress=False)
        out["instance_model"] = _scores(report, time.perf_counter() - t0, inst.best_epoch)
    if "semantic" in models:
        t0 = time.perf_counter()
        sem = train(config, overrides=[*common, "task=semantic"],
                    output_dir=work / f"{name}_semantic")  # fmt: skip
        t_sem = time.perf_counter() - t0
        cc = semantic_cc_scores(sem.checkpoint, config, common)
        iou = sem.metrics["test"]["iou"].get("building")
        out["semantic_cc"] = {**cc, "train_seconds": t_sem, "building_iou": iou}
    if "maskrcnn" in models:
        t0 = time.perf_counter()
        mr = train(MASKRCNN[name], overrides=common, output_dir=work / f"{name}_maskrcnn")
        report = evaluate(mr.checkpoint, split="test", progress=False)
        out["maskrcnn"] = _scores(report, time.perf_counter() - t0, mr.best_epoch)
    if "mask2former" in models:
        t0 = time.perf_counter()
        m2f = train(MASK2FORMER[name], overrides=common, output_dir=work / f"{name}_mask2former")
        report = evaluate(m2f.checkpoint, split="test", progress=False)
        out["mask2former"] = _scores(report, time.perf_counter() - t0, m2f.best_epoch)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", default=list(CONFIGS))
    ap.add_argument("--epochs", type=int, default=None, help="override max_epochs")
    ap.add_argument("--models", nargs="*", default=["instance", "semantic"],
                    choices=["instance", "semantic", "maskrcnn", "mask2former"])  # fmt: skip
    ap.add_argument("--json", default=None, help="results file (merged into when it exists)")
    ap.add_argument("--workdir", default=None)
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="geoseg-inst-real-"))
    results: dict = {}
    if args.json and Path(args.json).is_file():
        results = json.loads(Path(args.json).read_text())
    for name in args.only:
        results.setdefault(name, {}).update(run(name, work, args.epochs, args.models))
        print(name, json.dumps(results[name], indent=1), flush=True)
    print(
        f"\n{'data':11s} {'model':22s} {'F1':>6s} {'prec':>6s} {'rec':>6s} {'PQ':>6s} {'IoU':>6s}"
    )
    for name, r in results.items():
        for kind, v in r.items():

            def f(x: object) -> str:
                return f"{x:6.3f}" if isinstance(x, float) else f"{'-':>6s}"

            print(f"{name:11s} {kind:22s} {f(v['f1'])} {f(v['precision'])} {f(v['recall'])} "
                  f"{f(v['pq'])} {f(v['building_iou'])}")  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    sys.exit(0)


if __name__ == "__main__":
    main()
