"""Seams: how often tiled prediction disagrees with one whole-scene window.

The shipped NC land-cover model over the bundled Landsat 7 scene (489 x 443 px; for 512 px
windows the scene mirrored into a 2 x 2 mosaic, 978 x 886 px): the reference is one
window covering the whole scene (512 px; 1024 px for the mosaic); the tiled runs use
128, 256 and 512 px windows with the default overlap and the blend windows named on the
command line (default: ``margin``, the default, and ``cosine``, the previous default).
Reported: the share of valid pixels whose class differs from the reference, and the
model compute relative to a non-overlapping grid.

    .venv/bin/python benchmarks/seams.py --json benchmarks/results/seams.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import rasterio

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "nc_landcover.safetensors"


def main() -> None:
    from geoseg.demo import make_nc_mosaic
    from geoseg.inference import default_overlap, predict
    from geoseg.inference.tiling import overlap_compute_ratio

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tiles", nargs="*", type=int, default=[128, 256, 512])
    ap.add_argument("--overlaps", nargs="*", default=["default"],
                    help="overlaps to try: 'default' or pixels")  # fmt: skip
    ap.add_argument("--blends", nargs="*", default=["margin", "cosine"])
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="geoseg-seams-"))
    sys.path.insert(0, str(Path(__file__).parent))
    from _inference_data import mirrored_mosaic, nc_stack

    scenes = {
        "nc": (make_nc_mosaic(work / "mosaic", data_dir=ROOT / "data" / "nc-landsat7-landcover"),
               512),
        "nc_2x2": (mirrored_mosaic(nc_stack(work), work / "mirrored", 2), 1024),
    }  # fmt: skip
    refs = {}
    for name, (tiles, whole_tile) in scenes.items():
        whole = predict(MODEL, tiles, work / f"whole_{name}.tif", tile_size=whole_tile,
                        progress=False)  # fmt: skip
        with rasterio.open(whole) as src:
            ref = src.read(1)
            refs[name] = (ref, ref != src.nodata, src.shape)
    rows = []
    for tile in args.tiles:
        scene = "nc_2x2" if tile >= 512 else "nc"
        tiles = scenes[scene][0]
        ref, valid, (h, w) = refs[scene]
        for ov_name in args.overlaps:
            ov = default_overlap(tile) if ov_name == "default" else int(ov_name)
            for blend in args.blends:
                out = work / f"t{tile}_o{ov}_{blend}.tif"
                predict(MODEL, tiles, out, tile_size=tile, overlap=ov, blend=blend,
                        progress=False)  # fmt: skip
                with rasterio.open(out) as src:
                    got = src.read(1)
                dis = float((got != ref)[valid].mean())
                ratio = overlap_compute_ratio(h, w, tile_size=tile, overlap=ov, align=32)
                asym = (tile / (tile - ov)) ** 2
                row = {"scene": scene, "tile": tile, "overlap": ov,
                       "default_overlap": ov_name == "default", "blend": blend,
                       "disagreement_pct": 100 * dis,
                       "compute_vs_no_overlap": ratio, "compute_asymptotic": asym}  # fmt: skip
                rows.append(row)
                print(f"{scene:7s} tile {tile:4d} overlap {ov:3d} {blend:8s} {100 * dis:6.3f} % "
                      f"of pixels differ; compute x{asym:.2f}", flush=True)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": rows}, indent=2))


if __name__ == "__main__":
    main()
