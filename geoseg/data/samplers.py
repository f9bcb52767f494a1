"""torchgeo samplers for training and evaluation tiles, across torchgeo versions.

torchgeo <= 0.9 provides ``RandomGeoSampler``, ``RandomBatchGeoSampler`` and
``GridGeoSampler``; 0.10 deprecates them in favour of ``RandomPatchSampler`` and
``GriddedPatchSampler``, which sample a union geometry eroded by half a tile diagonal (so
train regions narrower than ~1.4 tiles get no samples). The classic samplers draw inside each
index box (our split regions) and handle narrow regions, so they are used while torchgeo
has them (their deprecation warning is silenced: nothing for a geoseg user to act on), and
the new samplers are used once they are gone. Chosen by feature checks, not versions.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torchgeo.samplers as tgs


def _classic(name: str) -> Any:
    return getattr(tgs, name, None)


def _build(cls: Any, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return cls(**kwargs)


def _seeded(cls: Any, kwargs: dict[str, Any], seed: int, *, numpy_style: bool) -> dict[str, Any]:
    if "generator" in inspect.signature(cls).parameters:
        kwargs["generator"] = seed if numpy_style else torch.Generator().manual_seed(seed)
    return kwargs


def random_tiles(dataset: Any, *, size: int, length: int, seed: int) -> Iterable[Any]:
    """Random tiles of ``size`` px inside the dataset's index boxes (``length`` per epoch)."""
    cls = _classic("RandomGeoSampler")
    if cls is not None:
        kw = _seeded(
            cls, {"dataset": dataset, "size": size, "length": length}, seed, numpy_style=False
        )
        return _build(cls, **kw)
    cls = _classic("RandomPatchSampler")  # pragma: no cover
    kw = _seeded(cls, {"dataset": dataset, "size": size, "length": length}, seed, numpy_style=True)
    return _build(cls, **kw)  # pragma: no cover


def random_tile_batches(
    dataset: Any, *, size: int, batch_size: int, length: int, seed: int
) -> Iterable[list[Any]]:
    """Batches of random tiles, each batch from one index box (``length`` tiles per epoch)."""
    cls = _classic("RandomBatchGeoSampler")
    if cls is not None:
        kw = _seeded(
            cls,
            {"dataset": dataset, "size": size, "batch_size": batch_size, "length": length},
            seed,
            numpy_style=False,
        )
        return _build(cls, **kw)
    tiles = random_tiles(dataset, size=size, length=length, seed=seed)  # pragma: no cover
    return _Chunked(tiles, batch_size)  # pragma: no cover


class _Chunked:
    """Groups a sampler's queries into lists of ``n``."""

    def __init__(self, base: Iterable[Any], n: int) -> None:
        self.base = base
        self.n = n

    def __iter__(self) -> Any:
        batch: list[Any] = []
        for q in self.base:
            batch.append(q)
            if len(batch) == self.n:
                yield batch
                batch = []
        if batch:
            yield batch


def grid_tiles(dataset: Any, *, size: int, stride: int) -> Iterable[Any]:
    """Grid tiles of ``size`` px every ``stride`` px over the dataset's index boxes."""
    cls = _classic("GridGeoSampler") or _classic("GriddedPatchSampler")
    return _build(cls, dataset=dataset, size=size, stride=stride)


@dataclass(frozen=True)
class TrainSampler:
    """A named training sampler: how to build it and whether it yields whole batches."""

    build: Callable[..., Iterable[Any]]
    batched: bool


#: Training samplers by name (``data.train_sampler``).
TRAIN_SAMPLERS: dict[str, TrainSampler] = {
    "random": TrainSampler(random_tiles, batched=False),
    "random_batch": TrainSampler(random_tile_batches, batched=True),
}
