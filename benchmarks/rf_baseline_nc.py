"""Per-pixel random-forest baseline for the NC land-cover U-Net.

Trains a scikit-learn RandomForestClassifier on the valid labelled pixels of the NC
train split (same six Landsat bands, raw values: trees do not need normalization),
predicts every valid labelled pixel of the same spatially held-out test region, scores
it with the same metrics code as the network (geoseg.metrics) and writes
``rf_baseline_test.json`` + ``rf_baseline_test_confusion.png`` into the U-Net run folder,
then prints a table next to the U-Net's test scores (from that folder's metrics.json).

    nice -n 5 .venv/bin/python benchmarks/rf_baseline_nc.py --run runs/nc_landcover
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from sklearn.ensemble import RandomForestClassifier

from geoseg.config import ExperimentConfig
from geoseg.data import GeoDataModule
from geoseg.evaluation import write_report
from geoseg.tasks.metrics import confusion_from_arrays, format_table

ROOT = Path(__file__).parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "nc_landcover.yaml"))
    parser.add_argument("--run", default=str(ROOT / "runs" / "nc_landcover"))
    parser.add_argument("--max-train-pixels", type=int, default=60_000)
    parser.add_argument("--trees", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    exp = ExperimentConfig.load(args.config)
    dm = GeoDataModule(exp.data, seed=exp.training.seed)
    classes = dm.classes
    t0 = time.perf_counter()
    x_train, y_train = dm.split_pixels("train")
    x_test, y_test = dm.split_pixels("test")
    t_read = time.perf_counter() - t0
    rng = np.random.default_rng(args.seed)
    if len(y_train) > args.max_train_pixels:
        keep = rng.choice(len(y_train), args.max_train_pixels, replace=False)
        x_fit, y_fit = x_train[keep], y_train[keep]
    else:
        x_fit, y_fit = x_train, y_train
    rf = RandomForestClassifier(
        n_estimators=args.trees,
        min_samples_leaf=2,
        n_jobs=args.jobs,
        random_state=args.seed,
    )
    t0 = time.perf_counter()
    rf.fit(x_fit, y_fit)
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred = rf.predict(x_test)
    t_pred = time.perf_counter() - t0
    report = confusion_from_arrays(pred, y_test, classes)
    report = {
        "split": "test",
        "model": "RandomForestClassifier (per pixel, raw bands)",
        "train_pixels_available": len(y_train),
        "train_pixels_used": len(y_fit),
        "trees": args.trees,
        "seconds": {"read": t_read, "fit": t_fit, "predict": t_pred},
        **report,
    }
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    json_path, png_path = write_report(
        report, run / "rf_baseline_test.json", classes=classes, title="RF baseline, test"
    )
    print(f"wrote {json_path} and {png_path}")
    print(
        f"train pixels {len(y_train)} (used {len(y_fit)}), test pixels {len(y_test)}; "
        f"fit {t_fit:.1f}s, predict {t_pred:.1f}s (shared 2-core machine)"
    )
    reports = {"RF (pixel)": report}
    metrics_json = run / "metrics.json"
    if metrics_json.is_file():
        unet = json.loads(metrics_json.read_text()).get("test")
        if unet:
            if "miou_reference_classes" not in unet:  # run made before the key existed
                ref = [v for k, v in unet["iou"].items() if unet["support"][k] > 0]
                ref = [v for v in ref if v is not None]
                unet["miou_reference_classes"] = sum(ref) / len(ref) if ref else None
            reports = {"U-Net": unet, "RF (pixel)": report}
            print(f"U-Net test pixels {unet['pixels']}, RF test pixels {report['pixels']}")
    print(format_table(reports))


if __name__ == "__main__":
    main()
