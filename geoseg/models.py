"""Model registry and self-describing checkpoints.

Architectures come from segmentation-models-pytorch (smp); geoseg adds a registry keyed
by short names, a guard that pretrained weights only ever come from a local file (no
model hub), and a checkpoint format that holds everything needed to predict without the
training config: weights plus JSON metadata in one safetensors file. Loading never
unpickles arbitrary objects.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geoseg.classes import ClassTable
from geoseg.errors import CheckpointError, ConfigError, InputFileError

CHECKPOINT_FORMAT = "geoseg-checkpoint"
#: Bump when the metadata layout changes incompatibly; load_model accepts <= this.
CHECKPOINT_VERSION = 1


def _smp_architectures() -> dict[str, Callable[..., nn.Module]]:
    import segmentation_models_pytorch as smp

    names = {
        "unet": "Unet",
        "unetplusplus": "UnetPlusPlus",
        "fpn": "FPN",
        "deeplabv3": "DeepLabV3",
        "deeplabv3plus": "DeepLabV3Plus",
        "segformer": "Segformer",
        "upernet": "UPerNet",
        "pspnet": "PSPNet",
        "linknet": "Linknet",
        "manet": "MAnet",
        "pan": "PAN",
        "dpt": "DPT",
    }
    return {k: getattr(smp, v) for k, v in names.items() if hasattr(smp, v)}


#: Architecture names accepted by :func:`create_model` (name -> smp class).
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = _smp_architectures()


@dataclass
class ModelConfig:
    """The ``model:`` section of a training config.

    Attributes:
        arch: an architecture name from :data:`ARCHITECTURES` (unet, unetplusplus, fpn,
            deeplabv3plus, segformer, upernet, ...).
        encoder: any encoder name smp offers (resnet18, resnet34, efficientnet-b0,
            mit_b0, ...).
        encoder_weights: None (random init, the default) or the path of a local file
            holding encoder or full-model weights (``.safetensors`` or ``.pt``/``.pth``
            state dict). Hub names such as ``imagenet`` are refused: nothing downloads.
        kwargs: extra keyword arguments passed to the smp constructor
            (e.g. ``decoder_channels``).
    """

    arch: str = "unet"
    encoder: str = "resnet18"
    encoder_weights: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)


def create_model(
    arch: str | Callable[..., nn.Module],
    *,
    in_channels: int,
    num_classes: int,
    encoder: str = "resnet18",
    encoder_weights: str | Path | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a segmentation model that maps (B, in_channels, H, W) to (B, num_classes, H, W).

    Args:
        arch: a name from :data:`ARCHITECTURES` or a callable taking smp's keywords.
        in_channels: number of input bands (any number, e.g. 13 for Sentinel-2).
        num_classes: number of output classes.
        encoder: smp encoder name.
        encoder_weights: None or a local weights file (see :class:`ModelConfig`).
        **kwargs: passed to the architecture.

    Raises:
        ConfigError: unknown architecture or encoder, or a hub weights name.
        InputFileError: the weights file does not exist.
    """
    if isinstance(arch, str):
        key = arch.lower().replace("-", "").replace("_", "")
        if key not in ARCHITECTURES:
            raise ConfigError(
                f"model.arch: unknown architecture {arch!r}; valid names are "
                f"{sorted(ARCHITECTURES)}"
            )
        factory = ARCHITECTURES[key]
    else:
        factory = arch
    weights_path: Path | None = None
    if encoder_weights is not None:
        weights_path = Path(encoder_weights)
        if not weights_path.is_file():
            if weights_path.suffix == "" and "/" not in str(encoder_weights):
                raise ConfigError(
                    f"model.encoder_weights: {str(encoder_weights)!r} looks like a hub name; "
                    "geoseg never downloads weights. Give the path of a local weights file "
                    "or null for random initialisation"
                )
            raise InputFileError(f"model.encoder_weights: file {str(weights_path)!r} not found")
    try:
        model = factory(
            encoder_name=encoder,
            encoder_weights=None,
            in_channels=in_channels,
            classes=num_classes,
            **kwargs,
        )
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"model: cannot build {arch!r} with encoder {encoder!r}, {in_channels} bands, "
            f"{num_classes} classes: {exc}"
        ) from None
    if weights_path is not None:
        _load_local_weights(model, weights_path)
    return model


