import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _fake_dm import CLASSES, FakeDataModule

from geoseg.classes import IGNORE_INDEX
from geoseg.config import ExperimentConfig, TrainingConfig
from geoseg.errors import ConfigError
from geoseg.models import load_model
from geoseg.models.adapter import pad_forward
from geoseg.tasks.metrics import build_metrics, confusion_from_arrays, metrics_report
from geoseg.tasks.optim import SCHEDULERS
from geoseg.tasks.semantic import SemanticSegmentationTask
from geoseg.training import train

TINY_MODEL = {
    "arch": "unet",
    "encoder": "tu-resnet10t",
    "kwargs": {"encoder_depth": 3, "decoder_channels": [16, 8, 8]},
}


def _tiny_model():
    from geoseg.models import create_model

    return create_model(
        "unet", in_channels=2, num_classes=3, encoder="tu-resnet10t", **TINY_MODEL["kwargs"]
    )


def _config(**training):
    base = {
        "max_epochs": 3,
        "lr": 0.01,
        "progress_bar": False,
        "scheduler": "none",
        "num_threads": 1,
    }
    base.update(training)
    return {"model": TINY_MODEL, "training": base}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    cfg = _config(loss={"ce": 1.0, "dice": 0.5}, class_weights="balanced")
    result = train(cfg, output_dir=out, datamodule=FakeDataModule())
    return result


# -- metrics ---------------------------------------------------------------------------
def test_metrics_report_hand_checked():
    preds = torch.tensor([[0, 0, 1, 1], [2, 2, 0, 1]])
    target = torch.tensor([[0, IGNORE_INDEX, 1, 0], [0, 0, 0, 1]])
    table = CLASSES
    m = build_metrics(3)
    m.update(preds, target)
    rep = metrics_report(m.compute(), table)
    # confusion (rows reference): dark -> 2 dark, 1 mid, 2 bright; mid -> 2 mid
    assert rep["confusion_matrix"]["counts"] == [[2, 1, 2], [0, 2, 0], [0, 0, 0]]
    assert rep["confusion_matrix"]["labels"] == ["dark", "mid", "bright"]
    assert rep["pixels"] == 7
    assert rep["overall_accuracy"] == pytest.approx(4 / 7)
    assert rep["iou"] == pytest.approx({"dark": 2 / 5, "mid": 2 / 3, "bright": 0.0})
    assert rep["f1"]["dark"] == pytest.approx(2 * 2 / (2 * 2 + 3))
    assert rep["miou"] == pytest.approx((0.4 + 2 / 3 + 0.0) / 3)
    # "bright" has no reference pixels (only false positives): left out of this mean
    assert rep["miou_reference_classes"] == pytest.approx((0.4 + 2 / 3) / 2)
    assert rep["support"] == {"dark": 5, "mid": 2, "bright": 0}
    json.dumps(rep)  # JSON-ready


def test_metrics_class_absent_everywhere_is_null_and_excluded():
    rep = confusion_from_arrays([0, 1, 1, 0], [0, 1, 0, 0], CLASSES)
    assert rep["iou"]["bright"] is None and rep["f1"]["bright"] is None
    assert rep["iou"]["dark"] == pytest.approx(2 / 3)
    assert rep["iou"]["mid"] == pytest.approx(1 / 2)
    assert rep["miou"] == pytest.approx((2 / 3 + 1 / 2) / 2)


# -- padding ---------------------------------------------------------------------------
def test_pad_forward_keeps_size():
    model = _tiny_model()
    model.eval()
    x = torch.randn(1, 2, 45, 50)
    out = pad_forward(model, x)
    assert out.shape == (1, 3, 45, 50)
    x64 = torch.randn(1, 2, 64, 64)
    assert torch.allclose(pad_forward(model, x64), model(x64))


# -- training --------------------------------------------------------------------------
def test_train_writes_checkpoint_metrics_and_logs(trained):
    out = trained.output_dir
    assert (out / "model.safetensors").is_file()
    assert (out / "config.yaml").is_file()
    assert any((out / "logs").rglob("metrics.csv"))
    summary = json.loads((out / "metrics.json").read_text())
    assert len(summary["history"]) == 3
    assert [h["epoch"] for h in summary["history"]] == [0, 1, 2]
    for key in ("train_loss", "val_loss", "val_miou", "val_accuracy", "lr"):
        assert isinstance(summary["history"][0][key], float)
    assert set(summary["test"]["iou"]) == {"dark", "mid", "bright"}


