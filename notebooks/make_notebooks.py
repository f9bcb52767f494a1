"""Write the geoseg notebooks (without outputs) from the cells below.

Run from the repository root after editing a cell here:

    .venv/bin/python notebooks/make_notebooks.py

The notebooks are committed without outputs; ``tests/test_notebooks.py`` executes each one
top to bottom with a kernel from the venv (and checks this script reproduces them).
Outputs go to ``outputs/notebooks/`` (git-ignored), or to ``$GEOSEG_NOTEBOOK_OUTPUT``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """\
import os
from pathlib import Path

REPO = Path.cwd().parent  # the notebooks run from notebooks/ in a geoseg checkout
MODEL = REPO / "models" / "nc_landcover.safetensors"  # the shipped demo model
NC_DATA = REPO / "data" / "nc-landsat7-landcover"  # the bundled Landsat sample
OUT = Path(os.environ.get("GEOSEG_NOTEBOOK_OUTPUT", REPO / "outputs" / "notebooks")) / "{name}"
OUT.mkdir(parents=True, exist_ok=True)
print("outputs go to", OUT)"""


def md(text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(text.strip())


def code(text: str) -> nbformat.NotebookNode:
    return new_code_cell(text.strip())


QUICKSTART = [
    md("""
# geoseg quickstart: from a Landsat scene to land-cover polygons

This notebook uses the small model shipped with geoseg (`models/nc_landcover.safetensors`,
a U-Net trained by geoseg on the bundled North Carolina sample) to map land cover over a
real Landsat 7 scene of Raleigh, NC (2000), then turns the map into polygons.

Steps: load the model -> predict a multi-file mosaic -> look at the map -> vectorize ->
explore the polygons as a GeoDataFrame and on an interactive map. It runs in about a minute
on a laptop CPU.
"""),
    code(SETUP.format(name="quickstart")),
    md("""
## 1. The model

A geoseg checkpoint is one `.safetensors` file holding the weights *and* everything needed
to use them: input bands, normalization, class names and colours, and the scores it got on
held-out test blocks when it was trained.
"""),
    code("""
from geoseg.models import read_metadata

meta = read_metadata(MODEL)
print(f"{meta.arch} / {meta.encoder}, input bands {meta.bands}")
print("classes:", meta.classes.names)
test = meta.metrics["test"]
print(f"test mIoU {test['miou']:.3f}, overall accuracy {test['overall_accuracy']:.3f}")
"""),
    md("""
## 2. A scene as a mosaic of GeoTIFF tiles

The sample scene comes as six single-band files (Landsat bands 1, 2, 3, 4, 5, 7; 489 x 443
pixels of 28.5 m, EPSG:32119). Real projects have many tiles, so we stack the bands and cut
the scene into four overlapping GeoTIFFs: `predict` treats any list of tiles as one mosaic.
"""),
    code("""
from geoseg.demo import make_nc_mosaic

tiles = make_nc_mosaic(OUT / "mosaic", data_dir=NC_DATA)
[t.name for t in tiles]
"""),
    md("""
## 3. Predict

`predict` runs the model tile by tile through Dask, blends overlapping tiles so there are
no seams, and writes a class-map Cloud-Optimized GeoTIFF (with the class colour table) and,
optionally, one probability band per class.
"""),
    code("""
from geoseg.inference import predict

classmap, probabilities = predict(
    MODEL,
    tiles,
    OUT / "landcover.tif",
    probabilities=OUT / "landcover_probabilities.tif",
    overwrite=True,
)
classmap
"""),
    code("""
from geoseg import viz

viz.plot_side_by_side(
    tiles, classmap, rgb=(3, 2, 1), titles=("Landsat 7 (B3 B2 B1)", "Predicted land cover")
)
"""),
    md("""
## 4. Vectorize

Each connected patch of one class becomes a polygon, with its class, pixel count, area and
perimeter in metres. Chunks are processed in parallel and patches crossing chunk borders
are merged exactly.
"""),
    code("""
