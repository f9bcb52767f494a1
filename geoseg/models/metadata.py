"""Checkpoint metadata without torch: :class:`ModelMetadata` and :func:`read_metadata`.

Reading a checkpoint's header and checking it needs no deep-learning library, so
``geoseg predict`` with a cached ONNX model, ``geoseg export`` checks and the demo's model
card never import torch (about 2 s of a fresh process on a small machine). The adapter
facts the header is checked against (names, input size divisors) are in
:mod:`geoseg.models.families`, which the adapters use too.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geoseg.arguments import check_path
from geoseg.classes import ClassTable
from geoseg.config.base import check_class_ids
from geoseg.config.model import check_model_kwargs
from geoseg.errors import CheckpointError, ConfigError, InputFileError, brief
from geoseg.models.families import DEFAULT_ADAPTER, adapter_size_divisor, check_adapter_name
from geoseg.models.limits import MAX_BANDS, MAX_CLASSES, MAX_TILE_SIZE
from geoseg.models.outputs import OutputSpec
from geoseg.tasks import DEFAULT_TASK, task_info

CHECKPOINT_FORMAT = "geoseg-checkpoint"
#: Bump when the metadata layout changes incompatibly; load_model accepts <= this.
CHECKPOINT_VERSION = 2

MAX_HEADER_BYTES = 64 * 1024 * 1024
#: Normalization must hold in float32: means at most this in size, stds at least
#: MIN_STD (a smaller one divides to infinity).
FLOAT32_MAX = 3.4028234663852886e38
MIN_STD = 1e-12

_MISSING: Any = object()


@dataclass
class ModelMetadata:
    """Everything needed to run a checkpoint on new imagery.

    Attributes:
        arch, encoder, model_kwargs: how the adapter rebuilds the network.
        bands: input band names in model order; ``len(bands)`` is the input channel count.
        mean, std: per-band normalization applied as ``(x - mean) / std``.
        classes: the class table; channel ``i`` of the ``classes`` output is ``classes[i]``.
        task: the task the model was trained for (``geoseg.tasks.TASKS``).
        adapter: the model family that builds ``arch`` (``geoseg.models.ADAPTERS``).
        outputs: the named outputs (default: the task's outputs for ``classes``).
        task_options: the task's own settings (instance and panoptic: the ``encode``
            and ``decode`` parameters of :mod:`geoseg.instances`).
        tile_size: training tile size in pixels (the default prediction tile).
        resolution: ground sample distance of the training data, in CRS units per pixel.
        crs: CRS of the training data (WKT or EPSG string), informative.
        image_nodata: no-data value of the training imagery (None if none).
        image_nodata_mode: how the bands' no-data combined in training: ``"any"`` band
            at ``image_nodata`` made a pixel no-data, or only ``"all"`` bands.
        metrics: validation/test metrics recorded at training time.
        config: the training config as plain data (for provenance).
        pretrained: what the network started from (source, file, sha256, bands taken from
            the weights and bands initialized; empty for random initialisation).
        geoseg_version: version that wrote the checkpoint.
        created: ISO timestamp.
    """

    arch: str
    encoder: str
    bands: list[str]
    mean: list[float]
    std: list[float]
    classes: ClassTable
    task: str = DEFAULT_TASK
    adapter: str = DEFAULT_ADAPTER
    outputs: list[OutputSpec] = field(default_factory=list)
    task_options: dict[str, Any] = field(default_factory=dict)
    tile_size: int = 256
    resolution: float | None = None
    crs: str | None = None
    image_nodata: float | None = None
    image_nodata_mode: str = "any"
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    pretrained: dict[str, Any] = field(default_factory=dict)
    geoseg_version: str = ""
    created: str = ""

    def __post_init__(self) -> None:
        if not self.outputs:
            self.outputs = task_info(self.task).outputs(self.classes)

    @property
    def in_channels(self) -> int:
        """Number of input bands."""
        return len(self.bands)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)

    def size_divisor(self) -> int:
        """Input height and width must be multiples of this (from the adapter)."""
        return adapter_size_divisor(self.adapter, self.model_kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the checkpoint header)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "task": self.task,
            "adapter": self.adapter,
            "arch": self.arch,
            "encoder": self.encoder,
            "model_kwargs": self.model_kwargs,
            "outputs": [o.to_dict() for o in self.outputs],
            "task_options": self.task_options,
            "bands": list(self.bands),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "classes": self.classes.to_list(),
            "tile_size": int(self.tile_size),
            "resolution": self.resolution,
            "crs": self.crs,
            "image_nodata": self.image_nodata,
            "image_nodata_mode": self.image_nodata_mode,
            "metrics": self.metrics,
            "config": self.config,
            "pretrained": self.pretrained,
            "geoseg_version": self.geoseg_version,
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "checkpoint") -> ModelMetadata:
        """Inverse of :meth:`to_dict`, with version and bounds checks (reads versions 1, 2).

        Every key is type-checked before use: a bad one is a CheckpointError naming
        ``source``, the key and the value.
        """
        if not isinstance(data, Mapping) or data.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{source} is not a geoseg checkpoint (no geoseg header)")
        _check_version(data, source)
        h = _HeaderReader(data, source)
        try:
            meta = cls(
                arch=h.text("arch"),
                encoder=h.text("encoder"),
                bands=[str(b) for b in h.items("bands", MAX_BANDS)],
                mean=h.numbers("mean"),
                std=h.numbers("std"),
                classes=h.classes(),
                task=h.text("task", DEFAULT_TASK),
                adapter=h.text("adapter", DEFAULT_ADAPTER),
                outputs=h.outputs(),
                task_options=h.mapping("task_options"),
                tile_size=h.integer("tile_size", 256),
                resolution=h.resolution(),
                crs=h.crs(),
                image_nodata=h.nodata(),
                image_nodata_mode=h.nodata_mode(),
                model_kwargs=h.model_kwargs(),
                metrics=h.mapping("metrics"),
                config=h.mapping("config"),
                pretrained=h.mapping("pretrained"),
                geoseg_version=str(data.get("geoseg_version", "")),
                created=str(data.get("created", "")),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            if isinstance(exc, CheckpointError):
                raise
            raise CheckpointError(f"{source} has an invalid geoseg header: {exc}") from exc
        meta.validate(source)
        return meta

    def validate(self, source: str = "checkpoint") -> None:
        """Check every value against sane bounds; CheckpointError naming the bad one."""
        if not (len(self.mean) == len(self.std) == len(self.bands)) or not self.bands:
            raise CheckpointError(
                f"{source}: {len(self.bands)} bands but {len(self.mean)} means and "
                f"{len(self.std)} stds"
            )
        bad = [s for s in self.std if not MIN_STD <= s <= FLOAT32_MAX]
        if bad or not all(abs(m) <= FLOAT32_MAX for m in self.mean):
            raise CheckpointError(
                f"{source}: normalization must be finite in float32 with std > 0 (at least "
                f"{MIN_STD}), got mean {brief(self.mean, 200)} and std {brief(self.std, 200)}; "
                "the model cannot be used as is"
            )
        if not 8 <= self.tile_size <= MAX_TILE_SIZE:
            raise CheckpointError(
                f"{source}: tile_size {brief(self.tile_size)} is outside 8..{MAX_TILE_SIZE} pixels"
            )
        try:
            adapter = check_adapter_name(self.adapter)
            task_info(self.task)
            divisor = self.size_divisor()
        except (ConfigError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{source}: {exc}") from exc
        if self.task in ("instance", "panoptic"):
            from geoseg.instances import DecodeParams, EncodeParams

            if not self.classes.things:
                raise CheckpointError(f"{source}: an {self.task} model needs thing classes")
            try:
                DecodeParams.from_dict(self.task_options.get("decode"))
                EncodeParams(**dict(self.task_options.get("encode") or {}))
            except (ConfigError, TypeError) as exc:
                raise CheckpointError(f"{source}: invalid task_options: {exc}") from exc
        if not 1 <= divisor <= MAX_TILE_SIZE:
            raise CheckpointError(
                f"{source}: the {adapter} model needs inputs divisible by {divisor} "
                f"pixels (model_kwargs {self.model_kwargs}); that is not a usable model"
            )


def _bounded_list(value: Any, limit: int, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise ValueError(f"{key!r} must be a list, got {type(value).__name__}")
    if len(value) > limit:
        raise ValueError(f"{key!r} has {len(value)} entries (at most {limit})")
    return value


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_version(data: Mapping[str, Any], source: str) -> None:
    version = data.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CheckpointError(
            f"{source}: header key 'format_version' is {brief(version)}, not a version "
            f"number 1 to {CHECKPOINT_VERSION}; the header is damaged: re-export the model "
            "(geoseg train or save_checkpoint)"
        )
    if version > CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{source} has checkpoint format version {version!r}, written by geoseg "
            f"{str(data.get('geoseg_version', '?'))[:40]}; this geoseg reads versions up to "
            f"{CHECKPOINT_VERSION}. Upgrade geoseg to load it"
        )


class _HeaderReader:
    """Typed access to a header's keys; CheckpointError naming the file and the key."""

    def __init__(self, data: Mapping[str, Any], source: str) -> None:
        self.data, self.source = data, source

    def error(self, key: str, problem: str) -> CheckpointError:
        return CheckpointError(
            f"{self.source}: header key {key!r} {problem}; the header is damaged or was "
            "edited: re-export the model (geoseg train or save_checkpoint)"
        )

    def get(self, key: str, default: Any = _MISSING) -> Any:
        if key in self.data:
            return self.data[key]
        if default is _MISSING:
            raise self.error(key, "is missing")
        return default

    def text(self, key: str, default: Any = _MISSING) -> str:
        value = self.get(key, default)
        if not isinstance(value, str) or not value:
            raise self.error(key, f"must be a non-empty string, got {brief(value)}")
        return value

    def items(self, key: str, limit: int) -> list[Any]:
        value = self.get(key)
        if not isinstance(value, list):
            raise self.error(key, f"must be a list, got {type(value).__name__} {brief(value)}")
        if len(value) > limit:
            raise self.error(key, f"has {len(value)} entries (at most {limit})")
        return value

    def numbers(self, key: str) -> list[float]:
        out = []
        for i, v in enumerate(self.items(key, MAX_BANDS)):
            if not _is_number(v):
                raise self.error(f"{key}[{i}]", f"must be a number, got {brief(v)}")
            try:
                out.append(float(v))
            except OverflowError:
                raise self.error(f"{key}[{i}]", "is not a finite number") from None
        return out

    def integer(self, key: str, default: Any = _MISSING) -> int:
        value = self.get(key, default)
        if not isinstance(value, int) or isinstance(value, bool):
            raise self.error(key, f"must be a whole number, got {brief(value)}")
        return value

    def mapping(self, key: str) -> dict[str, Any]:
        value = self.get(key, None)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.error(
                key, f"must be a mapping (JSON object), got {type(value).__name__} {brief(value)}"
            )
        return dict(value)

    def model_kwargs(self) -> dict[str, Any]:
        try:
            return check_model_kwargs(self.mapping("model_kwargs"), "model_kwargs")
        except ConfigError as exc:
            raise self.error("model_kwargs", f"is invalid: {exc}") from exc

    def classes(self) -> ClassTable:
        value = self.items("classes", MAX_CLASSES)
        try:
            check_class_ids(value, "classes")
            return ClassTable.from_config(value, "classes")
        except (ConfigError, OverflowError) as exc:
            raise self.error("classes", f"is invalid: {exc}") from exc

    def outputs(self) -> list[OutputSpec]:
        value = self.get("outputs", None)
        if value is None:
            return []
        out = []
        for i, entry in enumerate(self.items("outputs", MAX_CLASSES)):
            channels = entry.get("channels", 0) if isinstance(entry, Mapping) else None
            if not isinstance(entry, Mapping) or not _is_number(channels):
                raise self.error(f"outputs[{i}]", f"is not an output description: {brief(entry)}")
            try:
                out.append(OutputSpec.from_dict(entry))
            except (CheckpointError, OverflowError) as exc:
                raise self.error(f"outputs[{i}]", f"is invalid: {exc}") from exc
        return out

    def resolution(self) -> float | None:
        value = self.get("resolution", None)
        if value is None:
            return None
        if not _is_number(value) or not (math.isfinite(float(value)) and value > 0):
            raise self.error(
                "resolution", f"must be a pixel size > 0 in CRS units or null, got {brief(value)}"
            )
        return float(value)

    def crs(self) -> str | None:
        value = self.get("crs", None)
        if value is None:
            return None
        problem = "must be a CRS (EPSG code or WKT) or null"
        if isinstance(value, str) and 0 < len(value) <= 100_000:
            from rasterio.crs import CRS

            try:
                CRS.from_user_input(value)
                return value
            except Exception as exc:  # rasterio raises CRSError and others for odd text
                problem += f" ({brief(str(exc), 120)})"
        raise self.error("crs", f"{problem}, got {brief(value)}")

    def nodata(self) -> float | None:
        value = self.get("image_nodata", None)
        if value is not None and not _is_number(value):
            raise self.error("image_nodata", f"must be a number or null, got {brief(value)}")
        try:
            return None if value is None else float(value)
        except OverflowError:
            raise self.error("image_nodata", f"is out of range: {brief(value)}") from None

    def nodata_mode(self) -> str:
        # checkpoints written before the key: the training config's setting, else "any"
        imagery = self.mapping("config").get("data", {})
        imagery = imagery.get("imagery", {}) if isinstance(imagery, Mapping) else {}
        default = imagery.get("nodata_mode", "any") if isinstance(imagery, Mapping) else "any"
        value = self.get("image_nodata_mode", default if default in ("any", "all") else "any")
        if value not in ("any", "all"):
            raise self.error("image_nodata_mode", f"must be 'any' or 'all', got {brief(value)}")
        return str(value)


