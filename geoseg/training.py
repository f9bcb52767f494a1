"""Training: a Lightning task around any registered smp model, driven by one YAML config.

:class:`SegmentationTask` is a ``LightningModule`` (no home-grown loop): loss from
:mod:`geoseg.losses`, metrics from :mod:`geoseg.metrics`, optimizer and LR schedule by
name. :func:`train` reads an experiment config (``data``, ``model``, ``training``,
``output_dir``), builds the data module and the model, fits with early stopping and
best-checkpoint selection on validation mIoU, scores the best weights on the validation
and test splits, and writes to the output folder:

* ``model.safetensors``: the best weights with complete :class:`~geoseg.models.ModelMetadata`
  (bands, normalization, classes, grid, val/test metrics and the full config);
* ``metrics.json``: per-epoch history plus the final validation and test reports;
* ``config.yaml``: the resolved config (after overrides);
* ``logs/``: Lightning's CSV logs and its ``.ckpt`` files.
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import nn

from geoseg.classes import IGNORE_INDEX, ClassTable
from geoseg.config import ExperimentConfig
from geoseg.errors import ConfigError, DataError
from geoseg.losses import balanced_class_weights, build_loss
from geoseg.metrics import build_metrics, metrics_report

log = logging.getLogger(__name__)

#: Metric used for early stopping and best-checkpoint selection.
MONITOR = "val_miou"


@dataclass
class TrainingConfig:
    """The ``training:`` section of an experiment config.

    Attributes:
        max_epochs: upper bound on epochs (early stopping may end sooner).
        lr: peak learning rate.
        weight_decay: optimizer weight decay.
        optimizer: a name from :data:`OPTIMIZERS` (adamw, adam, sgd).
        momentum: SGD momentum.
        scheduler: a name from :data:`SCHEDULERS` (cosine, onecycle, plateau, none).
        loss: a loss name (ce, dice, jaccard, focal, lovasz) or ``{name: weight}``.
        loss_options: extra keywords per loss, e.g. ``{focal: {gamma: 3.0}}``.
        class_weights: None, ``"balanced"`` (inverse train-split pixel frequency) or one
            weight per class in class-table order.
        early_stopping_patience: epochs without val mIoU gain before stopping (None: off).
        seed: seed for weights init, sampling and augmentation (``seed_everything``).
        deterministic: ask torch for deterministic kernels (warn where none exists).
        accelerator: Lightning accelerator (auto, cpu, gpu, mps).
        devices: Lightning devices (auto, 1, [0], ...).
        precision: Lightning precision (32-true, 16-mixed, bf16-mixed).
        limit_train_batches, limit_val_batches, limit_test_batches: int = number of
            batches, float = fraction per epoch (handy for smoke runs).
        log_every_n_steps: how often step losses are logged.
        progress_bar: show Lightning's progress bar.
        pad_multiple: inputs are reflection-padded to a multiple of this many pixels
            (smp encoders need 32) and outputs cropped back.
        num_threads: CPU threads torch may use (None: torch's default). On a busy,
            shared machine 1 is often several times faster than oversubscribing.
    """

    max_epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"
    momentum: float = 0.9
    scheduler: str = "cosine"
    loss: str | dict[str, float] = "ce"
    loss_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    class_weights: str | list[float] | None = None
    early_stopping_patience: int | None = 10
    seed: int = 0
    deterministic: bool = True
    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    precision: str | int = "32-true"
    limit_train_batches: int | float = 1.0
    limit_val_batches: int | float = 1.0
    limit_test_batches: int | float = 1.0
    log_every_n_steps: int = 10
    progress_bar: bool = True
    pad_multiple: int = 32
    num_threads: int | None = None


def _adamw(params: Iterable[Any], cfg: TrainingConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _adam(params: Iterable[Any], cfg: TrainingConfig) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def _sgd(params: Iterable[Any], cfg: TrainingConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True
    )


#: Optimizer names accepted in ``training.optimizer``.
OPTIMIZERS: dict[str, Callable[[Iterable[Any], TrainingConfig], torch.optim.Optimizer]] = {
    "adamw": _adamw,
    "adam": _adam,
    "sgd": _sgd,
}


def _cosine(opt: torch.optim.Optimizer, cfg: TrainingConfig, steps: int) -> dict[str, Any]:
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, cfg.max_epochs))
    return {"scheduler": sched, "interval": "epoch"}


def _onecycle(opt: torch.optim.Optimizer, cfg: TrainingConfig, steps: int) -> dict[str, Any]:
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=max(2, steps))
    return {"scheduler": sched, "interval": "step"}


def _plateau(opt: torch.optim.Optimizer, cfg: TrainingConfig, steps: int) -> dict[str, Any]:
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=3)
    return {"scheduler": sched, "interval": "epoch", "monitor": MONITOR, "strict": False}


#: LR schedule names accepted in ``training.scheduler`` (``none`` keeps the LR fixed).
SCHEDULERS: dict[
    str, Callable[[torch.optim.Optimizer, TrainingConfig, int], dict[str, Any]] | None
] = {
    "cosine": _cosine,
    "onecycle": _onecycle,
    "plateau": _plateau,
    "none": None,
}


def _pick(registry: Mapping[str, Any], name: str, key: str) -> Any:
    k = str(name).lower()
    if k not in registry:
        raise ConfigError(
            f"training.{key}: unknown name {name!r}; valid names are {sorted(registry)}"
        )
    return registry[k]


def pad_forward(model: nn.Module, x: torch.Tensor, multiple: int = 32) -> torch.Tensor:
    """Run ``model`` on ``x`` reflection-padded to a multiple of ``multiple`` pixels.

    smp encoders downsample 5 times and need H and W divisible by 32; padding then
    cropping the logits lets any tile or chip size through.
    """
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph or pw:
        mode = "reflect" if ph < h and pw < w else "replicate"
        x = F.pad(x, (0, pw, 0, ph), mode=mode)
    out = model(x)
    return out[..., :h, :w] if (ph or pw) else out


class SegmentationTask(pl.LightningModule):
    """Semantic segmentation of (B, C, H, W) images into (B, H, W) class indices.

    Args:
        model: a network mapping images to logits ``(B, K, H, W)``.
        classes: the class table (``K`` entries).
        config: the training section (optimizer, scheduler, loss ...).
        class_weights: optional per-class loss weights.
    """

    def __init__(
        self,
        model: nn.Module,
        classes: ClassTable,
        config: TrainingConfig | None = None,
        *,
        class_weights: Sequence[float] | torch.Tensor | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.classes = classes
        self.config = config or TrainingConfig()
        self.loss_fn = build_loss(
            self.config.loss,
            class_weights=class_weights,
            ignore_index=IGNORE_INDEX,
            options=self.config.loss_options,
        )
        k = len(classes)
        self.val_metrics = build_metrics(k).clone(prefix="val_")
        self.test_metrics = build_metrics(k).clone(prefix="test_")
        #: Per-epoch records (epoch, train_loss, val_loss, val_miou, val_accuracy, lr).
        self.history: list[dict[str, Any]] = []
        #: Last computed report per stage ("val", "test").
        self.reports: dict[str, dict[str, Any]] = {}
        self._train_losses: list[float] = []
        self._val_losses: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for a batch of images."""
        return pad_forward(self.model, x, self.config.pad_multiple)

    def _step(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x, y = batch["image"], batch["mask"]
        if y.ndim == 4 and y.shape[1] == 1:
            y = y[:, 0]
        y = y.long()
        logits = self(x)
        return logits, y

    def training_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        """Loss of one training batch."""
        logits, y = self._step(batch)
        loss = self.loss_fn(logits, y)
        bs = y.shape[0]
        self.log("train_loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=bs)
        self._train_losses.append(float(loss.detach()))
        return loss

    def validation_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        """Update validation loss and metrics."""
        logits, y = self._step(batch)
        loss = self.loss_fn(logits, y)
        self.log("val_loss", loss, prog_bar=False, on_epoch=True, batch_size=y.shape[0])
        self._val_losses.append(float(loss.detach()))
        self.val_metrics.update(logits.argmax(1), y)

    def test_step(self, batch: Mapping[str, torch.Tensor], batch_idx: int) -> None:
        """Update test metrics."""
        logits, y = self._step(batch)
        self.test_metrics.update(logits.argmax(1), y)

    def _finish(self, stage: str, metrics: Any) -> dict[str, Any]:
        report = metrics_report(metrics.compute(), self.classes)
        metrics.reset()
        self.reports[stage] = report
        miou = report["miou"]
        self.log(f"{stage}_miou", float("nan") if miou is None else miou, prog_bar=True)
        acc = report["overall_accuracy"]
        self.log(f"{stage}_accuracy", float("nan") if acc is None else acc)
        return report

    def on_validation_epoch_end(self) -> None:
        """Compute the validation report (logged as ``val_miou``, ``val_accuracy``)."""
        report = self._finish("val", self.val_metrics)
        if self.trainer.sanity_checking:
            self._val_losses.clear()
            return
        vl = self._val_losses
        self._pending = {
            "val_loss": sum(vl) / len(vl) if vl else None,
            "val_miou": report["miou"],
            "val_accuracy": report["overall_accuracy"],
            "val_iou": report["iou"],
        }
        self._val_losses = []

    def on_train_epoch_end(self) -> None:
        """Append this epoch's record to :attr:`history`."""
        tl = self._train_losses
        opt = self.optimizers()
        lr = opt.param_groups[0]["lr"] if hasattr(opt, "param_groups") else None
        rec: dict[str, Any] = {
            "epoch": int(self.current_epoch),
            "train_loss": sum(tl) / len(tl) if tl else None,
            "lr": lr,
        }
        rec.update(getattr(self, "_pending", {}))
        self._pending = {}
        self.history.append(rec)
        self._train_losses = []

    def on_test_epoch_end(self) -> None:
        """Compute the test report (logged as ``test_miou``, ``test_accuracy``)."""
        self._finish("test", self.test_metrics)

    def configure_optimizers(self) -> Any:
        """Optimizer and LR schedule named in the config."""
        cfg = self.config
        opt = _pick(OPTIMIZERS, cfg.optimizer, "optimizer")(self.model.parameters(), cfg)
        sched_factory = _pick(SCHEDULERS, cfg.scheduler, "scheduler")
        if sched_factory is None:
            return opt
        steps = int(self.trainer.estimated_stepping_batches) if self._trainer else 1
        return {"optimizer": opt, "lr_scheduler": sched_factory(opt, cfg, steps)}


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes:
        output_dir: the run folder.
        checkpoint: path of ``model.safetensors`` (best validation mIoU).
        metrics: ``{"val": report, "test": report}`` of the best weights.
        history: one record per epoch.
        best_epoch: the epoch whose weights were kept (None without validation).
    """

    output_dir: Path
    checkpoint: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]]
    best_epoch: int | None = None


def _as_float(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        value = value[0]
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _as_crs(value: Any) -> str | None:
    if value is None:
        return None
    for attr in ("to_string", "to_wkt"):
        fn = getattr(value, attr, None)
        if callable(fn):
            try:
                text = fn()
            except Exception:  # pragma: no cover - exotic CRS objects
                continue
            if text:
                return str(text)
    return str(value)


def _floats(values: Any) -> list[float]:
    return [float(v) for v in torch.as_tensor(values).flatten().tolist()]


def load_experiment(
    config: str | Path | ExperimentConfig | Mapping[str, Any], overrides: Iterable[str] = ()
) -> ExperimentConfig:
    """An :class:`~geoseg.config.ExperimentConfig` from a YAML path, mapping or object.

    ``overrides`` (``"training.max_epochs=3"``) apply to the plain data before
    validation, so a typo in an override names the valid keys too.
    """
    return ExperimentConfig.load(config, overrides=overrides)


def make_datamodule(config: ExperimentConfig) -> Any:
    """The :class:`geoseg.data.GeoDataModule` described by ``config.data``."""
    from geoseg.data import GeoDataModule

    return GeoDataModule(config.data, seed=config.training.seed)


def _class_counts(dm: Any, num_classes: int) -> torch.Tensor:
    """Labelled pixels per class in the training split."""
    if hasattr(dm, "class_pixel_counts"):
        counts = torch.as_tensor(dm.class_pixel_counts("train")).long().flatten()
        return counts[:num_classes]
    if hasattr(dm, "split_pixels"):
        _, y = dm.split_pixels("train")
        y = torch.as_tensor(y).long()
    else:
        dm.setup("fit")
        ys = [b["mask"].long().flatten() for b in dm.train_dataloader()]
        y = torch.cat(ys) if ys else torch.zeros(0, dtype=torch.long)
    y = y[(y >= 0) & (y < num_classes)]
    return torch.bincount(y, minlength=num_classes)


def _resolve_class_weights(cfg: TrainingConfig, dm: Any, classes: ClassTable) -> Any:
    cw = cfg.class_weights
    if cw is None:
        return None
    if isinstance(cw, str):
        if cw.lower() != "balanced":
            raise ConfigError(
                f"training.class_weights: {cw!r} is not 'balanced', null or a list of "
                f"{len(classes)} numbers"
            )
        weights = balanced_class_weights(_class_counts(dm, len(classes)))
        log.info("balanced class weights: %s", dict(zip(classes.names, weights.tolist())))
        return weights
    if len(cw) != len(classes):
        raise ConfigError(
            f"training.class_weights: {len(cw)} weights given for {len(classes)} classes "
            f"{classes.names}; give one per class in that order"
        )
    return torch.tensor([float(v) for v in cw])


def build_metadata(dm: Any, config: ExperimentConfig, metrics: Mapping[str, Any]) -> Any:
    """A complete :class:`~geoseg.models.ModelMetadata` for a model trained on ``dm``."""
    from geoseg.models import ModelMetadata

    return ModelMetadata(
        arch=config.model.arch,
        encoder=config.model.encoder,
        bands=[str(b) for b in dm.band_names],
        mean=_floats(dm.mean),
        std=_floats(dm.std),
        classes=dm.classes,
        tile_size=int(dm.tile_size),
        resolution=_as_float(getattr(dm, "resolution", None)),
        crs=_as_crs(getattr(dm, "crs", None)),
        image_nodata=_as_float(getattr(dm, "image_nodata", None)),
        model_kwargs=dict(config.model.kwargs),
        metrics=dict(metrics),
        config=config.to_dict(),
    )


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


def train(
    config: str | Path | ExperimentConfig | Mapping[str, Any],
    *,
    overrides: Iterable[str] = (),
    output_dir: str | Path | None = None,
    datamodule: Any = None,
) -> TrainResult:
    """Train a segmentation model as described by an experiment config.

    Args:
        config: a YAML path, a plain mapping or an :class:`~geoseg.config.ExperimentConfig`.
        overrides: dotted ``key=value`` strings applied on top (values parsed as YAML),
            e.g. ``["training.max_epochs=3", "data.batch_size=4"]``.
        output_dir: the run folder; defaults to the config's ``output_dir``.
        datamodule: use this LightningDataModule instead of building one from
            ``config.data`` (it must offer the attributes of
            :class:`geoseg.data.GeoDataModule`: classes, band_names, mean, std,
            tile_size, ...).

    Returns:
        A :class:`TrainResult` (checkpoint path, val/test reports, history).

    Raises:
        ConfigError: unknown key or invalid value anywhere in the config.
        DataError: the data yields no training batches.
    """
    exp = load_experiment(config, overrides)
    out = Path(output_dir if output_dir is not None else exp.output_dir or "runs/experiment")
    out.mkdir(parents=True, exist_ok=True)
    tcfg: TrainingConfig = exp.training
    _pick(OPTIMIZERS, tcfg.optimizer, "optimizer")  # fail fast, before data loading
    _pick(SCHEDULERS, tcfg.scheduler, "scheduler")
    build_loss(tcfg.loss, options=tcfg.loss_options)

    threads = torch.get_num_threads()
    if tcfg.num_threads is not None:
        torch.set_num_threads(max(1, tcfg.num_threads))
    try:
        return _fit(exp, tcfg, out, datamodule)
    finally:
        torch.set_num_threads(threads)


def _fit(exp: ExperimentConfig, tcfg: TrainingConfig, out: Path, datamodule: Any) -> TrainResult:
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    from geoseg.io.outputs import atomic_path
    from geoseg.models import create_model, save_checkpoint

    pl.seed_everything(tcfg.seed, workers=True, verbose=False)
    dm = datamodule if datamodule is not None else make_datamodule(exp)
    if hasattr(dm, "prepare_data"):
        dm.prepare_data()
    dm.setup("fit")
    classes: ClassTable = dm.classes
    model = create_model(
        exp.model.arch,
        in_channels=len(dm.band_names),
        num_classes=len(classes),
        encoder=exp.model.encoder,
        encoder_weights=exp.model.encoder_weights,
        **exp.model.kwargs,
    )
    weights = _resolve_class_weights(tcfg, dm, classes)
    task = SegmentationTask(model, classes, tcfg, class_weights=weights)

    has_val = _has_batches(dm, "val_dataloader")
    ckpt_dir = out / "logs" / "checkpoints"
    for stale in ckpt_dir.glob("*.ckpt"):  # a previous run in the same folder
        stale.unlink()
    ckpt_cb = ModelCheckpoint(
        dirpath=ckpt_dir,
        filename="best-{epoch}",
        monitor=MONITOR if has_val else None,
        mode="max",
        save_top_k=1,
        save_last=False,
    )
    callbacks: list[pl.Callback] = [ckpt_cb]
    if has_val and tcfg.early_stopping_patience is not None:
        callbacks.append(
            EarlyStopping(
                monitor=MONITOR,
                mode="max",
                patience=tcfg.early_stopping_patience,
                check_finite=False,
            )
        )
    trainer = pl.Trainer(
        max_epochs=tcfg.max_epochs,
        accelerator=tcfg.accelerator,
        devices=tcfg.devices,
        precision=tcfg.precision,  # type: ignore[arg-type]
        deterministic="warn" if tcfg.deterministic else False,
        logger=CSVLogger(str(out), name="logs", version=""),
        callbacks=callbacks,
        default_root_dir=str(out),
        limit_train_batches=tcfg.limit_train_batches,
        limit_val_batches=tcfg.limit_val_batches if has_val else 0,
        limit_test_batches=tcfg.limit_test_batches,
        log_every_n_steps=tcfg.log_every_n_steps,
        enable_progress_bar=tcfg.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*smaller than the logging interval.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        trainer.fit(task, datamodule=dm)
        if trainer.global_step == 0:
            raise DataError(
                "training produced no optimisation step: the training split yields no "
                "batches; check data paths, the split and data.batch_size"
            )
        best = ckpt_cb.best_model_path or None
        best_epoch = _best_epoch(task.history)
        if best:
            state = torch.load(best, map_location="cpu", weights_only=False)["state_dict"]
            task.load_state_dict(state)
        metrics: dict[str, Any] = {}
        if has_val:
            trainer.validate(task, datamodule=dm, verbose=False)
            metrics["val"] = task.reports["val"]
        if _has_batches(dm, "test_dataloader", stage="test"):
            trainer.test(task, datamodule=dm, verbose=False)
            metrics["test"] = task.reports["test"]
    metrics = _jsonable(metrics)
    history = _jsonable(task.history)
    meta = build_metadata(dm, exp, {**metrics, "best_epoch": best_epoch})
    ckpt_path = save_checkpoint(task.model.cpu(), meta, out / "model.safetensors")
    summary = {
        "best_epoch": best_epoch,
        "monitor": MONITOR,
        "history": history,
        **metrics,
        "checkpoint": str(ckpt_path),
    }
    with atomic_path(out / "metrics.json", overwrite=True) as tmp:
        tmp.write_text(json.dumps(summary, indent=2))
    import yaml

    with atomic_path(out / "config.yaml", overwrite=True) as tmp:
        tmp.write_text(yaml.safe_dump(exp.to_dict(), sort_keys=False))
    return TrainResult(out, ckpt_path, metrics, history, best_epoch)


def _best_epoch(history: list[dict[str, Any]]) -> int | None:
    scored = [h for h in history if isinstance(h.get("val_miou"), (int, float))]
    scored = [h for h in scored if not math.isnan(h["val_miou"])]
    if not scored:
        return None
    return int(max(scored, key=lambda h: h["val_miou"])["epoch"])


def _has_batches(dm: Any, method: str, *, stage: str | None = None) -> bool:
    """Whether ``dm.<method>()`` exists and yields at least one batch."""
    fn = getattr(dm, method, None)
    if fn is None:
        return False
    try:
        if stage is not None:
            dm.setup(stage)
        loader = fn()
    except (NotImplementedError, DataError):
        return False
    if loader is None:
        return False
    try:
        return len(loader) > 0
    except TypeError:
        return True
