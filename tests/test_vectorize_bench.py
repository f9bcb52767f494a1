from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).parents[1] / "benchmarks" / "bench_vectorize.py"


def test_bench_vectorize_quick(tmp_path):
    out = tmp_path / "r.json"
    cmd = [sys.executable, str(BENCH), "--quick", "--workdir", str(tmp_path), "--json", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "1. exactness" in proc.stdout and "4. coverage" in proc.stdout
    r = json.loads(out.read_text())
    assert r["verdicts"]["exactness"] is True
    assert r["verdicts"]["coverage_zero_gaps"] is True
    ex = r["exact_chunked_vs_single"]
    assert ex["n_a"] == ex["n_b"] == ex["geometries_equal"] > 1000
    assert r["coverage"]["dp_gap_m2"] > 0 and r["coverage"]["dp_overlap_m2"] > 0
    assert {"speedup_vs_baseline", "memory"} <= set(r)