def read_metadata(path: str | Path) -> ModelMetadata:
    """Read only the metadata of a checkpoint (cheap: no weights are loaded)."""
    from safetensors import safe_open

    p = Path(check_path(path, "checkpoint"))
    if not p.is_file():
        raise InputFileError(f"checkpoint {str(p)!r} does not exist")
    try:
        with safe_open(str(p), framework="np") as f:  # "np": no torch import
            header = f.metadata() or {}
    except Exception as exc:  # safetensors raises several types for foreign files
        raise CheckpointError(
            f"checkpoint {str(p)!r} is corrupt or not a safetensors file ({exc}); "
            "re-export it with geoseg train or save_checkpoint"
        ) from exc
    text = header.get("geoseg")
    if text is None:
        raise CheckpointError(f"checkpoint {str(p)!r} is not a geoseg checkpoint (no header)")
    if len(text) > MAX_HEADER_BYTES:
        raise CheckpointError(f"checkpoint {str(p)!r} has an oversized header ({len(text)} B)")
    try:
        data = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise CheckpointError(f"checkpoint {str(p)!r} has a corrupt header: {exc}") from exc
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise CheckpointError(
            f"checkpoint {str(p)!r} has a header value that cannot be read "
            f"({str(exc).split(';')[0]}); re-export the model (geoseg train or save_checkpoint)"
        ) from exc
    return ModelMetadata.from_dict(data, source=f"checkpoint {str(p)!r}")
