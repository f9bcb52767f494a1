"""Reliability suite: bad input, data-loss traps and interruptions, through the real CLI.

Every case runs ``geoseg ...`` in a fresh subprocess (a timeout catches hangs) inside a
scratch folder holding "user data" (inputs and other files); after each case the user
data is compared, byte for byte, with a snapshot. Counted: cases, clear errors (exit 1,
an ``error:`` line, no traceback), expected warnings, tracebacks, hangs and files lost or
changed. The fast cases also run in the test suite (tests/test_safety.py,
tests/test_bad_input.py); this script is the slow, end-to-end sweep.

    .venv/bin/python benchmarks/reliability.py --json benchmarks/results/reliability.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "nc_landcover.safetensors"
STRATA = ROOT / "data" / "nc-landsat7-landcover" / "strata.tif"
RGB = ROOT / "data" / "unlabeled-rgb" / "RGB.byte.tif"


def _snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file() and "out" not in p.relative_to(folder).parts[0]
    }


def _setup(work: Path) -> None:
    import rasterio

    from geoseg.demo import make_nc_mosaic
    from geoseg.testing import write_raster

    user = work / "user"
    (user / "out").mkdir(parents=True)
    make_nc_mosaic(user / "tiles", data_dir=ROOT / "data" / "nc-landsat7-landcover")
    shutil.copy(STRATA, user / "map.tif")
    shutil.copy(MODEL, user / "model.safetensors")
    (user / "folder.tif").mkdir()
    (user / "folder.tif" / "notes.txt").write_text("precious")
    (user / "notes.txt").write_text("precious")
    write_raster(
        user / "refl.tif",
        np.random.default_rng(0).integers(0, 3000, (6, 64, 64)).astype("int16"),
        crs="EPSG:32119",
    )
    write_raster(user / "empty.tif", np.zeros((6, 64, 64), np.float32), nodata=0, crs="EPSG:32119")
    with rasterio.open(user / "tiles" / "nc_landsat2000_r0c0.tif") as src:
        prof, data = src.profile, src.read()
    with rasterio.open(user / "x40.tif", "w", **prof) as dst:
        dst.write(np.where(data == prof["nodata"], data, data * 40))
    (user / "bomb.yaml").write_text(
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
        + "".join(
            f"{chr(98 + k)}: &{chr(98 + k)} [" + ", ".join([f"*{chr(97 + k)}"] * 10) + "]\n"
            for k in range(8)
        )
        + "output_dir: *i\n"
    )
    (user / "binary.yaml").write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe")
    (user / "badlr.yaml").write_text("training: {lr: -1}\n")
    (user / "empty.yaml").write_text("")
    from safetensors.torch import load_file, save_file

    state = load_file(str(MODEL))
    from safetensors import safe_open

    with safe_open(str(MODEL), framework="pt") as f:
        header = json.loads(f.metadata()["geoseg"])
    for name, edit in {
        "tile1e9": {"tile_size": 10**9},
        "std0": {"std": [0.0] * 6},
        "depth30": {"model_kwargs": {"encoder_depth": 30}},
    }.items():
        save_file(
            state,
            str(user / f"{name}.safetensors"),
            metadata={"geoseg": json.dumps({**header, **edit})},
        )
    save_file(
        state, str(user / "nested.safetensors"), metadata={"geoseg": "[" * 100_000 + "]" * 100_000}
    )
    _setup_second_audit(user)
    _setup_third_audit(user)


def _setup_second_audit(user: Path) -> None:
    """Inputs of the cases a second data-safety audit found (2026-12-04)."""
    import geopandas as gpd
    import rasterio
    import shapely

    tile = user / "tiles" / "nc_landsat2000_r0c0.tif"
    with rasterio.open(tile) as src:
        w, h, t, n = src.width, src.height, src.transform, src.count
        x, y = src.xy(10, 10)
        crs = src.crs
    bands = "".join(
        f'<VRTRasterBand dataType="Float32" band="{b}"><SimpleSource><SourceFilename '
        f'relativeToVRT="1">tiles/{tile.name}</SourceFilename><SourceBand>{b}</SourceBand>'
        "</SimpleSource></VRTRasterBand>"
        for b in range(1, n + 1)
    )
    (user / "m.vrt").write_text(
        f'<VRTDataset rasterXSize="{w}" rasterYSize="{h}"><GeoTransform>{t.c}, {t.a}, {t.b}, '
        f"{t.f}, {t.d}, {t.e}</GeoTransform>{bands}</VRTDataset>"
    )
    for part in (ROOT / "data" / "nc-landsat7-landcover").glob("landsat96_polygons.*"):
        shutil.copy(part, user / ("zones" + part.suffix))
    (user / "v.dbf").write_text("precious")
    shutil.copy(STRATA, user / "map.png")  # a GeoTIFF under the stats chart's name
    shutil.copy(ROOT / "configs" / "nc_landcover.yaml", user / "exp.yaml")
    prompts = gpd.GeoDataFrame({"class": [1]}, geometry=[shapely.Point(x, y)], crs=crs)
    prompts.to_file(user / "prompts.gpkg")
    (user / "run_i" / "logs" / "checkpoints").mkdir(parents=True)
    (user / "run_i" / "logs" / "checkpoints" / "best-epoch=2.ckpt").write_text("precious")
    (user / "proj").mkdir()
    (user / "proj" / "landcover.tif").write_text("precious")


def _setup_third_audit(user: Path) -> None:
    """Inputs of the cases fixed after a third audit (2026-12-04, 2026-12-05)."""
    import geopandas as gpd
    import rasterio
    import shapely
    from rasterio.shutil import copy

    with rasterio.open(user / "map.tif") as src:
        b = src.bounds
        crs = src.crs
        centre = shapely.Point((b.left + b.right) / 2, (b.bottom + b.top) / 2)
    halves = [shapely.box(b.left, b.bottom, (b.left + b.right) / 2, b.top),
              shapely.box((b.left + b.right) / 2, b.bottom, b.right, b.top)]  # fmt: skip
    zones = gpd.GeoDataFrame({"name": ["west", "east"]}, geometry=halves, crs=crs)
    zones.to_file(user / "layers.gpkg", layer="districts")
    zones.iloc[:1].to_file(user / "layers.gpkg", layer="parcels")
    shutil.copy(RGB, user / "rgb.tif")
    with rasterio.open(RGB) as src:
        centre = shapely.Point(*src.xy(src.height // 2, src.width // 2))
        crs = src.crs
    gpd.GeoDataFrame({"kind": ["roof"]}, geometry=[centre], crs=crs).to_file(user / "kind.gpkg")
    (user / "sam").mkdir()  # an empty SAM folder: loading it would fail
    points = gpd.GeoDataFrame({"class": [1]}, geometry=[centre], crs=crs)
    points.to_file(user / "two_layers.gpkg", layer="roofs")
    points.to_file(user / "two_layers.gpkg", layer="trees")
    with rasterio.Env() as env:
        if "netCDF" in env.drivers():
            copy(user / "refl.tif", user / "six.nc", driver="netCDF")
    # a later map: every class id moved on by one (every region changes)
    with rasterio.open(user / "map.tif") as src:
        prof, ids = src.profile, src.read(1)
    with rasterio.open(user / "map_b.tif", "w", **prof) as dst:
        dst.write(np.where(ids == (prof.get("nodata") or 0), ids, ids % ids.max() + 1), 1)
    # a class map as geoseg writes it (uint8, class table tag), for session 6's cases
    from geoseg.classes import ClassTable, write_class_table

    table = ClassTable.from_config([{"id": k, "name": f"c{k}"} for k in range(1, 8)])
    prof8 = prof | {"dtype": "uint8", "nodata": 0}
    with rasterio.open(user / "classes.tif", "w", **prof8) as dst:
        dst.write(np.clip(np.nan_to_num(ids), 0, 7).astype(np.uint8), 1)
        write_class_table(dst, table)


#: one quick training run (used twice: the second must refuse to replace the first)
TRAIN_QUICK = (
    "train {root}/configs/nc_landcover.yaml -o run_a --set training.max_epochs=1"
    " --set data.train_samples=16 --set training.progress_bar=false"
)

#: (name, command line after ``geoseg``, expectation: error / warn / ok, text expected)
CASES: list[tuple[str, str, str, str]] = [
    (
        "overwrite a folder (predict)",
        "predict model.safetensors tiles -o folder.tif --overwrite",
        "error",
        "is a folder",
    ),
    (
        "overwrite a folder (stats)",
        "stats map.tif -o folder.tif --overwrite",
        "error",
        "is a folder",
    ),
    (
        "overwrite a folder (vectorize)",
        "vectorize map.tif -o folder.tif --overwrite",
        "error",
        "unknown vector output extension",
    ),
    ("output . (stats)", "stats map.tif -o . --overwrite", "error", "is a folder"),
    ("output = input (stats)", "stats map.tif -o map.tif --overwrite", "error", "is the input"),
    (
        "output = input (predict)",
        "predict model.safetensors refl.tif -o refl.tif --overwrite",
        "error",
        "is the input",
    ),
    (
        "output = input (vectorize)",
        "vectorize map.tif -o map.tif --overwrite",
        "error",
        "unknown vector output extension",
    ),
    (
        "output inside the input folder",
        "predict model.safetensors tiles -o tiles/x.tif",
        "error",
        "inside the input folder",
    ),
    (
        "train over a trained run",
        TRAIN_QUICK,
        "ok",
        "",
    ),
    (
        "train over a trained run, again",
        TRAIN_QUICK,
        "error",
        "already holds a run",
    ),
    (
        "checkpoint tile_size 1e9",
        "predict tile1e9.safetensors tiles -o out/a.tif",
        "error",
        "tile_size 1000000000",
    ),
    ("checkpoint std 0", "predict std0.safetensors tiles -o out/b.tif", "error", "std > 0"),
    (
        "checkpoint encoder depth 30",
        "predict depth30.safetensors tiles -o out/c.tif",
        "error",
        "divisible by",
    ),
    (
        "checkpoint nested JSON",
        "predict nested.safetensors tiles -o out/d.tif",
        "error",
        "corrupt header",
    ),
    (
        "all no-data input",
        "predict model.safetensors empty.tif -o out/e.tif --quiet",
        "warn",
        "no valid pixel",
    ),
    (
        "values x40",
        "predict model.safetensors x40.tif -o out/f.tif --quiet",
        "warn",
        "far outside the model's training range",
    ),
    (
        "resolution 0",
        "predict model.safetensors tiles -o out/g.tif --resolution 0",
        "error",
        "resolution must be",
    ),
    (
        "resolution -30",
        "predict model.safetensors tiles -o out/h.tif --resolution -30",
        "error",
        "resolution must be",
    ),
    (
        "block size 0",
        "predict model.safetensors tiles -o out/i.tif --block-size 0",
        "error",
        "block_size",
    ),
    (
        "block size 1",
        "predict model.safetensors tiles -o out/j.tif --block-size 1",
        "error",
        "block_size",
    ),
    (
        "workers -1",
        "predict model.safetensors tiles -o out/k.tif --workers -1",
        "error",
        "workers must be",
    ),
    (
        "tile size 1e6",
        "predict model.safetensors tiles -o out/l.tif --tile-size 1000000",
        "error",
        "sensible model window",
    ),
    (
        "reflectance as class map (stats)",
        "stats refl.tif -o out/m.csv",
        "error",
        "looks like imagery",
    ),
    (
        "reflectance as class map (change)",
        "change map.tif refl.tif -o out/n.gpkg",
        "error",
        "looks like imagery",
    ),
    ("YAML alias bomb", "train bomb.yaml -o run_b", "error", "expands to more than"),
    ("binary config", "train binary.yaml -o run_c", "error", "not UTF-8"),
    ("negative learning rate", "train badlr.yaml -o run_d", "error", "training.lr"),
    ("empty config", "train empty.yaml -o run_e", "error", "is empty"),
    # found by a second audit (2026-12-04)
    ("a file a VRT reads as output (predict)",
     "predict model.safetensors m.vrt -o tiles/nc_landsat2000_r0c0.tif --overwrite",
     "error", "is the input"),
    ("zones .dbf as output (stats)",
     "stats map.tif --zones zones.shp -o zones.dbf --overwrite --no-plot", "error",
     "is the input"),
    (".shp over a user's .dbf (vectorize)", "vectorize map.tif -o v.shp", "error",
     "already exists"),
    # the table's format follows -o's extension: a .png table (the chart's name) is refused
    ("chart = CSV (stats)", "stats map.tif -o out/s.png --overwrite", "error",
     "unknown extension '.png'"),
    ("chart over the input (stats)", "stats map.png -o map.csv --overwrite", "error",
     "is the input"),
    ("report over its config (evaluate)",
     "evaluate model.safetensors --config exp.yaml -o exp.yaml --overwrite", "error",
     "is the input"),
    ("report over a file, no --overwrite (evaluate)",
     "evaluate model.safetensors --config exp.yaml -o notes.txt", "error", "already exists"),
    ("labels over the prompts (label)",
     "label map.tif --prompts prompts.gpkg --sam nosam -o prompts.gpkg --overwrite", "error",
     "is the input"),
    ("one file for two outputs (panoptic)",
     "panoptic map.tif map.tif -o out/f.tif --instances-output out/f.tif --overwrite", "error",
     "same file"),
    ("train into an interrupted run", "train {root}/configs/nc_landcover.yaml -o run_i",
     "error", "already holds a run"),
    ("demo over a user's files", "demo -o proj --model model.safetensors", "error",
     "not written by geoseg demo"),
    ("output names a new folder (predict)", "predict model.safetensors refl.tif -o newdir/",
     "error", "names a folder"),
    # fixed after a third audit (2026-12-04)
    ("tile size 0 (predict)", "predict model.safetensors tiles -o out/t0.tif --tile-size 0",
     "error", "tile_size"),
    ("tile size 0 (export)", "export model.safetensors -o out/t0.onnx --tile-size 0",
     "error", "tile_size"),
    ("a GeoTIFF under a PNG name (predict)", "predict model.safetensors tiles -o out/m.png",
     "error", "must end in .tif or .tiff"),
    ("a band selected twice (predict)",
     "predict model.safetensors tiles -o out/b.tif --bands 1,1,1,1,1,1", "error",
     "selected more than once"),
    ("windows beyond the memory (predict)",
     "predict model.safetensors tiles -o out/mem.tif --tile-size 8192 --batch-size 64",
     "error", "needs about"),
    ("--zone-field without zones (stats)",
     "stats map.tif -o out/z.csv --zone-field name --no-plot", "error", "without zones"),
    ("zones of several layers (stats)",
     "stats map.tif --zones layers.gpkg -o out/z.csv --no-plot", "error", "--zone-layer"),
    ("a zone layer that is not there (stats)",
     "stats map.tif --zones layers.gpkg --zone-layer roads -o out/z.csv --no-plot", "error",
     "no layer 'roads'"),
    ("a netCDF of several variables (predict)",
     "predict model.safetensors six.nc -o out/nc.tif", "error", "subdataset"),
    ("prompts without the class field (label)",
     "label rgb.tif --prompts kind.gpkg --sam sam -o out/l.gpkg", "error",
     "no class field 'class'"),
    ("fused map = the COCO folder (panoptic)",
     "panoptic map.tif map.tif -o out/cc --instances-output out/i.tif --coco out/cc "
     "--thing-class 3", "error", "is the --coco folder"),
    # found after the third audit (2026-12-05)
    ("statistics under a spreadsheet name (stats)",
     "stats map.tif -o out/s.xlsx --no-plot", "error", "unknown extension '.xlsx'"),
    ("prompts of several layers (label)",
     "label rgb.tif --prompts two_layers.gpkg --sam sam -o out/l.gpkg", "error",
     "--prompt-layer"),
    ("a --nodata that is not a number (predict)",
     "predict model.safetensors tiles -o out/nd.tif --nodata zero", "error",
     "nodata: expected a number"),
    # fixed in session 6 (2026-12-05)
    ("a class map as the instance map (panoptic)",
     "panoptic classes.tif classes.tif -o out/p6.tif --instances-output out/pi6.tif "
     "--thing-class 3",
     "error", "is a class map"),
    ("a typo in a model keyword (train)",
     "train {root}/configs/nc_landcover.yaml -o out/run_typo --set model.encoder=resnet18 "
     "--set model.kwargs.decoder_chanels=[8,8,8]",
     "error", "did you mean 'decoder_channels'"),
    ("a negative DataLoader worker count (train)",
     "train {root}/configs/nc_landcover.yaml -o out/run_nw --set data.num_workers=-1",
     "error", "data.num_workers: -1 is not valid"),
    ("a missing class map (stats)", "stats nothere.tif -o out/s6.csv", "error",
     "cannot be read"),
    ("a tolerance larger than the map (vectorize)",
     "vectorize map.tif -o out/v6.gpkg --simplify 1e308", "error", "more than the whole map"),
    ("zone statistics as a GeoPackage (stats)",
     "stats map.tif --zones layers.gpkg --zone-layer districts --zone-field name -o out/z.gpkg "
     "--no-plot --quiet", "ok", ""),
]  # fmt: skip


def run_case(work: Path, cmd: str, timeout: float) -> dict:
    user = work / "user"
    args = cmd.format(root=ROOT).split()
    code = f"import sys; from geoseg.cli import main; sys.exit(main({args!r}))"
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(
            [sys.executable, "-c", code], cwd=user, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"hang": True, "seconds": timeout}
    return {
        "hang": False,
        "code": proc.returncode,
        "stderr": proc.stderr[-3000:],
        "seconds": time.perf_counter() - t0,
    }


def interruption_case(work: Path) -> dict:
    """SIGTERM in the middle of a prediction: exit 130, nothing left behind."""
    user = work / "user"
    out = user / "out" / "sigterm"
    out.mkdir()
    args = [
        "predict",
        "model.safetensors",
        "tiles",
        "-o",
        str(out / "m.tif"),
        "--tta",
        "d4",
        "--tile-size",
        "64",
        "--batch-size",
        "1",
        "--workers",
        "1",
        "--quiet",
    ]
    code = f"import sys; from geoseg.cli import main; sys.exit(main({args!r}))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=user, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 60
    while time.time() < deadline and not any(out.glob(".geoseg-predict-*")):
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    left = [p.name for p in out.iterdir()]
    return {"code": proc.returncode, "left_behind": left, "ok": proc.returncode == 130 and not left}


def resume_case(work: Path) -> dict:
    """SIGTERM during ``predict --resume``, rerun: the same bits as an uninterrupted run."""
    user = work / "user"
    out = user / "out" / "resume"
    out.mkdir()
    base = ["predict", "model.safetensors", "tiles", "--tile-size", "64", "--block-size",
            "64", "--workers", "1", "--quiet", "--backend", "torch"]  # fmt: skip
    args = [*base, "-o", str(out / "m.tif"), "--probabilities", str(out / "p.tif"), "--resume"]
    code = f"import sys; from geoseg.cli import main; sys.exit(main({args!r}))"
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=user, stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob(".geoseg-resume-*/block_*"))) < 5:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    kept = len(list(out.glob(".geoseg-resume-*/block_*")))
    t0 = time.perf_counter()
    again = run_case(work, " ".join(args), 600)
    ref_args = [*base, "-o", str(out / "ref.tif"), "--probabilities", str(out / "ref_p.tif")]
    ref = run_case(work, " ".join(ref_args), 600)
    same = all(
        (out / a).read_bytes() == (out / b).read_bytes()
        for a, b in (("m.tif", "ref.tif"), ("p.tif", "ref_p.tif"))
    ) if again.get("code") == 0 and ref.get("code") == 0 else False  # fmt: skip
    left = [p.name for p in out.iterdir() if p.name.startswith(".")]
    return {
        "first_exit": proc.returncode,
        "blocks_kept": kept,
        "resumed_seconds": again.get("seconds"),
        "uninterrupted_seconds": ref.get("seconds"),
        "bit_identical": same,
        "left_behind": left,
        "ok": proc.returncode == 130 and kept > 0 and same and not left,
        "rerun_seconds": time.perf_counter() - t0,
    }


def disk_full_cases(work: Path) -> list[dict]:
    """Outputs on a real 400 KiB tmpfs (needs root; skipped otherwise): a clear error, no
    traceback, nothing left on the small disk."""
    mnt = work / "small_disk"
    mnt.mkdir()
    rc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mnt)],
                        capture_output=True)  # fmt: skip
    if rc.returncode != 0:
        return [{"case": "disk full", "skipped": "cannot mount a tmpfs (needs root)"}]
    rows = []
    try:
        for name, cmd in {
            "disk full (predict)": f"predict model.safetensors tiles -o {mnt}/c.tif "
            f"--probabilities {mnt}/p.tif --quiet",
            "disk full (vectorize)": f"vectorize map.tif -o {mnt}/v.gpkg --quiet",
            # the matrix CSV and the polygons are one batch: neither may be left
            "disk full (change)": f"change map.tif map_b.tif -o {mnt}/ch.gpkg --quiet",
            # the demo writes stage by stage: what it left must be named in its message
            "disk full (demo)": f"demo -o {mnt}/d --model model.safetensors "
            f"--data {ROOT}/data/nc-landsat7-landcover --no-progress",
        }.items():
            r = run_case(work, cmd, 300)
            left = [str(q.relative_to(mnt)) for q in mnt.rglob("*") if q.is_file()]
            err = r.get("stderr", "")
            # (the demo's folder marks, .geoseg-demo, are not outputs)
            outputs = [q for q in left if not q.endswith(".geoseg-demo")]
            shown = sum(f"{mnt}/{q}" in err for q in outputs)  # 3 named, the rest counted
            named = "kept" in err and shown >= min(len(outputs), 3)
            ok = (not r["hang"] and r["code"] == 1 and "no space left" in err.lower()
                  and "Traceback" not in err and (not left or named))  # fmt: skip
            rows.append({"case": name, "ok": ok, "left_behind": left,
                         "stderr_tail": err[-400:]})  # fmt: skip
            for q in sorted(mnt.iterdir(), reverse=True):  # the next case gets the room
                shutil.rmtree(q) if q.is_dir() else q.unlink()
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", default=None)
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--only", help="run only the cases whose name holds this text (no "
                    "interruption, disk-full or resume cases)")  # fmt: skip
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="geoseg-reliability-"))
    _setup(work)
    os.environ.setdefault("GEOSEG_CACHE_DIR", str(work / "cache"))
    counts = {
        "cases": 0,
        "clear_errors": 0,
        "expected_warnings": 0,
        "ok": 0,
        "tracebacks": 0,
        "hangs": 0,
        "files_lost_or_changed": 0,
        "unexpected": 0,
    }
    rows = []
    for name, cmd, expect, text in CASES:
        if args.only and args.only not in name:
            continue
        before = _snapshot(work / "user")
        r = run_case(work, cmd, args.timeout)
        after = _snapshot(work / "user")
        lost = sorted(k for k in before if k not in after or after[k] != before[k])
        counts["cases"] += 1
        counts["files_lost_or_changed"] += len(lost)
        if r["hang"]:
            counts["hangs"] += 1
            verdict = "HANG"
        else:
            tb = "Traceback" in r["stderr"]
            counts["tracebacks"] += tb
            if expect == "error":
                ok = r["code"] == 1 and "error:" in r["stderr"] and text in r["stderr"] and not tb
                counts["clear_errors"] += ok
            elif expect == "warn":
                ok = r["code"] == 0 and text in r["stderr"]
                counts["expected_warnings"] += ok
            else:
                ok = r["code"] == 0
                counts["ok"] += ok
            counts["unexpected"] += not ok
            verdict = "PASS" if ok else "FAIL"
        rows.append(
            {
                "case": name,
                "command": cmd,
                "expect": expect,
                "verdict": verdict,
                "lost": lost,
                **{k: v for k, v in r.items() if k != "stderr"},
                "stderr_tail": r.get("stderr", "")[-300:],
            }
        )
        print(
            f"{verdict:5s} {name:40s} {r.get('seconds', 0):6.1f} s {lost if lost else ''}",
            flush=True,
        )
    if args.only:
        print("\n" + json.dumps(counts))
        shutil.rmtree(work, ignore_errors=True)
        return
    sig = interruption_case(work)
    counts["cases"] += 1
    counts["unexpected"] += not sig["ok"]
    print(
        f"{'PASS' if sig['ok'] else 'FAIL':5s} SIGTERM during predict: exit {sig['code']}, "
        f"left behind {sig['left_behind']}"
    )
    for row in disk_full_cases(work):
        if "skipped" in row:
            print(f"SKIP  {row['case']}: {row['skipped']}")
            continue
        counts["cases"] += 1
        counts["clear_errors"] += row["ok"]
        counts["unexpected"] += not row["ok"]
        rows.append(row)
        print(f"{'PASS' if row['ok'] else 'FAIL':5s} {row['case']} {row['left_behind']}")
    res = resume_case(work)
    counts["cases"] += 1
    counts["unexpected"] += not res["ok"]
    print(
        f"{'PASS' if res['ok'] else 'FAIL':5s} SIGTERM during predict --resume, rerun: "
        f"{res['blocks_kept']} blocks kept, bit-identical {res['bit_identical']}, "
        f"resumed run {res['resumed_seconds']:.1f} s vs uninterrupted "
        f"{res['uninterrupted_seconds']:.1f} s"
    )
    print("\n" + json.dumps(counts))
    if args.json:
        Path(args.json).write_text(
            json.dumps({"counts": counts, "cases": rows, "sigterm": sig, "resume": res}, indent=2)
        )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
