"""Scheduler equivalence: threads, processes and a LocalCluster give identical bytes,
also when a worker is killed mid-run."""

from __future__ import annotations

import importlib
import os
import signal
import threading
import time

import numpy as np
import pytest
import rasterio
from _inference_helpers import RGB, tiny_checkpoint

from geoseg.errors import SchedulerError
from geoseg.inference import predict

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("dask")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GEOSEG_CACHE_DIR", str(d / "cache"))
        mp.setattr(importlib.import_module("geoseg.inference.predict"), "DEFAULT_MIN_TILE", 64)
        ck = tiny_checkpoint(d / "tiny.safetensors")
        with rasterio.open(RGB) as src:  # a 400 x 400 corner with part of the no-data collar
            prof = src.profile
            win = rasterio.windows.Window(0, 0, 400, 400)
            prof.update(width=400, height=400, transform=src.window_transform(win))
            with rasterio.open(d / "crop.tif", "w", **prof) as dst:
                dst.write(src.read(window=win))
        ref = predict(
            ck,
            IMG(d),
            d / "threads.tif",
            probabilities=d / "threads_p.tif",
            progress=False,
            block_size=256,
        )
        yield d, ck, ref


def IMG(d):
    return d / "crop.tif"


def _read(p):
    with rasterio.open(p) as ds:
        return ds.read()


def test_processes_scheduler_bit_identical(setup):
    d, ck, (ref, ref_p) = setup
    out, prob = predict(
        ck,
        IMG(d),
        d / "proc.tif",
        probabilities=d / "proc_p.tif",
        scheduler="processes",
        workers=2,
        progress=False,
    )
    assert np.array_equal(_read(out), _read(ref))
    assert np.array_equal(_read(prob), _read(ref_p))


def test_local_cluster_identical_and_survives_killed_worker(setup):
    distributed = pytest.importorskip("distributed")
    d, ck, (ref, ref_p) = setup
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        out, prob = predict(
            ck,
            IMG(d),
            d / "dist.tif",
            probabilities=d / "dist_p.tif",
            scheduler=client,
            progress=False,
            block_size=128,
        )
        assert np.array_equal(_read(out), _read(ref))
        assert np.array_equal(_read(prob), _read(ref_p))

        # Kill one worker process while the graph runs: Dask reschedules its tasks.
        pids = client.run(os.getpid)
        result: dict = {}

        def run():
            try:
                result["out"] = predict(
                    ck,
                    IMG(d),
                    d / "killed.tif",
                    scheduler=client,
                    progress=False,
                    block_size=128,
                    tta="flip",
                )
            except SchedulerError as exc:  # allowed: clear error, no output
                result["error"] = exc

        t = threading.Thread(target=run)
        t.start()
        deadline = time.time() + 60
        while time.time() < deadline and not any(client.processing().values()):
            time.sleep(0.05)
        time.sleep(0.5)
        assert t.is_alive(), "run finished before the kill; make it longer"
        os.kill(next(iter(pids.values())), signal.SIGKILL)
        t.join(180)
        assert not t.is_alive()
        if "error" in result:
            assert not (d / "killed.tif").exists()
        else:
            flip = predict(ck, IMG(d), d / "flip.tif", progress=False, tta="flip")
            assert np.array_equal(_read(result["out"]), _read(flip))