def test_best_checkpoint_is_the_best_validation_epoch(trained):
    hist = trained.history
    best = max(hist, key=lambda h: h["val_miou"])
    assert trained.best_epoch == best["epoch"]
    # the kept weights reproduce that epoch's validation score
    assert trained.metrics["val"]["miou"] == pytest.approx(best["val_miou"], abs=1e-6)


def test_checkpoint_metadata_is_complete(trained):
    _, meta = load_model(trained.checkpoint)
    dm = FakeDataModule()
    assert meta.arch == "unet" and meta.encoder == "tu-resnet10t"
    assert meta.model_kwargs == TINY_MODEL["kwargs"]
    assert meta.bands == dm.band_names
    assert meta.mean == dm.mean and meta.std == dm.std
    assert meta.classes == CLASSES
    assert meta.tile_size == 32
    assert meta.resolution == 30.0 and meta.crs == "EPSG:32119"
    assert meta.image_nodata == -9999.0
    assert meta.metrics["test"]["miou"] == pytest.approx(trained.metrics["test"]["miou"])
    assert meta.metrics["val"]["miou"] == pytest.approx(trained.metrics["val"]["miou"])
    assert meta.config["training"]["class_weights"] == "balanced"
    assert meta.config["model"] == {
        **TINY_MODEL,
        "encoder_weights": None,
        "download_weights": False,
        "adapter": None,
    }
    # the task, the adapter that rebuilds the model and its named outputs are recorded
    assert (meta.task, meta.adapter, meta.config["task"]) == ("semantic", "smp", "semantic")
    assert [(o.name, o.kind, o.channels, o.activation) for o in meta.outputs] == [
        ("classes", "class_scores", len(CLASSES), "softmax")
    ]
    # the loaded model gives the recorded test score
    from geoseg.evaluation import evaluate

    rep = evaluate(trained.checkpoint, datamodule=dm, progress=False)
    assert rep["miou"] == pytest.approx(trained.metrics["test"]["miou"], abs=1e-6)


def test_model_learns_the_synthetic_task(tmp_path):
    res = train(
        _config(max_epochs=6, lr=0.02, scheduler="cosine"),
        output_dir=tmp_path,
        datamodule=FakeDataModule(n=16),
    )
    first = res.history[0]["train_loss"]
    last = res.history[-1]["train_loss"]
    assert last < first
    # three balanced classes set by two thresholds of band 0: a model that learned them
    # beats always answering the most frequent class (accuracy ~0.4, mIoU ~0.13) by far
    test = res.metrics["test"]
    majority = max(test["support"].values()) / sum(test["support"].values())
    assert majority < 0.45
    assert test["overall_accuracy"] > majority + 0.2  # measured 0.73
    assert test["miou"] > 0.5  # measured 0.57
    assert min(test["iou"].values()) > 0.3  # every class is learned, not only one


def test_num_threads_is_restored(tmp_path):
    before = torch.get_num_threads()
    train(_config(max_epochs=1, num_threads=1), output_dir=tmp_path, datamodule=FakeDataModule())
    assert torch.get_num_threads() == before


def test_same_seed_same_weights(tmp_path):
    from safetensors.torch import load_file

    cfg = _config(max_epochs=1, seed=7)
    a = train(cfg, output_dir=tmp_path / "a", datamodule=FakeDataModule())
    b = train(cfg, output_dir=tmp_path / "b", datamodule=FakeDataModule())
    wa, wb = load_file(str(a.checkpoint)), load_file(str(b.checkpoint))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("opt", ["adamw", "adam", "sgd"])
def test_optimizer_by_name_with_its_hyperparameters(opt):
    cfg = TrainingConfig(optimizer=opt, scheduler="none", lr=0.05, weight_decay=0.01)
    task = SemanticSegmentationTask(_tiny_model(), CLASSES, cfg)
    optimizer = task.configure_optimizers()
    assert type(optimizer).__name__.lower() == opt
    group = optimizer.param_groups[0]
    assert group["lr"] == 0.05 and group["weight_decay"] == 0.01
    assert sum(p.numel() for g in optimizer.param_groups for p in g["params"]) == sum(
        p.numel() for p in task.model.parameters()
    )


