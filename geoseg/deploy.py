"""Export a checkpoint to a standalone ONNX model: for any runtime, or for QGIS Deepness.

Two flavours (:func:`export_model`):

* ``onnx``: input ``x`` (N, bands, T, T) float32 **raw** band values in the checkpoint's
  band order; geoseg's normalization (``(x - mean) / std``, and no-data pixels set to 0
  after it, as ``geoseg predict`` feeds them) is inside the graph; one output per
  per-pixel model output, activated (``classes``: softmax probabilities). The checkpoint's
  bands, classes, colours, resolution and tile size are written as ONNX metadata
  (``geoseg`` key, JSON), so the file is self-describing.
* ``deepness``: the contract of the QGIS Deepness plugin (PUTvision/qgis-plugin-deepness,
  ``ModelBase``/``Segmentor``): one square input whose values Deepness divides by 255
  and standardizes with the metadata mean/std; one softmax output (N, classes, T, T);
  metadata ``model_type: Segmentor``, ``class_names`` ({index: name}), ``resolution``
  (cm per pixel), ``tile_size``, ``tiles_overlap`` (% of the tile), ``seg_thresh`` and
  ``seg_small_segment`` (set so that Deepness takes the plain argmax, as geoseg does) and
  ``standardization_mean``/``std`` (0 and 1: geoseg's own normalization, with the x255
  that undoes Deepness's division, is inside the graph, so raw values of any type reach
  the model exactly as in ``geoseg predict``).

What Deepness cannot do, and the export says so (:func:`deepness_notes`): it has no
no-data (no-data pixels go through the model as values, unless the export bakes the
no-data value into the graph: ``nodata=``), it reads the bands you map in its UI (they
must be the checkpoint's bands, in order), it resamples the layer to the metadata
resolution, and it blends nothing (each tile's core is pasted). Object-list models
(Mask R-CNN) cannot be a Deepness ``Segmentor``; for instance and panoptic models with
per-pixel maps only the class scores are exported (instance ids need geoseg).
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geoseg.errors import ConfigError, warn
from geoseg.models.outputs import OBJECTS

#: Export flavours.
FORMATS = ("onnx", "deepness")
#: ONNX opset of exported models (ONNX Runtime >= 1.14; QGIS Deepness ships a newer one).
OPSET = 17


class Deployable(nn.Module):
    """Raw band values in, activated outputs out: normalization inside the graph.

    Args:
        inner: a module mapping normalized images to a tuple of activated outputs.
        mean, std: per-band normalization.
        scale: the input is multiplied by this first (255 for Deepness, which divides
            by 255).
        nodata: a raw value marking no-data pixels, set to 0 after normalization as
            ``geoseg predict`` does; None: no masking.
        nodata_mode: ``"any"``: a pixel is no-data when any band is ``nodata``; ``"all"``:
            only when every band is (the model's training rule, ``image_nodata_mode``).
        keep: indices of ``inner``'s outputs to return.
    """

    def __init__(
        self,
        inner: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        *,
        scale: float = 1.0,
        nodata: float | None = None,
        nodata_mode: str = "any",
        keep: Sequence[int] = (0,),
    ) -> None:
        super().__init__()
        self.inner = inner
        self.mean: torch.Tensor
        self.std: torch.Tensor
        shape = (1, len(mean), 1, 1)
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(shape))
        self.scale = float(scale)
        self.nodata = None if nodata is None else float(nodata)
        self.nodata_all = nodata_mode == "all"
        self.keep = list(keep)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Activated outputs for raw (or, for Deepness, /255) band values."""
        raw = x * self.scale if self.scale != 1.0 else x
        z = (raw - self.mean) / self.std
        if self.nodata is not None:
            nan = math.isnan(self.nodata)  # NaN never equals itself: tested as NaN
            # tolerance: Deepness's x/255*255 round trip is not exact in float32
            tol = max(1e-3, abs(self.nodata) * 1e-6)
            near = torch.isnan(raw) if nan else (raw - self.nodata).abs().le(tol)
            bad = (
                near.all(dim=1, keepdim=True) if self.nodata_all else near.any(dim=1, keepdim=True)
            )
            if nan:  # a NaN left in some bands ("all" rule) would turn every output to NaN
                bad = bad | torch.isnan(z)
            z = torch.where(bad, torch.zeros_like(z), z)
        out = self.inner(z)
        return tuple(out[i] for i in self.keep)


def export_model(
    checkpoint: str | Path,
    output: str | Path,
    *,
    format: str = "onnx",
    tile_size: int | None = None,
    overlap_percent: float | None = None,
    nodata: float | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``checkpoint`` as a standalone ONNX model (see the module docstring).

    Args:
        checkpoint: a geoseg checkpoint.
        output: the ``.onnx`` file to write.
        format: ``onnx`` or ``deepness``.
        tile_size: the model's input size in pixels (default: ``geoseg predict``'s
            default window for this checkpoint).
        overlap_percent: Deepness: tile overlap in % of the tile (default: geoseg's
            default overlap).
        nodata: a raw value marking no-data pixels, baked into the graph (default: the
            checkpoint's ``image_nodata``; None: no masking).
        overwrite: replace an existing output file.

    Returns:
        The written path.

    Raises:
        ConfigError: unknown format, a tile size the model cannot take, an object-list
            model, or a model Deepness cannot represent.
        ResourceError: exporting at ``tile_size`` needs more memory than is available
            (estimated by :mod:`geoseg.inference.memory`).
    """
    from geoseg.inference.memory import check_tile_memory
    from geoseg.inference.predict import default_tile_size
    from geoseg.io.outputs import atomic_path, check_output_path
    from geoseg.models import get_adapter, load_model, read_metadata

    if format not in FORMATS:
        raise ConfigError(f"format: unknown export format {format!r}; valid names are {FORMATS}")
    check_export_options(tile_size, overlap_percent, nodata)
    out = check_output_path(output, overwrite=overwrite, inputs=(checkpoint,))
    if out.suffix.lower() != ".onnx":
        raise ConfigError(f"output {str(out)!r}: an exported model is an .onnx file")
    meta = read_metadata(checkpoint)
    if any(o.kind == OBJECTS for o in meta.outputs):
        raise ConfigError(
            f"{meta.arch} outputs object lists, which an ONNX segmentation model (and a "
            "Deepness Segmentor) cannot carry; export a per-pixel model instead"
        )
    factor = meta.size_divisor()
    tile = default_tile_size(meta.tile_size, factor) if tile_size is None else tile_size
    if tile % factor or not 16 <= tile <= 8192:
        raise ConfigError(
            f"tile_size {tile}: the {meta.arch}/{meta.encoder} model needs a multiple of "
            f"{factor} px between 16 and 8192"
        )
    pct = overlap_percent
    if format == "deepness":
        tile, pct = deepness_tiling(tile, factor, overlap_percent, fixed_tile=tile_size is not None)
    check_tile_memory(checkpoint, meta, tile)  # before the model is loaded and traced
    nodata = meta.image_nodata if nodata is None else nodata
    pixel = [o for o in meta.outputs if o.per_pixel]
    keep = (
        [i for i, o in enumerate(pixel) if o.name == "classes"]
        if format == "deepness"
        else list(range(len(pixel)))
    )
    if not keep:
        raise ConfigError("the model has no class scores to export for Deepness")
    if format == "deepness":
        for note in deepness_notes(meta, nodata):
            warn(note)
    model, _ = load_model(checkpoint)
    wrapped = Deployable(
        get_adapter(meta.adapter).export_module(model, meta.outputs),
        meta.mean,
        meta.std,
        scale=255.0 if format == "deepness" else 1.0,
        nodata=nodata,
        nodata_mode=meta.image_nodata_mode,
        keep=keep,
    ).eval()
    names = [pixel[i].name for i in keep]
    if format == "deepness":
        props = deepness_metadata(meta, tile, float(pct if pct is not None else 12))
    else:
        props = {"geoseg": json.dumps(_geoseg_metadata(meta, tile, nodata, names))}
    with atomic_path(out, overwrite=overwrite) as tmp:
        _export(wrapped, meta.in_channels, tile, names, tmp)
        _add_metadata(tmp, props)
    return out


def check_export_options(tile_size: Any, overlap_percent: Any, nodata: Any) -> None:
    """ConfigError naming the option when a number given to :func:`export_model` is unusable.

    Runs before anything is read, warned about or written.
    """
    if tile_size is not None and (isinstance(tile_size, bool) or not isinstance(tile_size, int)):
        raise ConfigError(f"tile_size: {tile_size!r} is not a whole number of pixels")
    if overlap_percent is not None and not (
        isinstance(overlap_percent, (int, float))
        and not isinstance(overlap_percent, bool)
        and math.isfinite(overlap_percent)
        and 0 <= overlap_percent < 50
    ):
        raise ConfigError(
            f"overlap_percent must be a number from 0 to 50 (exclusive), got {overlap_percent!r}; "
            "leave --overlap-percent out to use geoseg's default overlap"
        )
    if nodata is not None and (isinstance(nodata, bool) or not isinstance(nodata, (int, float))):
        raise ConfigError(f"nodata: {nodata!r} is not a number; give the raw no-data value")


def deepness_overlap_px(tile: int, percent: float) -> int:
    """The overlap Deepness derives from a tile size and its integer overlap percentage."""
    return int(tile * int(percent) / 100 * 2) // 2


def deepness_tiling(
    tile: int, divisor: int, overlap_percent: float | None, *, fixed_tile: bool
) -> tuple[int, int]:
    """A tile size and overlap percentage whose Deepness stride is a multiple of ``divisor``.

    Deepness tiles every ``tile - overlap`` pixels with an integer overlap percentage. A
    strided CNN (a U-Net: 32 px) is not shift-invariant, so a stride that is not a
    multiple of its output stride puts every tile at another pixel phase than a
    whole-scene pass, and about 2 % of the NC map changes class; geoseg aligns its own
    windows for that reason. Given neither, the tile (within 4 steps of ``divisor`` of
    the requested one) and percentage (8-30 %) of least overlap compute are chosen;
    a given tile is kept; given both, they are kept and a misaligned stride is warned.
    """
    if overlap_percent is not None:
        pct = int(overlap_percent)
        stride = tile - deepness_overlap_px(tile, pct)
        if stride % divisor:
            warn(
                f"Deepness will tile every {stride} px ({tile} px tiles, {pct} % overlap), "
                f"not a multiple of the model's {divisor} px stride: expect about 2 % of "
                "pixels to differ from geoseg predict; leave --overlap-percent out to get "
                "an aligned choice"
            )
        return tile, pct
    tiles = [tile] if fixed_tile else [tile + k * divisor for k in range(5)]
    best: tuple[float, int, int] | None = None
    for t in tiles:
        for pct in range(8, 31):
            o = deepness_overlap_px(t, pct)
            if (t - o) % divisor == 0 and (best is None or (t / (t - o)) ** 2 < best[0]):
                best = ((t / (t - o)) ** 2, t, pct)
    if best is None:
        warn(
            f"no overlap of 8-30 % gives {tile} px Deepness tiles a stride that is a "
            f"multiple of {divisor} px; using 12 % (about 2 % of pixels may differ from "
            "geoseg predict)"
        )
        return tile, 12
    return best[1], best[2]


def _export(module: nn.Module, bands: int, tile: int, names: list[str], path: Path) -> None:
    x = torch.zeros(1, bands, tile, tile)
    kwargs: dict[str, Any] = {
        "input_names": ["x"],
        "output_names": names,
        "dynamic_axes": {"x": {0: "batch"}, **{n: {0: "batch"} for n in names}},
        "opset_version": OPSET,
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(module, (x,), str(path), dynamo=False, **kwargs)
        except TypeError:  # older torch without the dynamo switch
            torch.onnx.export(module, (x,), str(path), **kwargs)


def _add_metadata(path: Path, props: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    for key, value in props.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))


def _geoseg_metadata(meta: Any, tile: int, nodata: float | None, names: list[str]) -> dict:
    return {
        "format": "geoseg-onnx",
        "task": meta.task,
        "arch": meta.arch,
        "encoder": meta.encoder,
        "bands": list(meta.bands),
        "input": "raw band values, float32, (N, bands, tile, tile); normalization inside",
        "outputs": names,
        "classes": meta.classes.to_json(),
        "tile_size": tile,
        "resolution": meta.resolution,
        "crs": meta.crs,
        # JSON has no NaN: a NaN no-data value is written as the string "nan"
        "nodata": "nan" if nodata is not None and math.isnan(nodata) else nodata,
        "nodata_mode": meta.image_nodata_mode,
    }


def deepness_metadata(meta: Any, tile: int, overlap_percent: float) -> dict[str, str]:
    """The metadata Deepness reads (every value JSON, as its ``ModelBase`` parses it)."""
    resolution_cm = (
        float(meta.resolution) * 100.0 if meta.resolution and _metric(meta.crs) else None
    )
    values: dict[str, Any] = {
        "model_type": "Segmentor",
        "class_names": {str(i): c.name for i, c in enumerate(meta.classes)},
        "tile_size": tile,
        "tiles_overlap": round(overlap_percent),
        "seg_thresh": 0.0,  # Deepness then takes the plain argmax, as geoseg does
        "seg_small_segment": 0,  # the small-segment filter off
        "standardization_mean": [0.0] * len(meta.bands),
        "standardization_std": [1.0] * len(meta.bands),
    }
    if resolution_cm is not None:
        values["resolution"] = resolution_cm
    return {k: json.dumps(v) for k, v in values.items()}


def _metric(crs: str | None) -> bool:
    """True when the training CRS has metres as units (Deepness wants cm per pixel)."""
    if not crs:
        return False
    try:
        from pyproj import CRS

        unit = CRS.from_user_input(crs).axis_info[0].unit_name
    except Exception:  # pyproj raises several types for odd strings
        return False
    return unit in ("metre", "meter")


def deepness_notes(meta: Any, nodata: float | None) -> list[str]:
    """What a user must know before running this model in Deepness."""
    notes = []
    lo = min(m - 2 * s for m, s in zip(meta.mean, meta.std))
    hi = max(m + 2 * s for m, s in zip(meta.mean, meta.std))
    if lo < -1 or hi > 256:
        notes.append(
            f"the model was trained on values from about {lo:.4g} to {hi:.4g}, not 8-bit: "
            "Deepness divides every band by 255 and the exported graph multiplies it back, "
            "so the layer's raw values reach the model exactly; map the raw bands (not an "
            "RGB rendering of them) in Deepness, in the order "
            f"{list(meta.bands)}"
        )
    if len(meta.bands) != 3:
        notes.append(
            f"the model takes {len(meta.bands)} bands ({list(meta.bands)}); in Deepness "
            "choose 'standalone bands' and map them in this order"
        )
    if nodata is None:
        notes.append(
            "Deepness has no no-data: pixels outside the data go through the model as "
            "values; give the no-data value (--nodata) to mask them in the graph"
        )
    if meta.task != "semantic":
        notes.append(
            f"the {meta.task} model exports its class scores only: Deepness makes a class "
            "map; object ids need geoseg predict --instances"
        )
    if not (meta.resolution and _metric(meta.crs)):
        notes.append(
            "the training resolution is not in metres, so no 'resolution' is written: set "
            "the processing resolution in Deepness to the imagery's own"
        )
    if meta.resolution and not math.isfinite(float(meta.resolution)):
        notes.append("the checkpoint's resolution is not a finite number")
    return notes


def run_like_deepness(onnx_path: str | Path, image: Any, *, batch_size: int = 4) -> Any:
    """Run an exported model over a whole image the way QGIS Deepness does (for checks).

    Follows Deepness 0.6 (``MapProcessor``, ``TileParams``, ``ModelBase.preprocessing``,
    ``MapProcessorSegmentation``) at the layer's own resolution: the processing extent is
    the layer, extended right and bottom to ``N * stride + tile`` (outside read as 0);
    tiles every ``stride = tile - overlap`` pixels, ``overlap = int(tile * pct / 100 * 2)
    // 2``; each tile's values / 255, standardized with the metadata, NCHW; probabilities
    below ``seg_thresh`` set to 0, argmax; each tile's core (half the overlap trimmed,
    edge tiles to the edge) pasted, no blending; then a median filter of
    ``seg_small_segment`` px.

    Args:
        onnx_path: a model written by :func:`export_model` with ``format="deepness"``.
        image: (bands, H, W) raw band values as QGIS reads them (no-data as its value).
        batch_size: tiles per model call.

    Returns:
        (H, W) int64 class indices (0-based, as Deepness' ``class_names`` keys).
    """
    import numpy as np
    import onnxruntime as ort
    from scipy import ndimage

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    meta = {k: json.loads(v) for k, v in sess.get_modelmeta().custom_metadata_map.items()}
    tile, pct = int(meta["tile_size"]), float(meta["tiles_overlap"])
    overlap = int(tile * pct / 100 * 2) // 2
    stride = tile - overlap
    mean = np.asarray(meta.get("standardization_mean", 0.0), np.float32)
    std = np.asarray(meta.get("standardization_std", 1.0), np.float32)
    bands, h, w = image.shape

    def extended(n: int) -> int:
        return tile if n <= tile else n + (stride - (n - tile) % stride) % stride

    he, we = extended(h), extended(w)
    full_img = np.zeros((he, we, bands), np.float64)
    full_img[:h, :w] = np.moveaxis(np.asarray(image, np.float64), 0, -1)
    ny, nx = round((he - tile) / stride) + 1, round((we - tile) / stride) + 1
    result = np.zeros((he, we), np.int64)
    half = max((tile - stride) // 2, 0)
    jobs = [(y, x) for y in range(ny) for x in range(nx)]
    for start in range(0, len(jobs), batch_size):
        group = jobs[start : start + batch_size]
        tiles = np.stack([full_img[y * stride : y * stride + tile, x * stride : x * stride + tile]
                          for y, x in group])  # fmt: skip
        batch = ((tiles * (1.0 / 255.0)).astype(np.float32) - mean) / std
        probs = sess.run(None, {sess.get_inputs()[0].name: np.transpose(batch, (0, 3, 1, 2))})[0]
        probs[probs < float(meta.get("seg_thresh", 0.5))] = 0.0
        classes = np.argmax(probs, axis=1)
        for (y, x), cls in zip(group, classes):
            y0, x0 = y * stride + half, x * stride + half
            y1, x1 = y * stride + tile - half, x * stride + tile - half
            if y == 0:
                y0 -= half
            if x == 0:
                x0 -= half
            if y == ny - 1:
                y1 += half
            if x == nx - 1:
                x1 += half
            ys, xs = y * stride, x * stride
            result[y0:y1, x0:x1] = cls[y0 - ys : y1 - ys, x0 - xs : x1 - xs]
    size = int(meta.get("seg_small_segment", 0)) // 2 * 2 + 1
    if size > 1:
        result = ndimage.median_filter(result, size=size)
    return result[:h, :w]
