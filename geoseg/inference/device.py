"""Blending on the model's GPU: window outputs stay where the model computed them.

With a CUDA model and a local scheduler in one process, the torch runner leaves a
batch's outputs in GPU memory (:attr:`RunnerSpec.keep_on_device`); block tasks blend
them there and copy back only what the decoder produces: a class map is one byte per
pixel, where the probabilities of a 7-class model are 28. On an H200 with 16 cores the
host-side blending was about half of the CPU work of a prediction and the copies back
a fifth of the model thread's time, and the CPU side, not the GPU, set the speed.

Why by hand: no library blends overlapping window outputs into blocks on a device; the
arithmetic here is that of :func:`geoseg.inference.graph.blend_block`, operation by
operation and in the same window order (float32 multiply, add, maximum, divide; the
first maximum for the argmax). These are correctly rounded IEEE operations on CUDA as in
numpy, and no operation is fused (no multiply-add), so the maps equal the host blend's
bit for bit (tests compare the two with CPU tensors; ``benchmarks/gpu_check.py`` on a
GPU). torch is imported only when a device array is met.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from geoseg.inference.tiling import PixelWindow

#: The blend weights copied to each device, newest last (a few: one per prediction).
_WEIGHTS: list[tuple[np.ndarray, Any, Any]] = []
_MAX_WEIGHTS = 4


def is_device_array(a: Any) -> bool:
    """True for a torch tensor (the runner's outputs kept on its device)."""
    return type(a).__module__.startswith("torch")


def _device_weight(weight: np.ndarray, device: Any) -> Any:
    """``weight`` as a float32 tensor on ``device`` (copied once per prediction)."""
    import torch

    for w, dev, t in _WEIGHTS:
        if w is weight and dev == device:
            return t
    t = torch.from_numpy(np.ascontiguousarray(weight, dtype=np.float32)).to(device)
    _WEIGHTS.append((weight, device, t))
    del _WEIGHTS[:-_MAX_WEIGHTS]
    return t


def blend_block_device(
    block: PixelWindow,
    batches: list[Any],
    members: list[tuple[PixelWindow, int, int]],
    weight: np.ndarray,
    names: tuple[str, ...],
) -> tuple[dict[str, Any] | None, np.ndarray]:
    """:func:`geoseg.inference.graph.blend_block` for outputs that are torch tensors.

    Returns:
        ``(maps, valid)``: blended (C, h, w) float32 tensors on the outputs' device by
        name (None when no window of the block was run) and the block's valid mask
        (numpy, as the windows' masks are).
    """
    import torch

    acc: dict[str, Any] = {}
    wsum: Any = None
    wt: Any = None
    valid = np.zeros((block.height, block.width), dtype=bool)
    with torch.inference_mode():  # the outputs are inference tensors
        for win, b, k in members:
            outputs, vmask = batches[b][k]
            dst, src = block.overlap_slices(win)
            valid[dst] |= vmask[src]
            if outputs is None:
                continue
            if wt is None:
                device = outputs[names[0]].device
                wt = _device_weight(weight, device)
                wsum = torch.zeros((block.height, block.width), dtype=torch.float32, device=device)
            w = wt[src]
            for name in names:
                probs = outputs[name]
                if name not in acc:
                    shape = (probs.shape[0], block.height, block.width)
                    acc[name] = torch.zeros(shape, dtype=torch.float32, device=probs.device)
                acc[name][(slice(None), *dst)] += probs[(slice(None), *src)] * w
            wsum[dst] += w
        if not acc:
            return None, valid
        denom = torch.clamp_min(wsum, np.float32(1e-30).item())
        for a in acc.values():
            a.div_(denom)
    return acc, valid


def to_host(maps: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Blended maps as numpy arrays (device tensors copied back)."""
    return {k: v.cpu().numpy() if is_device_array(v) else v for k, v in maps.items()}


def argmax0(p: Any) -> np.ndarray:
    """``np.argmax(p, axis=0)`` of a numpy array or a device tensor, as a host array.

    On a device the index is computed there and copied back in the smallest integer
    type that holds it (one byte per pixel up to 256 classes).
    """
    if not is_device_array(p):
        return host_argmax0(p)
    import torch

    with torch.inference_mode():
        idx = torch.argmax(p, dim=0)
        small = torch.uint8 if p.shape[0] <= 256 else torch.int32
        return idx.to(small).cpu().numpy()


def quantize(p: Any, scale: float) -> np.ndarray:
    """``rint(clip(p, 0, 1) * scale)`` as uint8, of a numpy array or a device tensor."""
    if not is_device_array(p):
        return np.rint(np.clip(p, 0.0, 1.0) * scale).astype(np.uint8)
    import torch

    with torch.inference_mode():
        # torch.round rounds half to even, as np.rint does
        return torch.round(torch.clamp(p, 0.0, 1.0) * scale).to(torch.uint8).cpu().numpy()


#: Most classes :func:`host_argmax0` handles with a bit mask (more: ``np.argmax``).
_MASK_CLASSES = 16
#: Index of the lowest set bit of each 8-bit and 16-bit mask (0 for no bit).
_LOWEST_BIT: dict[int, np.ndarray] = {}


def _lowest_bit(bits: int) -> np.ndarray:
    lut = _LOWEST_BIT.get(bits)
    if lut is None:
        k = np.arange(1 << bits, dtype=np.int64)
        low = k & -k  # the lowest set bit's value; log2 of it is its index
        lut = np.zeros(1 << bits, dtype=np.uint8)
        lut[1:] = np.log2(low[1:]).astype(np.uint8)
        lut = _LOWEST_BIT.setdefault(bits, lut)
    return lut


def host_argmax0(p: np.ndarray) -> np.ndarray:
    """``np.argmax(p, axis=0)`` of a (C, ...) numpy array, the same indices, faster.

    Why by hand: numpy's argmax along the first axis of a C-contiguous array copies the
    array transposed and then scans C values per pixel (7 ms for a 7 x 256 x 1024 block);
    the maximum over the first axis is a few vectorized passes. Each pixel's classes equal
    to that maximum set bits of a mask; the lowest set bit is the first maximum, as
    ``np.argmax`` returns (1.4 ms). A NaN maximum (``np.argmax`` returns the first NaN)
    and more than :data:`_MASK_CLASSES` classes use ``np.argmax``. Returns uint8 indices.
    """
    c = p.shape[0]
    if c > _MASK_CLASSES or c < 2 or p.dtype.kind != "f":
        return np.argmax(p, axis=0)
    top = p.max(axis=0)
    if np.isnan(top).any():
        return np.argmax(p, axis=0)
    dtype = np.uint8 if c <= 8 else np.uint16
    bits = np.zeros(top.shape, dtype=dtype)
    hit = np.empty(top.shape, dtype=bool)
    bit = np.empty(top.shape, dtype=dtype)
    for k in range(c):
        np.equal(p[k], top, out=hit)
        np.left_shift(hit, dtype(k), out=bit, dtype=dtype)
        np.bitwise_or(bits, bit, out=bits)
    return _lowest_bit(8 * bits.itemsize)[bits]
