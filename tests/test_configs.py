"""Every shipped config trains at tiny size through the CLI and round-trips its metadata."""

import json
from pathlib import Path

import pytest

import geoseg
from geoseg.cli import main
from geoseg.config import ExperimentConfig, load_yaml
from geoseg.errors import ConfigError

ROOT = Path(__file__).parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))

TINY = [
    "--set", "training.max_epochs=1",
    "--set", "training.limit_train_batches=2",
    "--set", "training.limit_val_batches=2",
    "--set", "training.limit_test_batches=2",
    "--set", "training.progress_bar=false",
    "--set", "training.num_threads=1",
    "--set", "data.batch_size=2",
    "--set", "data.train_samples=4",
    "--set", "data.tile_size=32",
]  # fmt: skip


def tiny(path: Path) -> list[str]:
    """TINY plus a smaller decoder for the per-pixel models."""
    if load_yaml(path)["model"]["arch"] in ("maskrcnn", "mask2former"):
        return TINY
    return [*TINY, "--set", "model.kwargs.decoder_channels=[16, 8, 8]"]


def test_configs_exist():
    names = {p.name for p in CONFIGS}
    assert {
        "nc_landcover.yaml",
        "sen1floods11_water.yaml",
        "spacenet_rio_buildings.yaml",
        "spacenet_rio_buildings_instances.yaml",
        "alexandria_buildings_instances.yaml",
        "alexandria_buildings_maskrcnn.yaml",
        "spacenet_rio_buildings_maskrcnn.yaml",
    } <= names


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_validates(path):
    exp = ExperimentConfig.load(path)
    assert exp.data is not None
    assert exp.model.encoder_weights is None  # nothing downloads
    table = exp.data.class_table()
    assert len(table) >= 2
    # a typo'd key at any depth names the valid keys
    with pytest.raises(ConfigError, match="valid keys"):
        ExperimentConfig.load(path, overrides=["data.split.block_sise=3"])


@pytest.mark.filterwarnings("ignore::geoseg.errors.ReprojectionWarning")
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_trains_tiny_via_cli(path, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    out = tmp_path / "run"
    rc = main(["train", str(path), "-o", str(out), *tiny(path)])
    assert rc == 0
    raw = load_yaml(path)
    model, meta = geoseg.load_model(out / "model.safetensors")
    assert meta.arch == raw["model"]["arch"]
    assert meta.encoder == raw["model"]["encoder"]
    classes = raw["data"]["classes"]
    assert meta.classes.ids == [c["id"] for c in classes]
    assert meta.classes.names == [c["name"] for c in classes]
    assert meta.bands == raw["data"]["imagery"]["band_names"]
    assert len(meta.mean) == len(meta.std) == len(meta.bands)
    assert all(s > 0 for s in meta.std)
    assert meta.tile_size == 32
    assert meta.crs and meta.resolution and meta.resolution > 0
    assert meta.config["training"]["max_epochs"] == 1
    assert (
        meta.config["data"]["imagery"] == ExperimentConfig.load(path).to_dict()["data"]["imagery"]
    )
    assert "test" in meta.metrics and "val" in meta.metrics
    assert set(meta.metrics["test"]["iou"]) == set(meta.classes.names)
    assert meta.task == raw.get("task", "semantic")
    if meta.task == "instance":  # objects decoded and scored; decoding stored for predict
        assert {"f1", "precision", "recall", "pq"} <= set(meta.metrics["test"]["instance"])
        if "instances" in raw:
            assert meta.task_options["decode"]["grow_px"] == raw["instances"]["grow_px"]
        else:  # an object-list model: its output is the object list
            assert [o.kind for o in meta.outputs] == ["objects"]
        assert meta.classes.things == [c["id"] for c in classes if c.get("thing")]
    summary = json.loads((out / "metrics.json").read_text())
    assert len(summary["history"]) == 1
    assert model.training is False


def test_evaluate_rebuilds_data_from_checkpoint_config(tmp_path, monkeypatch):
    """`geoseg evaluate` needs only the checkpoint: data comes from its stored config."""
    monkeypatch.chdir(ROOT)
    path = ROOT / "configs" / "sen1floods11_water.yaml"
    out = tmp_path / "run"
    assert main(["train", str(path), "-o", str(out), *tiny(path)]) == 0
    report = tmp_path / "eval" / "test.json"
    report.parent.mkdir()
    assert main(["evaluate", str(out / "model.safetensors"), "-o", str(report)]) == 0
    saved = json.loads(report.read_text())
    trained = json.loads((out / "metrics.json").read_text())["test"]
    # limit_test_batches=2 in training vs the whole test split here: same labels, >= pixels
    assert saved["pixels"] >= trained["pixels"] > 0
    assert saved["confusion_matrix"]["labels"] == ["not-water", "water"]
    assert (tmp_path / "eval" / "test_confusion.png").stat().st_size > 1000


NC = ROOT / "configs" / "nc_landcover.yaml"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.num_workers=-1", r"data\.num_workers: -1 is not valid; .*0 .* to 256"),
        ("data.num_workers=100000", r"data\.num_workers: 100000 is not valid"),
        ("data.eval_stride=-5", r"data\.eval_stride: -5 is not valid; .*1 to 65536"),
        ("data.eval_stride=0", r"data\.eval_stride: 0 is not valid"),
        ("data.min_valid_fraction=5", r"data\.min_valid_fraction: 5\.0 is not valid"),
        ("data.min_valid_fraction=1", r"data\.min_valid_fraction: 1\.0 is not valid"),
    ],
)
def test_loader_settings_are_bounded(override, message):
    """Before: torch's raw ValueError/RuntimeError, a silent default, or an indirect error."""
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig.load(NC, overrides=[override])


def test_scientific_notation_without_a_dot_is_a_number(tmp_path):
    """YAML 1.1 (PyYAML) reads ``1e-3`` as text: it used to be "expected float, got str"."""
    text = NC.read_text()
    assert ExperimentConfig.load(NC, overrides=["training.lr=1e-3"]).training.lr == 1e-3
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        text.replace("  lr: 0.003", "  lr: 3e-3").replace("data/", str(ROOT / "data") + "/")
    )
    assert "lr: 3e-3" in cfg.read_text()
    assert ExperimentConfig.load(cfg).training.lr == 3e-3
    assert ExperimentConfig.load(NC, overrides=["training.lr=5E-4"]).training.lr == 5e-4
    with pytest.raises(ConfigError, match=r"training\.lr: expected float, got str 'fast'"):
        ExperimentConfig.load(NC, overrides=["training.lr=fast"])
    with pytest.raises(ConfigError, match=r"training\.lr: 1000000000\.0 is not valid"):
        ExperimentConfig.load(NC, overrides=["training.lr=1e9"])  # then checked like any number