from geoseg.vectorize import vectorize

polygons = vectorize(classmap, probabilities=probabilities)
print(len(polygons), "polygons; CRS:", polygons.crs.name, f"({polygons.crs.axis_info[0].unit_name})")
polygons.head()
"""),
    code("""
summary = polygons.groupby("class_name").agg(polygons=("area_m2", "size"), area_m2=("area_m2", "sum"))
summary["area_ha"] = summary["area_m2"] / 1e4
summary.sort_values("area_ha", ascending=False)
"""),
    md("""
## 5. An interactive map

Imagery, class map and polygons as layers (top-right control), a legend, and a popup with
class and area when you click a polygon. The map is self-contained (no basemap server, no
CDN), so it also works offline; `viz.save_web_map(m, "map.html")` writes it to a file.
"""),
    code("""
m = viz.web_map(tiles, classmap, polygons, rgb=(3, 2, 1), height=500)
m
"""),
    code("""
from geoseg.io.vector import write_vector

write_vector(polygons, OUT / "landcover.gpkg", overwrite=True)
"""),
]

TRAINING = [
    md("""
# Training a land-cover model on the North Carolina sample

The demo model was trained by geoseg from `configs/nc_landcover.yaml`. This notebook runs
the same config for a few epochs so you can see each part: the config, training with
Lightning, evaluation on held-out test blocks, per-class IoU and the confusion matrix.
A few epochs on a CPU take a minute or two; the shipped model trained for longer.
"""),
    code(SETUP.format(name="training")),
    md("""
## 1. The config

One YAML file describes the data (imagery, labels, classes, spatial split), the model and
the training. Any key can be overridden with `key=value` strings, like `--set` on the
command line.
"""),
    code("""
config = REPO / "configs" / "nc_landcover.yaml"
print(config.read_text())
"""),
    md("""
## 2. Train

Labels are the 1996 classification `strata.tif`; val and test are whole spatial blocks held
out from training, so scores measure how the model does on ground it never saw. We shorten
the run to 3 epochs of 160 random 64 x 64 tiles (the config asks for 25 epochs of 320).
"""),
    code("""
from geoseg.training import train

result = train(
    config,
    overrides=["training.max_epochs=3", "data.train_samples=160"],  # a short run
    output_dir=OUT / "run",
)
print("checkpoint:", result.checkpoint)
"""),
    code("""
import matplotlib.pyplot as plt
import pandas as pd

history = pd.DataFrame(result.history)
scalars = history[[c for c in history.columns if history[c].map(lambda v: isinstance(v, (int, float))).all()]]
fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3))
scalars.plot(x="epoch", y=[c for c in ("train_loss", "val_loss") if c in scalars], ax=ax1, marker="o")
scalars.plot(x="epoch", y=[c for c in ("val_miou", "val_accuracy") if c in scalars], ax=ax2, marker="o")
ax1.set_title("loss")
ax2.set_title("validation scores")
scalars.round(4)
"""),
    md("""
## 3. Evaluate on the test blocks
"""),
    code("""
from geoseg.evaluation import evaluate

report = evaluate(result.checkpoint, split="test")
print(f"test mIoU {report['miou']:.3f}, overall accuracy {report['overall_accuracy']:.3f}")
"""),
    code("""
import numpy as np

from geoseg.models import read_metadata

classes = read_metadata(result.checkpoint).classes
iou = report["iou"]
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.barh(classes.names, [iou[n] or 0.0 for n in classes.names], color=[c.color for c in classes])
ax.invert_yaxis()
ax.set_xlim(0, 1)
ax.set_xlabel("IoU on the test blocks")
ax.set_title(f"Per-class IoU (mIoU {report['miou']:.3f})");
"""),
    code("""
