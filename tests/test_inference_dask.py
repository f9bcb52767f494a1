"""Scheduler equivalence: threads, processes and a LocalCluster give identical bytes,
also when a worker is killed mid-run."""

from __future__ import annotations

import importlib
import os

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


def test_scheduler_address_string_without_a_client(setup, capsys):
    """The CLI form: ``--scheduler tcp://...`` with no Client in the calling process."""
    distributed = pytest.importorskip("distributed")
    from geoseg.cli import main

    d, ck, (ref, _) = setup
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None
    ) as cluster:
        addr = cluster.scheduler_address
        assert addr.startswith("tcp://")
        main(["predict", str(ck), str(IMG(d)), "-o", str(d / "addr.tif"), "--scheduler", addr])
    assert np.array_equal(_read(d / "addr.tif"), _read(ref))


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

        # Kill a worker process in the middle of the run, deterministically: inside every
        # worker, wrap run_batch so that the first batch task anywhere (claimed through an
        # O_EXCL sentinel file) hard-exits its process. Dask's nanny restarts the worker and
        # the scheduler reschedules the lost tasks.
        sentinel = str(d / "killed-once")

        def arm_killer(path=sentinel):
            import os as _os

            import geoseg.inference.graph as graph

            original = graph.run_batch

            def run_batch(*args, **kwargs):
                try:
                    fd = _os.open(path, _os.O_CREAT | _os.O_EXCL | _os.O_WRONLY)
                except FileExistsError:
                    return original(*args, **kwargs)
                _os.close(fd)
                _os._exit(1)

            graph.run_batch = run_batch

        client.run(arm_killer)
        try:
            out = predict(
                ck,
                IMG(d),
                d / "killed.tif",
                scheduler=client,
                progress=False,
                block_size=128,
                tta="flip",
            )
        except SchedulerError:  # allowed: a clear error and no output
            assert not (d / "killed.tif").exists()
        else:
            flip = predict(ck, IMG(d), d / "flip.tif", progress=False, tta="flip")
            assert np.array_equal(_read(out), _read(flip))
        assert os.path.exists(sentinel), "no worker was killed"
