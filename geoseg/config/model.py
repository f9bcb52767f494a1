"""The ``model:`` section of an experiment config, and the bounds on model keywords."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from geoseg.errors import ConfigError, brief

#: Largest integer accepted anywhere in a model's keyword arguments (channels, depths,
#: queries, sizes): a larger one would size a multi-GB layer.
MAX_KWARG_INT = 65536
#: Longest list and deepest nesting accepted in a model's keyword arguments.
MAX_KWARG_ITEMS = 256
MAX_KWARG_NESTING = 8
#: Integer keywords whose name contains one of these words count something that must
#: be at least 1 (``decoder_channels``, ``encoder_depth``, ``embed_dim``, ``num_queries``).
POSITIVE_KWARG_WORDS = ("channel", "depth", "dim", "size", "quer", "head", "layer")


def check_model_kwargs(kwargs: Any, where: str) -> dict[str, Any]:
    """``kwargs`` as a dict once every value is a sane size; ConfigError naming the key.

    Every integer must be 0 to :data:`MAX_KWARG_INT` (at least 1 for counts such as
    channels or depths), every float finite, every list at most :data:`MAX_KWARG_ITEMS`
    long; ``encoder_depth`` must be an integer. This runs before any layer is built.
    """
    if not isinstance(kwargs, Mapping):
        raise ConfigError(
            f"{where}: expected a mapping of keyword arguments such as "
            f"{{encoder_depth: 3}}, got {type(kwargs).__name__} {brief(kwargs)}"
        )
    _check_kwarg(kwargs, where, "", 0)
    depth = kwargs.get("encoder_depth")
    if depth is not None and (isinstance(depth, bool) or not isinstance(depth, int)):
        raise ConfigError(
            f"{where}.encoder_depth: {brief(depth)} is not an integer; give the number "
            "of encoder stages, e.g. 3 or 5"
        )
    return dict(kwargs)


def _check_kwarg(value: Any, where: str, name: str, nesting: int) -> None:
    if nesting > MAX_KWARG_NESTING:
        raise ConfigError(f"{where}: nested more than {MAX_KWARG_NESTING} levels deep")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{where}: key {brief(key)} is not a keyword name")
            _check_kwarg(item, f"{where}.{key}" if where else key, key, nesting + 1)
    elif isinstance(value, (list, tuple)):
        if len(value) > MAX_KWARG_ITEMS:
            raise ConfigError(f"{where}: {len(value)} entries (at most {MAX_KWARG_ITEMS})")
        for i, item in enumerate(value):
            _check_kwarg(item, f"{where}[{i}]", name, nesting + 1)
    elif isinstance(value, bool) or value is None or isinstance(value, str):
        if isinstance(value, str) and len(value) > 10_000:
            raise ConfigError(f"{where}: a string of {len(value)} characters is not a keyword")
    elif isinstance(value, int):
        low = 1 if any(w in name.lower() for w in POSITIVE_KWARG_WORDS) else 0
        if not low <= value <= MAX_KWARG_INT:
            raise ConfigError(
                f"{where}: {brief(value)} is out of range; it must be an integer from "
                f"{low} to {MAX_KWARG_INT}"
            )
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ConfigError(f"{where}: {value!r} is not a finite number")
    else:
        raise ConfigError(
            f"{where}: {type(value).__name__} {brief(value)} is not a keyword value "
            "(use numbers, strings, true/false, lists or mappings)"
        )


@dataclass
class ModelConfig:
    """The ``model:`` section of a training config.

    Attributes:
        arch: an architecture name (``geoseg.models.ARCHITECTURES``: unet, unetplusplus,
            fpn, deeplabv3plus, segformer, upernet, ...).
        encoder: any encoder name the architecture's library offers (smp: resnet18,
            resnet34, efficientnet-b0, mit_b0, tu-resnet10t, ...).
        encoder_weights: None (random init, the default), the path of a local file
            holding encoder or full-model weights (``.safetensors`` or ``.pt``/``.pth``
            state dict), or a torchgeo weight name (``ResNet18_Weights.SENTINEL2_ALL_MOCO``)
            found in the local torch cache; the first layer is matched to the config's
            band names (:mod:`geoseg.models.weights`). Hub names such as ``imagenet``
            are refused.
        download_weights: let geoseg download a named torchgeo weight that is not in
            the local torch cache (off: nothing is ever downloaded).
        adapter: the model family that builds ``arch`` (``geoseg.models.ADAPTERS``);
            None picks the adapter that knows the architecture name.
        kwargs: extra keyword arguments passed to the architecture's constructor
            (e.g. ``decoder_channels``); bounded by :func:`check_model_kwargs`.
    """

    arch: str = "unet"
    encoder: str = "resnet18"
    encoder_weights: str | None = None
    download_weights: bool = False
    adapter: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        """Model keywords are bounded here, before they size a layer."""
        self.kwargs = check_model_kwargs(self.kwargs, "model.kwargs")
