"""GPU memory: refused before the model loads, and CUDA running out of it mid-run.

There is no GPU here: ``torch.cuda`` is replaced by a fake device (its free memory, its
name) and the torch runner by the real model on the CPU, so no real CUDA call happens.
"""

from __future__ import annotations

import dataclasses

import pytest
import rasterio
import torch
from _inference_helpers import RGB, tiny_checkpoint

from geoseg.cli import main
from geoseg.errors import ResourceError, SchedulerError
from geoseg.inference import backends, memory, predict
from geoseg.models import read_metadata

GiB = 2**30
OOM_TEXT = (
    "CUDA out of memory. Tried to allocate 2.00 GiB. GPU 0 has a total capacity of 4.00 GiB "
    "of which 1.10 GiB is free. Of the allocated memory 2.5 GiB is allocated by PyTorch"
)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("gpu") / "m.safetensors")


@pytest.fixture(autouse=True)
def _own_cache(tmp_path_factory, monkeypatch):
    """Exported models and memory probes in a cache of this module, not the user's."""
    monkeypatch.setenv("GEOSEG_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))


class FakeGpu:
    """``torch.cuda`` of one 4 GiB device with ``free`` bytes free; counts the questions."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.free = 4 * GiB
        self.asked = 0
        self.emptied = 0
        fakes = {
            "is_available": lambda: True,
            "device_count": lambda: 1,
            "current_device": lambda: 0,
            "mem_get_info": self.mem_get_info,
            "get_device_name": lambda device=None: "Fake GPU 4GB",
            "memory_reserved": lambda device=None: 0,
            "memory_allocated": lambda device=None: 0,
            "empty_cache": self.empty_cache,
        }
        for name, fn in fakes.items():
            monkeypatch.setattr(torch.cuda, name, fn)

    def mem_get_info(self, device=None):
        assert device in (None, 0, "cuda", "cuda:0", torch.device("cuda:0"))
        self.asked += 1
        return self.free, 4 * GiB

    def empty_cache(self):
        self.emptied += 1


@pytest.fixture
def gpu(monkeypatch):
    return FakeGpu(monkeypatch)


class Model:
    """The torch runner, running the real model on the CPU; ``fail_at``: the call (from 1)
    that raises CUDA's out-of-memory error instead."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.built = 0
        self.calls = 0
        self.fail_at: int | None = None
        real = backends._torch_runner

        def fake_torch_runner(spec, threads):
            self.built += 1
            run = real(dataclasses.replace(spec, device="cpu", keep_on_device=False), threads)

            def run_on_gpu(x):
                self.calls += 1
                if self.calls == self.fail_at:
                    raise torch.cuda.OutOfMemoryError(OOM_TEXT)
                return run(x)

            return run_on_gpu

        monkeypatch.setattr(backends, "_torch_runner", fake_torch_runner)
        monkeypatch.setattr(backends, "_RUNNERS", {})  # no runner of another test


@pytest.fixture
def model(monkeypatch):
    return Model(monkeypatch)


def _crop(tmp_path, n: int = 160):
    with rasterio.open(RGB) as src:  # 791 x 718 px
        win = rasterio.windows.Window(300, 300, n, n)
        data = src.read(window=win)
        prof = src.profile | {"width": n, "height": n, "driver": "GTiff"}
        prof["transform"] = src.window_transform(win)
    with rasterio.open(tmp_path / "in.tif", "w", **prof) as dst:
        dst.write(data)
    return tmp_path / "in.tif"


def test_the_gpu_estimate_and_its_refusal(ckpt, gpu):
    """One estimate, the GPU's budget: windows count fully, bf16 less, weights on top;
    the refusal names the device, GB needed and free, the largest tile and batch."""
    meta = read_metadata(ckpt)
    one = memory.window_bytes(ckpt, meta, 1024)
    fp32 = memory.estimate_gpu_memory(ckpt, meta, 1024, batch=8)
    bf16 = memory.estimate_gpu_memory(ckpt, meta, 1024, batch=8, precision="bf16")
    weights = fp32 - 8 * one
    assert 0 < weights < 0.01 * fp32  # a tiny U-Net: the activations are all
    assert bf16 == pytest.approx(1.5 * weights + memory.BF16_SHARE * 8 * one, rel=1e-6)
    # each window of a batch counts fully on a GPU (on the host, a quarter of one)
    assert fp32 > memory.estimate_memory(ckpt, meta, 1024, batch=8) - memory.RUNTIME_BYTES

    def need(tile, batch):
        return memory.estimate_gpu_memory(ckpt, meta, tile, batch=batch)

    gpu.free = need(1024, 3) + 1000
    with pytest.raises(ResourceError) as err:
        memory.check_gpu_memory(ckpt, meta, 1024, device="cuda", batch=8)
    msg = str(err.value)
    assert msg.startswith(f"tile_size 1024 px needs about {fp32 / 1e9:.1f} GB of GPU memory ")
    assert "on cuda:0 (Fake GPU 4GB)" in msg
    assert f"but {gpu.free / 1e9:.1f} GB is free there" in msg
    assert "batch_size / --batch-size; at most 3 fit now" in msg
    assert f"--precision bf16 (about {bf16 / 1e9:.1f} GB)" in msg
    tile = int(msg.split("(at most ")[1].split(" px fits now)")[0])
    factor = meta.size_divisor()
    assert need(tile, 8) <= gpu.free < need(tile + factor, 8)  # the largest that fits
    # what it names fits, and is not refused
    assert memory.check_gpu_memory(ckpt, meta, tile, device="cuda", batch=8) == need(tile, 8)
    assert memory.check_gpu_memory(ckpt, meta, 1024, device="cuda:0", batch=3) == need(1024, 3)


def test_a_tile_size_too_large_for_the_gpu_is_refused_before_the_model_loads(
    ckpt, tmp_path, gpu, model
):
    gpu.free = 1 * GiB
    out = tmp_path / "o.tif"
    with pytest.raises(ResourceError, match=r"tile_size 2048 px needs about [\d.]+ GB of GPU") as e:
        predict(ckpt, RGB, out, device="cuda", tile_size=2048, progress=False)
    msg = str(e.value)
    assert "on cuda:0 (Fake GPU 4GB)" in msg and "but 1.1 GB is free there" in msg
    assert "--tile-size (at most " in msg and "--precision bf16" in msg
    assert gpu.asked == 1
    assert model.built == 0 and model.calls == 0  # the model was never loaded
    assert list(tmp_path.iterdir()) == []


def test_only_runs_heavier_than_a_default_one_ask_the_gpu(ckpt, tmp_path, gpu, model, monkeypatch):
    probed = []
    real_probe = memory._probe
    monkeypatch.setattr(memory, "_probe", lambda *a: probed.append(1) or real_probe(*a))
    # a default run: 512 px windows (4 of them in this image), batches of up to 8
    predict(ckpt, RGB, tmp_path / "a.tif", device="cuda", progress=False)
    assert (gpu.asked, len(probed)) == (0, 0)
    assert model.calls == 1  # it ran (one batch of 4 windows)
    # one 2048 px window: more pixels in flight than 8 x 512 px; it fits on 4 GiB
    predict(ckpt, RGB, tmp_path / "b.tif", device="cuda", tile_size=2048, progress=False)
    assert (gpu.asked, len(probed)) == (1, 1)
    assert (tmp_path / "b.tif").exists()


def _oom_run(ckpt, tmp_path, **kwargs):
    image = _crop(tmp_path)  # 160 px: 9 windows of 64 px, batches of 2: 5 model calls
    out = tmp_path / "o.tif"
    predict(ckpt, image, out, probabilities=tmp_path / "p.tif", device="cuda",
            tile_size=64, batch_size=2, progress=False, **kwargs)  # fmt: skip


@pytest.mark.parametrize("scheduler", ["threads", "synchronous"])
def test_cuda_out_of_memory_mid_run_is_one_resource_error_and_leaves_nothing(
    ckpt, tmp_path, gpu, model, scheduler
):
    model.fail_at = 2
    with pytest.raises(ResourceError) as err:
        _oom_run(ckpt, tmp_path, scheduler=scheduler)
    assert model.calls >= 2  # it failed mid-run, not before
    msg = str(err.value)
    assert msg.startswith(
        "the GPU cuda:0 (Fake GPU 4GB) ran out of memory at tile_size 64 px / batch_size 2 "
        "(fp32; it could not allocate 2.00 GiB more): lower --batch-size (batch_size) or "
        "--tile-size (tile_size), or use --precision bf16"
    )
    assert "\n" not in msg
    # unchained, so that the failed batch's tensors can be freed; torch's cache emptied
    assert err.value.__cause__ is None and err.value.__context__ is None
    assert gpu.emptied == 1
    # no output, no temporary file, no work folder: only the input is left
    assert [p.name for p in tmp_path.iterdir()] == ["in.tif"]


def test_out_of_memory_is_recognised_in_a_chain_and_other_errors_pass_through(gpu):
    oom = torch.cuda.OutOfMemoryError(OOM_TEXT)
    try:  # a distributed run wraps the worker's error
        raise SchedulerError("the distributed run failed") from oom
    except SchedulerError as exc:
        wrapped = exc
    err = memory.gpu_memory_error(wrapped, device="cuda", tile=1024, batch=4, precision="bf16")
    assert isinstance(err, ResourceError) and isinstance(err, MemoryError)
    assert "at tile_size 1024 px / batch_size 4 (bf16; it could" in str(err)
    assert "bf16 (precision" not in str(err)
    not_memory = RuntimeError("CUDA error: an illegal memory access was encountered")
    assert memory.gpu_memory_error(not_memory, device="cuda", tile=1024, batch=4) is None
    # an allocation of a CUDA library's own (cuBLAS, cuDNN) failing is the same trouble
    cublas = RuntimeError("CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate")
    err = memory.gpu_memory_error(cublas, device="cuda:0", tile=512, batch=16)
    assert "ran out of memory at tile_size 512 px / batch_size 16 (fp32): lower" in str(err)


@pytest.mark.parametrize("case", ["refused", "out of memory"])
def test_the_cli_prints_one_line_without_a_traceback(ckpt, tmp_path, capsys, gpu, model, case):
    if case == "refused":
        gpu.free = 1 * GiB
        image, size = RGB, ["--tile-size", "2048"]
    else:
        model.fail_at = 2
        image, size = _crop(tmp_path), ["--tile-size", "64", "--batch-size", "2"]
    out = tmp_path / "o.tif"
    argv = ["predict", ckpt, image, "-o", out, "--device", "cuda", "--quiet", *size]
    rc = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert rc == 1
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    if case == "refused":
        assert err.startswith("geoseg predict: error: tile_size 2048 px needs about ")
        assert model.built == 0
    else:
        assert err.startswith("geoseg predict: error: the GPU cuda:0 (Fake GPU 4GB) ran out")
        assert "lower --batch-size (batch_size) or --tile-size (tile_size)" in err
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir()] == ([] if case == "refused" else ["in.tif"])
