"""An exported Deepness model, run the way QGIS Deepness runs it, against geoseg predict.

The shipped NC model over the bundled Landsat scene: ``geoseg export --format deepness``
(no-data baked in), run by :func:`geoseg.deploy.run_like_deepness` (values / 255, its
tiling with an integer overlap percentage, core pasting, no blending), compared with
``geoseg predict`` (default windows) on valid pixels, for several Deepness tile sizes;
the last row is a deliberately misaligned overlap (stride not a multiple of the model's).

    .venv/bin/python benchmarks/deepness_check.py --json benchmarks/results/deepness.json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import warnings
from pathlib import Path

import numpy as np
import rasterio

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "nc_landcover.safetensors"


def main() -> None:
    from rasterio.merge import merge

    from geoseg.demo import make_nc_mosaic
    from geoseg.deploy import deepness_overlap_px, export_model, run_like_deepness
    from geoseg.inference import predict
    from geoseg.models import read_metadata

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="geoseg-deepness-"))
    tiles = make_nc_mosaic(work / "mosaic", data_dir=ROOT / "data" / "nc-landsat7-landcover")
    arr, _ = merge([str(t) for t in tiles])
    with rasterio.open(tiles[0]) as src:
        nodata = src.nodata
    ours = predict(MODEL, tiles, work / "geoseg.tif", progress=False)
    with rasterio.open(ours) as src:
        ref = src.read(1)
        valid = ref != src.nodata
    ids = np.asarray(read_metadata(MODEL).classes.ids)
    rows = []
    for tile, pct in ((None, None), (256, None), (128, None), (256, 12)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = export_model(MODEL, work / f"m_{tile}_{pct}.onnx", format="deepness",
                                tile_size=tile, overlap_percent=pct, nodata=nodata)  # fmt: skip
        import onnx

        props = {p.key: json.loads(p.value) for p in onnx.load(str(path)).metadata_props}
        t, p = props["tile_size"], props["tiles_overlap"]
        got = ids[run_like_deepness(path, arr)]
        agree = float((got == ref)[valid].mean())
        stride = t - deepness_overlap_px(t, p)
        rows.append({"tile_size": t, "tiles_overlap_pct": p, "stride": stride,
                     "agreement": agree})  # fmt: skip
        print(f"Deepness tile {t:4d} px, overlap {p:2d} % (stride {stride} px): "
              f"{100 * agree:.3f} % of valid pixels as geoseg predict", flush=True)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"valid_pixels": int(valid.sum()), "runs": rows},
                                              indent=2))  # fmt: skip


if __name__ == "__main__":
    main()
