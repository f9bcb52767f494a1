"""Training: fit the task's Lightning module on a model built by its adapter, from one config.

:func:`train` reads an experiment config (``task``, ``data``, ``model``, ``training``,
``output_dir``), builds the data module, the network (:func:`geoseg.models.build_model`)
and the task (:func:`geoseg.tasks.task_class`), fits with early stopping and
best-checkpoint selection on the task's validation score, scores the best weights on
the validation and test splits, and writes to the output folder:

* ``model.safetensors``: the best weights with complete :class:`~geoseg.models.ModelMetadata`
  (task, adapter, outputs, bands, normalization, classes, grid, val/test metrics and the
  full config);
* ``metrics.json``: per-epoch history plus the final validation and test reports;
* ``config.yaml``: the resolved config (after overrides);
* ``logs/``: Lightning's CSV logs and its ``.ckpt`` files.

A run works in a hidden folder inside the run folder and moves its files into place
only when it completes: an interrupted or failed run leaves the run folder as it was
(a previous run in it included, byte for byte) and removes its work folder.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import shutil
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from geoseg.arguments import check_flag, check_path
from geoseg.classes import ClassTable
from geoseg.config import ExperimentConfig, TrainingConfig
from geoseg.errors import ConfigError, DataError
from geoseg.models import ModelMetadata, build_model, resolve_adapter, save_checkpoint
from geoseg.models.weights import PretrainedRecord
from geoseg.tasks import task_class, task_outputs
from geoseg.tasks.base import BaseTask
from geoseg.tasks.losses import balanced_class_weights, build_loss
from geoseg.tasks.optim import OPTIMIZERS, SCHEDULERS, pick

log = logging.getLogger(__name__)


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

    if config.data is None:
        raise ConfigError("data: the config has no data section; add one or pass a datamodule")
    from geoseg.instances import EncodeParams

    encode = EncodeParams(**config.instances.encode_options())
    return GeoDataModule(
        config.data,
        seed=config.training.seed,
        base_dir=config.base_dir,
        task=config.task,
        encode=encode,
    )


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


def build_metadata(
    dm: Any,
    config: ExperimentConfig,
    metrics: Mapping[str, Any],
    pretrained: Mapping[str, Any] | None = None,
) -> Any:
    """A complete :class:`~geoseg.models.ModelMetadata` for a model trained on ``dm``."""
    adapter = resolve_adapter(config.model.arch, config.model.adapter)
    return ModelMetadata(
        arch=config.model.arch,
        encoder=config.model.encoder,
        bands=[str(b) for b in dm.band_names],
        mean=_floats(dm.mean),
        std=_floats(dm.std),
        classes=dm.classes,
        task=config.task,
        adapter=adapter.name,
        outputs=task_outputs(config.task, dm.classes, adapter),
        task_options=(
            config.instances.task_options() if config.task in ("instance", "panoptic") else {}
        ),
        tile_size=int(dm.tile_size),
        resolution=_as_float(getattr(dm, "resolution", None)),
        crs=_as_crs(getattr(dm, "crs", None)),
        image_nodata=_as_float(getattr(dm, "image_nodata", None)),
        image_nodata_mode=config.data.imagery.nodata_mode if config.data is not None else "any",
        model_kwargs=dict(config.model.kwargs),
        metrics=dict(metrics),
        config=config.to_dict(),
        pretrained=dict(pretrained or {}),
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
    overwrite: bool = False,
) -> TrainResult:
    """Train a model for the config's task as described by an experiment config.

    Args:
        config: a YAML path, a plain mapping or an :class:`~geoseg.config.ExperimentConfig`.
        overrides: dotted ``key=value`` strings applied on top (values parsed as YAML),
            e.g. ``["training.max_epochs=3", "data.batch_size=4"]``.
        output_dir: the run folder; defaults to the config's ``output_dir``.
        datamodule: use this LightningDataModule instead of building one from
            ``config.data`` (it must offer the attributes of
            :class:`geoseg.data.GeoDataModule`: classes, band_names, mean, std,
            tile_size, ...).
        overwrite: train into a run folder that already holds a run (its
            ``model.safetensors``, ``metrics.json``, ``config.yaml`` and ``logs/`` files
            are replaced when the new run succeeds, and left as they were when it fails
            or is interrupted); without it such a folder is refused.

    Returns:
        A :class:`TrainResult` (checkpoint path, val/test reports, history).

    Raises:
        ConfigError: unknown key or invalid value anywhere in the config.
        DataError: the data yields no training batches.
    """
    if output_dir is not None:
        check_path(output_dir, "output_dir")
    overwrite = check_flag(overwrite, "overwrite")
    exp = load_experiment(config, overrides)
    out = Path(output_dir if output_dir is not None else exp.output_dir or "runs/experiment")
    check_run_folder(out, overwrite, config if isinstance(config, str | Path) else None)
    tcfg: TrainingConfig = exp.training
    # fail fast, before any data is read
    task_class(exp.task)
    resolve_adapter(exp.model.arch, exp.model.adapter)
    pick(OPTIMIZERS, tcfg.optimizer, "optimizer")
    pick(SCHEDULERS, tcfg.scheduler, "scheduler")
    build_loss(tcfg.loss, options=tcfg.loss_options)
    threads = torch.get_num_threads()
    if tcfg.num_threads is not None:
        torch.set_num_threads(max(1, tcfg.num_threads))
    try:
        with _run_folder(out) as work:
            return _fit(exp, out, work, datamodule)
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def _run_folder(out: Path) -> Iterator[Path]:
    """A work folder inside the run folder ``out``, made for one run and removed after it.

    A run that fails or is interrupted leaves ``out`` as it was: its work folder goes,
    and so does ``out`` itself (and its parents) if the run made them.
    """
    from geoseg.errors import OutputError
    from geoseg.io.outputs import disk_full, remove_stale_temporaries, work_folder

    made = [p for p in (out, *out.parents) if not p.exists()]
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)  # the work folders of killed runs
    work = work_folder(out, "train")
    try:
        yield work
    except BaseException as exc:
        shutil.rmtree(work, ignore_errors=True)
        for folder in made:
            try:
                folder.rmdir()  # only when empty
            except OSError:
                break
        if isinstance(exc, Exception) and disk_full(exc):
            raise OutputError(
                f"no space left on the device for the run in {str(out)!r}; nothing was "
                "written (a previous run there is as it was). Free space, or train into a "
                "folder on another disk"
            ) from exc
        raise
    shutil.rmtree(work, ignore_errors=True)


#: What a run writes into its folder (a folder holding any of them holds a run).
RUN_FILES = ("model.safetensors", "metrics.json", "config.yaml", "logs/metrics.csv")


def previous_run_files(out: Path) -> list[Path]:
    """The files of the run in ``out`` that a new run replaces (its checkpoints included)."""
    names = (*RUN_FILES, "logs/hparams.yaml")
    found = [out / f for f in names if (out / f).is_file()]
    return found + sorted((out / "logs" / "checkpoints").glob("*.ckpt"))


def check_run_folder(out: Path, overwrite: bool, config_file: str | Path | None) -> None:
    """A run folder must be new, or hold a previous run that ``overwrite`` may replace.

    A previous run is any file a run writes, an interrupted run's checkpoints included;
    the config being trained is never replaced, not even with ``overwrite``.
    """
    from geoseg.errors import OutputError
    from geoseg.io.outputs import check_output_path

    if out.exists() and not out.is_dir():
        raise OutputError(f"output_dir {str(out)!r} is a file, not a folder")
    if config_file is not None and out.is_dir():
        # the run writes its resolved config as config.yaml: never over the input's
        check_output_path(out / "config.yaml", overwrite=True, inputs=(config_file,))
    found = previous_run_files(out)
    if found and not overwrite:
        names = ", ".join(str(f.relative_to(out)) for f in found[:3])
        raise OutputError(
            f"output_dir {str(out)!r} already holds a run ({names}"
            f"{', ...' if len(found) > 3 else ''}); choose a new folder, or pass "
            "overwrite=True / --overwrite to replace that run"
        )


def _make_task(exp: ExperimentConfig, dm: Any) -> BaseTask:
    """The network (built by its adapter) wrapped in the task's Lightning module."""
    classes: ClassTable = dm.classes
    adapter = resolve_adapter(exp.model.arch, exp.model.adapter)
    outputs = task_outputs(exp.task, classes, adapter)
    task_cls = task_class(exp.task, outputs)
    model = build_model(
        exp.model.arch,
        in_channels=len(dm.band_names),
        outputs=outputs,
        encoder=exp.model.encoder,
        encoder_weights=exp.model.encoder_weights,
        adapter=adapter.name,
        kwargs=exp.model.kwargs,
        classes=classes,
        band_names=[str(b) for b in dm.band_names],
        download_weights=exp.model.download_weights,
        record=(record := list[PretrainedRecord]()),
    )
    weights = _resolve_class_weights(exp.training, dm, classes)
    extra: dict[str, Any] = {}
    if exp.task in ("instance", "panoptic"):
        extra["instances"] = exp.instances
    task = task_cls(  # type: ignore[call-arg]
        model,
        classes,
        exp.training,
        class_weights=weights,
        adapter=adapter,
        outputs=outputs,
        **extra,
    )
    task.pretrained = record[0].to_dict() if record else {}
    return task


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``.ckpt`` files, written under a temporary name beside them and renamed.

    Lightning's own writer copies a file from /tmp onto the target: a full disk left a
    truncated checkpoint. Here a failed write leaves no file and is a clear error.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        """Write ``checkpoint`` to ``path`` atomically."""
        from geoseg.io.outputs import atomic_path

        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        # serialized in memory first (as Lightning does): a full disk is then an OSError
        # of the write, not torch's "iostream error"
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        with atomic_path(target, overwrite=True) as tmp:
            # bytes, not buffer.getbuffer(): a failed write's traceback would keep a view of
            # the BytesIO in a reference cycle, and collecting that cycle crashes CPython
            # 3.12.1 (a segmentation fault in the garbage collector, seen in CI)
            tmp.write_bytes(buffer.getvalue())


