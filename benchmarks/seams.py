"""Seams: how often tiled prediction disagrees with one whole-scene window.

The shipped NC land-cover model over the bundled Landsat 7 scene (489 x 443 px; for 512 px
windows the scene mirrored into a 2 x 2 mosaic, 978 x 886 px): the reference is one
window covering the whole scene (512 px; 1024 px for the mosaic); the tiled runs use
128, 256 and 512 px windows with the default overlap and the blend windows named on the
command line (default: ``margin``, the default, and ``cosine``, the previous default).
Reported: the share of valid pixels whose class differs from the reference, and the
model compute relative to a non-overlapping grid.

    .venv/bin/python benchmarks/seams.py --json benchmarks/results/seams.json

Any other model and scene (a check on other data): ``--model run/model.safetensors
--image scene.tif``; the reference is then one window over the whole scene (its larger
side rounded up to a multiple of 32 px, or ``--whole``), and the window sizes smaller
than the scene are compared with it.

    .venv/bin/python benchmarks/seams.py --model runs/water/model.safetensors \
        --image data/sen1floods11-spain-water/S2/Spain_7370579_S2Hand.tif --tiles 128 256
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
    ap.add_argument("--model", type=Path, default=MODEL, help="checkpoint (default: NC)")
    ap.add_argument("--image", type=Path, help="one scene for --model (default: the NC ones)")
    ap.add_argument("--whole", type=int, help="reference window for --image (px)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="geoseg-seams-"))
    sys.path.insert(0, str(Path(__file__).parent))
    from _inference_data import mirrored_mosaic, nc_stack

    if args.image is not None:
        with rasterio.open(args.image) as src:
            side = max(src.shape)
        whole_tile = args.whole or -(-side // 32) * 32
        scenes = {args.image.stem: ([args.image], whole_tile)}
        args.tiles = [t for t in args.tiles if t < side]
    else:
        scenes = {
            "nc": (make_nc_mosaic(work / "mosaic",
                                  data_dir=ROOT / "data" / "nc-landsat7-landcover"), 512),
            "nc_2x2": (mirrored_mosaic(nc_stack(work), work / "mirrored", 2), 1024),
        }  # fmt: skip
    model = args.model
    refs = {}
    for name, (tiles, whole_tile) in scenes.items():
        whole = predict(model, tiles, work / f"whole_{name}.tif", tile_size=whole_tile,
                        progress=False)  # fmt: skip
        with rasterio.open(whole) as src:
            ref = src.read(1)
            refs[name] = (ref, ref != src.nodata, src.shape)
    rows = []
    for tile in args.tiles:
        scene = next(iter(scenes)) if args.image else "nc_2x2" if tile >= 512 else "nc"
        tiles = scenes[scene][0]
        ref, valid, (h, w) = refs[scene]
        for ov_name in args.overlaps:
            ov = default_overlap(tile) if ov_name == "default" else int(ov_name)
            for blend in args.blends:
                out = work / f"t{tile}_o{ov}_{blend}.tif"
                predict(model, tiles, out, tile_size=tile, overlap=ov, blend=blend,
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
