"""The inference benchmark's --quick smoke run works and reports every target."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow
def test_bench_inference_quick(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "bench_inference.py"),
            "--quick",
            "--json",
            str(out),
            "--workdir",
            str(tmp_path / "work"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**__import__("os").environ, "GEOSEG_CACHE_DIR": str(tmp_path / "cache")},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "PASS" in proc.stdout and "verdict" in proc.stdout
    table = {row["target"]: row for row in json.loads(out.read_text())["table"]}
    assert table["6 pixels changed by block size 256 vs 1024"]["value"] == 0
    assert table["1 overlap compute, asymptotic (T/(T-ov))^2"]["pass"]
    assert len(table) == 17