def _lr_trajectory(scheduler: str, epochs: int = 8, steps_per_epoch: int = 5) -> list[float]:
    """Learning rate at the start of every epoch, stepping as Lightning would."""
    from geoseg.tasks.optim import OPTIMIZERS

    cfg = TrainingConfig(optimizer="sgd", scheduler=scheduler, lr=0.1, max_epochs=epochs)
    opt = OPTIMIZERS["sgd"](_tiny_model().parameters(), cfg)
    factory = SCHEDULERS[scheduler]
    sched = factory(opt, cfg, epochs * steps_per_epoch) if factory else None
    lrs = []
    for _ in range(epochs):
        lrs.append(opt.param_groups[0]["lr"])
        for _ in range(steps_per_epoch):
            opt.step()
            if sched is not None and sched["interval"] == "step":
                sched["scheduler"].step()
        if sched is not None and sched["interval"] == "epoch":
            if "monitor" in sched:
                sched["scheduler"].step(0.5)  # a validation score that never improves
            else:
                sched["scheduler"].step()
    return lrs


def test_learning_rate_schedules_follow_their_shape():
    assert _lr_trajectory("none") == [0.1] * 8
    cosine = _lr_trajectory("cosine")
    assert cosine[0] == 0.1 and all(b < a for a, b in itertools.pairwise(cosine))
    assert cosine[4] == pytest.approx(0.05)  # half-way down a cosine over 8 epochs
    onecycle = _lr_trajectory("onecycle")
    peak = int(np.argmax(onecycle))
    assert 0 < peak < 7 and onecycle[0] < 0.02 and onecycle[-1] < onecycle[peak] / 2
    assert max(onecycle) <= 0.1 + 1e-9
    # halves once the score has not improved for more than 3 epochs, then again
    plateau = _lr_trajectory("plateau", epochs=10)
    assert plateau[:5] == [0.1] * 5 and plateau[5:9] == pytest.approx([0.05] * 4)
    assert plateau[9] == pytest.approx(0.025)


def test_plateau_schedule_monitors_the_task_score():
    task = SemanticSegmentationTask(_tiny_model(), CLASSES, TrainingConfig(scheduler="plateau"))
    out = task.configure_optimizers()
    assert out["lr_scheduler"]["monitor"] == task.monitor == "val_miou"


def test_unknown_training_key_names_valid_keys():
    with pytest.raises(ConfigError, match="max_epochs") as err:
        ExperimentConfig.load({"training": {"max_epoch": 3}})
    assert "training" in str(err.value) and "valid keys" in str(err.value)


def test_unknown_key_in_override_and_at_top_level():
    with pytest.raises(ConfigError, match="did you mean 'lr'"):
        ExperimentConfig.load({}, overrides=["training.lrr=0.1"])
    with pytest.raises(ConfigError, match=r"valid keys are .*'training'"):
        ExperimentConfig.load({"trainig": {}})
    with pytest.raises(ConfigError, match="encoder"):
        ExperimentConfig.load({"model": {"encodr": "resnet18"}})


def test_override_values_are_parsed_as_yaml():
    exp = ExperimentConfig.load(
        {}, overrides=["training.max_epochs=3", "training.loss={ce: 1.0, dice: 0.5}"]
    )
    assert exp.training.max_epochs == 3
    assert exp.training.loss == {"ce": 1.0, "dice": 0.5}
    with pytest.raises(ConfigError, match="expected int"):
        ExperimentConfig.load({}, overrides=["training.max_epochs=many"])


@pytest.mark.parametrize(
    ("training", "match"),
    [
        ({"optimizer": "adamm"}, "valid names are \\['adam', 'adamw', 'sgd'\\]"),
        ({"scheduler": "step"}, "cosine"),
        ({"loss": "bce"}, "valid names"),
        ({"class_weights": [1.0, 2.0]}, "2 weights given for 3 classes"),
        ({"class_weights": "inverse"}, "balanced"),
    ],
)
def test_bad_training_values(tmp_path, training, match):
    with pytest.raises(ConfigError, match=match):
        train(_config(**training), output_dir=tmp_path, datamodule=FakeDataModule())


def test_import_geoseg_is_lazy():
    import subprocess

    code = (
        "import sys, geoseg; assert 'torch' not in sys.modules; "
        # config, the task registry and the model contract are light (no torch)
        "import geoseg.config, geoseg.tasks, geoseg.models, geoseg.models.outputs, geoseg.io; "
        "assert 'torch' not in sys.modules, 'a light module imported torch'; "
        "from geoseg import load_model, train, evaluate; "
        "assert load_model.__module__ == 'geoseg.models.checkpoint'; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"
    import geoseg

    with pytest.raises(AttributeError, match="no attribute 'trian'"):
        geoseg.trian  # noqa: B018