def _load_local_weights(model: nn.Module, path: Path) -> None:
    """Load encoder or full-model weights from a local file, safely (no pickle)."""
    state: Any
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read weights file {str(path)!r}: {exc}") from None
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise CheckpointError(f"weights file {str(path)!r} does not hold a state dict")
    encoder = getattr(model, "encoder", None)
    enc_keys = set(encoder.state_dict()) if encoder is not None else set()
    if encoder is not None and set(state) <= enc_keys:
        target, prefix = encoder, ""
    else:
        target, prefix = model, ""
    own = target.state_dict()
    usable = {prefix + k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not usable:
        raise CheckpointError(
            f"weights file {str(path)!r} shares no tensor names/shapes with the "
            f"{type(model).__name__} encoder or model; check encoder name and band count"
        )
    target.load_state_dict(usable, strict=False)


@dataclass
class ModelMetadata:
    """Everything needed to run a checkpoint on new imagery.

    Attributes:
        arch, encoder, model_kwargs: how to rebuild the network.
        bands: input band names in model order; ``len(bands)`` is the input channel count.
        mean, std: per-band normalization applied as ``(x - mean) / std``.
        classes: the class table; output channel ``i`` is ``classes[i]``.
        tile_size: training tile size in pixels (the default prediction tile).
        resolution: ground sample distance of the training data, in CRS units per pixel.
        crs: CRS of the training data (WKT or EPSG string), informative.
        image_nodata: no-data value of the training imagery (None if none).
        metrics: validation/test metrics recorded at training time.
        config: the training config as plain data (for provenance).
        geoseg_version: version that wrote the checkpoint.
        created: ISO timestamp.
    """

    arch: str
    encoder: str
    bands: list[str]
    mean: list[float]
    std: list[float]
    classes: ClassTable
    tile_size: int = 256
    resolution: float | None = None
    crs: str | None = None
    image_nodata: float | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    geoseg_version: str = ""
    created: str = ""

    @property
    def in_channels(self) -> int:
        """Number of input bands."""
        return len(self.bands)

    @property
    def num_classes(self) -> int:
        """Number of output classes."""
        return len(self.classes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the checkpoint header)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "arch": self.arch,
            "encoder": self.encoder,
            "model_kwargs": self.model_kwargs,
            "bands": list(self.bands),
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
            "classes": self.classes.to_list(),
            "tile_size": int(self.tile_size),
            "resolution": self.resolution,
            "crs": self.crs,
            "image_nodata": self.image_nodata,
            "metrics": self.metrics,
            "config": self.config,
            "geoseg_version": self.geoseg_version,
            "created": self.created,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "checkpoint") -> ModelMetadata:
        """Inverse of :meth:`to_dict`, with version checks."""
        if data.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{source} is not a geoseg checkpoint (no geoseg header)")
        version = data.get("format_version")
        if not isinstance(version, int) or version > CHECKPOINT_VERSION:
            raise CheckpointError(
                f"{source} has checkpoint format version {version!r}, written by geoseg "
                f"{data.get('geoseg_version', '?')}; this geoseg reads versions up to "
                f"{CHECKPOINT_VERSION}. Upgrade geoseg to load it"
            )
        try:
            meta = cls(
                arch=data["arch"],
                encoder=data["encoder"],
                bands=list(data["bands"]),
                mean=list(data["mean"]),
                std=list(data["std"]),
                classes=ClassTable.from_config(data["classes"]),
                tile_size=int(data.get("tile_size", 256)),
                resolution=data.get("resolution"),
                crs=data.get("crs"),
                image_nodata=data.get("image_nodata"),
                model_kwargs=dict(data.get("model_kwargs") or {}),
                metrics=dict(data.get("metrics") or {}),
                config=dict(data.get("config") or {}),
                geoseg_version=str(data.get("geoseg_version", "")),
                created=str(data.get("created", "")),
            )
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise CheckpointError(f"{source} has an invalid geoseg header: {exc}") from None
        if not (len(meta.mean) == len(meta.std) == len(meta.bands)):
            raise CheckpointError(
                f"{source}: {len(meta.bands)} bands but {len(meta.mean)} means and "
                f"{len(meta.std)} stds"
            )
        return meta


def save_checkpoint(model: nn.Module, metadata: ModelMetadata, path: str | Path) -> Path:
    """Write ``model``'s weights and ``metadata`` to one safetensors file, atomically."""
    from safetensors.torch import save_file

    from geoseg import __version__
    from geoseg.io.outputs import atomic_path

    if not metadata.geoseg_version:
        metadata.geoseg_version = __version__
    if not metadata.created:
        metadata.created = datetime.now(UTC).isoformat(timespec="seconds")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    header = {"geoseg": json.dumps(metadata.to_dict())}
    with atomic_path(path, overwrite=True) as tmp:
        save_file(state, str(tmp), metadata=header)
    return Path(path)


def read_metadata(path: str | Path) -> ModelMetadata:
    """Read only the metadata of a checkpoint (cheap: no weights are loaded)."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise InputFileError(f"checkpoint {str(p)!r} does not exist")
    try:
        with safe_open(str(p), framework="pt") as f:
            header = f.metadata() or {}
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint {str(p)!r} is corrupt or not a safetensors file ({exc}); "
            "re-export it with geoseg train or save_checkpoint"
        ) from None
    if "geoseg" not in header:
        raise CheckpointError(f"checkpoint {str(p)!r} is not a geoseg checkpoint (no header)")
    try:
        data = json.loads(header["geoseg"])
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"checkpoint {str(p)!r} has a corrupt header: {exc}") from None
    return ModelMetadata.from_dict(data, source=f"checkpoint {str(p)!r}")


def load_model(
    path: str | Path, *, device: str | torch.device = "cpu"
) -> tuple[nn.Module, ModelMetadata]:
    """Load a geoseg checkpoint: the model in eval mode on ``device`` and its metadata.

    Raises:
        InputFileError: the file does not exist.
        CheckpointError: corrupt file, not a geoseg checkpoint, incompatible version, or
            weights that do not fit the recorded architecture.
    """
    from safetensors.torch import load_file

    meta = read_metadata(path)
    try:
        state = load_file(str(path))
    except Exception as exc:
        raise CheckpointError(f"checkpoint {str(path)!r} weights are corrupt: {exc}") from None
    model = create_model(
        meta.arch,
        in_channels=meta.in_channels,
        num_classes=meta.num_classes,
        encoder=meta.encoder,
        **meta.model_kwargs,
    )
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint {str(path)!r}: weights do not match {meta.arch}/{meta.encoder}: "
            f"{str(exc)[:300]}"
        ) from None
    model.eval()
    return model.to(device), meta
