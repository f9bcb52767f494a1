"""Accuracy of ``geoseg label`` box prompts on real SpaceNet-1 Rio building footprints.

For every footprint of the WorldView-2 chips img4-img10 that lies inside its chip, a box
prompt (the footprint's bounding box) is given to SAM; the IoU of the resulting polygon
with the footprint is measured in a metric CRS (SIRGAS 2000 / UTM 23S). Reports the mean
IoU over all footprints, per chip, and the time per window / per prompt.

Needs a real SAM checkpoint (never downloaded: give a local path)::

    python benchmarks/sam_label_rio.py --sam /path/to/sam-vit-base   # transformers folder
    python benchmarks/sam_label_rio.py --sam sam_vit_b_01ec64.pth    # segment-anything

Writes ``benchmarks/results/sam_label_rio.json`` (or ``--output``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import shapely

from geoseg.labelling import label_image, load_sam

ROOT = Path(__file__).resolve().parents[1]
RIO = ROOT / "data" / "spacenet1-rio-buildings"
METRIC = "EPSG:31983"


def chip_prompts(i: int) -> tuple[Path, gpd.GeoDataFrame]:
    """The chip's image and its footprints that lie inside the imagery (box prompts)."""
    image = RIO / "3band" / f"3band_013022223130_Public_img{i}.tif"
    fp = gpd.read_file(RIO / "vectorData" / "geoJson" / f"013022223130_Public_img{i}_Geo.geojson")
    if len(fp) == 0:
        return image, fp
    fp = fp.set_geometry(shapely.force_2d(fp.geometry.values)).to_crs("EPSG:4326")
    with rasterio.open(image) as ds:
        inside = shapely.box(*ds.bounds)
        rgb = ds.read()
        t = ds.transform
    fp = fp[fp.within(inside) & ~fp.is_empty].reset_index(drop=True)
    # keep footprints whose centre has imagery (chips are mostly black outside the scene)
    keep = []
    for g in fp.geometry:
        c = g.representative_point()
        row, col = rasterio.transform.rowcol(t, c.x, c.y)
        keep.append(bool(rgb[:, int(row), int(col)].any()))
    fp = fp[np.array(keep, dtype=bool)].reset_index(drop=True)
    return image, gpd.GeoDataFrame({"class": ["building"] * len(fp)}, geometry=fp.geometry)


def main() -> None:
    """Run the benchmark and write the JSON report."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sam", required=True, help="local SAM folder or checkpoint")
    ap.add_argument("--sam-kind", default="auto")
    ap.add_argument("--sam-model-type", default=None)
    ap.add_argument("--sam2-config", default=None)
    ap.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "sam_label_rio.json"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    sam = load_sam(
        args.sam, kind=args.sam_kind, model_type=args.sam_model_type, sam2_config=args.sam2_config
    )
    load_s = time.perf_counter() - t0
    ious: list[float] = []
    per_chip = {}
    label_s = 0.0
    for i in range(4, 11):
        image, prompts = chip_prompts(i)
        if len(prompts) == 0:
            continue
        t = time.perf_counter()
        out = label_image(image, prompts, sam)
        label_s += time.perf_counter() - t
        truth = prompts.to_crs(METRIC).geometry.values
        pred = dict(zip(out["prompt_id"], out.to_crs(METRIC).geometry.values, strict=True))
        chip = []
        for k, g in enumerate(truth):
            p = pred.get(k)  # an empty mask counts as IoU 0
            inter = 0.0 if p is None else shapely.area(shapely.intersection(p, g))
            union = shapely.area(g) if p is None else shapely.area(shapely.union(p, g))
            chip.append(float(inter / union) if union else 0.0)
        per_chip[f"img{i}"] = {"buildings": len(chip), "mean_iou": float(np.mean(chip))}
        ious += chip
    report = {
        "sam": str(args.sam),
        "model": sam.name,
        "buildings": len(ious),
        "mean_iou": float(np.mean(ious)) if ious else None,
        "median_iou": float(np.median(ious)) if ious else None,
        "iou_over_0.5": float(np.mean(np.array(ious) > 0.5)) if ious else None,
        "per_chip": per_chip,
        "load_s": round(load_s, 2),
        "label_s": round(label_s, 2),
    }
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
