"""Object-list models (Mask R-CNN): the claim rule, painting, prediction and training."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import torch

from geoseg.classes import ClassTable
from geoseg.errors import ConfigError
from geoseg.inference import predict
from geoseg.inference.tiling import axis_starts
from geoseg.instances.objects import ObjectList, claimed, core_cuts, object_key, paint_one
from geoseg.models import ModelMetadata, save_checkpoint
from geoseg.models.registry import build_model, get_adapter
from geoseg.tasks import task_outputs

sys.path.insert(0, str(Path(__file__).parent))

DATA = Path(__file__).parents[1] / "data"
CLASSES = ClassTable.from_config(
    [{"id": 0, "name": "background"}, {"id": 1, "name": "building", "thing": True}]
)


# -- the claim rule ------------------------------------------------------------------------
def _scene(rng: np.random.Generator, size: int, n: int, max_side: int) -> list[tuple[int, ...]]:
    """``n`` random rectangles (r0, c0, r1, c1), sides 2..max_side px, may overlap."""
    out = []
    for _ in range(n):
        h, w = rng.integers(2, max_side + 1, 2)
        r, c = rng.integers(0, size - h), rng.integers(0, size - w)
        out.append((int(r), int(c), int(r + h), int(c + w)))
    return out


def _window_view(rects, win_r, win_c, tile, scores) -> ObjectList:
    """What a perfect detector sees in one window: every rectangle clipped to it."""
    masks, sc, lab = [], [], []
    for (r0, c0, r1, c1), s in zip(rects, scores):
        a0, a1 = max(r0, win_r), min(r1, win_r + tile)
        b0, b1 = max(c0, win_c), min(c1, win_c + tile)
        if a0 >= a1 or b0 >= b1:
            continue
        m = np.zeros((tile, tile), bool)
        m[a0 - win_r : a1 - win_r, b0 - win_c : b1 - win_c] = True
        masks.append(m)
        sc.append(s)
        lab.append(1)
    if not masks:
        return ObjectList()
    return ObjectList.from_masks(np.stack(masks), np.asarray(sc), np.asarray(lab),
                                 score_threshold=0.0)  # fmt: skip


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_object_smaller_than_the_overlap_is_claimed_by_exactly_one_window(seed):
    """Perfect detections of 300 rectangles (up to the overlap in size) over a 700 px
    scene, seen by 128 px windows overlapping by 40 px (truncated where a window edge cuts
    them): each rectangle is claimed exactly once, whole, and by the window whose core
    holds its centre."""
    rng = np.random.default_rng(seed)
    size, tile, overlap = 700, 128, 40
    rects = _scene(rng, size, 300, overlap)
    scores = rng.random(len(rects)).astype(np.float32)
    starts = axis_starts(size, tile, overlap)
    cuts = core_cuts(starts, tile)
    found: dict[tuple[int, ...], int] = {}
    for ri, r in enumerate(starts):
        for ci, c in enumerate(starts):
            objs = _window_view(rects, r, c, tile, scores)
            core = (cuts[ri], cuts[ri + 1], cuts[ci], cuts[ci + 1])
            for k in claimed(objs, (r, c), core):
                b = objs.boxes[k]
                box = (int(b[0]) + r, int(b[1]) + c, int(b[2]) + r, int(b[3]) + c)
                found[box] = found.get(box, 0) + 1
    assert sorted(found) == sorted(set(rects))  # whole boxes, nothing truncated
    assert all(n == rects.count(b) for b, n in found.items())  # once (per copy)


def test_core_cuts_partition_the_axis():
    starts = axis_starts(1000, 256, 64, align=32)
    cuts = core_cuts(starts, 256)
    assert cuts[0] < 0 and cuts[-1] > 10**9 and len(cuts) == len(starts) + 1
    for i in range(1, len(starts)):
        # the cut lies in the middle of the overlap of windows i-1 and i
        assert starts[i] <= cuts[i] <= starts[i - 1] + 256
        assert abs((cuts[i] - starts[i]) - (starts[i - 1] + 256 - cuts[i])) <= 1


def test_painting_does_not_depend_on_the_order():
    """Overlapping objects: each pixel takes the highest score (ties: the smaller key),
    whatever order the objects are painted in."""
    rng = np.random.default_rng(5)
    masks = rng.random((12, 40, 40)) > 0.6
    scores = np.round(rng.random(12), 1).astype(np.float32)  # ties on purpose
    objs = ObjectList.from_masks(masks, scores, np.ones(12), score_threshold=0.0)
    results = []
    for order in (range(len(objs)), reversed(range(len(objs))), rng.permutation(len(objs))):
        keys = np.zeros((40, 40), np.uint32)
        best = np.full((40, 40), -1.0, np.float32)
        cls = np.full((40, 40), -1, np.int64)
        for k in order:
            paint_one(keys, best, cls, objs, int(k), object_key(3, int(k), 100), (0, 0))
        results.append(keys.copy())
    assert all(np.array_equal(r, results[0]) for r in results)
    # the winner at a pixel is the best-scoring object covering it
    full = np.zeros((len(objs), 40, 40), bool)
    for k in range(len(objs)):
        r0, c0, r1, c1 = objs.boxes[k]
        full[k, r0:r1, c0:c1] = objs.masks[k]
    covered = full.any(0)
    score_map = np.where(full, objs.scores[:, None, None], -1).max(0)
    winner = (results[0][covered] - 1 - 300).astype(int)
    assert np.allclose(objs.scores[winner], score_map[covered])


def test_object_list_thresholds_and_order():
    masks = np.zeros((3, 10, 10), np.float32)
    masks[0, 2:4, 2:5] = 0.9
    masks[1, 5:9, 5:9] = 0.7
    masks[2, 0:1, 0:1] = 0.9  # 1 pixel: below min_pixels
    objs = ObjectList.from_masks(masks, np.array([0.6, 0.9, 0.8]), np.array([1, 1, 1]),
                                 score_threshold=0.5, min_pixels=2)  # fmt: skip
    assert len(objs) == 2 and objs.scores.tolist() == pytest.approx([0.9, 0.6])
    assert objs.boxes.tolist() == [[5, 5, 9, 9], [2, 2, 4, 5]]
    assert objs.anchors().tolist() == [[6, 6], [2, 3]]
    assert len(ObjectList.from_masks(masks, np.array([0.1] * 3), np.ones(3))) == 0
    # a weaker duplicate mostly under a better mask is dropped with overlap_threshold
    dup = np.zeros((3, 10, 10), bool)
    dup[0, 0:6, 0:6] = True  # score 0.9
    dup[1, 1:6, 1:7] = True  # 0.8: 25 of its 30 px under object 0 -> dropped
    dup[2, 4:10, 4:10] = True  # 0.7: 32 of 36 px free -> kept
    kept = ObjectList.from_masks(dup, np.array([0.9, 0.8, 0.7]), np.ones(3),
                                 overlap_threshold=0.5)  # fmt: skip
    assert kept.scores.tolist() == pytest.approx([0.9, 0.7])
    assert len(ObjectList.from_masks(dup, np.array([0.9, 0.8, 0.7]), np.ones(3))) == 3


# -- Mask R-CNN ----------------------------------------------------------------------------
def _maskrcnn(**kw):
    outs = task_outputs("instance", CLASSES, get_adapter("torchvision"))
    model = build_model("maskrcnn", in_channels=3, outputs=outs, encoder="resnet18",
                        kwargs=kw, classes=CLASSES)  # fmt: skip
    return model, outs


@pytest.fixture(scope="module")
def maskrcnn_ckpt(tmp_path_factory) -> Path:
    """An untrained Mask R-CNN that keeps every detection: many overlapping objects."""
    torch.manual_seed(0)
    kw = {"score_threshold": 0.0, "max_objects": 30, "anchor_sizes": [8, 16, 32, 64, 128]}
    model, outs = _maskrcnn(**kw)
    meta = ModelMetadata(
        arch="maskrcnn", encoder="resnet18", bands=["R", "G", "B"], mean=[80.0] * 3,
        std=[40.0] * 3, classes=CLASSES, task="instance", adapter="torchvision", outputs=outs,
        tile_size=128, model_kwargs=kw,
    )  # fmt: skip
    return save_checkpoint(model, meta, tmp_path_factory.mktemp("mr") / "maskrcnn.safetensors")


def test_maskrcnn_prediction_is_the_same_for_every_block_size_and_scheduler(
    maskrcnn_ckpt, tmp_path
):
    """Object ids exact across blocks and schedulers; numbered 1..n by first pixel; the
    objects table and the class bands agree with the raster."""
    from rasterio.windows import Window

    rgb = tmp_path / "rgb.tif"  # a 320 x 300 px crop of the RGB scene (5 x 5 windows)
    with rasterio.open(DATA / "unlabeled-rgb" / "RGB.byte.tif") as src:
        win = Window(250, 250, 320, 300)
        profile = {**src.profile, "width": 320, "height": 300,
                   "transform": src.window_transform(win)}  # fmt: skip
        with rasterio.open(rgb, "w", **profile) as dst:
            dst.write(src.read(window=win))
    runs = {}
    for name, kw in {
        "default": {},
        "small blocks": {"block_size": 64},
        "processes": {"block_size": 112, "scheduler": "processes", "workers": 2},
    }.items():
        d = tmp_path / name.replace(" ", "_")
        d.mkdir()
        out = predict(maskrcnn_ckpt, rgb, d / "c.tif", instances=d / "i.tif",
                      objects=d / "o.csv", tile_size=128, progress=False, **kw)  # fmt: skip
        with rasterio.open(out[0]) as c, rasterio.open(out[1]) as i:
            runs[name] = (c.read(1), i.read())
    cls, ids = runs["default"]
    for c, i in runs.values():
        assert np.array_equal(i, ids) and np.array_equal(c, cls)
    n = int(ids[0].max())
    assert n > 40
    # 1..n, numbered in the row-major order of each object's first pixel
    flat = ids[0].ravel()
    u, first = np.unique(flat, return_index=True)
    assert u.tolist() == list(range(n + 1))
    assert np.all(np.diff(first[1:]) > 0)
    assert set(np.unique(ids[1][ids[0] > 0])) == {1} and not ids[1][ids[0] == 0].any()
    assert np.array_equal(cls == 1, ids[0] > 0)  # fused class map
    table = pd.read_csv(tmp_path / "default" / "o.csv")
    assert table["instance_id"].tolist() == list(range(1, n + 1))
    assert table["pixels"].tolist() == np.bincount(flat, minlength=n + 1)[1:].tolist()
    assert table["score"].between(0, 1).all() and table["class_name"].eq("building").all()


def test_maskrcnn_options_it_cannot_honour_are_refused(maskrcnn_ckpt, tmp_path):
    rgb = DATA / "unlabeled-rgb" / "RGB.byte.tif"
    with pytest.raises(ConfigError, match="tta"):
        predict(maskrcnn_ckpt, rgb, tmp_path / "a.tif", tta="flip", progress=False)
    with pytest.raises(ConfigError, match="no per-pixel class scores"):
        predict(maskrcnn_ckpt, rgb, tmp_path / "b.tif", probabilities=tmp_path / "p.tif",
                progress=False)  # fmt: skip
    with pytest.raises(ConfigError, match="backend='torch'"):
        predict(maskrcnn_ckpt, rgb, tmp_path / "c.tif", backend="onnx", progress=False)
    assert not list(tmp_path.iterdir())
    for task in ("semantic", "panoptic"):
        with pytest.raises(ConfigError, match="maskrcnn predicts objects only"):
            task_outputs(task, CLASSES, get_adapter("torchvision"))
    with pytest.raises(ConfigError, match="not a torchvision ResNet"):
        build_model("maskrcnn", in_channels=3, outputs=[], encoder="efficientnet-b0",
                    classes=CLASSES)  # fmt: skip


def test_maskrcnn_takes_any_band_count_and_makes_targets_from_instance_ids():
    from geoseg.models.detection import instance_targets

    model, outs = _maskrcnn()
    six = build_model("maskrcnn", in_channels=6, outputs=outs, encoder="resnet18",
                      classes=CLASSES)  # fmt: skip
    assert six.net.backbone.body.conv1.in_channels == 6
    inst = torch.zeros(1, 32, 32, dtype=torch.int64)
    inst[0, 2:6, 3:9], inst[0, 10:20, 10:12] = 4, 7
    cls = (inst > 0).long()
    cls[0, 0, 0] = 255  # no-data
    (t,) = instance_targets(inst, cls, model.thing_index)
    assert t["labels"].tolist() == [1, 1]
    assert t["boxes"].tolist() == [[3, 2, 9, 6], [10, 10, 12, 20]]  # x0, y0, x1, y1
    assert t["masks"].shape == (2, 32, 32) and int(t["masks"][0].sum()) == 24


def test_maskrcnn_trains_with_a_finite_decreasing_loss_and_is_evaluated(tmp_path):
    """A few epochs on touching rectangles: the training loss is finite and falls; the
    checkpoint records the torchvision adapter and the object output; evaluate reports
    the instance and panoptic sections."""
    from _fake_instances import RectanglesDataModule

    from geoseg.evaluation import evaluate
    from geoseg.models import read_metadata
    from geoseg.training import train

    cfg = {
        "task": "instance",
        "model": {"arch": "maskrcnn", "encoder": "resnet18",
                  "kwargs": {"anchor_sizes": [4, 8, 16, 32, 64], "score_threshold": 0.3,
                             "max_objects": 20}},
        "training": {"max_epochs": 3, "lr": 0.001, "optimizer": "adamw", "progress_bar": False,
                     "num_threads": 2, "scheduler": "none", "early_stopping_patience": None},
    }  # fmt: skip
    dm = RectanglesDataModule(n_train=16, n_eval=4, size=64)
    res = train(cfg, output_dir=tmp_path / "run", datamodule=dm)
    losses = [h["train_loss"] for h in res.history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    meta = read_metadata(res.checkpoint)
    assert meta.adapter == "torchvision" and [o.kind for o in meta.outputs] == ["objects"]
    report = evaluate(res.checkpoint, datamodule=dm, split="test", progress=False)
    assert {"f1", "precision", "recall", "tp", "fp", "fn"} <= set(report["instance"])
    assert report["instance"]["tp"] + report["instance"]["fn"] == sum(
        len(np.unique(s["instances"])) - 1 for s in dm.sets["test"]
    )
    assert "pq" in report["panoptic"] and "miou" in report