def _trainer(
    tcfg: TrainingConfig, work: Path, monitor: str, has_val: bool
) -> tuple[pl.Trainer, Any]:
    """The Lightning trainer (writing into the work folder) and its best-checkpoint callback."""
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    ckpt_cb = ModelCheckpoint(
        dirpath=work / "logs" / "checkpoints",
        filename="best-{epoch}",
        monitor=monitor if has_val else None,
        mode="max",
        save_top_k=1,
        save_last=False,
    )
    callbacks: list[pl.Callback] = [ckpt_cb]
    if has_val and tcfg.early_stopping_patience is not None:
        callbacks.append(
            EarlyStopping(
                monitor=monitor,
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
        logger=CSVLogger(str(work), name="logs", version=""),
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        default_root_dir=str(work),
        limit_train_batches=tcfg.limit_train_batches,
        limit_val_batches=tcfg.limit_val_batches if has_val else 0,
        limit_test_batches=tcfg.limit_test_batches,
        log_every_n_steps=tcfg.log_every_n_steps,
        enable_progress_bar=tcfg.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    return trainer, ckpt_cb


def _fit(exp: ExperimentConfig, out: Path, work: Path, datamodule: Any) -> TrainResult:
    tcfg = exp.training
    pl.seed_everything(tcfg.seed, workers=True, verbose=False)
    dm = datamodule if datamodule is not None else make_datamodule(exp)
    if hasattr(dm, "prepare_data"):
        dm.prepare_data()
    dm.setup("fit")
    task = _make_task(exp, dm)
    has_val = _has_batches(dm, "val_dataloader")
    trainer, ckpt_cb = _trainer(tcfg, work, task.monitor, has_val)
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
        best_epoch = _best_epoch(task.history, task.monitor)
        if ckpt_cb.best_model_path:
            state = torch.load(ckpt_cb.best_model_path, map_location="cpu", weights_only=False)
            task.load_state_dict(state["state_dict"])
        metrics: dict[str, Any] = {}
        if has_val:
            trainer.validate(task, datamodule=dm, verbose=False)
            metrics["val"] = task.reports["val"]
        if _has_batches(dm, "test_dataloader", stage="test"):
            trainer.test(task, datamodule=dm, verbose=False)
            metrics["test"] = task.reports["test"]
    if hasattr(dm, "check_unchanged"):  # no input changed while it was read
        dm.check_unchanged()
    return _write_run(exp, dm, task, (out, work), metrics, best_epoch)


def _write_run(
    exp: ExperimentConfig,
    dm: Any,
    task: BaseTask,
    folders: tuple[Path, Path],
    metrics: dict[str, Any],
    best_epoch: int | None,
) -> TrainResult:
    """Write the run's files and move them into the run folder, all at once.

    ``model.safetensors``, ``metrics.json`` and ``config.yaml`` are written into the work
    folder beside the logs; then all of them replace the previous run's files together.
    """
    import yaml

    from geoseg.io.outputs import atomic_outputs

    out, work = folders
    metrics = _jsonable(metrics)
    history = _jsonable(task.history)
    meta = build_metadata(dm, exp, {**metrics, "best_epoch": best_epoch}, task.pretrained)
    save_checkpoint(task.model.cpu(), meta, work / "model.safetensors")
    ckpt_path = out / "model.safetensors"
    summary = {
        "best_epoch": best_epoch,
        "monitor": task.monitor,
        "history": history,
        **metrics,
        "checkpoint": str(ckpt_path),
    }
    (work / "metrics.json").write_text(json.dumps(summary, indent=2))
    (work / "config.yaml").write_text(yaml.safe_dump(exp.to_dict(), sort_keys=False))
    with atomic_outputs() as batch:
        for old in previous_run_files(out):
            batch.remove(old)
        for f in sorted(p for p in work.rglob("*") if p.is_file()):
            batch.adopt(f, out / f.relative_to(work))
    return TrainResult(out, ckpt_path, metrics, history, best_epoch)


def _best_epoch(history: list[dict[str, Any]], monitor: str) -> int | None:
    scored = [h for h in history if isinstance(h.get(monitor), (int, float))]
    scored = [h for h in scored if not math.isnan(h[monitor])]
    if not scored:
        return None
    return int(max(scored, key=lambda h: h[monitor])["epoch"])


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