cm = np.array(report["confusion_matrix"]["counts"], dtype=float)
labels = report["confusion_matrix"]["labels"]
share = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
fig, ax = plt.subplots(figsize=(5.5, 5))
ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
ax.set_yticks(range(len(labels)), labels)
ax.set_xlabel("predicted")
ax.set_ylabel("reference (strata.tif)")
for i in range(len(labels)):
    for j in range(len(labels)):
        if cm[i, j]:
            ax.text(j, i, f"{share[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.5 else "black")
ax.set_title("Confusion matrix (row-normalized)");
"""),
    md("""
## 4. Compare with the shipped model

The demo model's own test scores are stored in its metadata (same config, trained longer).
"""),
    code("""
shipped = read_metadata(MODEL).metrics["test"]
pd.DataFrame(
    {"this notebook (3 epochs)": report["iou"], "shipped model": shipped["iou"]}
).round(3)
"""),
]

PLANNING = [
    md("""
# Urban planning: land cover per district, and what changed since 1996

A planner's questions, answered from a land-cover map:

1. How much of each district is developed, forest, water...? (areas per class per zone)
2. Where is development concentrated? (a choropleth)
3. What changed between 1996 and 2000? (change between two maps)

The 2000 map is the shipped model's prediction over the Landsat 7 scene; the 1996 map is
`strata.tif`, a classification of 1996 Landsat imagery bundled with the sample. The
"districts" are a 3 x 3 grid we make with geopandas (use your real zones instead).
"""),
    code(SETUP.format(name="planning")),
    code("""
from geoseg.demo import make_nc_mosaic
from geoseg.inference import predict

tiles = make_nc_mosaic(OUT / "mosaic", data_dir=NC_DATA)
map2000 = predict(MODEL, tiles, OUT / "landcover_2000.tif", overwrite=True)
map1996 = NC_DATA / "strata.tif"
"""),
    md("""
## 1. Districts

A 3 x 3 grid of square-ish districts over the scene, in the map's CRS (EPSG:32119, metres).
"""),
    code("""
import geopandas as gpd
import numpy as np
import rasterio
from shapely.geometry import box

with rasterio.open(map2000) as src:
    left, bottom, right, top = src.bounds
    crs = src.crs
xs = np.linspace(left, right, 4)
ys = np.linspace(top, bottom, 4)
districts = gpd.GeoDataFrame(
    {
        "district": [f"{row}{col}" for row in "ABC" for col in "123"],
        "geometry": [box(xs[c], ys[r + 1], xs[c + 1], ys[r]) for r in range(3) for c in range(3)],
    },
    crs=crs,
)
districts
"""),
    md("""
## 2. Area of each class in each district
"""),
    code("""
from geoseg.analysis import ALL_ZONES, class_areas

areas = class_areas(map2000, zones=districts, zone_field="district")
per_district = areas[areas["zone"] != ALL_ZONES]
per_district.head(10)
"""),
    code("""
table_ha = per_district.pivot_table(index="zone", columns="class_name", values="area_ha", aggfunc="sum")
table_ha.fillna(0).round(1)
"""),
    code("""
share = per_district.pivot_table(index="zone", columns="class_name", values="percent").fillna(0)
share.round(1)
"""),
    md("""
## 3. A choropleth of developed land
"""),
    code("""
import matplotlib.pyplot as plt

choro = districts.merge(share["developed"].rename("developed_pct"), left_on="district", right_index=True)
fig, ax = plt.subplots(figsize=(6, 5.5))
choro.plot(column="developed_pct", cmap="Reds", legend=True, edgecolor="black", ax=ax,
           legend_kwds={"label": "developed land (% of mapped area)"})
for _, row in choro.iterrows():
    p = row.geometry.centroid
    ax.annotate(f"{row.district}\\n{row.developed_pct:.0f} %", (p.x, p.y), ha="center", va="center", fontsize=9)
ax.set_title("Developed land per district, 2000")
ax.set_axis_off();
"""),
    md("""
## 4. Change between 1996 and 2000

`change` compares two class maps pixel by pixel (the 1996 file is tagged EPSG:3358 while the
2000 map is EPSG:32119: the same grid in two realisations of the NAD83 datum, which geoseg
handles) and returns the area moving from each class to each other class. Part of the
"change" is disagreement between two classifiers, not change on the ground: read it as
an estimate.
"""),
    code("""
from geoseg.analysis import change

result = change(map1996, map2000)
matrix_ha = (result.matrix / 1e4).rename_axis("1996 \\ 2000 (ha)")  # rows: 1996, columns: 2000
matrix_ha.round(1)
"""),
    code("""
changed = result.polygons
print(f"{len(changed)} change polygons, {changed['area_m2'].sum() / 1e4:.0f} ha in total")
changed.groupby(["from_name", "to_name"])["area_m2"].sum().div(1e4).sort_values(ascending=False).head(8).round(1)
"""),
    code("""
from matplotlib.patches import Patch

from geoseg.models import read_metadata

colors = {c.name: c.color for c in read_metadata(MODEL).classes}
to_developed = changed[changed["to_name"] == "developed"]
fig, ax = plt.subplots(figsize=(6.5, 5.5))
districts.boundary.plot(ax=ax, color="black", linewidth=0.8)
to_developed.plot(ax=ax, color=to_developed["from_name"].map(colors))
for _, row in districts.iterrows():
    ax.annotate(row.district, (row.geometry.bounds[0] + 150, row.geometry.bounds[3] - 450), fontsize=9)
names = sorted(set(to_developed["from_name"]))
ax.legend([Patch(color=colors[n]) for n in names], names, title="1996 class", fontsize=8,
          loc="upper left", bbox_to_anchor=(1.0, 1.0))
ax.set_title(f"Became developed by 2000: {to_developed['area_m2'].sum() / 1e4:.0f} ha")
ax.set_axis_off();
"""),
]


BUILDINGS = [
    md("""
# Buildings per district: detected, counted and measured

An urban planner's questions about buildings, answered from a height model:

1. Where are the buildings? Each building as its own object (terraced houses stay apart),
   as polygons with right angles that open in QGIS.
2. How many buildings, how much footprint and how large on average, per district?
3. How does that compare with the official footprints?

The data: 2 m lidar height above ground over Old Town Alexandria, Virginia, with 84
building footprints (`data/alexandria-hag-buildings/`, 7 pairs of them touching). The
model is the per-pixel instance method of `configs/alexandria_buildings_instances.yaml`
(a small U-Net learning footprint / boundary / contact maps), trained here from scratch
for a minute on CPU. With so few buildings, and trees as tall as the houses, it is weak:
read its counts as a demonstration of the workflow; the comparison in section 4 says how
far off they are.
"""),
    code(SETUP.format(name="buildings") + """
ALEX = REPO / "data" / "alexandria-hag-buildings"
CONFIG = REPO / "configs" / "alexandria_buildings_instances.yaml\""""),
    md("""
## 1. Train the instance model

The config's `task: instance` makes every footprint polygon one object; the run keeps the
weights of the best validation epoch and scores them on held-out test blocks (SpaceNet
building F1 at IoU >= 0.5, and panoptic quality).
"""),
    code("""
from geoseg.training import train

run = train(CONFIG, output_dir=OUT / "run", overwrite=True,
            overrides=["training.max_epochs=15", "training.progress_bar=false"])
test = run.metrics["test"]["instance"]
print(f"test blocks: building F1 {test['f1']:.3f} (precision {test['precision']:.3f}, "
      f"recall {test['recall']:.3f}), {test['tp']} of {test['tp'] + test['fn']} buildings found")
"""),
    md("""
## 2. Predict the scene: a class map and an instance map

`instances=` asks for the instance-id raster (band 1: one id per building, unique over the
map; band 2: its class) and `objects=` for a table with each building's score.
"""),
    code("""
from geoseg.inference import predict

classes_tif, instances_tif, objects_csv = predict(
    run.checkpoint, ALEX / "hag.tif", OUT / "classes.tif",
    instances=OUT / "instances.tif", objects=OUT / "objects.csv", overwrite=True,
)
import rasterio

with rasterio.open(instances_tif) as src:
    ids = src.read(1)
print(f"{len(set(ids[ids > 0].tolist()))} buildings detected")
"""),
    md("""
## 3. Buildings as polygons

`vectorize` recognizes the instance map and writes one polygon per building, with its id,
class, area, perimeter and score; `regularize=2` squares the outlines (2 m tolerance)
without letting neighbours overlap.
"""),
    code("""
from geoseg.vectorize import vectorize

buildings = vectorize(instances_tif, objects=objects_csv, regularize=2.0)
buildings.to_file(OUT / "buildings.gpkg", driver="GPKG")
buildings[["instance_id", "class_name", "area_m2", "perimeter_m", "score"]].head()
"""),
    md("""
## 4. Per district: counts, footprint and mean size, against the official footprints

Four districts (a 2 x 2 grid over the scene; use your own zones). `object_stats` counts
each building once, in the district holding most of it.
"""),
    code("""
import geopandas as gpd
import numpy as np
from shapely.geometry import box

with rasterio.open(instances_tif) as src:
    left, bottom, right, top = src.bounds
    crs = src.crs
xs, ys = np.linspace(left, right, 3), np.linspace(top, bottom, 3)
districts = gpd.GeoDataFrame(
    {"district": ["NW", "NE", "SW", "SE"],
     "geometry": [box(xs[c], ys[r + 1], xs[c + 1], ys[r]) for r in range(2) for c in range(2)]},
    crs=crs,
)
from geoseg.analysis import ALL_ZONES, object_stats

stats = object_stats(instances_tif, zones=districts, zone_field="district")
per_district = stats[(stats["zone"] != ALL_ZONES) & (stats["class_name"] == "building")]
per_district[["zone", "objects", "footprint_m2", "mean_object_m2", "median_object_m2"]]
"""),
    code("""
reference = gpd.read_file(ALEX / "buildings.geojson").to_crs(crs)
reference["district"] = gpd.sjoin(
    gpd.GeoDataFrame(geometry=reference.representative_point(), crs=crs), districts,
    predicate="within",
)["district"]
ref = reference.groupby("district").agg(reference_buildings=("geometry", "size"),
                                        reference_m2=("geometry", lambda g: g.area.sum()))
detected = per_district.set_index("zone")[["objects", "footprint_m2"]].rename(
    columns={"objects": "detected_buildings", "footprint_m2": "detected_m2"})
comparison = ref.join(detected, how="outer").fillna(0).astype(int)
print(f"reference: {comparison['reference_buildings'].sum()} buildings, "
      f"detected: {comparison['detected_buildings'].sum()}")
comparison
"""),
    md("""
## 5. The map

Height above ground as the background, the official footprints in black, the detected
buildings in colour (one colour per building).
"""),
    code("""
import matplotlib.pyplot as plt

with rasterio.open(ALEX / "hag.tif") as src:
    hag = src.read(1, masked=True)
fig, ax = plt.subplots(figsize=(7, 6.5))
ax.imshow(hag, cmap="Greys_r", vmin=0, vmax=25, extent=(left, right, bottom, top))
buildings.plot(ax=ax, column="instance_id", cmap="tab20", alpha=0.7)
reference.boundary.plot(ax=ax, color="black", linewidth=0.8)
districts.boundary.plot(ax=ax, color="yellow", linewidth=1.2, linestyle="--")
ax.set_title(f"{len(buildings)} detected buildings, {len(reference)} in the official footprints")
ax.set_axis_off();
"""),
]


NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_training_nc_landcover.ipynb": TRAINING,
    "03_urban_planning_analysis.ipynb": PLANNING,
    "04_buildings_per_district.ipynb": BUILDINGS,
}


def build(name: str) -> nbformat.NotebookNode:
    nb = new_notebook(cells=NOTEBOOKS[name])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{Path(name).stem[:2]}-{i:02d}"
    return nb


def main() -> int:
    for name in NOTEBOOKS:
        nbformat.write(build(name), HERE / name)
        print("wrote", HERE / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
